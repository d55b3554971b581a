//! The S3 tools, one file per family, and what they share: the caller's S3 client and the shape
//! of results.
//!
//! Handlers are short because authentication is done before they run: the gate in front of rmcp
//! left a [`Caller`] in the HTTP request's extensions, and rmcp hands the request's
//! `http::request::Parts` to the handler. A handler that finds no authorized caller answers with
//! a tool error and makes no S3 request; there is no other credential it could use.
//!
//! Results are structured content plus the same JSON as text (the MCP spec's advice for clients
//! that predate structured content). Failures the caller can act on (an invalid argument, an S3
//! error such as `AccessDenied`, `NoSuchKey`, `NoSuchBucket`) are tool results with `isError` and
//! a machine-readable `error.code`, never transport errors.

mod access;
mod link;
mod list;
mod notify;
mod object;
mod put;
mod resources;

use std::{borrow::Cow, sync::Arc, time::SystemTime};

use aws_sdk_s3::Client;
use futures::future::BoxFuture;
use http::request::Parts;
use rmcp::{
    ServerHandler,
    handler::server::router::tool::ToolRouter,
    model::{
        CallToolResult, ContentBlock, Implementation, ProtocolVersion, ServerCapabilities,
        ServerConfig,
    },
    tool_handler,
};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::{
    auth::Caller,
    broker::Issued,
    s3::{S3Clients, S3Failure},
};

/// The MCP server: S3 tools on broker credentials.
#[derive(Clone)]
pub(crate) struct BucketTools {
    s3: Arc<S3Clients>,
    tool_router: ToolRouter<Self>,
    /// `ADAPTER_LISTED_BUCKETS`: what `resources/list` offers a token without a `buckets` claim.
    listed_buckets: Arc<Vec<String>>,
    /// This session's `logging/setLevel`.
    log_level: notify::LogLevel,
}

impl BucketTools {
    pub(crate) fn new(s3: Arc<S3Clients>, listed_buckets: Arc<Vec<String>>) -> Self {
        Self {
            s3,
            listed_buckets,
            log_level: notify::LogLevel::default(),
            tool_router: Self::list_router()
                + Self::object_router()
                + Self::put_router()
                + Self::link_router()
                + Self::access_router(),
        }
    }

    /// The S3 client for this request's caller, or the tool error that says why there is none.
    fn session(&self, parts: &Parts) -> Result<S3Session, CallToolResult> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::Authorized(issued)) => Ok(S3Session {
                client: self.s3.client(&issued.credentials, issued.expires_at),
                issued: issued.clone(),
            }),
            Some(Caller::Unserved { code, reason }) => Err(failure(code, reason.clone(), json!({}))),
            Some(Caller::Anonymous) | None => Err(failure(
                "Unauthenticated",
                "no credentials for this request: send `Authorization: Bearer <JWT>` on every request"
                    .into(),
                json!({}),
            )),
        }
    }
}

impl BucketTools {
    /// The caller's S3 client for a request that is not a tool call (resources, completions),
    /// or the JSON-RPC error that says why there is none (no S3 request is made).
    fn caller(
        &self,
        context: &rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<S3Session, rmcp::ErrorData> {
        let parts = context.extensions.get::<Parts>().ok_or_else(|| {
            rmcp::ErrorData::internal_error("no HTTP request for this MCP request", None)
        })?;
        self.session(parts).map_err(|refusal| {
            let error = refusal
                .structured_content
                .as_ref()
                .and_then(|value| value.get("error"))
                .cloned()
                .unwrap_or_default();
            rmcp::ErrorData::new(
                rmcp::model::ErrorCode(-32001),
                error["message"]
                    .as_str()
                    .unwrap_or("no credentials for this request")
                    .to_string(),
                Some(json!({ "code": error["code"] })),
            )
        })
    }
}

/// An S3 client and the broker answer it was built from.
pub(crate) struct S3Session {
    pub(crate) client: Client,
    pub(crate) issued: Arc<Issued>,
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BucketTools {
    /// rmcp's routing, counted in `mcp_adapter_tool_calls_total{tool,outcome}`.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let tool = self.tool_label(&request.name);
        let span = crate::telemetry::tool_span(
            context.extensions.get::<Parts>(),
            tool,
            bucket_argument(&request),
        );
        let context = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        observed(tool, span, self.tool_router.call(context)).await
    }

