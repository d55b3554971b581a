//! Who may call the operator plane (`credbroker.v1.SessionAdmin`). Listing every session or revoking
//! anyone's is a different power from getting one's own credentials, so it is authorized apart:
//! a bearer JWT validated by the broker's own token rules whose `sub` is listed in
//! `BROKER_ADMIN_SUBJECTS`, and/or (with mTLS) a client certificate whose DNS or URI SAN is listed
//! in `BROKER_ADMIN_CLIENT_NAMES`. Each configured setting is a requirement; with neither, the
//! operator plane refuses everyone (fail closed).

use crate::secret::Secret;
use crate::token::{TokenError, TokenValidator};
use std::collections::HashSet;
use tonic::{Request, Status};

/// The operator plane's authorization settings, from configuration.
#[derive(Debug, Clone, Default)]
pub struct OperatorPolicy {
    /// Exact `sub` values allowed (`BROKER_ADMIN_SUBJECTS`); empty: no token requirement.
    pub subjects: HashSet<String>,
    /// Client-certificate names allowed (`BROKER_ADMIN_CLIENT_NAMES`); empty: no certificate
    /// requirement.
    pub client_names: HashSet<String>,
}

/// An authorized operator call: who it was, for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct Operator {
    /// The token's `sub` when a token was required.
    pub subject: Option<String>,
    /// The token's `iss`, when there was one.
    pub issuer: Option<String>,
}

/// Why an operator call was refused; every message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    #[error(
        "the operator plane is disabled: set BROKER_ADMIN_SUBJECTS (operator JWT subjects) and/or BROKER_ADMIN_CLIENT_NAMES (mTLS client certificate names)"
    )]
    NotConfigured,
    #[error(
        "credbroker.v1.SessionAdmin needs gRPC metadata `authorization: Bearer <operator JWT>` (mint one with `credential-broker mint-token --sub <operator>`)"
    )]
    NoToken,
    #[error("operator token refused: {0}")]
    BadToken(TokenError),
    #[error("subject is not an operator: it is not listed in BROKER_ADMIN_SUBJECTS")]
    NotAnOperator { subject: String },
    #[error(
        "no client certificate named in BROKER_ADMIN_CLIENT_NAMES was presented (mTLS client certificate DNS or URI SAN)"
    )]
    NoClientName,
}

impl OperatorError {
    /// UNAUTHENTICATED when the caller did not prove who it is, PERMISSION_DENIED when it did but
    /// is not an operator (or the plane is disabled).
    pub fn status(&self) -> Status {
        match self {
            OperatorError::NoToken | OperatorError::BadToken(_) => {
                Status::unauthenticated(self.to_string())
            }
            _ => Status::permission_denied(self.to_string()),
        }
    }

    /// The subject that tried, when its token was valid.
    pub fn subject(&self) -> Option<&str> {
        match self {
            OperatorError::NotAnOperator { subject } => Some(subject),
            _ => None,
        }
    }
}

impl OperatorPolicy {
    /// Whether anything at all may call the operator plane.
    pub fn is_enabled(&self) -> bool {
        !self.subjects.is_empty() || !self.client_names.is_empty()
    }

    /// Decides an operator call: every configured requirement must hold.
    pub async fn authorize<T>(
        &self,
        validator: &TokenValidator,
        req: &Request<T>,
    ) -> Result<Operator, OperatorError> {
        if !self.is_enabled() {
            return Err(OperatorError::NotConfigured);
        }
        if !self.client_names.is_empty() {
            let names = peer_names(req);
            if !names.iter().any(|n| self.client_names.contains(n)) {
                return Err(OperatorError::NoClientName);
            }
        }
        let mut operator = Operator::default();
        if !self.subjects.is_empty() {
            let token = bearer(req).ok_or(OperatorError::NoToken)?;
            // Operator tokens need no role: only the token rules (signature, algorithm, exp/nbf,
            // iss/aud) and the subject list decide.
            let claims = validator
                .validate(&token)
                .await
                .map_err(OperatorError::BadToken)?;
            if !self.subjects.contains(&claims.subject) {
                return Err(OperatorError::NotAnOperator {
                    subject: claims.subject,
                });
            }
            operator.subject = Some(claims.subject);
            operator.issuer = Some(claims.issuer);
        }
        Ok(operator)
    }
}

