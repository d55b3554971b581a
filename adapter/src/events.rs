//! Each session's server-to-client event streams: event ids unique within the session, priming
//! events only for the revisions that have them, and a bounded buffer of recent events that a
//! reconnecting client can resume from with `Last-Event-ID`.
//!
//! rmcp's local session manager numbers events per stream (every standalone GET stream starts
//! again at `0`, which the transport spec forbids: ids MUST be unique across all streams of a
//! session), sends an empty-data priming event whatever the negotiated revision (older clients
//! `JSON.parse("")` and fail), and loses a tool call's result when the POST's connection drops.
//! [`Streams`] sits between rmcp and the HTTP answer and fixes all three:
//!
//! * every event of a session gets the next number of one per-session counter;
//! * a priming event (id, empty data, `retry`) opens a stream only in sessions that negotiated
//!   2025-11-25 or later (rmcp's own priming is switched off in `server`);
//! * a POST's answer stream is pumped by a task of its own into the session's buffer, so the tool
//!   call runs to its end and its result is kept even when nobody reads the HTTP answer any more;
//!   a GET with `Last-Event-ID` gets the events after that id of the same stream (and the rest
//!   of it as it comes).
//!
//! The buffer is bounded per session by [`EventLimits`] (count, bytes, age) and across all
//! sessions by a total byte budget: past it, a session that adds an event keeps only its newest
//! one, so many sessions with large results cannot grow the process without bound. What falls out
//! of a buffer can no longer be resumed. Whether the caller may resume at all is decided before this module
//! runs: the gate lets a GET reach rmcp only with the session owner's token (`auth`), and an id
//! is looked up only among the events of the session the request names.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{SinkExt, Stream, StreamExt};
use rmcp::model::{ProtocolVersion, ServerJsonRpcMessage, ServerResult};
use rmcp::transport::common::server_side_http::{ServerSseMessage, SessionId};
use tokio::sync::watch;

/// The `retry:` a priming event suggests (rmcp's default).
const PRIMING_RETRY: Duration = Duration::from_secs(3);

/// Events in flight from a pump to a connected client (rmcp's own channel size).
const CHANNEL: usize = 16;

/// How much of a session's recent events is kept for resumption.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventLimits {
    /// Events kept per session.
    pub(crate) count: usize,
    /// Bytes of JSON kept per session.
    pub(crate) bytes: usize,
    /// How long an event stays resumable.
    pub(crate) age: Duration,
    /// Bytes of JSON kept across all sessions of the process.
    pub(crate) total_bytes: usize,
}

impl Default for EventLimits {
    /// 256 events, 4 MiB, 60 s per session; 256 MiB in all.
    fn default() -> Self {
        Self {
            count: 256,
            bytes: 4 << 20,
            age: Duration::from_secs(60),
            total_bytes: 256 << 20,
        }
    }
}

/// Which stream of a session an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKey {
    /// The answer stream of one POST (numbered per session).
    Request(u64),
    /// The standalone GET stream.
    Common,
}

/// One kept event.
#[derive(Debug)]
struct Kept {
    id: u64,
    stream: StreamKey,
    at: Instant,
    size: usize,
    event: ServerSseMessage,
}

/// One session's counter, buffer and streams.
#[derive(Debug, Default)]
struct Buffer {
    next_id: u64,
    next_request: u64,
    events: VecDeque<Kept>,
    bytes: usize,
    /// Request streams whose pump still runs.
    open: Vec<u64>,
    /// The highest rmcp index of the standalone stream already passed on (rmcp replays its own
    /// cache of that stream to every new GET; those events must not come twice).
    common_seen: Option<u64>,
}

impl Buffer {
    /// Drops the oldest events past the session's limits; past the process's total, all but the
    /// newest. `total` is the bytes kept by all sessions.
    fn prune(&mut self, limits: &EventLimits, now: Instant, total: &AtomicUsize) {
        while let Some(front) = self.events.front() {
            let too_old = now.duration_since(front.at) >= limits.age;
            let over_total =
                self.events.len() > 1 && total.load(Ordering::Relaxed) > limits.total_bytes;
            if too_old
                || over_total
                || self.events.len() > limits.count
                || self.bytes > limits.bytes
            {
                self.bytes -= front.size;
                total.fetch_sub(front.size, Ordering::Relaxed);
                self.events.pop_front();
            } else {
                break;
            }
        }
    }
}

