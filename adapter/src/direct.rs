//! Answers that need nothing of rmcp's session worker, computed in the task of the HTTP request
//! that asked: `tools/list`, and calls of the tools that never talk back while they run.
//!
//! rmcp serves a request of a stateful session by handing it to the session's worker task, which
//! hands it to the service loop, which spawns the handler; the answer goes back the same way and
//! then through the event pump (`events`). Four task hops for one answer: on this project's
//! 2-core benchmark machine most of the adapter's own CPU per call was there (kernel wake-ups and
//! the runtime, BENCHMARKS.md, issue 16). Here the same handler runs without them.
//!
//! Only after rmcp accepted the request: [`crate::sessions::Sessions`] asks [`Direct::answer`]
//! from `create_stream`, which rmcp calls once it has checked Host, `Accept`, `Content-Type`,
//! the session, `MCP-Protocol-Version` and the SEP-2243 headers, and the gate before it the
//! token, the session's owner and the caller's credentials. The request goes to the worker as
//! before when it is anything else: another method, a `_meta` (a progress token, a revision per
//! request), a tool that sends notifications ([`crate::tools::DIRECT_TOOLS`] lists the others),
//! arguments that do not deserialize (rmcp words that error), a session whose revision is not
//! known yet. Sessions exist only before revision 2026-07-28, so results get what rmcp's handler
//! does for those peers (`strip_result_type_for_legacy_peer`, `strip_non_object_output_for_legacy_peer`).
//!
//! What the client sees is the same JSON (a test compares both paths), and
//! `notifications/cancelled` stops a direct call as it stops one in the worker (`Sessions` keeps
//! the direct calls in flight by request id). How it comes follows `ADAPTER_ANSWER_FORMAT`:
//! - `json` (the default): the gate leaves a [`JsonAnswer`] in the request; the answer's future
//!   goes there instead of on an event stream, and the gate awaits it and sends one
//!   `application/json` body, as a bare handler would (no event stream, no event ids, nothing
//!   kept for resumption: the client sends the request again, and every direct tool may be sent
//!   again).
//! - `event-stream`: on the same event stream as the worker's answers, with the same event ids,
//!   priming and resumption (`events::Streams::direct_stream`).

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use http::request::Parts;
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, GetExtensions, GetMeta, RequestId, ServerJsonRpcMessage,
    ServerResult,
};

use crate::tools::BucketTools;

/// The direct path: the service rmcp would run for the session (the tools need nothing of a
/// session's own state but its `logging/setLevel`, which only the notifying tools use).
pub(crate) struct Direct {
    tools: Arc<BucketTools>,
    /// The `result` of `tools/list` as JSON, written once: the list is fixed for the process, and
    /// writing its schemas (≈ 9 KB) was most of a `tools/list`'s own CPU (BENCHMARKS.md).
    /// `None` if it could not be written (not seen): every answer is then written per request.
    tool_list_json: Option<Box<serde_json::value::RawValue>>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

/// A request answered here: its id, the future of the answer, and where the gate wants it when
/// it is to be sent as one JSON body.
pub(crate) struct Answer {
    pub(crate) id: RequestId,
    pub(crate) message: BoxFuture<'static, ServerJsonRpcMessage>,
    pub(crate) json: Option<JsonAnswer>,
    /// The answer already written as one JSON body, when it needs nothing to run (`tools/list`,
    /// when the gate wants JSON): `message` is then not polled.
    pub(crate) body: Option<Vec<u8>>,
}

/// A direct answer written as one JSON body (`Err`: it could not be written, not seen).
pub(crate) type JsonBody = Result<Vec<u8>, serde_json::Error>;

/// The future of an answer to send as one `application/json` body (`None` from it: the client
/// cancelled the request, nothing is sent). The gate leaves an empty one in the extensions of a
/// request that may be answered so (`ADAPTER_ANSWER_FORMAT=json`, a lone POSTed message); a direct
/// answer is put in it, and rmcp gets an event stream that ends at once.
#[derive(Clone, Default)]
pub(crate) struct JsonAnswer(Arc<Mutex<Option<BoxFuture<'static, Option<JsonBody>>>>>);

impl std::fmt::Debug for JsonAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonAnswer")
    }
}

