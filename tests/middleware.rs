//! The server's middleware seam: an async layer around every call that sees its context
//! before the arguments are decoded, may refuse it, and learns how it was answered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use traitrpc_core::protocol::status;
use traitrpc_core::server::middleware::{self, Next};
use traitrpc_core::{service, Answered, Metadata, Rejection, Router, RpcError, Streaming};

#[service]
pub trait Shop {
    async fn price(&self, item: String) -> u64;
    async fn buy(&self, item: String, count: u32) -> Result<u64, String>;
    async fn catalogue(&self, n: u32) -> Streaming<String>;
    async fn boom(&self) -> u8;
}

struct ShopImpl;

impl Shop for ShopImpl {
    async fn price(&self, item: String) -> u64 {
        item.len() as u64 * 10
    }
    async fn buy(&self, item: String, count: u32) -> Result<u64, String> {
        if count == 0 {
            Err(format!("cannot buy zero {item}"))
        } else {
            Ok(count as u64 * 10)
        }
    }
    async fn catalogue(&self, n: u32) -> Streaming<String> {
        Streaming::iter((0..n).map(|i| format!("item {i}")))
    }
    async fn boom(&self) -> u8 {
        panic!("the handler exploded")
    }
}

/// What the recording middleware saw of one call.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    request_bytes: usize,
    status: Option<u8>,
    response_bytes: usize,
    items_sent: u64,
}

fn recorder(seen: Arc<Mutex<Vec<Seen>>>) -> impl traitrpc_core::Middleware {
    middleware::from_fn(move |next: Next| {
        let seen = Arc::clone(&seen);
        async move {
            let method = next.context().method().to_string();
            let request_bytes = next.request_bytes();
            let outcome = next.run().await;
            let (status, response_bytes, items_sent) = match &outcome {
                Ok(a) => (a.status(), a.response_bytes(), a.items_sent()),
                Err(r) => (Some(r.code()), 0, 0),
            };
            seen.lock().unwrap().push(Seen {
                method,
                request_bytes,
                status,
                response_bytes,
                items_sent,
            });
            outcome
        }
    })
}

/// An asynchronous authentication check: the token is looked up "elsewhere" (after a
/// real suspension, so the call cannot complete in its first poll).
fn auth() -> impl traitrpc_core::Middleware {
    middleware::from_fn(|next: Next| async move {
        let token = next
            .context()
            .metadata()
            .get_str("token")
            .map(str::to_string);
        tokio::time::sleep(Duration::from_millis(5)).await;
        match token.as_deref() {
            Some("s3cret") => next.run().await,
            Some(_) => Err(Rejection::PermissionDenied(
                "that token may not shop".into(),
            )),
            None => Err(Rejection::Unauthenticated("a token is required".into())),
        }
    })
}

async fn serve(router: Router) -> traitrpc_core::ServerHandle<std::net::SocketAddr> {
    traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap()
}

fn token(value: &str) -> Metadata {
    let mut md = Metadata::new();
    md.insert("token", value).unwrap();
    md
}

#[tokio::test]
async fn an_async_auth_layer_refuses_before_anything_runs_and_admits_valid_tokens() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    // The recorder is outermost: it sees refusals too.
    let router = Router::from(ShopServer::new(ShopImpl))
        .layer(recorder(Arc::clone(&seen)))
        .layer(auth());
    let server = serve(router).await;
    let shop = ShopClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    let anonymous = shop.price("tea".into()).await.unwrap_err();
    assert!(
        matches!(anonymous, RpcError::Unauthenticated { .. }),
        "{anonymous:?}"
    );
    let wrong = shop
        .with_metadata(token("nope"))
        .price("tea".into())
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, RpcError::PermissionDenied { .. }),
        "{wrong:?}"
    );
    let shop = shop.with_metadata(token("s3cret"));
    assert_eq!(shop.price("tea".into()).await.unwrap(), 30);

    // Refused before the arguments were decoded: garbage arguments from an
    // unauthenticated caller are UNAUTHENTICATED, not INVALID_ARGUMENTS.
    let raw = traitrpc_core::Client::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    let method = traitrpc_core::Method::new("Shop", "price");
    let garbage = raw
        .call::<_, u64>(&method, &(1u8, 2u8, 3u8))
        .await
        .unwrap_err();
    assert!(
        matches!(garbage, RpcError::Unauthenticated { .. }),
        "{garbage:?}"
    );

    let seen = seen.lock().unwrap().clone();
    let statuses: Vec<Option<u8>> = seen.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            Some(status::UNAUTHENTICATED),
            Some(status::PERMISSION_DENIED),
            Some(status::OK),
            Some(status::UNAUTHENTICATED)
        ]
    );
    let ok = &seen[2];
    assert_eq!(ok.method, "price");
    assert_eq!(
        ok.request_bytes, 4,
        "\"tea\": a length byte and three bytes"
    );
    assert!(ok.response_bytes > 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_layer_sees_every_kind_of_answer_and_stream_items() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let router = Router::from(ShopServer::new(ShopImpl)).layer(recorder(Arc::clone(&seen)));
    let server = serve(router).await;
    let shop = ShopClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    assert_eq!(shop.buy("tea".into(), 2).await.unwrap(), 20);
    assert!(shop.buy("tea".into(), 0).await.is_err());
    let items: Vec<String> = shop
        .catalogue(7)
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    assert_eq!(items.len(), 7);
    let panicked = shop.boom().await.unwrap_err();
    assert!(
        matches!(panicked, RpcError::HandlerPanicked { .. }),
        "{panicked:?}"
    );
    // An unknown method of a known service goes through the layers too.
    let raw = traitrpc_core::Client::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    let unknown = traitrpc_core::Method::new("Shop", "steal");
    let error = raw.call::<_, u8>(&unknown, &()).await.unwrap_err();
    assert!(matches!(error, RpcError::UnknownMethod { .. }), "{error:?}");

    let seen = seen.lock().unwrap().clone();
    let by_method = |m: &str| {
        seen.iter()
            .filter(|s| s.method == m)
            .cloned()
            .collect::<Vec<_>>()
    };
    let buys = by_method("buy");
    assert_eq!(buys[0].status, Some(status::OK));
    assert_eq!(buys[1].status, Some(status::APPLICATION_ERROR));
    let catalogue = &by_method("catalogue")[0];
    assert_eq!(
        (catalogue.status, catalogue.items_sent),
        (Some(status::OK), 7)
    );
    // A panic unwinds through the layer; the server answers it, the layer saw nothing
    // (its future was dropped mid-call): it must not count on running to the end.
    assert!(by_method("boom").is_empty());
    assert_eq!(by_method("steal")[0].status, Some(status::UNKNOWN_METHOD));
    server.shutdown().await;
}