    /// The tool list, built by [`BucketTools::tool_list`] (which `direct` uses too).
    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        let cache_hints = context
            .protocol_version()
            .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28);
        Ok(self.tool_list(cache_hints))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, rmcp::ErrorData> {
        Ok(resources::templates())
    }

    async fn list_resources(
        &self,
        request: Option<rmcp::model::PaginatedRequestParams>,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, rmcp::ErrorData> {
        let s3 = self.caller(&context)?;
        let cursor = request.as_ref().and_then(|r| r.cursor.as_deref());
        self.list_resources_page(&s3, cursor).await
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, rmcp::ErrorData> {
        let s3 = self.caller(&context)?;
        Ok(self.read_object(&s3, &request.uri).await?.into())
    }

    async fn complete(
        &self,
        request: rmcp::model::CompleteRequestParams,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CompleteResult, rmcp::ErrorData> {
        let s3 = self.caller(&context)?;
        self.complete_argument(&s3, &request).await
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        self.log_level.set(request.level);
        Ok(())
    }

    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_completions()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new(
            "mcp-adapter",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "S3 tools that run on your own AWS credentials, issued per request from your \
                 token. Send `Authorization: Bearer <JWT>` on every request (initialize may go \
                 without one)."
                .to_string(),
        )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(crate::protocol::SUPPORTED)
    }
}

impl BucketTools {
    /// The `tool` label of a call: the tool's name, or `unknown` for a name that is not a tool
    /// (a label per made-up name would let callers grow the metrics without bound).
    fn tool_label(&self, name: &str) -> &'static str {
        DIRECT_TOOLS
            .iter()
            .chain(NOTIFYING_TOOLS)
            .find(|tool| **tool == name && self.tool_router.has_route(name))
            .copied()
            .unwrap_or("unknown")
    }

    /// Every tool, in one page: what rmcp's generated `list_tools` answers. `cache_hints`: the
    /// revision (2026-07-28 and later) has `ttlMs` and `cacheScope`.
    pub(crate) fn tool_list(&self, cache_hints: bool) -> rmcp::model::ListToolsResult {
        rmcp::model::ListToolsResult {
            result_type: Some(rmcp::model::ResultType::COMPLETE),
            tools: self.tool_router.list_all(),
            meta: None,
            next_cursor: None,
            ttl_ms: cache_hints.then_some(0),
            cache_scope: cache_hints.then_some(rmcp::model::CacheScope::Public),
        }
    }

    /// The call of one of [`DIRECT_TOOLS`] as a future that needs nothing of rmcp's session
    /// worker (`direct`), observed like [`ServerHandler::call_tool`]. `None` for any other tool,
    /// and for arguments that do not deserialize: rmcp words that error, so the worker answers.
    pub(crate) fn direct_call(
        self: &Arc<Self>,
        params: &rmcp::model::CallToolRequestParams,
        parts: Parts,
    ) -> Option<BoxFuture<'static, Result<rmcp::model::CallToolResponse, rmcp::ErrorData>>> {
        use rmcp::handler::server::{tool::Extension, wrapper::Parameters};
        use serde::Deserialize;
        let arguments = params.arguments.as_ref()?;
        let tool = self.tool_label(&params.name);
        let span = crate::telemetry::tool_span(Some(&parts), tool, bucket_argument(params));
        let tools = self.clone();
        // One arm per tool: its arguments deserialized here (`None` on failure), its handler
        // called in the returned future.
        macro_rules! call {
            ($args:ty, $handler:ident) => {{
                let args = <$args>::deserialize(arguments).ok()?;
                Box::pin(async move { tools.$handler(Extension(parts), Parameters(args)).await })
            }};
        }
        let call: BoxFuture<'static, Result<CallToolResult, rmcp::ErrorData>> = match tool {
            "bucket_objects_list" => call!(list::ListArgs, bucket_objects_list),
            "bucket_object_info" => call!(object::InfoArgs, bucket_object_info),
            "bucket_object_text" => call!(object::TextArgs, bucket_object_text),
            "bucket_object_link" => call!(link::LinkArgs, bucket_object_link),
            "bucket_access_check" => call!(access::AccessArgs, bucket_access_check),
            _ => return None,
        };
        Some(Box::pin(async move {
            observed(tool, span, async move { call.await.map(Into::into) }).await
        }))
    }
}

