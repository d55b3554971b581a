//! The operator plane, `credbroker.v1.SessionAdmin`: describe, list and revoke sessions. A service
//! of its own so that it is authorized apart from the credential plane (see [`crate::operator`]);
//! it never answers a secret, only keyed session handles.

use crate::audit::Event;
use crate::broker::{Broker, Selector};
use crate::operator::{Operator, OperatorPolicy, peer_identity};
use crate::service::{audit_status, fail, observe, selector, session_info};
use credbroker_proto::v1::{
    self as pb, describe_session_request, revoke_session_request,
    session_admin_server::SessionAdmin,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// gRPC face of the operator plane.
pub struct AdminService {
    broker: Arc<Broker>,
    policy: OperatorPolicy,
}

/// An authorized operator call in progress: who, from where, for the audit record.
struct Call {
    method: &'static str,
    operator: Operator,
    peer: String,
}

impl AdminService {
    pub fn new(broker: Arc<Broker>, policy: OperatorPolicy) -> Self {
        Self { broker, policy }
    }

    /// Authorizes an operator call (see [`crate::operator`]) with the audit log writable; a
    /// refusal is recorded with the subject that tried, when its token was genuine.
    async fn authorize<T>(&self, method: &'static str, req: &Request<T>) -> Result<Call, Status> {
        let peer = peer_identity(req);
        crate::audit::ready().map_err(audit_status)?;
        match self.policy.authorize(self.broker.validator(), req).await {
            Ok(operator) => Ok(Call {
                method,
                operator,
                peer,
            }),
            Err(e) => {
                tracing::warn!(method, peer = %peer, error = %e, "operator call refused");
                let mut ev = Event::new("admin_call", "refused");
                ev.method = Some(method);
                ev.subject = e.subject().map(str::to_string);
                ev.peer = Some(peer);
                ev.reason = Some(e.to_string());
                let _ = crate::audit::record(&ev);
                Err(e.status())
            }
        }
    }

    /// Records what an authorized operator call did; `Err` (UNAVAILABLE) when it cannot be
    /// recorded, so no answer leaves unrecorded.
    fn audit(
        &self,
        call: &Call,
        event: &'static str,
        outcome: &'static str,
        session: Option<String>,
        reason: Option<String>,
    ) -> Result<(), Status> {
        if crate::audit::global().is_none() {
            return Ok(());
        }
        let mut ev = Event::new(event, outcome);
        ev.method = Some(call.method);
        ev.subject = call.operator.subject.clone();
        ev.issuer = call.operator.issuer.clone();
        ev.session = session;
        ev.peer = Some(call.peer.clone());
        ev.reason = reason;
        crate::audit::record(&ev).map_err(audit_status)
    }

    /// The handle a selector names, for the audit record (never the raw id).
    fn target(&self, sel: &Selector) -> Option<String> {
        self.broker.handle_of(sel).ok().map(|h| h.to_string())
    }

    /// Records the outcome of an operator call and passes its result on.
    fn finish<T>(
        &self,
        call: &Call,
        session: Option<String>,
        detail: Option<String>,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        match &result {
            Ok(_) => self.audit(call, "admin_call", "ok", session, detail)?,
            Err(s) => {
                let _ = self.audit(
                    call,
                    "admin_call",
                    "refused",
                    session,
                    Some(s.message().to_string()),
                );
            }
        }
        result
    }

    async fn describe_session_inner(
        &self,
        req: Request<pb::DescribeSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let call = self.authorize("DescribeSession", &req).await?;
        let sel = match req.into_inner().selector {
            Some(describe_session_request::Selector::SessionId(id)) => selector(Some(id), None),
            Some(describe_session_request::Selector::SessionHandle(h)) => selector(None, Some(h)),
            None => selector(None, None),
        };
        let sel = self.finish(&call, None, None, sel)?;
        let target = self.target(&sel);
        let result = self
            .broker
            .describe(&sel)
            .await
            .map_err(|e| fail("DescribeSession", e));
        let (handle, record, creds) = self.finish(&call, target, None, result)?;
        Ok(Response::new(session_info(handle, record, creds.as_ref())))
    }

    async fn list_sessions_inner(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let call = self.authorize("ListSessions", &req).await?;
        let r = req.into_inner();
        let filter = Some(r.subject.trim())
            .filter(|s| !s.is_empty())
            .map(|s| format!("subject filter {s:?}"));
        let result = self
            .broker
            .list(r.page_size, &r.page_token, r.subject.trim())
            .await
            .map_err(|e| fail("ListSessions", e));
        let (page, next) = self.finish(&call, None, filter, result)?;
        let mut sessions = Vec::with_capacity(page.len());
        for (handle, record) in page {
            let creds = self
                .broker
                .engine()
                .peek(&record.credential_id)
                .await
                .ok()
                .flatten();
            sessions.push(session_info(handle, record, creds.as_ref()));
        }
        Ok(Response::new(pb::ListSessionsResponse {
            sessions,
            next_page_token: next.map(|h| h.to_string()).unwrap_or_default(),
        }))
    }

    async fn revoke_session_inner(
        &self,
        req: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let call = self.authorize("RevokeSession", &req).await?;
        let sel = match req.into_inner().selector {
            Some(revoke_session_request::Selector::SessionId(id)) => selector(Some(id), None),
            Some(revoke_session_request::Selector::SessionHandle(h)) => selector(None, Some(h)),
            None => selector(None, None),
        };
        let sel = self.finish(&call, None, None, sel)?;
        let target = self.target(&sel);
        let result = self
            .broker
            .revoke(&sel)
            .await
            .map_err(|e| fail("RevokeSession", e));
        let (handle, revoked) = self.finish(&call, target, None, result)?;
        if revoked {
            self.audit(
                &call,
                "session_revoked",
                "ok",
                Some(handle.to_string()),
                None,
            )?;
        }
        Ok(Response::new(pb::RevokeSessionResponse {
            session_handle: handle.to_string(),
            revoked,
        }))
    }
}

#[tonic::async_trait]
impl SessionAdmin for AdminService {
    async fn describe_session(
        &self,
        req: Request<pb::DescribeSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let started = std::time::Instant::now();
        observe(
            "DescribeSession",
            started,
            self.describe_session_inner(req).await,
        )
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let started = std::time::Instant::now();
        observe("ListSessions", started, self.list_sessions_inner(req).await)
    }

    async fn revoke_session(
        &self,
        req: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let started = std::time::Instant::now();
        observe(
            "RevokeSession",
            started,
            self.revoke_session_inner(req).await,
        )
    }
}
