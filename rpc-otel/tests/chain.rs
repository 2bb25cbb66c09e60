//! A call chain client → A → B over real loopback connections exports as one trace:
//! four spans (client, A's server, A's client, B's server), each the child of the one
//! before, recorded by OpenTelemetry's in-memory exporter.

use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;
use traitrpc_core::{Client, Router};
use traitrpc_otel::{OtelClient, OtelServer};

#[traitrpc_core::service]
pub trait Back {
    async fn double(&self, x: u64) -> u64;
}

#[traitrpc_core::service]
pub trait Front {
    async fn quadruple(&self, x: u64) -> u64;
    async fn fail(&self) -> Result<u8, String>;
    /// Never answers (until its caller gives up).
    async fn wait(&self);
}

struct BackImpl;

impl Back for BackImpl {
    async fn double(&self, x: u64) -> u64 {
        x * 2
    }
}

struct FrontImpl {
    back: BackClient,
}

impl Front for FrontImpl {
    async fn quadruple(&self, x: u64) -> u64 {
        let twice = self.back.double(x).await.expect("B answers");
        self.back.double(twice).await.expect("B answers")
    }
    async fn fail(&self) -> Result<u8, String> {
        Err("no".into())
    }
    async fn wait(&self) {
        std::future::pending::<()>().await
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[test]
fn a_chain_of_calls_is_one_trace_in_the_exporter() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("rpc-otel-test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    // One thread runs everything, so the subscriber set above sees every span.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let b = traitrpc_transport_tcp::serve(
            "127.0.0.1:0",
            Router::from(BackServer::new(BackImpl)).layer(OtelServer),
        )
        .await
        .unwrap();
        let to_b = Client::new(
            traitrpc_transport_tcp::connect(b.local_addr())
                .await
                .unwrap(),
        )
        .layer(OtelClient);
        let a = traitrpc_transport_tcp::serve(
            "127.0.0.1:0",
            Router::from(FrontServer::new(FrontImpl {
                back: BackClient::from_client(to_b),
            }))
            .layer(OtelServer),
        )
        .await
        .unwrap();
        let front = FrontClient::from_client(
            Client::new(
                traitrpc_transport_tcp::connect(a.local_addr())
                    .await
                    .unwrap(),
            )
            .layer(OtelClient),
        );

        assert_eq!(front.quadruple(3).await.unwrap(), 12);
        assert!(front.fail().await.is_err());
        // A call its caller gives up on: the server drops its handler, and the span
        // ends (and is exported) as CANCELLED.
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(50), front.wait()).await;
        assert!(gave_up.is_err());
        let exported = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let spans = exporter.get_finished_spans().unwrap();
                if let Some(span) = spans.iter().find(|s| {
                    attribute(s, "rpc.method").as_deref() == Some("wait")
                        && s.span_kind == SpanKind::Server
                }) {
                    break attribute(span, "rpc.response.status_code");
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the cancelled call's server span was exported");
        assert_eq!(exported.as_deref(), Some("CANCELLED"));
        a.shutdown().await;
        b.shutdown().await;
    });
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    let named = |name: &str| -> Vec<&SpanData> {
        spans
            .iter()
            .filter(|s| attribute(s, "rpc.method").as_deref() == Some(name))
            .collect()
    };
    let quadruple = named("quadruple");
    let double = named("double");
    assert_eq!(quadruple.len(), 2, "client and server spans: {spans:#?}");
    assert_eq!(double.len(), 4, "two calls, each on both sides: {spans:#?}");

    let client = *quadruple
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    let a_server = *quadruple
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    // One trace, from the first client span down to both of B's server spans.
    let trace = client.span_context.trace_id();
    for span in quadruple.iter().chain(&double) {
        assert_eq!(span.span_context.trace_id(), trace, "{span:#?}");
    }
    assert_eq!(a_server.parent_span_id, client.span_context.span_id());
    assert!(a_server.parent_span_is_remote);
    for a_client in double.iter().filter(|s| s.span_kind == SpanKind::Client) {
        assert_eq!(a_client.parent_span_id, a_server.span_context.span_id());
        let b_server = double
            .iter()
            .find(|s| {
                s.span_kind == SpanKind::Server
                    && s.parent_span_id == a_client.span_context.span_id()
            })
            .expect("B's span is a child of A's client span");
        assert_eq!(
            attribute(b_server, "rpc.response.status_code").as_deref(),
            Some("OK")
        );
        assert_eq!(attribute(b_server, "rpc.service").as_deref(), Some("Back"));
    }
    assert_eq!(client.name, "Front/quadruple");

    // A failed call is marked as an error.
    let fail_server = spans
        .iter()
        .find(|s| {
            attribute(s, "rpc.method").as_deref() == Some("fail") && s.span_kind == SpanKind::Server
        })
        .unwrap();
    assert_eq!(
        attribute(fail_server, "rpc.response.status_code").as_deref(),
        Some("APPLICATION_ERROR")
    );
    assert!(
        matches!(fail_server.status, Status::Error { .. }),
        "{:?}",
        fail_server.status
    );
    assert_ne!(
        fail_server.span_context.trace_id(),
        trace,
        "a new call, a new trace"
    );
}