/// The bearer token of `authorization` metadata (scheme case-insensitive), if any.
fn bearer<T>(req: &Request<T>) -> Option<Secret> {
    let value = req.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| Secret::new(token))
}

/// The DNS and URI subject-alternative names of the caller's (verified) client certificate.
pub fn peer_names<T>(req: &Request<T>) -> Vec<String> {
    req.peer_certs()
        .and_then(|certs| certs.first().map(|c| san_names(c.as_ref())))
        .unwrap_or_default()
}

/// DNS and URI SANs of a DER certificate; none when it cannot be parsed.
pub fn san_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// How the caller is known to the audit trail: its certificate's first name, else its address.
pub fn peer_identity<T>(req: &Request<T>) -> String {
    if let Some(name) = peer_names(req).into_iter().next() {
        return name;
    }
    req.remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::ValidatorConfig;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::json;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn validator() -> TokenValidator {
        TokenValidator::new(
            ValidatorConfig {
                algorithms: vec![Algorithm::HS256],
                issuers: vec![],
                audiences: vec![],
                leeway_secs: 0,
                tag_claims: vec![],
                types: vec![],
            },
            Some(&Secret::new(KEY)),
            None,
        )
    }

    fn token(sub: &str, key: &str) -> String {
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": sub, "exp": exp}),
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    }

    fn request(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    fn policy(subjects: &[&str]) -> OperatorPolicy {
        OperatorPolicy {
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            client_names: HashSet::new(),
        }
    }

    #[tokio::test]
    async fn unconfigured_refuses_everyone_and_names_the_settings() {
        let e = policy(&[])
            .authorize(
                &validator(),
                &request(Some(&format!("Bearer {}", token("ops", KEY)))),
            )
            .await
            .unwrap_err();
        assert_eq!(e, OperatorError::NotConfigured);
        assert_eq!(e.status().code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("BROKER_ADMIN_SUBJECTS"));
    }

    #[tokio::test]
    async fn no_or_bad_token_is_unauthenticated_other_subject_is_denied() {
        let (p, v) = (policy(&["ops"]), validator());
        for auth in [
            None,
            Some("Bearer"),
            Some("Basic b3BzOm9wcw=="),
            Some("Bearer not-a-jwt"),
        ] {
            let e = p.authorize(&v, &request(auth)).await.unwrap_err();
            assert_eq!(e.status().code(), tonic::Code::Unauthenticated, "{auth:?}");
        }
        let forged = format!(
            "Bearer {}",
            token("ops", "another-key-another-key-another-k")
        );
        let e = p.authorize(&v, &request(Some(&forged))).await.unwrap_err();
        assert!(matches!(
            e,
            OperatorError::BadToken(TokenError::BadSignature)
        ));
        let user = format!("Bearer {}", token("alice", KEY));
        let e = p.authorize(&v, &request(Some(&user))).await.unwrap_err();
        assert_eq!(e.status().code(), tonic::Code::PermissionDenied);
        assert_eq!(e.subject(), Some("alice"));
        let ops = format!("bearer {}", token("ops", KEY));
        let ok = p.authorize(&v, &request(Some(&ops))).await.unwrap();
        assert_eq!(ok.subject.as_deref(), Some("ops"));
    }

    #[tokio::test]
    async fn client_names_require_a_named_certificate() {
        let p = OperatorPolicy {
            subjects: HashSet::new(),
            client_names: ["ops-cli".to_string()].into_iter().collect(),
        };
        let e = p.authorize(&validator(), &request(None)).await.unwrap_err();
        assert_eq!(e, OperatorError::NoClientName);
        assert_eq!(e.status().code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn reads_dns_and_uri_names_of_a_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["ops-cli.internal".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://corp/ops").unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            san_names(cert.der()),
            vec![
                "ops-cli.internal".to_string(),
                "spiffe://corp/ops".to_string()
            ]
        );
        assert!(san_names(b"not a certificate").is_empty());
    }
}
