//! The server-side interceptor: admits or refuses each call before its handler runs.

mod common;

use std::sync::atomic::Ordering;

use common::{ProbeClient, ProbeImpl, ProbeServer};
use traitrpc_core::{Context, Metadata, Rejection, Router, RpcError};

fn check_token(ctx: &Context) -> Result<(), Rejection> {
    match ctx.metadata().get_str("authorization") {
        None => Err(Rejection::Unauthenticated("no bearer token".into())),
        Some("Bearer admin") => Ok(()),
        Some("Bearer guest") if ctx.method() == "echo" => Ok(()),
        Some("Bearer guest") => Err(Rejection::PermissionDenied(format!(
            "guests may not call {}",
            ctx.method()
        ))),
        Some(_) => Err(Rejection::Unauthenticated("unknown token".into())),
    }
}

fn bearer(token: &str) -> Metadata {
    let mut md = Metadata::new();
    md.insert("authorization", format!("Bearer {token}"))
        .unwrap();
    md
}

#[tokio::test]
async fn an_interceptor_admits_and_refuses_calls_with_typed_errors() {
    let probe_impl = ProbeImpl::default();
    let observed = probe_impl.observed.clone();
    let router = Router::new()
        .add_service(ProbeServer::new(probe_impl))
        .unwrap()
        .with_interceptor(check_token);
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    let probe = ProbeClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );

    assert!(matches!(
        probe.echo(1).await.unwrap_err(),
        RpcError::Unauthenticated { message } if message == "no bearer token"
    ));
    let guest = probe.with_metadata(bearer("guest"));
    assert_eq!(guest.echo(2).await.unwrap(), 2);
    assert!(matches!(
        guest.sleep_echo(1, 1).await.unwrap_err(),
        RpcError::PermissionDenied { message } if message.contains("sleep_echo")
    ));
    assert!(matches!(
        probe
            .with_metadata(bearer("mallory"))
            .echo(3)
            .await
            .unwrap_err(),
        RpcError::Unauthenticated { .. }
    ));
    let admin = probe.with_metadata(bearer("admin"));
    assert_eq!(admin.sleep_echo(1, 4).await.unwrap(), 4);
    // Refused calls never reached a handler.
    assert_eq!(observed.started.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_interceptor_fails_the_call_not_the_connection() {
    let router = Router::new()
        .add_service(ProbeServer::new(ProbeImpl::default()))
        .unwrap()
        .with_interceptor(|ctx: &Context| -> Result<(), Rejection> {
            if ctx.method() == "hang" {
                panic!("interceptor bug");
            }
            Ok(())
        });
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", router)
        .await
        .unwrap();
    let probe = ProbeClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    assert!(matches!(
        probe.hang().await.unwrap_err(),
        RpcError::HandlerPanicked { .. }
    ));
    assert_eq!(probe.echo(5).await.unwrap(), 5);
    server.shutdown().await;
}
