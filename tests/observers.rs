//! Call observers on both sides: every admitted call starts once and ends once, with the
//! status it was answered with (or none), however it ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, Notify};
use traitrpc_core::client::observer::ObservedClientCall;
use traitrpc_core::client::ClientObserver;
use traitrpc_core::protocol::status;
use traitrpc_core::server::middleware::{self, Next};
use traitrpc_core::server::observer::{ObservedCall, ServerObserver};
use traitrpc_core::{service, Answered, Client, Rejection, Router, RpcError, Streaming};

#[service]
pub trait Desk {
    async fn echo(&self, text: String) -> String;
    async fn refuse(&self) -> Result<u8, String>;
    async fn hang(&self) -> u8;
    async fn explode(&self) -> u8;
    async fn list(&self, n: u32) -> Streaming<u32>;
}

struct DeskImpl {
    hanging: Arc<Notify>,
}

impl Desk for DeskImpl {
    async fn echo(&self, text: String) -> String {
        text
    }
    async fn refuse(&self) -> Result<u8, String> {
        Err("no".into())
    }
    async fn hang(&self) -> u8 {
        self.hanging.notify_one();
        std::future::pending().await
    }
    async fn explode(&self) -> u8 {
        panic!("boom")
    }
    async fn list(&self, n: u32) -> Streaming<u32> {
        Streaming::iter(0..n)
    }
}

/// What a server observer was told, in order.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Started(Option<&'static str>),
    Ended {
        method: Option<&'static str>,
        status: Option<u8>,
        items_sent: u64,
    },
}

struct Recorder(mpsc::UnboundedSender<Event>);

impl ServerObserver for Recorder {
    fn call_started(&self, call: &ObservedCall) {
        let _ = self.0.send(Event::Started(call.known_method()));
    }
    fn call_ended(&self, call: &ObservedCall, answered: &Answered, _elapsed: Duration) {
        let _ = self.0.send(Event::Ended {
            method: call.known_method(),
            status: answered.status(),
            items_sent: answered.items_sent(),
        });
    }
}

async fn next_end(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    loop {
        match events.recv().await.expect("the observer is alive") {
            Event::Started(_) => continue,
            end => return end,
        }
    }
}

fn ended(method: &'static str, status: Option<u8>) -> Event {
    Event::Ended {
        method: Some(method),
        status,
        items_sent: 0,
    }
}

#[tokio::test]
async fn a_server_observer_sees_every_call_end_once_with_its_status() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let hanging = Arc::new(Notify::new());
    // A middleware refusing `refuse` calls that carry `deny`: refusals are observed too.
    let router = Router::from(DeskServer::new(DeskImpl {
        hanging: Arc::clone(&hanging),
    }))
    .observe(Recorder(tx))
    .layer(middleware::from_fn(|next: Next| async move {
        if next.context().metadata().get_str("deny").is_some() {
            return Err(Rejection::PermissionDenied("denied".into()));
        }
        next.run().await
    }));
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    let connection = traitrpc_transport_tcp::connect(server.local_addr())
        .await
        .unwrap();
    let desk = DeskClient::new(connection.clone());

    assert_eq!(desk.echo("hi".into()).await.unwrap(), "hi");
    assert_eq!(events.recv().await, Some(Event::Started(Some("echo"))));
    assert_eq!(next_end(&mut events).await, ended("echo", Some(status::OK)));

    assert!(desk.refuse().await.is_err());
    assert_eq!(
        next_end(&mut events).await,
        ended("refuse", Some(status::APPLICATION_ERROR))
    );

    let mut deny = traitrpc_core::Metadata::new();
    deny.insert("deny", "1").unwrap();
    let denied = DeskClient::from_client(Client::new(connection.clone()).with_metadata(deny));
    assert!(denied.refuse().await.is_err());
    assert_eq!(
        next_end(&mut events).await,
        ended("refuse", Some(status::PERMISSION_DENIED))
    );

    assert!(desk.explode().await.is_err());
    assert_eq!(
        next_end(&mut events).await,
        ended("explode", Some(status::HANDLER_PANICKED))
    );

    let items: Vec<Result<u32, RpcError>> = desk.list(3).await.unwrap().collect().await;
    assert_eq!(
        items.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(
        next_end(&mut events).await,
        Event::Ended {
            method: Some("list"),
            status: Some(status::OK),
            items_sent: 3
        }
    );

    // An unknown method: labelled as unknown, answered UNKNOWN_METHOD.
    let raw = Client::new(connection.clone());
    let probe = traitrpc_core::Method::new("Desk", "probe");
    assert!(raw.call::<_, u8>(&probe, &()).await.is_err());
    assert_eq!(
        next_end(&mut events).await,
        Event::Ended {
            method: None,
            status: Some(status::UNKNOWN_METHOD),
            items_sent: 0
        }
    );

    // Its deadline passes on the server: DEADLINE_EXCEEDED.
    let error = desk
        .with_timeout(Duration::from_millis(50))
        .hang()
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::DeadlineExceeded), "{error:?}");
    let end = next_end(&mut events).await;
    assert!(
        end == ended("hang", Some(status::DEADLINE_EXCEEDED)) || end == ended("hang", None),
        "{end:?}"
    );

    // (The timed-out handler had started: take its signal.)
    hanging.notified().await;

    // Dropped by its caller before an answer: it ends, unanswered.
    let call = tokio::spawn({
        let desk = desk.clone();
        async move { desk.with_timeout(Duration::from_secs(600)).hang().await }
    });
    hanging.notified().await;
    call.abort();
    assert_eq!(next_end(&mut events).await, ended("hang", None));

    server.shutdown().await;
}