/// The tools that never talk back while they run (no progress, no log messages): one to three
/// bounded S3 requests each. `direct` may answer them without rmcp's session worker.
pub(crate) const DIRECT_TOOLS: &[&str] = &[
    "bucket_access_check",
    "bucket_object_info",
    "bucket_object_link",
    "bucket_object_text",
    "bucket_objects_list",
];

/// The tools that send `notifications/progress` or `notifications/message` on the session, which
/// only rmcp's worker can deliver.
const NOTIFYING_TOOLS: &[&str] = &["bucket_object_fetch", "bucket_objects_put"];

/// The `bucket` argument, for the tool's span.
fn bucket_argument(params: &rmcp::model::CallToolRequestParams) -> Option<&str> {
    params
        .arguments
        .as_ref()
        .and_then(|arguments| arguments.get("bucket"))
        .and_then(Value::as_str)
}

/// Runs a tool call in its span and counts it in `mcp_adapter_tool_calls_total{tool,outcome}`.
async fn observed(
    tool: &str,
    span: tracing::Span,
    call: impl Future<Output = Result<rmcp::model::CallToolResponse, rmcp::ErrorData>>,
) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
    let response = call.instrument(span.clone()).await;
    let result = outcome(&response);
    if result != "ok" {
        crate::telemetry::record_tool_failure(&span, result);
    }
    crate::metrics::tool_call(tool, result);
    response
}

/// The `outcome` label of a finished tool call.
fn outcome(response: &Result<rmcp::model::CallToolResponse, rmcp::ErrorData>) -> &'static str {
    let result = match response {
        Ok(rmcp::model::CallToolResponse::Complete(result)) => result,
        Ok(_) => return "ok",
        Err(_) => return "protocol_error",
    };
    if result.is_error != Some(true) {
        return "ok";
    }
    let error = result
        .structured_content
        .as_ref()
        .and_then(|value| value.get("error"));
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match code {
        "CredentialBrokerUnavailable" | "CredentialBrokerRejected" => "broker_error",
        "Unauthenticated" => "unauthorized",
        _ if error.is_some_and(|e| e.get("operation").is_some()) => "s3_error",
        _ => "tool_error",
    }
}

/// A successful result: `value` as structured content and as JSON text.
pub(crate) fn success(value: Value) -> CallToolResult {
    CallToolResult::structured(value)
}

/// A failed result: a readable line first, then the structured error
/// `{"error": {"code", "message", …details}}` as content and as JSON text.
pub(crate) fn failure(code: &str, message: String, details: Value) -> CallToolResult {
    let mut error = json!({ "code": code, "message": message });
    if let (Some(error), Value::Object(details)) = (error.as_object_mut(), details) {
        error.extend(details);
    }
    let value = json!({ "error": error });
    let mut result = CallToolResult::structured_error(value);
    result
        .content
        .insert(0, ContentBlock::text(format!("{code}: {message}")));
    result
}

/// An argument the caller must change; names the argument.
pub(crate) fn invalid_argument(argument: &str, problem: impl std::fmt::Display) -> CallToolResult {
    failure(
        "InvalidArgument",
        format!("invalid argument `{argument}`: {problem}"),
        json!({ "argument": argument }),
    )
}

