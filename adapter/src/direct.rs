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
//! What the client sees does not change: the same JSON (a test compares both paths), on the
//! same event stream with the same event ids, priming and resumption
//! (`events::Streams::direct_stream`), and `notifications/cancelled` stops a direct call as it
//! stops one in the worker (`Sessions` keeps the direct calls in flight by request id).

use std::sync::Arc;

use futures::future::BoxFuture;
use http::request::Parts;
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, GetMeta, RequestId, ServerJsonRpcMessage, ServerResult,
};

use crate::tools::BucketTools;

/// The direct path: the service rmcp would run for the session (the tools need nothing of a
/// session's own state but its `logging/setLevel`, which only the notifying tools use).
pub(crate) struct Direct {
    tools: Arc<BucketTools>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

/// A request answered here: its id, and the future of the answer.
pub(crate) struct Answer {
    pub(crate) id: RequestId,
    pub(crate) message: BoxFuture<'static, ServerJsonRpcMessage>,
}

impl Direct {
    pub(crate) fn new(tools: BucketTools) -> Self {
        Self {
            tools: Arc::new(tools),
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
        let answer: Option<BoxFuture<'static, Result<ServerResult, rmcp::ErrorData>>> =
            match &request.request {
                ClientRequest::ListToolsRequest(list)
                    if list
                        .params
                        .as_ref()
                        .is_none_or(|p| p.meta.is_none() && p.cursor.is_none()) =>
                {
                    let result = self.tools.tool_list(false);
                    Some(Box::pin(async move {
                        Ok(ServerResult::ListToolsResult(result))
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
}