/// What [`Streams`] keeps for one session.
#[derive(Debug)]
struct Session {
    revision: Mutex<Option<ProtocolVersion>>,
    buffer: Mutex<Buffer>,
    /// Bumped on every new event or closed stream, for resumed readers waiting for more.
    changed: watch::Sender<u64>,
    /// Bytes kept by all sessions (shared with [`Streams`]).
    total: Arc<AtomicUsize>,
}

impl Drop for Session {
    /// A session's events leave the total with it.
    fn drop(&mut self) {
        let kept = self.buffer().bytes;
        self.total.fetch_sub(kept, Ordering::Relaxed);
    }
}

impl Session {
    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `event` the session's next id and keeps a copy.
    fn push(
        &self,
        limits: &EventLimits,
        stream: StreamKey,
        mut event: ServerSseMessage,
    ) -> ServerSseMessage {
        let now = Instant::now();
        let mut buffer = self.buffer();
        let id = buffer.next_id;
        buffer.next_id += 1;
        event.event_id = Some(id.to_string());
        let size = event.message.as_ref().map_or(0, |m| json_len(m.as_ref())) + 32;
        buffer.bytes += size;
        self.total.fetch_add(size, Ordering::Relaxed);
        buffer.events.push_back(Kept {
            id,
            stream,
            at: now,
            size,
            event: event.clone(),
        });
        buffer.prune(limits, now, &self.total);
        drop(buffer);
        self.changed.send_modify(|n| *n += 1);
        event
    }

    /// Opens the session's next request stream (resumable until [`Session::close_request`]),
    /// with its priming event where the revision has them.
    fn open_request(&self, limits: &EventLimits) -> (u64, Option<ServerSseMessage>) {
        let n = self.open();
        let priming = self.primes().then(|| {
            self.push(
                limits,
                StreamKey::Request(n),
                ServerSseMessage::priming("", PRIMING_RETRY),
            )
        });
        (n, priming)
    }

    /// Numbers a request that is being answered and counts it open (the session is answering).
    fn open(&self) -> u64 {
        let mut buffer = self.buffer();
        let n = buffer.next_request;
        buffer.next_request += 1;
        buffer.open.push(n);
        n
    }

    /// Ends request stream `n`: a resumed reader waiting on it ends too.
    fn close_request(&self, n: u64) {
        self.buffer().open.retain(|open| *open != n);
        self.changed.send_modify(|c| *c += 1);
    }

    fn primes(&self) -> bool {
        self.revision
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|version| version.as_str() >= ProtocolVersion::V_2025_11_25.as_str())
    }
}

/// The length of a message's JSON, counted as it is written rather than kept: the buffer's
/// byte limits need the size, not a second copy of every answer (an allocation and a copy per
/// event; BENCHMARKS.md, issue 16).
fn json_len(message: &ServerJsonRpcMessage) -> usize {
    /// Counts bytes and drops them.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, message) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}

/// Why a `Last-Event-ID` cannot be resumed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ResumeError {
    /// Not an id this adapter hands out (a number).
    #[error("Last-Event-ID is not an event id of this server")]
    Malformed,
    /// Not among the session's kept events: never sent in this session, or older than the
    /// resumption window (count, bytes, age).
    #[error("Last-Event-ID names no event this session still keeps; start a new request")]
    Unknown,
}

/// The per-session event state of all sessions (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct Streams {
    limits: EventLimits,
    sessions: Mutex<HashMap<SessionId, Arc<Session>>>,
    /// Bytes kept by all sessions, against `limits.total_bytes`.
    total: Arc<AtomicUsize>,
}

impl Streams {
    pub(crate) fn new(limits: EventLimits) -> Self {
        Self {
            limits,
            sessions: Mutex::new(HashMap::new()),
            total: Arc::default(),
        }
    }