#[tokio::test]
async fn layers_run_in_the_order_they_were_added_and_interceptors_are_layers() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let step = |name: &'static str, order: Arc<Mutex<Vec<String>>>| {
        middleware::from_fn(move |next: Next| {
            let order = Arc::clone(&order);
            async move {
                order.lock().unwrap().push(format!("{name} in"));
                let out = next.run().await;
                order.lock().unwrap().push(format!("{name} out"));
                out
            }
        })
    };
    let intercepted = Arc::clone(&order);
    let router = Router::from(ShopServer::new(ShopImpl))
        .layer(step("outer", Arc::clone(&order)))
        .with_interceptor(move |_: &traitrpc_core::Context| {
            intercepted.lock().unwrap().push("interceptor".into());
            Ok(())
        })
        .layer(step("inner", Arc::clone(&order)));
    let server = serve(router).await;
    let shop = ShopClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    assert_eq!(shop.price("ab".into()).await.unwrap(), 20);
    assert_eq!(
        *order.lock().unwrap(),
        [
            "outer in",
            "interceptor",
            "inner in",
            "inner out",
            "outer out"
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_layer_fails_only_its_call() {
    let router = Router::from(ShopServer::new(ShopImpl)).layer(middleware::from_fn(
        |next: Next| async move {
            if next.context().method() == "boom" {
                panic!("the layer exploded");
            }
            next.run().await
        },
    ));
    let server = serve(router).await;
    let shop = ShopClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    match shop.boom().await.unwrap_err() {
        RpcError::HandlerPanicked { message } => assert!(message.contains("layer exploded")),
        other => panic!("{other:?}"),
    }
    assert_eq!(shop.price("a".into()).await.unwrap(), 10);
    server.shutdown().await;
}

#[tokio::test]
async fn a_layer_may_refuse_with_any_status() {
    let router = Router::from(ShopServer::new(ShopImpl)).layer(middleware::from_fn(
        |_next: Next| async move {
            Err::<Answered, _>(Rejection::status(status::OVERLOADED, "try later"))
        },
    ));
    let server = serve(router).await;
    let shop = ShopClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    let error = shop.price("a".into()).await.unwrap_err();
    assert!(matches!(error, RpcError::Overloaded { .. }), "{error:?}");
    assert!(error.outcome().never_ran());
    server.shutdown().await;
}

#[tokio::test]
async fn streaming_calls_on_a_version_1_connection_are_refused_unsent() {
    let server = serve(Router::from(ShopServer::new(ShopImpl))).await;
    let connection = traitrpc_transport_tcp::connect_with_config(
        server.local_addr(),
        traitrpc_core::ClientConfig::default().max_protocol_version(1),
    )
    .await
    .unwrap();
    let shop = ShopClient::new(connection);
    assert_eq!(shop.price("abc".into()).await.unwrap(), 30);
    let error = shop.catalogue(3).await.unwrap_err();
    assert!(
        matches!(error, RpcError::VersionMismatch { ours: 2, theirs: 1 }),
        "{error:?}"
    );
    assert!(error.outcome().never_ran());
    server.shutdown().await;
}
