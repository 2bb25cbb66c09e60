//! What `#[service]` generates, exercised at run time over the in-memory transport: the
//! client methods, the wire names, the flat `Result` of fallible methods, in-process
//! dispatch through `{Trait}Server::handle`, `Service::methods`, renamed services, default
//! bodies, and per-call metadata and timeouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use traitrpc_core::{service, CallError, Metadata, Method, RpcError, Service};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DivError {
    ByZero,
    Overflow { a: i32, b: i32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub tags: Vec<String>,
}

/// The service under test: one method per shape the macro handles.
#[service]
pub trait Kitchen {
    /// No arguments.
    async fn ping(&self) -> String;

    /// A raw identifier as method and argument name: `type` on the wire.
    async fn r#type(&self, r#match: u8) -> String;

    /// Many arguments of many types, in order.
    #[allow(clippy::too_many_arguments)]
    async fn many(
        &self,
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: i64,
        f: String,
        g: Vec<u8>,
        h: Option<bool>,
        i: (u8, char),
        j: Record,
    ) -> String;

    /// A fallible method.
    async fn divide(&self, a: i32, b: i32) -> Result<i32, DivError>;

    /// A fallible method spelled with its full path.
    async fn lookup(&self, id: u64) -> std::result::Result<Record, String>;

    /// No return type.
    async fn record(&self, value: u64);

    /// Reads a metadata entry from the call's context.
    async fn metadata(&self, key: String) -> Option<String>;

    /// The service and method names the handler's context reports.
    async fn names(&self) -> (String, String);

    /// Sleeps, to exceed a client timeout.
    async fn sleep(&self, millis: u64) -> u64;

    /// A default body, not overridden by the implementation.
    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }

    /// A default body calling another method.
    async fn ping_twice(&self) -> String {
        let first = self.ping().await;
        format!("{first}{}", self.ping().await)
    }

    /// Configured out: absent from every generated item.
    #[cfg(any())]
    async fn removed(&self) -> u8;
}

#[derive(Default)]
struct KitchenImpl {
    recorded: AtomicU64,
}

fn current_method() -> String {
    traitrpc_core::context::current()
        .map(|ctx| ctx.method().to_string())
        .unwrap_or_else(|| "<no context>".to_string())
}

impl Kitchen for KitchenImpl {
    async fn ping(&self) -> String {
        "pong".to_string()
    }

    async fn r#type(&self, r#match: u8) -> String {
        format!("{}:{}", current_method(), r#match)
    }

    async fn many(
        &self,
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: i64,
        f: String,
        g: Vec<u8>,
        h: Option<bool>,
        i: (u8, char),
        j: Record,
    ) -> String {
        format!(
            "{a} {b} {c} {d} {e} {f} {g:?} {h:?} {i:?} {} {:?}",
            j.id, j.tags
        )
    }

    async fn divide(&self, a: i32, b: i32) -> Result<i32, DivError> {
        if b == 0 {
            return Err(DivError::ByZero);
        }
        a.checked_div(b).ok_or(DivError::Overflow { a, b })
    }

    async fn lookup(&self, id: u64) -> std::result::Result<Record, String> {
        match id {
            0 => Err("no record 0".to_string()),
            id => Ok(Record {
                id,
                tags: vec!["found".into()],
            }),
        }
    }

    async fn record(&self, value: u64) {
        self.recorded.fetch_add(value, Ordering::SeqCst);
    }

    async fn metadata(&self, key: String) -> Option<String> {
        let ctx = traitrpc_core::context::current()?;
        ctx.metadata().get_str(&key).map(str::to_string)
    }

    async fn names(&self) -> (String, String) {
        traitrpc_core::context::with_current(|ctx| {
            (ctx.service().to_string(), ctx.method().to_string())
        })
        .unwrap_or_default()
    }

    async fn sleep(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }
}

#[service(name = "pkg.v1.Renamed")]
pub trait Renamed {
    async fn whoami(&self) -> String;
}

struct RenamedImpl;

impl Renamed for RenamedImpl {
    async fn whoami(&self) -> String {
        traitrpc_core::context::with_current(|ctx| ctx.service().to_string()).unwrap_or_default()
    }
}

