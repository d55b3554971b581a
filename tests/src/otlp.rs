//! A small OTLP trace receiver, in both protocols the binaries export with: OTLP/HTTP with
//! protobuf bodies (`POST /v1/traces`, axum) and OTLP/gRPC (`TraceService/Export`, tonic), each
//! on a port of its own (port 0). It keeps every export request, decoded with the
//! `opentelemetry-proto` types and as the protobuf bytes, so a test can both follow a trace's
//! parent links and search everything exported for a secret.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// Which protocol a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`: `OTEL_EXPORTER_OTLP_ENDPOINT=http://…` (the exporter adds `/v1/traces`).
    HttpProtobuf,
    /// `grpc`.
    Grpc,
}

impl Protocol {
    /// The `OTEL_EXPORTER_OTLP_PROTOCOL` value.
    pub fn env_value(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }
}

/// One exported span, flattened: ids in hex, attributes as strings.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// `service.name` of the resource that exported it.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: Vec<(String, String)>,
}

impl SpanRecord {
    /// The value of attribute `key`, as a string.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What a receiver got so far.
#[derive(Default)]
struct Received {
    requests: Vec<ExportTraceServiceRequest>,
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    protocol: Protocol,
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// Starts a receiver on 127.0.0.1, port 0.
    pub async fn start(protocol: Protocol) -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let received = Arc::new(Mutex::new(Received::default()));
        let task = match protocol {
            Protocol::HttpProtobuf => {
                let store = received.clone();
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: Bytes| {
                        let store = store.clone();
                        async move { http_export(&store, &body) }
                    }),
                );
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                })
            }
            Protocol::Grpc => {
                let service = TraceServiceServer::new(GrpcReceiver(received.clone()));
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                tokio::spawn(async move {
                    let _ = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming(incoming)
                        .await;
                })
            }
        };
        OtlpReceiver {
            protocol,
            addr,
            received,
            task,
        }
    }

    /// The protocol, for `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for this receiver.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        let received = self.received.lock().unwrap();
        let mut spans = Vec::new();
        for request in &received.requests {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref())
                    .map(|v| value_text(v.value.as_ref()))
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push(SpanRecord {
                            service: service.clone(),
                            name: span.name.clone(),
                            trace_id: hex::encode(&span.trace_id),
                            span_id: hex::encode(&span.span_id),
                            parent_span_id: hex::encode(&span.parent_span_id),
                            attributes: span
                                .attributes
                                .iter()
                                .map(|kv| {
                                    (
                                        kv.key.clone(),
                                        value_text(
                                            kv.value.as_ref().and_then(|v| v.value.as_ref()),
                                        ),
                                    )
                                })
                                .collect(),
                        });
                    }
                }
            }
        }
        spans
    }

    /// Everything received, as protobuf bytes joined (every name, attribute and event as sent),
    /// for secret searches.
    pub fn payload(&self) -> Vec<u8> {
        let received = self.received.lock().unwrap();
        received
            .requests
            .iter()
            .flat_map(|r| r.encode_to_vec())
            .collect()
    }

    /// Waits until `found` holds for the spans received (polling), or `deadline` passes;
    /// returns the last spans either way.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        found: impl Fn(&[SpanRecord]) -> bool,
    ) -> Vec<SpanRecord> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let spans = self.spans();
            if found(&spans) || tokio::time::Instant::now() >= until {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An attribute value as text (strings as they are, others in their usual form).
fn value_text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// One OTLP/HTTP export: a protobuf `ExportTraceServiceRequest` in, an empty response out.
fn http_export(
    store: &Mutex<Received>,
    body: &[u8],
) -> (
    axum::http::StatusCode,
    [(&'static str, &'static str); 1],
    Vec<u8>,
) {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            store.lock().unwrap().requests.push(request);
            (
                axum::http::StatusCode::OK,
                [("content-type", "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => (
            axum::http::StatusCode::BAD_REQUEST,
            [("content-type", "text/plain")],
            b"not an ExportTraceServiceRequest".to_vec(),
        ),
    }
}

/// The OTLP/gRPC trace service.
struct GrpcReceiver(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().requests.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}
