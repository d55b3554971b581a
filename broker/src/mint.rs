//! `credential-broker mint-token`: signs a development HS256 token with the configured secret, so
//! nobody hand-crafts JWTs in a shell. It refuses to run without an explicit secret, and takes the
//! secret only from the environment or a file: a command-line flag would show it in every process
//! listing. Without `--role-arn` it mints an operator token (for `credbroker.v1.SessionAdmin`).

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
    /// Role ARN to grant (`role_arn`); give several times for a `roles` list. None: an operator
    /// token (no role), for a subject listed in BROKER_ADMIN_SUBJECTS.
    #[arg(long = "role-arn")]
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
    /// Extra claims as name=value (e.g. --claim team=sales). Claims the flags above set (`sub`,
    /// `iss`, `aud`, `exp`, `iat`, `nbf`, `role_arn`, `roles`, `buckets`) are refused here.
    #[arg(long = "claim")]
    pub claims: Vec<String>,
    /// File holding the HS256 secret (the broker's own). The secret itself is read from the
    /// environment variable BROKER_JWT_HS256_SECRET, never from a flag.
    #[arg(long, env = "BROKER_JWT_HS256_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
}

/// Claims `--claim` may not set: each has its own flag, whose value is checked (the subject rules
/// for `sub`), or is set by the tool itself (`exp`, `iat`).
const RESERVED_CLAIMS: [&str; 9] = [
    "sub", "iss", "aud", "exp", "iat", "nbf", "role_arn", "roles", "buckets",
];

/// The value of BROKER_JWT_HS256_SECRET, read by `main` (the environment, never argv).
pub fn secret_from_env() -> Option<crate::secret::Secret> {
    std::env::var("BROKER_JWT_HS256_SECRET")
        .ok()
        .map(crate::secret::Secret::new)
}

/// Signs the token and returns it. `env_secret` is BROKER_JWT_HS256_SECRET's value.
pub fn mint(args: &MintArgs, env_secret: Option<&crate::secret::Secret>) -> Result<String, String> {
    let secret = match (env_secret, &args.secret_file) {
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
                "no secret: set BROKER_JWT_HS256_SECRET or BROKER_JWT_HS256_SECRET_FILE (or --secret-file)".into(),
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
        [] => {}
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
        if RESERVED_CLAIMS.contains(&k.trim()) {
            return Err(format!(
                "--claim {k}=…: \"{k}\" is set by its own flag (--sub, --iss, --aud, --ttl, --role-arn, --buckets), which checks it; it cannot be given as an extra claim"
            ));
        }
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
        a.secret_file = None;
        assert!(mint(&a, None).unwrap_err().starts_with("no secret"));
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn args(extra: &[&str]) -> Result<MintArgs, clap::Error> {
        let mut argv = vec!["x", "--sub", "alice"];
        argv.extend_from_slice(extra);
        T::try_parse_from(argv).map(|t| t.a)
    }

    #[test]
    fn the_secret_is_never_a_flag() {
        let e = args(&["--secret", KEY]).expect_err("--secret is refused");
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(!e.to_string().contains(KEY), "{e}");
    }

    #[test]
    fn extra_claims_cannot_replace_checked_ones() {
        for claim in [
            "sub=root",
            "sub=",
            " sub=x",
            "exp=99999999999",
            "role_arn=x",
            "iss=y",
        ] {
            let a = args(&["--claim", claim]).unwrap();
            let e = mint(&a, Some(&crate::secret::Secret::new(KEY))).unwrap_err();
            assert!(e.contains("its own flag"), "{claim}: {e}");
        }
    }

    #[test]
    fn without_a_role_it_mints_an_operator_token() {
        let a = args(&["--ttl", "15m"]).unwrap();
        let tok = mint(&a, Some(&crate::secret::Secret::new(KEY))).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(
            &tok,
            &jsonwebtoken::DecodingKey::from_secret(KEY.as_bytes()),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert!(data.claims.get("role_arn").is_none() && data.claims.get("roles").is_none());
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
            "--claim",
            "team=sales",
        ])
        .unwrap();
        let tok = mint(&t.a, Some(&crate::secret::Secret::new(KEY))).unwrap();
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