impl JsonAnswer {
    pub(crate) fn put(&self, answer: BoxFuture<'static, Option<JsonBody>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(answer);
    }

    /// The answer put here, if the request was answered directly.
    pub(crate) fn take(&self) -> Option<BoxFuture<'static, Option<JsonBody>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Direct {
    pub(crate) fn new(tools: BucketTools) -> Self {
        let mut list = ServerResult::ListToolsResult(tools.tool_list(false));
        list.strip_result_type_for_legacy_peer();
        let tool_list_json = serde_json::value::to_raw_value(&list)
            .inspect_err(|error| {
                tracing::warn!(%error, "could not write the tool list as JSON once; writing it per request");
            })
            .ok();
        Self {
            tools: Arc::new(tools),
            tool_list_json,
        }
    }

    /// The answer to `message` computed without the session worker, or `None`: the worker
    /// answers (see the module doc for which).
    pub(crate) fn answer(&self, message: &ClientJsonRpcMessage) -> Option<Answer> {
        let ClientJsonRpcMessage::Request(request) = message else {
            return None;
        };
        if !request.request.get_meta().is_empty() {
            return None;
        }
        let id = request.id.clone();
        let json = request
            .request
            .extensions()
            .get::<Parts>()
            .and_then(|parts| parts.extensions.get::<JsonAnswer>())
            .cloned();
        let mut body = None;
        let answer: Option<BoxFuture<'static, Result<ServerResult, rmcp::ErrorData>>> =
            match &request.request {
                ClientRequest::ListToolsRequest(list)
                    if list
                        .params
                        .as_ref()
                        .is_none_or(|p| p.meta.is_none() && p.cursor.is_none()) =>
                {
                    if json.is_some() {
                        body = self.tool_list_body(&id);
                    }
                    let tools = self.tools.clone();
                    Some(Box::pin(async move {
                        Ok(ServerResult::ListToolsResult(tools.tool_list(false)))
                    }))
                }
                ClientRequest::CallToolRequest(call)
                    if call.params.meta.is_none()
                        && call.params.input_responses.is_none()
                        && call.params.request_state.is_none() =>
                {
                    match call.extensions.get::<Parts>().cloned() {
                        Some(parts) => self.tools.direct_call(&call.params, parts).map(
                            |call| -> BoxFuture<'static, _> {
                                Box::pin(async move { call.await.map(ServerResult::from) })
                            },
                        ),
                        None => None,
                    }
                }
                _ => None,
            };
        let answer = answer?;
        let reply_to = id.clone();
        Some(Answer {
            id,
            json,
            body,
            message: Box::pin(async move {
                match answer.await {
                    Ok(mut result) => {
                        // What rmcp's handler does to every result for a peer before 2026-07-28
                        // (sessions exist only there): no `resultType: "complete"`, no non-object
                        // tool output.
                        result.strip_result_type_for_legacy_peer();
                        result.strip_non_object_output_for_legacy_peer();
                        ServerJsonRpcMessage::response(result, reply_to)
                    }
                    Err(error) => ServerJsonRpcMessage::error(error, Some(reply_to)),
                }
            }),
        })
    }

    /// The answer to `tools/list` request `id` as one JSON body, around the list written once;
    /// rmcp's own response envelope, so the same JSON as `ServerJsonRpcMessage::response` of the
    /// list (a test compares them).
    fn tool_list_body(&self, id: &RequestId) -> Option<Vec<u8>> {
        let result = self.tool_list_json.as_deref()?;
        // Sized once: growing from serde_json's default would copy the ≈ 9 KB list several times.
        let mut body = Vec::with_capacity(result.get().len() + 64);
        serde_json::to_writer(
            &mut body,
            &rmcp::model::JsonRpcResponse {
                jsonrpc: rmcp::model::JsonRpcVersion2_0,
                id: id.clone(),
                result,
            },
        )
        .ok()?;
        Some(body)
    }
}
