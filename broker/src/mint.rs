//! `credential-broker mint-token`: signs a development HS256 token with the configured secret, so
//! nobody hand-crafts JWTs in a shell. It refuses to run without an explicit secret.

use crate::token::check_subject;
use clap::Args;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Map, Value, json};
use std::path::PathBuf;

/// Flags of `mint-token`.
#[derive(Debug, Clone, Args)]
pub struct MintArgs {
    /// Subject (`sub`), e.g. alice@example.com.
    #[arg(long)]
    pub sub: String,
    /// Role ARN to grant (`role_arn`); give several times for a `roles` list.
    #[arg(long = "role-arn", required = true)]
    pub role_arn: Vec<String>,
    /// Lifetime of the token.
    #[arg(long, default_value = "15m")]
    pub ttl: humantime::Duration,
    /// Buckets to limit the credentials to (`buckets`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub buckets: Vec<String>,
    /// Issuer (`iss`).
    #[arg(long, env = "BROKER_JWT_ISSUER")]
    pub iss: Option<String>,
    /// Audience (`aud`).
    #[arg(long, env = "BROKER_JWT_AUDIENCE")]
    pub aud: Option<String>,
    /// Extra claims as name=value (e.g. --claim team=sales).
    #[arg(long = "claim")]
    pub claims: Vec<String>,
    /// The HS256 secret (the broker's own).
    #[arg(long, env = "BROKER_JWT_HS256_SECRET", hide_env_values = true)]
    pub secret: Option<crate::secret::Secret>,
    /// File holding the HS256 secret.
    #[arg(long, env = "BROKER_JWT_HS256_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
}

/// Signs the token and returns it.
pub fn mint(args: &MintArgs) -> Result<String, String> {
    let secret = match (&args.secret, &args.secret_file) {
        (Some(s), _) if !s.is_empty() => s.expose().to_string(),
        (_, Some(p)) => std::fs::read_to_string(p)
            .map_err(|e| {
                format!(
                    "BROKER_JWT_HS256_SECRET_FILE: cannot read {}: {e}",
                    p.display()
                )
            })?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        _ => {
            return Err(
                "no secret: set BROKER_JWT_HS256_SECRET or BROKER_JWT_HS256_SECRET_FILE (or --secret / --secret-file)".into(),
            );
        }
    };
    if secret.len() < 32 {
        return Err("BROKER_JWT_HS256_SECRET: must be at least 32 bytes".into());
    }
    check_subject(&args.sub).map_err(|e| format!("--sub: {e}"))?;
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(args.sub));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + args.ttl.as_secs()));
    match args.role_arn.as_slice() {
        [one] => {
            claims.insert("role_arn".into(), json!(one));
        }
        many => {
            claims.insert("roles".into(), json!(many));
        }
    }
    if !args.buckets.is_empty() {
        claims.insert("buckets".into(), json!(args.buckets));
    }
    if let Some(iss) = &args.iss {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = &args.aud {
        claims.insert("aud".into(), json!(aud));
    }
    for c in &args.claims {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| format!("--claim {c:?}: expected name=value"))?;
        claims.insert(k.to_string(), Value::String(v.to_string()));
    }
    encode(
        &Header::new(Algorithm::HS256),
        &Value::Object(claims),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: MintArgs,
    }

    #[test]
    fn refuses_without_secret() {
        let t = T::try_parse_from([
            "x",
            "--sub",
            "alice",
            "--role-arn",
            "arn:aws:iam::123456789012:role/r",
        ])
        .unwrap();
        let mut a = t.a;
        a.secret = None;
        a.secret_file = None;
        assert!(mint(&a).unwrap_err().starts_with("no secret"));
    }

    #[test]
    fn mints_a_token_the_validator_accepts_shape_of() {
        let t = T::try_parse_from([
            "x",
            "--sub",
            "alice",
            "--role-arn",
            "arn:aws:iam::123456789012:role/r",
            "--buckets",
            "b1,b2",
            "--secret",
            "0123456789abcdef0123456789abcdef",
            "--claim",
            "team=sales",
        ])
        .unwrap();
        let tok = mint(&t.a).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(
            &tok,
            &jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["buckets"], json!(["b1", "b2"]));
        assert_eq!(data.claims["team"], "sales");
    }
}