/// An S3 request that failed, with the AWS error code.
pub(crate) fn s3_failure(operation: &str, target: &str, failure_: S3Failure) -> CallToolResult {
    failure(
        &failure_.code,
        format!("S3 {operation} on {target} failed: {}", failure_.message),
        json!({ "operation": operation, "target": target, "http_status": failure_.http_status }),
    )
}

/// RFC 3339 text of an S3 timestamp.
pub(crate) fn timestamp(time: Option<&aws_smithy_types::DateTime>) -> Value {
    time.and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// RFC 3339 text of a system time.
pub(crate) fn system_time(time: SystemTime) -> Value {
    timestamp(Some(&aws_smithy_types::DateTime::from(time)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_errors_with_a_code_and_a_readable_line() {
        let result = invalid_argument("max_keys", "must be between 1 and 1000");
        assert_eq!(result.is_error, Some(true));
        let structured = result.structured_content.clone().unwrap();
        assert_eq!(structured["error"]["code"], "InvalidArgument");
        assert_eq!(structured["error"]["argument"], "max_keys");
        let first = result.content[0].as_text().unwrap().text.clone();
        assert!(
            first.starts_with("InvalidArgument: invalid argument `max_keys`"),
            "{first}"
        );
    }

    #[test]
    fn s3_failures_carry_the_aws_code() {
        let result = s3_failure(
            "PutObject",
            "s3://b/k",
            S3Failure {
                code: "AccessDenied".into(),
                message: "not authorized".into(),
                http_status: Some(403),
            },
        );
        assert_eq!(result.is_error, Some(true));
        assert_eq!(
            result.structured_content.unwrap()["error"]["code"],
            "AccessDenied"
        );
    }

    #[test]
    fn a_request_without_a_caller_gets_no_client() {
        let tools = BucketTools::new(Arc::new(S3Clients::new("us-east-1", None)), Arc::default());
        let (parts, ()) = http::Request::new(()).into_parts();
        let refused = tools.session(&parts).err().unwrap();
        assert_eq!(
            refused.structured_content.unwrap()["error"]["code"],
            "Unauthenticated"
        );

        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.extensions.insert(Caller::Unserved {
            code: "CredentialBrokerUnavailable",
            reason: "credential broker at x unavailable".into(),
        });
        let refused = tools.session(&parts).err().unwrap();
        assert_eq!(
            refused.structured_content.unwrap()["error"]["code"],
            "CredentialBrokerUnavailable"
        );
    }

    #[test]
    fn every_tool_is_either_direct_or_notifying_and_labelled_by_name() {
        let tools = BucketTools::new(Arc::new(S3Clients::new("us-east-1", None)), Arc::default());
        let mut classified: Vec<&str> = DIRECT_TOOLS
            .iter()
            .chain(NOTIFYING_TOOLS)
            .copied()
            .collect();
        classified.sort_unstable();
        let routed: Vec<String> = tools
            .tool_router
            .list_all()
            .into_iter()
            .map(|tool| tool.name.to_string())
            .collect();
        assert_eq!(
            routed, classified,
            "a new tool must be put in one of the two lists"
        );
        for name in &routed {
            assert_eq!(tools.tool_label(name), name);
        }
        assert_eq!(tools.tool_label("made_up"), "unknown");
    }

    #[test]
    fn every_tool_of_the_issue_is_listed() {
        let tools = BucketTools::new(Arc::new(S3Clients::new("us-east-1", None)), Arc::default());
        let names: Vec<String> = tools
            .tool_router
            .list_all()
            .into_iter()
            .map(|tool| tool.name.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "bucket_access_check",
                "bucket_object_fetch",
                "bucket_object_info",
                "bucket_object_link",
                "bucket_object_text",
                "bucket_objects_list",
                "bucket_objects_put"
            ]
        );
    }
}
