//! Checks that secrets did not leak into text (logs, error messages, operator answers).
//!
//! A failing check names which secret leaked and where, but never prints the secret itself, so
//! the test output is as clean as the logs are supposed to be.

/// A secret to look for, with a label for the failure message.
#[derive(Clone)]
pub struct Secret {
    pub label: String,
    pub value: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.label)
    }
}

impl Secret {
    pub fn new(label: impl Into<String>, value: impl Into<String>) -> Secret {
        Secret {
            label: label.into(),
            value: value.into(),
        }
    }

    /// The four secrets of session `i`: its id, the token bound to it, and the secret access key
    /// and session token of the credentials it was served.
    pub fn of_session(
        i: usize,
        session_id: &str,
        token: &str,
        creds: &credbroker_proto::v1::AwsCredentials,
    ) -> [Secret; 4] {
        [
            Secret::new(format!("session id {i}"), session_id),
            Secret::new(format!("token {i}"), token),
            Secret::new(
                format!("secret access key {i}"),
                creds.secret_access_key.clone(),
            ),
            Secret::new(format!("session token {i}"), creds.session_token.clone()),
        ]
    }
}

/// The labels of the secrets that occur in `text`. A JWT is also looked for by its signature
/// part alone, so a log that prints only part of a token is still caught.
pub fn leaked(text: &str, secrets: &[Secret]) -> Vec<String> {
    let mut found = Vec::new();
    for secret in secrets {
        if secret.value.is_empty() {
            continue;
        }
        let signature = secret
            .value
            .rsplit_once('.')
            .map(|(_, sig)| sig)
            .filter(|sig| sig.len() >= 16);
        if text.contains(&secret.value) || signature.is_some_and(|sig| text.contains(sig)) {
            found.push(secret.label.clone());
        }
    }
    found
}

/// Panics (naming labels only) if any secret occurs in `text`.
pub fn assert_no_secrets(where_: &str, text: &str, secrets: &[Secret]) {
    let found = leaked(text, secrets);
    assert!(found.is_empty(), "{where_} contains secrets: {found:?}");
}
