//! W3C trace context passes through a chain of services that record no spans.

use traitrpc_core::{Client, Router};
use traitrpc_observability::trace_context::TraceContext;
use traitrpc_observability::tracing_layers::{ClientTracing, ServerTracing};

#[traitrpc_core::service]
pub trait Hop {
    /// The `traceparent` each server on the way saw, from this one on.
    async fn hop(&self, depth: u32) -> Vec<String>;
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
async fn without_a_subscriber_the_trace_still_passes_through() {
    let b = serve(None).await;
    let a = serve(Some(traced_client(b.local_addr()).await)).await;
    let client = traced_client(a.local_addr()).await;
    let seen = client.hop(1).await.unwrap();
    let (at_a, at_b) = (
        TraceContext::parse(&seen[0]).unwrap(),
        TraceContext::parse(&seen[1]).unwrap(),
    );
    assert_eq!(at_a.trace_id, at_b.trace_id);
    a.shutdown().await;
    b.shutdown().await;
}