/// What a client observer was told.
#[derive(Debug, Clone, PartialEq)]
struct ClientEnd {
    method: &'static str,
    status: Result<u8, String>,
    request_bytes: usize,
}

struct ClientRecorder(mpsc::UnboundedSender<ClientEnd>, Arc<Mutex<u32>>);

impl ClientObserver for ClientRecorder {
    fn call_ended(&self, call: &ObservedClientCall<'_>) {
        *self.1.lock().unwrap() += 1;
        let status = match call.outcome() {
            None => Err("dropped".to_string()),
            Some(Ok(frame)) => Ok(frame.status),
            Some(Err(error)) => Err(traitrpc_observability::labels::error_name(error).to_string()),
        };
        let _ = self.0.send(ClientEnd {
            method: call.method().name,
            status,
            request_bytes: call.request_bytes(),
        });
    }
}

#[tokio::test]
async fn a_client_observer_sees_answers_failures_and_dropped_calls() {
    let hanging = Arc::new(Notify::new());
    let router = Router::from(DeskServer::new(DeskImpl {
        hanging: Arc::clone(&hanging),
    }));
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    let (tx, mut ends) = mpsc::unbounded_channel();
    let count = Arc::new(Mutex::new(0));
    let client = Client::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    )
    .observe(ClientRecorder(tx, Arc::clone(&count)));
    let desk = DeskClient::from_client(client);

    assert_eq!(desk.echo("four".into()).await.unwrap(), "four");
    // `("four",)` in bincode: a one-byte length and four bytes.
    assert_eq!(
        ends.recv().await.unwrap(),
        ClientEnd {
            method: "echo",
            status: Ok(status::OK),
            request_bytes: 5
        }
    );

    assert!(desk.refuse().await.is_err());
    assert_eq!(
        ends.recv().await.unwrap().status,
        Ok(status::APPLICATION_ERROR)
    );

    let error = desk
        .with_timeout(Duration::from_millis(50))
        .hang()
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::DeadlineExceeded), "{error:?}");
    assert_eq!(
        ends.recv().await.unwrap().status,
        Err("DEADLINE_EXCEEDED".into())
    );
    hanging.notified().await;

    let call = tokio::spawn({
        let desk = desk.clone();
        async move { desk.with_timeout(Duration::from_secs(600)).hang().await }
    });
    hanging.notified().await;
    call.abort();
    assert_eq!(ends.recv().await.unwrap().status, Err("dropped".into()));

    // Streaming calls are not unary: not observed.
    let _ = desk.list(2).await.unwrap().collect::<Vec<_>>().await;
    assert_eq!(*count.lock().unwrap(), 4);
    server.shutdown().await;
}

#[tokio::test]
async fn a_call_interrupted_by_a_shutdown_is_observed_with_the_status_its_caller_got() {
    // At the end of the shutdown grace, a running call is answered INTERRUPTED and its
    // task is stopped: its observer hears INTERRUPTED, not "unanswered".
    let (tx, mut events) = mpsc::unbounded_channel();
    let hanging = Arc::new(Notify::new());
    let router = Router::from(DeskServer::new(DeskImpl {
        hanging: Arc::clone(&hanging),
    }))
    .observe(Recorder(tx));
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        router,
        traitrpc_core::ServerConfig::default().shutdown_grace(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let desk = DeskClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    let call = tokio::spawn(async move { desk.hang().await });
    hanging.notified().await;
    server.shutdown().await;
    assert!(
        matches!(call.await.unwrap(), Err(RpcError::Interrupted { .. })),
        "the caller is told INTERRUPTED"
    );
    assert_eq!(
        next_end(&mut events).await,
        ended("hang", Some(status::INTERRUPTED))
    );
}