/// Serves `service` over the in-memory transport; returns the server and a connection.
async fn connect<S: Service>(
    service: S,
) -> anyhow::Result<(traitrpc_core::ServerHandle<()>, traitrpc_core::Connection)> {
    let (listener, connector) = traitrpc_core::memory::listener();
    let server = traitrpc_core::Server::new(service).serve(listener, ());
    let connection = connector.connect().await?;
    Ok((server, connection))
}

async fn kitchen() -> anyhow::Result<(traitrpc_core::ServerHandle<()>, KitchenClient)> {
    let (server, connection) = connect(KitchenServer::new(KitchenImpl::default())).await?;
    Ok((server, KitchenClient::new(connection)))
}

#[tokio::test]
async fn zero_argument_method() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    assert_eq!(client.ping().await?, "pong");
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn many_arguments_arrive_in_order() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    let out = client
        .many(
            1,
            2,
            3,
            4,
            -5,
            "six".into(),
            vec![7, 7],
            Some(true),
            (9, 'z'),
            Record {
                id: 10,
                tags: vec!["a".into(), "b".into()],
            },
        )
        .await?;
    assert_eq!(
        out,
        r#"1 2 3 4 -5 six [7, 7] Some(true) (9, 'z') 10 ["a", "b"]"#
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unit_method_without_return_type() -> anyhow::Result<()> {
    let implementation = Arc::new(KitchenImpl::default());
    let (server, connection) = connect(KitchenServer::from_arc(implementation.clone())).await?;
    let client = KitchenClient::new(connection);
    let (): () = client.record(5).await?;
    client.record(6).await?;
    assert_eq!(implementation.recorded.load(Ordering::SeqCst), 11);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn raw_identifier_method_is_called_type_on_the_wire() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    // The handler reports the method name from its context: the name without `r#`.
    assert_eq!(client.r#type(7).await?, "type:7");
    assert_eq!(KitchenRequest::Type { r#match: 1 }.method_name(), "type");

    // A hand-written call addressing `Kitchen.type` with the argument tuple reaches it.
    let method = Method::new("Kitchen", "type");
    let raw: String = client.client().call(&method, &(8u8,)).await?;
    assert_eq!(raw, "type:8");
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn fallible_method_returns_a_flat_call_error() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    let ok: Result<i32, CallError<DivError>> = client.divide(7, 2).await;
    assert_eq!(ok, Ok(3));
    assert_eq!(
        client.divide(1, 0).await,
        Err(CallError::Application(DivError::ByZero))
    );
    assert_eq!(
        client.divide(i32::MIN, -1).await,
        Err(CallError::Application(DivError::Overflow {
            a: i32::MIN,
            b: -1
        }))
    );
    // `std::result::Result` is recognised as fallible too.
    assert_eq!(client.lookup(3).await?.tags, ["found"]);
    assert_eq!(
        client
            .lookup(0)
            .await
            .unwrap_err()
            .into_application()
            .as_deref(),
        Some("no record 0")
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn call_errors_convert_into_anyhow_with_question_mark() -> anyhow::Result<()> {
    async fn divide(client: &KitchenClient, a: i32, b: i32) -> anyhow::Result<i32> {
        Ok(client.divide(a, b).await?)
    }

    let (server, client) = kitchen().await?;
    assert_eq!(divide(&client, 9, 3).await?, 3);
    let error = divide(&client, 1, 0).await.unwrap_err();
    let call_error = error
        .downcast_ref::<CallError<DivError>>()
        .expect("the anyhow error wraps the CallError");
    assert_eq!(call_error.application(), Some(&DivError::ByZero));
    assert!(error.to_string().contains("ByZero"), "{error}");
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn framework_failures_are_call_error_rpc() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    server.shutdown().await;
    match client.divide(1, 1).await {
        Err(CallError::Rpc(_)) => {}
        other => panic!("expected CallError::Rpc after shutdown, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn handle_dispatches_in_process() {
    let server = KitchenServer::new(KitchenImpl::default());
    match server.handle(KitchenRequest::Ping {}).await {
        KitchenResponse::Ping(pong) => assert_eq!(pong, "pong"),
        other => panic!("wrong response: {}", variant_name(&other)),
    }
    match server.handle(KitchenRequest::Divide { a: 6, b: 3 }).await {
        KitchenResponse::Divide(result) => assert_eq!(result, Ok(2)),
        other => panic!("wrong response: {}", variant_name(&other)),
    }
    match server.handle(KitchenRequest::Divide { a: 6, b: 0 }).await {
        KitchenResponse::Divide(result) => assert_eq!(result, Err(DivError::ByZero)),
        other => panic!("wrong response: {}", variant_name(&other)),
    }
    // No call context in process.
    match server.handle(KitchenRequest::Type { r#match: 2 }).await {
        KitchenResponse::Type(text) => assert_eq!(text, "<no context>:2"),
        other => panic!("wrong response: {}", variant_name(&other)),
    }
    match server
        .handle(KitchenRequest::Greet { name: "Ada".into() })
        .await
    {
        KitchenResponse::Greet(text) => assert_eq!(text, "Hello, Ada!"),
        other => panic!("wrong response: {}", variant_name(&other)),
    }
    match server.handle(KitchenRequest::Record { value: 4 }).await {
        KitchenResponse::Record(()) => {}
        other => panic!("wrong response: {}", variant_name(&other)),
    }
    assert_eq!(server.get_ref().recorded.load(Ordering::SeqCst), 4);
}

/// Names a response variant (the generated enums do not derive `Debug`).
fn variant_name(response: &KitchenResponse) -> &'static str {
    match response {
        KitchenResponse::Ping(_) => "Ping",
        KitchenResponse::Type(_) => "Type",
        KitchenResponse::Many(_) => "Many",
        KitchenResponse::Divide(_) => "Divide",
        KitchenResponse::Lookup(_) => "Lookup",
        KitchenResponse::Record(_) => "Record",
        KitchenResponse::Metadata(_) => "Metadata",
        KitchenResponse::Names(_) => "Names",
        KitchenResponse::Sleep(_) => "Sleep",
        KitchenResponse::Greet(_) => "Greet",
        KitchenResponse::PingTwice(_) => "PingTwice",
    }
}

#[test]
fn request_method_names_are_the_wire_names() {
    let requests = [
        KitchenRequest::Ping {},
        KitchenRequest::Type { r#match: 0 },
        KitchenRequest::Divide { a: 0, b: 0 },
        KitchenRequest::Lookup { id: 0 },
        KitchenRequest::Record { value: 0 },
        KitchenRequest::Greet {
            name: String::new(),
        },
        KitchenRequest::PingTwice {},
    ];
    let names: Vec<&str> = requests.iter().map(KitchenRequest::method_name).collect();
    assert_eq!(
        names,
        [
            "ping",
            "type",
            "divide",
            "lookup",
            "record",
            "greet",
            "ping_twice"
        ]
    );
}

#[test]
fn methods_lists_every_method_in_declaration_order() {
    let server = KitchenServer::new(KitchenImpl::default());
    assert_eq!(Service::name(&server), "Kitchen");
    assert_eq!(
        Service::methods(&server),
        [
            "ping",
            "type",
            "many",
            "divide",
            "lookup",
            "record",
            "metadata",
            "names",
            "sleep",
            "greet",
            "ping_twice",
        ]
    );
    assert!(!Service::methods(&server).contains(&"removed"));
}

#[test]
fn service_name_constants() {
    assert_eq!(KitchenClient::SERVICE_NAME, "Kitchen");
    assert_eq!(RenamedClient::SERVICE_NAME, "pkg.v1.Renamed");
    assert_eq!(
        Service::name(&RenamedServer::new(RenamedImpl)),
        "pkg.v1.Renamed"
    );
}

#[tokio::test]
async fn renamed_service_answers_to_its_wire_name() -> anyhow::Result<()> {
    let (server, connection) = connect(RenamedServer::new(RenamedImpl)).await?;
    let client = RenamedClient::new(connection.clone());
    assert_eq!(client.whoami().await?, "pkg.v1.Renamed");

    // The trait's own name is not a service on this server.
    let by_trait_name = Method::new("Renamed", "whoami");
    let raw = traitrpc_core::Client::new(connection);
    match raw.call::<_, String>(&by_trait_name, &()).await {
        Err(RpcError::UnknownService { service }) => assert_eq!(service, "Renamed"),
        other => panic!("expected UnknownService, got {other:?}"),
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn handler_context_names_service_and_method() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    assert_eq!(
        client.names().await?,
        ("Kitchen".to_string(), "names".to_string())
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn configured_out_method_is_unknown_to_the_server() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    let removed = Method::new("Kitchen", "removed");
    match client.client().call::<_, u8>(&removed, &()).await {
        Err(RpcError::UnknownMethod { service, method }) => {
            assert_eq!((service.as_str(), method.as_str()), ("Kitchen", "removed"));
        }
        other => panic!("expected UnknownMethod, got {other:?}"),
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn default_method_bodies_run_on_the_server() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    assert_eq!(client.greet("Ada".into()).await?, "Hello, Ada!");
    assert_eq!(client.ping_twice().await?, "pongpong");
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn metadata_is_readable_in_the_handler() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    let mut metadata = Metadata::new();
    metadata.insert("token", "secret")?;
    metadata.insert("trace-id", "42")?;
    let with = client.with_metadata(metadata);
    assert_eq!(
        with.metadata("token".into()).await?.as_deref(),
        Some("secret")
    );
    assert_eq!(
        with.metadata("trace-id".into()).await?.as_deref(),
        Some("42")
    );
    assert_eq!(with.metadata("missing".into()).await?, None);
    // `with_metadata` returns a copy: the original client sends none.
    assert_eq!(client.metadata("token".into()).await?, None);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn with_timeout_bounds_one_client_copy() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    let hasty = client.with_timeout(Duration::from_millis(20));
    match hasty.sleep(2_000).await {
        Err(RpcError::DeadlineExceeded) => {}
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(hasty.sleep(0).await?, 0);
    // The original client keeps its (longer) default timeout.
    assert_eq!(client.sleep(50).await?, 50);
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn clones_call_concurrently_over_one_connection() -> anyhow::Result<()> {
    let (server, client) = kitchen().await?;
    let calls = (0..32).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.divide(i * 10, 10).await })
    });
    for (i, call) in (0..).zip(calls) {
        assert_eq!(call.await?, Ok(i));
    }
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn from_client_keeps_the_options() -> anyhow::Result<()> {
    let (server, connection) = connect(KitchenServer::new(KitchenImpl::default())).await?;
    let mut metadata = Metadata::new();
    metadata.insert("token", "from-client")?;
    let client =
        KitchenClient::from_client(traitrpc_core::Client::new(connection).with_metadata(metadata));
    assert_eq!(
        client.metadata("token".into()).await?.as_deref(),
        Some("from-client")
    );
    server.shutdown().await;
    Ok(())
}

#[test]
fn requests_and_responses_serialize() -> anyhow::Result<()> {
    let request = KitchenRequest::Many {
        a: 1,
        b: 2,
        c: 3,
        d: 4,
        e: 5,
        f: "f".into(),
        g: vec![6],
        h: None,
        i: (7, 'i'),
        j: Record {
            id: 8,
            tags: vec![],
        },
    };
    let mut buf = bytes::BytesMut::new();
    traitrpc_core::codec::encode_into(&request, &mut buf)?;
    let decoded: KitchenRequest = traitrpc_core::codec::decode(&buf)?;
    match decoded {
        KitchenRequest::Many { f, i, j, .. } => {
            assert_eq!((f.as_str(), i, j.id), ("f", (7, 'i'), 8));
        }
        other => panic!("decoded as {}", other.method_name()),
    }

    let response = KitchenResponse::Divide(Err(DivError::ByZero));
    let mut buf = bytes::BytesMut::new();
    traitrpc_core::codec::encode_into(&response, &mut buf)?;
    match traitrpc_core::codec::decode::<KitchenResponse>(&buf)? {
        KitchenResponse::Divide(result) => assert_eq!(result, Err(DivError::ByZero)),
        other => panic!("decoded as {}", variant_name(&other)),
    }
    Ok(())
}
