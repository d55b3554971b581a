//! `sts:AssumeRoleWithWebIdentity`: the caller's JWT, issued by an OIDC provider that AWS trusts,
//! is the proof. The broker signs nothing and needs no AWS identity of its own. STS takes session
//! tags and source identity from the token itself in this mode, so only the session policy is sent.

use super::{
    IssueError, IssueRequest, Issued, StsSettings, classify, convert, sts_client,
    with_duration_fallback,
};
use tracing::Instrument;

/// Exchanges the caller's token at STS.
#[derive(Debug, Clone)]
pub struct WebIdentityIssuer {
    client: aws_sdk_sts::Client,
}

impl WebIdentityIssuer {
    pub async fn new(settings: &StsSettings) -> Self {
        Self {
            client: sts_client(settings, true).await,
        }
    }

    /// One AssumeRoleWithWebIdentity call (a duration above the role's maximum is retried at
    /// 3600 s: see [`with_duration_fallback`]).
    pub async fn issue(&self, req: &IssueRequest) -> Result<Issued, IssueError> {
        let span = tracing::info_span!("sts.assume_role_with_web_identity", role = %req.role_arn, session_name = %req.role_session_name);
        with_duration_fallback(req.duration_secs, |duration| self.call(req, duration))
            .instrument(span)
            .await
    }

    async fn call(&self, req: &IssueRequest, duration: i32) -> Result<Issued, IssueError> {
        let token = req.web_identity_token.as_ref().ok_or_else(|| {
            IssueError::Configuration("web-identity mode needs the caller's token".into())
        })?;
        let out = self
            .client
            .assume_role_with_web_identity()
            .role_arn(&req.role_arn)
            .role_session_name(&req.role_session_name)
            .web_identity_token(token.expose())
            .set_policy(req.policy.clone())
            .duration_seconds(duration)
            .send()
            .await
            .map_err(classify)?;
        convert(out.credentials(), out.assumed_role_user().map(|u| u.arn()))
    }
}