    fn session(&self, id: &SessionId) -> Arc<Session> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Session {
                    revision: Mutex::new(None),
                    buffer: Mutex::new(Buffer::default()),
                    changed: watch::channel(0).0,
                    total: self.total.clone(),
                })
            })
            .clone()
    }

    fn existing(&self, id: &SessionId) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Notes the revision a session negotiated, from rmcp's answer to its `initialize`.
    pub(crate) fn initialized(&self, id: &SessionId, answer: &ServerJsonRpcMessage) {
        if let ServerJsonRpcMessage::Response(response) = answer
            && let ServerResult::InitializeResult(result) = &response.result
        {
            *self
                .session(id)
                .revision
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(result.protocol_version.clone());
        }
    }

    /// The revision a session negotiated (`None`: unknown session or no initialize answer yet).
    pub(crate) fn revision(&self, id: &str) -> Option<ProtocolVersion> {
        let session = self.existing(&SessionId::from(id))?;
        let revision = session.revision.lock().unwrap_or_else(|e| e.into_inner());
        revision.clone()
    }

    /// Whether a request stream of the session is still open (its answer not yet complete).
    pub(crate) fn answering(&self, id: &SessionId) -> bool {
        self.existing(id)
            .is_some_and(|session| !session.buffer().open.is_empty())
    }

    /// The sessions something is kept for.
    pub(crate) fn ids(&self) -> Vec<SessionId> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Frees what no session may resume any more: events past the age limit in every session,
    /// and everything of the sessions in `gone` (closed sessions).
    pub(crate) fn sweep(&self, gone: &[SessionId]) {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for id in gone {
            sessions.remove(id);
        }
        for session in sessions.values() {
            session.buffer().prune(&self.limits, now, &self.total);
        }
    }

    /// Drops everything kept for a closed session.
    pub(crate) fn forget(&self, id: &SessionId) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The answer stream of one POST: a task reads rmcp's stream to its end, numbering and
    /// keeping every event, and passes them on while the client still reads.
    pub(crate) fn request_stream<S>(
        &self,
        id: &SessionId,
        inner: S,
    ) -> impl Stream<Item = ServerSseMessage> + Send + Sync + 'static + use<S>
    where
        S: Stream<Item = ServerSseMessage> + Send + 'static,
    {
        let session = self.session(id);
        let limits = self.limits;
        let (n, priming) = session.open_request(&limits);
        let key = StreamKey::Request(n);
        let (mut tx, rx) = mpsc::channel(CHANNEL);
        if let Some(priming) = priming {
            let _ = tx.try_send(priming);
        }
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut inner = std::pin::pin!(inner);
            while let Some(event) = inner.next().await {
                let event = session.push(&limits, key, event);
                if let Some(sender) = &mut tx
                    && sender.send(event).await.is_err()
                {
                    // The client went away; keep the rest for a resuming GET.
                    tx = None;
                }
            }
            session.close_request(n);
        });
        rx
    }

    /// The answer stream of one POST whose answer is computed by `answer` in the task that reads
    /// the stream (`direct`): no pump task, no channel. The answer is numbered and kept like a
    /// pumped one; if the client goes away first, the rest of `answer` runs in a task of its own
    /// and its result is kept for a resuming GET, as the pump would. `answer` gives `None` for a
    /// request cancelled by the client: the stream ends without an answer.
    pub(crate) fn direct_stream(
        &self,
        id: &SessionId,
        answer: BoxFuture<'static, Option<ServerJsonRpcMessage>>,
    ) -> DirectStream {
        let session = self.session(id);
        let (n, priming) = session.open_request(&self.limits);
        DirectStream {
            priming,
            pending: Mutex::new(Some(Pending {
                answer,
                session,
                limits: self.limits,
                n,
            })),
        }
    }

    /// Marks session `id` as answering a request that has no event stream (a JSON answer, see
    /// `direct`) until the guard is dropped, so that the reaper does not take it for idle.
    pub(crate) fn answering_now(&self, id: &SessionId) -> Answering {
        let session = self.session(id);
        let n = session.open();
        Answering { session, n }
    }

    /// The standalone GET stream: rmcp's events renumbered, without the ones an earlier GET of
    /// the session already got, after a priming event where the revision has them.
    pub(crate) fn common_stream<S>(
        &self,
        id: &SessionId,
        inner: S,
    ) -> impl Stream<Item = ServerSseMessage> + Send + Sync + 'static + use<S>
    where
        S: Stream<Item = ServerSseMessage> + Send + Sync + 'static,
    {
        let session = self.session(id);
        let limits = self.limits;
        let priming = session.primes().then(|| {
            session.push(
                &limits,
                StreamKey::Common,
                ServerSseMessage::priming("", PRIMING_RETRY),
            )
        });
        let events = inner.filter_map(move |event| {
            let rmcp_index = event
                .event_id
                .as_deref()
                .and_then(|id| id.parse::<u64>().ok());
            let fresh = {
                let mut buffer = session.buffer();
                match rmcp_index {
                    Some(index) if buffer.common_seen.is_some_and(|seen| index <= seen) => false,
                    Some(index) => {
                        buffer.common_seen = Some(index);
                        true
                    }
                    None => true,
                }
            };
            let out = fresh.then(|| session.push(&limits, StreamKey::Common, event));
            futures::future::ready(out)
        });
        futures::stream::iter(priming).chain(events)
    }

    /// The events after `last_event_id` of the stream it belongs to, in this session only. For a
    /// POST's stream whose pump still runs, the stream goes on with its later events and ends with
    /// it; for the standalone stream, only what is kept (the caller chains a new live stream).
    pub(crate) fn resume(
        &self,
        id: &SessionId,
        last_event_id: &str,
    ) -> Result<
        (
            Resumed,
            impl Stream<Item = ServerSseMessage> + Send + Sync + 'static + use<>,
        ),
        ResumeError,
    > {
        let last: u64 = last_event_id
            .trim()
            .parse()
            .map_err(|_| ResumeError::Malformed)?;
        let session = self.existing(id).ok_or(ResumeError::Unknown)?;
        let key = {
            let mut buffer = session.buffer();
            buffer.prune(&self.limits, Instant::now(), &self.total);
            buffer
                .events
                .iter()
                .find(|kept| kept.id == last)
                .map(|kept| kept.stream)
                .ok_or(ResumeError::Unknown)?
        };
        let resumed = match key {
            StreamKey::Common => Resumed::Common,
            StreamKey::Request(_) => Resumed::Request,
        };
        let changed = session.changed.subscribe();
        let stream = futures::stream::unfold(
            (session, last, false, changed),
            move |(session, mut cursor, done, mut changed)| async move {
                if done {
                    return None;
                }
                loop {
                    changed.borrow_and_update();
                    let (batch, open) = {
                        let buffer = session.buffer();
                        let batch: Vec<ServerSseMessage> = buffer
                            .events
                            .iter()
                            .filter(|kept| kept.stream == key && kept.id > cursor)
                            .map(|kept| kept.event.clone())
                            .collect();
                        let open = match key {
                            StreamKey::Request(n) => buffer.open.contains(&n),
                            StreamKey::Common => false,
                        };
                        (batch, open)
                    };
                    if let Some(last) = batch.last().and_then(|e| e.event_id.as_deref()) {
                        cursor = last.parse().unwrap_or(cursor);
                        return Some((
                            futures::stream::iter(batch),
                            (session, cursor, !open, changed),
                        ));
                    }
                    if !open || changed.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
        .flatten();
        Ok((resumed, stream))
    }
}

/// See [`Streams::direct_stream`].
pub(crate) struct DirectStream {
    priming: Option<ServerSseMessage>,
    /// Behind a `Mutex` only so that the stream is `Sync` (rmcp asks for it); polling and
    /// dropping reach it through `get_mut`, without locking.
    pending: Mutex<Option<Pending>>,
}

/// An answer not yet sent.
struct Pending {
    answer: BoxFuture<'static, Option<ServerJsonRpcMessage>>,
    session: Arc<Session>,
    limits: EventLimits,
    n: u64,
}

/// Numbers and keeps the answer of request stream `n` (if any), which ends with it.
fn finish(
    session: &Session,
    limits: &EventLimits,
    n: u64,
    message: Option<ServerJsonRpcMessage>,
) -> Option<ServerSseMessage> {
    let event = message.map(|message| {
        session.push(
            limits,
            StreamKey::Request(n),
            ServerSseMessage::from_message(message),
        )
    });
    session.close_request(n);
    event
}

impl Stream for DirectStream {
    type Item = ServerSseMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServerSseMessage>> {
        let this = self.get_mut();
        if let Some(priming) = this.priming.take() {
            return Poll::Ready(Some(priming));
        }
        let slot = this.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        let Some(pending) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        let message = std::task::ready!(pending.answer.as_mut().poll(cx));
        let Some(pending) = slot.take() else {
            return Poll::Ready(None);
        };
        Poll::Ready(finish(
            &pending.session,
            &pending.limits,
            pending.n,
            message,
        ))
    }
}

impl Drop for DirectStream {
    /// The client went away before the answer: it is still computed and kept (see
    /// [`Streams::direct_stream`]).
    fn drop(&mut self) {
        let slot = self.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        let Some(Pending {
            answer,
            session,
            limits,
            n,
        }) = slot.take()
        else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let message = answer.await;
                finish(&session, &limits, n, message);
            });
        } else {
            session.close_request(n);
        }
    }
}

