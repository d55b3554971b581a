//! `sts:AssumeRole` with SourceIdentity, session tags and an optional session policy.

use super::{
    IssueError, IssueRequest, Issued, StsSettings, classify, convert, sts_client,
    with_duration_fallback,
};
use aws_sdk_sts::types::Tag;
use tracing::Instrument;

/// Assumes the user's role with the broker's own AWS identity.
#[derive(Debug, Clone)]
pub struct AssumeRoleIssuer {
    client: aws_sdk_sts::Client,
}

impl AssumeRoleIssuer {
    pub async fn new(settings: &StsSettings) -> Self {
        Self {
            client: sts_client(settings, false).await,
        }
    }

    /// One AssumeRole call (a duration above the role's maximum is retried at 3600 s: see
    /// [`with_duration_fallback`]).
    pub async fn issue(&self, req: &IssueRequest) -> Result<Issued, IssueError> {
        let span = tracing::info_span!("sts.assume_role", role = %req.role_arn, session_name = %req.role_session_name);
        with_duration_fallback(req.duration_secs, |duration| self.call(req, duration))
            .instrument(span)
            .await
    }

    async fn call(&self, req: &IssueRequest, duration: i32) -> Result<Issued, IssueError> {
        let tags = req
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IssueError::Rejected(format!("session tag: {e}")))?;
        let out = self
            .client
            .assume_role()
            .role_arn(&req.role_arn)
            .role_session_name(&req.role_session_name)
            .source_identity(&req.source_identity)
            .set_tags((!tags.is_empty()).then_some(tags))
            .set_policy(req.policy.clone())
            .duration_seconds(duration)
            .send()
            .await
            .map_err(classify)?;
        convert(out.credentials(), out.assumed_role_user().map(|u| u.arn()))
    }
}
