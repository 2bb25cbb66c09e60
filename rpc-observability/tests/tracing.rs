//! Spans on both sides and W3C trace context across a chain: client → A → B is one trace,
//! each span's parent the span that called it. (The only test in this binary: `tracing`
//! caches whether a callsite is enabled process-wide, so a test without a subscriber
//! running next to it could hide its spans.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use traitrpc_core::{Client, Router};
use traitrpc_observability::trace_context::TraceContext;
use traitrpc_observability::tracing_layers::{ClientTracing, ServerTracing};

#[traitrpc_core::service]
pub trait Hop {
    /// The `traceparent` each server on the way saw, from this one on.
    async fn hop(&self, depth: u32) -> Vec<String>;
    /// Never answers (until its caller gives up).
    async fn wait(&self);
}

struct HopImpl {
    next: Option<HopClient>,
}

impl Hop for HopImpl {
    async fn hop(&self, depth: u32) -> Vec<String> {
        let seen = traitrpc_core::context::current()
            .and_then(|c| c.metadata().get_str("traceparent").map(str::to_string))
            .unwrap_or_default();
        let mut out = vec![seen];
        if depth > 0 {
            if let Some(next) = &self.next {
                out.extend(next.hop(depth - 1).await.unwrap());
            }
        }
        out
    }

    async fn wait(&self) {
        std::future::pending::<()>().await
    }
}

#[derive(Debug, Clone, Default)]
struct CapturedSpan {
    name: String,
    closed: bool,
    fields: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<HashMap<u64, CapturedSpan>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut span = CapturedSpan {
            name: attrs.metadata().name().to_string(),
            ..Default::default()
        };
        attrs.record(&mut Fields(&mut span.fields));
        self.0.lock().unwrap().insert(id.into_u64(), span);
    }
    fn on_close(&self, id: Id, _: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            span.closed = true;
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }
}

async fn serve(next: Option<HopClient>) -> traitrpc_core::ServerHandle<std::net::SocketAddr> {
    let router = Router::from(HopServer::new(HopImpl { next })).layer(ServerTracing);
    traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap()
}

async fn traced_client(addr: std::net::SocketAddr) -> HopClient {
    HopClient::from_client(
        Client::new(traitrpc_transport_tcp::connect(addr).await.unwrap()).layer(ClientTracing),
    )
}

#[tokio::test]
async fn a_chain_of_services_is_one_trace_with_linked_spans() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let b = serve(None).await;
    let a = serve(Some(traced_client(b.local_addr()).await)).await;
    let client = traced_client(a.local_addr()).await;
    let seen = client.hop(1).await.unwrap();
    assert_eq!(seen.len(), 2);
    let at_a = TraceContext::parse(&seen[0]).expect("A got a traceparent");
    let at_b = TraceContext::parse(&seen[1]).expect("B got a traceparent");
    assert_eq!(at_a.trace_id, at_b.trace_id, "one trace");
    assert_ne!(at_a.span_id, at_b.span_id);

    let spans: Vec<CapturedSpan> = capture.0.lock().unwrap().values().cloned().collect();
    let of =
        |name: &str| -> Vec<&CapturedSpan> { spans.iter().filter(|s| s.name == name).collect() };
    let (clients, servers) = (of("rpc.client"), of("rpc.server"));
    assert_eq!((clients.len(), servers.len()), (2, 2), "{spans:#?}");
    let trace = at_a.trace_id_hex();
    for span in clients.iter().chain(&servers) {
        assert_eq!(span.fields["trace_id"], trace, "{span:?}");
        assert_eq!(span.fields["rpc.status"], "OK", "{span:?}");
        assert_eq!(span.fields["rpc.method"], "hop");
    }
    // Each server span's parent is the client span that called it.
    let client_span_ids: Vec<&String> = clients.iter().map(|s| &s.fields["span_id"]).collect();
    for server in &servers {
        assert!(
            client_span_ids.contains(&&server.fields["parent_id"]),
            "{server:?} has a client span as its parent"
        );
    }

    // A call its caller gives up on: the server drops the handler, and its span closes
    // with the status CANCELLED (not without a status).
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(50), client.wait()).await;
    assert!(gave_up.is_err());
    let cancelled = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let closed = capture.0.lock().unwrap().values().find_map(|s| {
                (s.name == "rpc.server" && s.fields["rpc.method"] == "wait" && s.closed)
                    .then(|| s.fields.get("rpc.status").cloned())
            });
            if let Some(status) = closed {
                break status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the cancelled call's server span closed");
    assert_eq!(cancelled.as_deref(), Some("CANCELLED"));

    a.shutdown().await;
    b.shutdown().await;
}
