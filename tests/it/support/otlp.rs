//! A local OpenTelemetry collector: `POST /v1/traces` on a free loopback port, OTLP/HTTP
//! with protobuf bodies (what the processes under test send), keeping every span it is
//! given with the service that sent it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

/// One span as received.
#[derive(Debug, Clone)]
pub struct Got {
    /// `service.name` of the process that sent it.
    pub service: String,
    pub name: String,
    /// Hex, as in a `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_id: String,
    /// String and integer attributes, as text.
    pub attrs: HashMap<String, String>,
}

#[derive(Default)]
struct Seen {
    spans: Vec<Got>,
    requests: usize,
}

/// The running collector.
pub struct Collector {
    /// Its base URL, `http://127.0.0.1:PORT` (an OTLP endpoint).
    pub endpoint: String,
    seen: Arc<Mutex<Seen>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attrs(kv: &[KeyValue]) -> HashMap<String, String> {
    kv.iter().map(|a| (a.key.clone(), text(&a.value))).collect()
}

async fn traces(State(seen): State<Arc<Mutex<Seen>>>, body: Bytes) -> Vec<u8> {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut seen = seen.lock().unwrap();
    seen.requests += 1;
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .map(|r| attrs(&r.attributes))
            .and_then(|a| a.get("service.name").cloned())
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                seen.spans.push(Got {
                    service: service.clone(),
                    name: s.name.clone(),
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_id: hex::encode(&s.parent_span_id),
                    attrs: attrs(&s.attributes),
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

impl Collector {
    pub async fn start() -> Collector {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = axum::Router::new()
            .route("/v1/traces", post(traces))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Collector {
            endpoint,
            seen,
            stop: Some(stop),
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Got> {
        self.seen.lock().unwrap().spans.clone()
    }

    /// How many export requests arrived.
    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().requests
    }

    /// Waits (at most 30 s) until a span of `service` named `name` in trace `trace_id`
    /// arrived, and answers the first such.
    pub async fn span(&self, service: &str, name: &str, trace_id: &str) -> Got {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if let Some(s) = spans
                .iter()
                .find(|s| s.service == service && s.name == name && s.trace_id == trace_id)
            {
                return s.clone();
            }
            if tokio::time::Instant::now() > deadline {
                let got: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{}/{} in {}", s.service, s.name, s.trace_id))
                    .collect();
                panic!("no {service}/{name} in trace {trace_id} within 30 s; got {got:#?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may have ended already.
            let _ = stop.send(());
        }
    }
}
