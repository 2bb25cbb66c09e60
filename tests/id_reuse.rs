//! Call ids come back (version 5, `docs/PROTOCOL.md` section 22.4): a client may reuse
//! the id of an answered unary call (this crate's does with
//! `ClientConfig::reuse_call_ids`), possibly while the server's task of the old call is
//! still ending. Whatever that task does late (its completion check, a deadline, a
//! panic) must concern the old call only, never the new call that carries the same id.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Notify;
use traitrpc_core::{service, DispatchError, HandlerFuture, IncomingCall, Method};

/// A connection whose client reuses call ids (`ClientConfig::reuse_call_ids`).
async fn reusing(addr: SocketAddr) -> traitrpc_core::Connection {
    let config = traitrpc_core::ClientConfig::default().reuse_call_ids(true);
    traitrpc_transport_tcp::connect_with_config(addr, config)
        .await
        .unwrap()
}

/// `first` answers at once and then goes on until `release_first`; `second` starts,
/// says so, and answers once `release_second` is notified.
#[derive(Default)]
struct Lingering {
    release_first: Arc<Notify>,
    second_started: Arc<Notify>,
    release_second: Arc<Notify>,
}

impl traitrpc_core::Service for Lingering {
    fn name(&self) -> &'static str {
        "Lingering"
    }

    fn methods(&self) -> &'static [&'static str] {
        &["first", "second"]
    }

    fn call(&self, method: &str, call: IncomingCall) -> Result<HandlerFuture, DispatchError> {
        let reply = call.into_reply();
        match method {
            "first" => {
                let release = Arc::clone(&self.release_first);
                Ok(Box::pin(async move {
                    let answered = reply.ok(&1u32);
                    release.notified().await;
                    answered
                }))
            }
            "second" => {
                let started = Arc::clone(&self.second_started);
                let release = Arc::clone(&self.release_second);
                Ok(Box::pin(async move {
                    started.notify_one();
                    release.notified().await;
                    reply.ok(&2u32)
                }))
            }
            _ => Err(DispatchError::UnknownMethod),
        }
    }
}

#[tokio::test]
async fn an_ended_call_s_task_does_not_answer_the_call_that_reuses_its_id() {
    let service = Lingering::default();
    let (release_first, second_started, release_second) = (
        Arc::clone(&service.release_first),
        Arc::clone(&service.second_started),
        Arc::clone(&service.release_second),
    );
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", service)
        .await
        .unwrap();
    let client = traitrpc_core::Client::new(reusing(server.local_addr()).await);
    assert_eq!(
        client.connection().unwrap().protocol_version(),
        traitrpc_core::protocol::VERSION
    );

    // `first` is answered while its task goes on; its id is free on the client.
    let first: u32 = client
        .call(&Method::new("Lingering", "first"), &())
        .await
        .unwrap();
    assert_eq!(first, 1);
    // `second` takes the same id (the only one free) and waits in its handler.
    let second = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call::<_, u32>(&Method::new("Lingering", "second"), &())
                .await
        }
    });
    second_started.notified().await;
    // The old task ends now: its check for a call it "forgot" to answer must find its own
    // call answered, not take the new one.
    assert_eq!(server.calls_in_flight(), 2);
    release_first.notify_one();
    // Its in-flight slot is given back after that check.
    while server.calls_in_flight() > 1 {
        tokio::task::yield_now().await;
    }
    release_second.notify_one();
    assert_eq!(second.await.unwrap().unwrap(), 2);
    server.shutdown().await;
}

#[service]
pub trait Awaiting {
    /// Answers `value` after waiting once, so that the answer comes from the handler's own
    /// task rather than the connection's.
    async fn echo(&self, value: u64) -> u64;
}

struct AwaitOnce;

impl Awaiting for AwaitOnce {
    async fn echo(&self, value: u64) -> u64 {
        tokio::task::yield_now().await;
        value
    }
}

/// Answers that come from handlers' own tasks, many at a time, with ids reused as fast as
/// they come back, and the server coalescing those answers' writes: every caller gets its
/// own value. (The load generator found the reuse race this way, in release builds at
/// 16 in flight; the test above pins it deterministically.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_callers_of_awaiting_handlers_all_get_their_own_answers() {
    let server = traitrpc_transport_tcp::serve("127.0.0.1:0", AwaitingServer::new(AwaitOnce))
        .await
        .unwrap();
    let client = AwaitingClient::new(reusing(server.local_addr()).await);
    let callers: Vec<_> = (0..32u64)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                for call in 0..200u64 {
                    let value = caller * 1000 + call;
                    assert_eq!(client.echo(value).await.unwrap(), value);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    server.shutdown().await;
}
