//! `tower` layers as server middleware (feature `tower`): a timeout cancels a slow handler
//! and answers DEADLINE_EXCEEDED; a concurrency limit with load shedding answers
//! OVERLOADED (the call never ran) while the limit is taken, and admits calls again once
//! it is free.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tower::ServiceBuilder;
use traitrpc_core::server::middleware::{self, Next};
use traitrpc_core::server::tower::from_tower;
use traitrpc_core::{service, Router, RpcError};

#[service]
pub trait Gate {
    /// Returns once the test opens the gate.
    async fn wait(&self) -> u32;
    async fn quick(&self) -> u32;
}

struct GateImpl {
    entered: mpsc::UnboundedSender<()>,
    dropped: mpsc::UnboundedSender<()>,
    open: Arc<Notify>,
}

/// Reports when the handler's future is dropped (finished or cancelled).
struct OnDrop(mpsc::UnboundedSender<()>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Gate for GateImpl {
    async fn wait(&self) -> u32 {
        let _guard = OnDrop(self.dropped.clone());
        self.entered.send(()).unwrap();
        self.open.notified().await;
        7
    }
    async fn quick(&self) -> u32 {
        1
    }
}

struct Fixture {
    entered: mpsc::UnboundedReceiver<()>,
    dropped: mpsc::UnboundedReceiver<()>,
    open: Arc<Notify>,
    router: Router,
}

fn fixture() -> Fixture {
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let (dropped_tx, dropped) = mpsc::unbounded_channel();
    let open = Arc::new(Notify::new());
    let router = Router::from(GateServer::new(GateImpl {
        entered: entered_tx,
        dropped: dropped_tx,
        open: Arc::clone(&open),
    }));
    Fixture {
        entered,
        dropped,
        open,
        router,
    }
}

async fn client(server: &traitrpc_core::ServerHandle<std::net::SocketAddr>) -> GateClient {
    GateClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn a_tower_timeout_cancels_the_handler_and_answers_deadline_exceeded() {
    let mut f = fixture();
    let router = f.router.layer(from_tower(
        ServiceBuilder::new().timeout(Duration::from_millis(50)),
    ));
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    let gate = client(&server).await;

    // The gate never opens: only the timeout can end the call.
    let error = gate.wait().await.unwrap_err();
    assert!(matches!(error, RpcError::DeadlineExceeded), "{error:?}");
    f.entered.recv().await.expect("the handler started");
    f.dropped
        .recv()
        .await
        .expect("the timed-out handler was dropped");
    // Calls that finish in time pass through.
    assert_eq!(gate.quick().await.unwrap(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_concurrency_limit_with_load_shedding_refuses_with_overloaded_until_free() {
    let mut f = fixture();
    // Outside the limit, a layer reports each call that has left it (and so released
    // its permit): the test waits for that instead of guessing.
    let (finished_tx, mut finished) = mpsc::unbounded_channel();
    let router = f
        .router
        .layer(middleware::from_fn(move |next: Next| {
            let finished = finished_tx.clone();
            async move {
                let method = next.context().method().to_string();
                let answer = next.run().await;
                let _ = finished.send(method);
                answer
            }
        }))
        .layer(from_tower(
            ServiceBuilder::new().load_shed().concurrency_limit(1),
        ));
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    let gate = client(&server).await;

    let holder = tokio::spawn({
        let gate = gate.clone();
        async move { gate.wait().await }
    });
    f.entered
        .recv()
        .await
        .expect("the first call holds the limit");

    // The limit is taken: further calls are shed, and said never to have run.
    for _ in 0..3 {
        let error = gate.quick().await.unwrap_err();
        assert!(matches!(error, RpcError::Overloaded { .. }), "{error:?}");
        assert!(error.outcome().never_ran(), "{:?}", error.outcome());
        assert_eq!(finished.recv().await.unwrap(), "quick");
    }

    f.open.notify_one();
    assert_eq!(holder.await.unwrap().unwrap(), 7);
    f.dropped.recv().await.expect("the first handler finished");
    assert_eq!(finished.recv().await.unwrap(), "wait");
    // The permit is free again: the next call is admitted.
    assert_eq!(gate.quick().await.unwrap(), 1);
    server.shutdown().await;
}
