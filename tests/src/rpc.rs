//! Shortcuts for the broker's RPCs, so tests read like the specification
//! (`bind(&mut c, &sid, &token, "")`) and status checks name what was expected.

use credbroker_proto::v1::credential_broker_client::CredentialBrokerClient;
use credbroker_proto::v1::session_admin_client::SessionAdminClient;
use credbroker_proto::v1::{
    BindSessionRequest, DescribeSessionRequest, ExchangeTokenRequest, ExchangeTokenResponse,
    GetCredentialsRequest, GetCredentialsResponse, ListSessionsRequest, ListSessionsResponse,
    RevokeSessionRequest, RevokeSessionResponse, SessionInfo, describe_session_request,
    revoke_session_request,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

pub type Client = CredentialBrokerClient<Channel>;

/// An operator's connection to `credbroker.v1.SessionAdmin`: the client and the bearer token sent
/// as `authorization` metadata with every call (none: an anonymous caller).
#[derive(Debug, Clone)]
pub struct Admin {
    client: SessionAdminClient<Channel>,
    token: Option<String>,
}

impl Admin {
    pub fn new(channel: Channel, token: Option<&str>) -> Admin {
        Admin {
            client: SessionAdminClient::new(channel),
            token: token.map(str::to_string),
        }
    }

    /// The same connection with another bearer token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Admin {
        Admin {
            client: self.client.clone(),
            token: token.map(str::to_string),
        }
    }

    /// `message` with `authorization: Bearer <token>` when this caller has a token.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ASCII token"),
            );
        }
        request
    }
}

pub async fn bind(
    c: &mut Client,
    session_id: &str,
    token: &str,
    role_arn: &str,
) -> Result<SessionInfo, Status> {
    c.bind_session(BindSessionRequest {
        session_id: session_id.into(),
        token: token.into(),
        role_arn: role_arn.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// `GetCredentials`; `token` and `role_arn` may be empty.
pub async fn get_credentials(
    c: &mut Client,
    session_id: &str,
    token: &str,
    role_arn: &str,
) -> Result<GetCredentialsResponse, Status> {
    c.get_credentials(GetCredentialsRequest {
        session_id: session_id.into(),
        token: token.into(),
        role_arn: role_arn.into(),
        mcp: None,
    })
    .await
    .map(tonic::Response::into_inner)
}

pub async fn exchange(
    c: &mut Client,
    token: &str,
    role_arn: &str,
) -> Result<ExchangeTokenResponse, Status> {
    c.exchange_token(ExchangeTokenRequest {
        token: token.into(),
        role_arn: role_arn.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

pub async fn describe_by_id(c: &mut Admin, session_id: &str) -> Result<SessionInfo, Status> {
    let request = c.request(DescribeSessionRequest {
        selector: Some(describe_session_request::Selector::SessionId(
            session_id.into(),
        )),
    });
    c.client
        .describe_session(request)
        .await
        .map(tonic::Response::into_inner)
}

pub async fn describe_by_handle(c: &mut Admin, handle: &str) -> Result<SessionInfo, Status> {
    let request = c.request(DescribeSessionRequest {
        selector: Some(describe_session_request::Selector::SessionHandle(
            handle.into(),
        )),
    });
    c.client
        .describe_session(request)
        .await
        .map(tonic::Response::into_inner)
}

pub async fn list(
    c: &mut Admin,
    page_size: u32,
    page_token: &str,
    subject: &str,
) -> Result<ListSessionsResponse, Status> {
    let request = c.request(ListSessionsRequest {
        page_size,
        page_token: page_token.into(),
        subject: subject.into(),
    });
    c.client
        .list_sessions(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Every listed session (of `subject`, or all when empty), following `next_page_token`.
pub async fn list_all(c: &mut Admin, page_size: u32, subject: &str) -> Vec<SessionInfo> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..1000 {
        let page = list(c, page_size, &page_token, subject)
            .await
            .expect("ListSessions");
        all.extend(page.sessions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
    panic!("ListSessions paging did not end after 1000 pages");
}

pub async fn revoke_by_id(
    c: &mut Admin,
    session_id: &str,
) -> Result<RevokeSessionResponse, Status> {
    let request = c.request(RevokeSessionRequest {
        selector: Some(revoke_session_request::Selector::SessionId(
            session_id.into(),
        )),
    });
    c.client
        .revoke_session(request)
        .await
        .map(tonic::Response::into_inner)
}

pub async fn revoke_by_handle(
    c: &mut Admin,
    handle: &str,
) -> Result<RevokeSessionResponse, Status> {
    let request = c.request(RevokeSessionRequest {
        selector: Some(revoke_session_request::Selector::SessionHandle(
            handle.into(),
        )),
    });
    c.client
        .revoke_session(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The error of `result`, which must be `code`; panics naming `what` otherwise.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    what: &str,
) -> Status {
    match result {
        Ok(value) => panic!("{what}: expected {code:?}, got OK: {value:?}"),
        Err(status) if status.code() == code => status,
        Err(status) => panic!(
            "{what}: expected {code:?}, got {:?}: {}",
            status.code(),
            status.message()
        ),
    }
}

/// Seconds of a protobuf timestamp (0 when unset).
pub fn seconds(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref().map_or(0, |t| t.seconds)
}