/// See [`Streams::answering_now`].
pub(crate) struct Answering {
    session: Arc<Session>,
    n: u64,
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.session.close_request(self.n);
    }
}

/// Which kind of stream a resumed GET continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resumed {
    /// A POST's answer stream: it ends with that request.
    Request,
    /// The standalone stream: the caller continues it with a new live standalone stream.
    Common,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{EmptyResult, JsonRpcResponse, NumberOrString, ServerJsonRpcMessage};

    fn message(n: i64) -> ServerSseMessage {
        ServerSseMessage::from_message(ServerJsonRpcMessage::Response(JsonRpcResponse {
            jsonrpc: Default::default(),
            id: NumberOrString::Number(n),
            result: ServerResult::EmptyResult(EmptyResult {}),
        }))
    }

    fn ids(events: &[ServerSseMessage]) -> Vec<u64> {
        events
            .iter()
            .map(|e| e.event_id.as_deref().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn an_event_is_sized_as_the_bytes_of_its_json() {
        for n in [0, 7, 123_456] {
            let event = message(n);
            let m = event.message.as_deref().unwrap();
            assert_eq!(json_len(m), serde_json::to_vec(m).unwrap().len());
        }
    }

    #[tokio::test]
    async fn ids_are_unique_across_the_streams_of_a_session() {
        let streams = Streams::default();
        let session: SessionId = "s".into();
        let a: Vec<_> = streams
            .request_stream(&session, futures::stream::iter([message(1), message(2)]))
            .collect()
            .await;
        let b: Vec<_> = streams
            .common_stream(&session, futures::stream::iter([message(3)]))
            .collect()
            .await;
        let c: Vec<_> = streams
            .request_stream(&session, futures::stream::iter([message(4)]))
            .collect()
            .await;
        let mut all = [ids(&a), ids(&b), ids(&c)].concat();
        assert_eq!(all.len(), 4);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4, "an id repeated: {a:?} {b:?} {c:?}");
    }

    #[tokio::test]
    async fn a_dropped_answer_is_resumed_from_the_last_id_seen_in_its_session_only() {
        let streams = Streams::default();
        let session: SessionId = "s".into();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut answer = Box::pin(streams.request_stream(&session, rx));
        tx.unbounded_send(message(1)).unwrap();
        let first = answer.next().await.unwrap();
        drop(answer);
        // The result arrives after the client went away.
        tx.unbounded_send(message(2)).unwrap();
        drop(tx);
        let first_id = first.event_id.clone().unwrap();
        assert!(
            streams.resume(&"other".into(), &first_id).is_err(),
            "another session never sees these events"
        );
        let (kind, rest) = streams.resume(&session, &first_id).unwrap();
        assert_eq!(kind, Resumed::Request);
        let rest: Vec<_> = rest.collect().await;
        assert_eq!(rest.len(), 1);
        let json = serde_json::to_value(rest[0].message.as_deref().unwrap()).unwrap();
        assert_eq!(json["id"], 2);
        assert!(matches!(
            streams.resume(&session, "not-a-number"),
            Err(ResumeError::Malformed)
        ));
    }

    #[tokio::test]
    async fn priming_only_from_2025_11_25() {
        for (version, primes) in [
            (ProtocolVersion::V_2025_03_26, false),
            (ProtocolVersion::V_2025_06_18, false),
            (ProtocolVersion::V_2025_11_25, true),
        ] {
            let streams = Streams::default();
            let session: SessionId = "s".into();
            *streams.session(&session).revision.lock().unwrap() = Some(version.clone());
            let events: Vec<_> = streams
                .request_stream(&session, futures::stream::iter([message(1)]))
                .collect()
                .await;
            let priming = events.iter().filter(|e| e.message.is_none()).count();
            assert_eq!(priming, usize::from(primes), "{version}");
        }
    }

    #[tokio::test]
    async fn the_buffer_keeps_at_most_its_count_and_bytes() {
        let streams = Streams::new(EventLimits {
            count: 3,
            bytes: 1 << 20,
            age: Duration::from_secs(60),
            total_bytes: usize::MAX,
        });
        let session: SessionId = "s".into();
        let events: Vec<_> = streams
            .request_stream(&session, futures::stream::iter((0..10).map(message)))
            .collect()
            .await;
        let kept = streams.session(&session).buffer().events.len();
        assert_eq!(kept, 3);
        // The oldest ids are gone: resuming from them is refused, from a kept one works.
        assert!(matches!(
            streams.resume(&session, events[0].event_id.as_deref().unwrap()),
            Err(ResumeError::Unknown)
        ));
        assert!(
            streams
                .resume(&session, events[8].event_id.as_deref().unwrap())
                .is_ok()
        );

        let small = Streams::new(EventLimits {
            count: 100,
            bytes: 200,
            age: Duration::from_secs(60),
            total_bytes: usize::MAX,
        });
        let _: Vec<_> = small
            .request_stream(&session, futures::stream::iter((0..10).map(message)))
            .collect()
            .await;
        let buffer = small.session(&session);
        let buffer = buffer.buffer();
        assert!(buffer.bytes <= 200, "{} bytes kept", buffer.bytes);
        assert!(buffer.events.len() < 10);
    }

    #[tokio::test]
    async fn all_sessions_together_keep_at_most_the_total_and_a_closed_one_gives_its_share_back() {
        let one_event = {
            let probe = Streams::default();
            let s: SessionId = "probe".into();
            let _: Vec<_> = probe
                .request_stream(&s, futures::stream::iter([message(0)]))
                .collect()
                .await;
            probe.total.load(Ordering::Relaxed)
        };
        let streams = Streams::new(EventLimits {
            count: 100,
            bytes: 1 << 20,
            age: Duration::from_secs(60),
            total_bytes: 10 * one_event,
        });
        let (a, b): (SessionId, SessionId) = ("a".into(), "b".into());
        for session in [&a, &b] {
            let _: Vec<_> = streams
                .request_stream(session, futures::stream::iter((0..50).map(message)))
                .collect()
                .await;
        }
        let total = streams.total.load(Ordering::Relaxed);
        let kept = |s: &SessionId| streams.session(s).buffer().events.len();
        // Per-session limits alone would keep 100 events; the total keeps about 10, and each
        // session its newest event at least.
        assert!(
            total <= 11 * one_event,
            "{total} bytes kept, one event is {one_event}"
        );
        assert!(kept(&a) >= 1 && kept(&b) >= 1);
        assert!(kept(&a) + kept(&b) <= 11);
        let before = streams.total.load(Ordering::Relaxed);
        let share = streams.session(&a).buffer().bytes;
        streams.forget(&a);
        assert_eq!(streams.total.load(Ordering::Relaxed), before - share);
    }

    #[tokio::test]
    async fn a_sweep_frees_old_events_and_gone_sessions() {
        let streams = Streams::new(EventLimits {
            count: 100,
            bytes: 1 << 20,
            age: Duration::ZERO,
            total_bytes: usize::MAX,
        });
        let (a, b): (SessionId, SessionId) = ("a".into(), "b".into());
        for id in [&a, &b] {
            let _: Vec<_> = streams
                .request_stream(id, futures::stream::iter([message(1)]))
                .collect()
                .await;
        }
        assert_eq!(streams.ids().len(), 2);
        streams.sweep(std::slice::from_ref(&b));
        assert!(
            streams.existing(&b).is_none(),
            "a gone session is forgotten"
        );
        let kept = streams.existing(&a).unwrap();
        let buffer = kept.buffer();
        assert_eq!((buffer.events.len(), buffer.bytes), (0, 0));
    }

    #[tokio::test]
    async fn events_older_than_the_window_are_not_resumable() {
        let streams = Streams::new(EventLimits {
            count: 100,
            bytes: 1 << 20,
            age: Duration::ZERO,
            total_bytes: usize::MAX,
        });
        let session: SessionId = "s".into();
        let events: Vec<_> = streams
            .request_stream(&session, futures::stream::iter([message(1), message(2)]))
            .collect()
            .await;
        assert!(matches!(
            streams.resume(&session, events[0].event_id.as_deref().unwrap()),
            Err(ResumeError::Unknown)
        ));
    }
}
