//! Token validation: signature, algorithm, time claims, issuer and audience, then typed claims.
//!
//! `validator` decides whether a token is genuine and current; `jwks` holds asymmetric keys and
//! their rotation; `claims` turns the payload into [`Claims`]. None of them knows about roles:
//! mapping claims to a role is `crate::role`'s job, as Vault keeps role configuration apart from
//! token validation.

mod claims;
mod jwks;
mod validator;

pub use claims::{
    ClaimError, Claims, MAX_SUBJECT_LEN, MAX_TIME_CLAIM_SECS, check_subject, check_tag_claim,
};
pub use jwks::{Jwks, JwksError, JwksSource, check_url as check_jwks_url};
pub use validator::{MAX_TOKEN_BYTES, TokenValidator, ValidatorConfig};

use jsonwebtoken::Algorithm;

/// Why a token was refused. Messages name the failed check and never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token was given: send the caller's JWT")]
    Missing,
    #[error("token is {0} bytes, more than the {MAX_TOKEN_BYTES} accepted")]
    TooLarge(usize),
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm {0:?} is not allowed by this broker")]
    AlgorithmNotAllowed(Algorithm),
    #[error("token is signed with {0:?} but the broker has no key of that kind configured")]
    NoKeyForAlgorithm(Algorithm),
    #[error("token \"kid\" does not match any key in the key set")]
    UnknownKey,
    #[error("token has no \"kid\" and the key set holds several keys for its algorithm")]
    KidRequired,
    #[error("the key named by the token's \"kid\" is not a {0:?} key")]
    KeyAlgorithmMismatch(Algorithm),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired (claim \"exp\"); no leeway applies to exp: send a fresh token")]
    Expired,
    #[error("token header \"typ\" is missing or not one of BROKER_JWT_TYPES")]
    TypeNotAllowed,
    #[error("token is not valid yet (claim \"nbf\")")]
    NotYetValid,
    #[error("claim \"iss\" does not match any configured issuer")]
    IssuerMismatch,
    #[error("claim \"aud\" does not match any bound audience")]
    AudienceMismatch,
    #[error(transparent)]
    Claim(#[from] ClaimError),
}
