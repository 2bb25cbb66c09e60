//! Found while writing the fuzz targets (issue 4): a service whose argument type is
//! recursive (a tree, a JSON-like value) lets any client crash the whole server process.
//! bincode decodes nested values recursively with no depth limit, so a payload of a few
//! kilobytes of "one more level" overflows the stack of the task decoding it, and a stack
//! overflow aborts the process: every connection is lost, not just the offending one.
//!
//! The same holds on the client side for a recursive return type and a hostile server.
//! `traitrpc_core::codec::decode` now refuses to read once the decoding thread's stack runs
//! low, so such a request is answered INVALID_ARGUMENTS. The server runs in a child
//! process so that a regression (a crash) fails this test instead of killing the runner.

use std::time::Duration;

mod common;

use serde::{Deserialize, Serialize};
use traitrpc_core::{service, Method, RpcError};

/// A recursive type, as applications use for trees and dynamic values.
#[derive(Debug, Serialize, Deserialize)]
pub enum Tree {
    Leaf,
    Node(Box<Tree>),
}

#[service]
pub trait Trees {
    async fn depth(&self, tree: Tree) -> u64;
    async fn ping(&self) -> u8;
}

struct TreesImpl;

impl Trees for TreesImpl {
    async fn depth(&self, tree: Tree) -> u64 {
        let mut depth = 0;
        let mut node = &tree;
        while let Tree::Node(child) = node {
            depth += 1;
            node = child;
        }
        // Dismantle without recursion.
        let mut rest = tree;
        while let Tree::Node(child) = rest {
            rest = *child;
        }
        depth
    }

    async fn ping(&self) -> u8 {
        1
    }
}

/// Bytes sent as they are: a tuple of `u8`s, which bincode writes without a length.
struct Raw(Vec<u8>);

impl Serialize for Raw {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

/// Not a test by itself: the server process the test below starts.
#[test]
#[ignore = "helper process, started by a_deeply_nested_argument_does_not_crash_the_server"]
fn helper_trees_server() {
    if std::env::var_os("RPC_TEST_TREES_SERVER").is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = traitrpc_transport_tcp::serve("127.0.0.1:0", TreesServer::new(TreesImpl))
            .await
            .unwrap();
        println!("LISTENING {}", server.local_addr());
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

#[tokio::test]
async fn a_deeply_nested_argument_does_not_crash_the_server() {
    let (mut child, addr) =
        common::spawn_helper_server("helper_trees_server", "RPC_TEST_TREES_SERVER");

    // A well-formed tree 100,000 levels deep: 100 KB, far below any frame limit.
    let mut payload = vec![1u8; 100_000];
    payload.push(0);
    let client = traitrpc_core::Client::new(
        traitrpc_transport_tcp::connect(addr.as_str())
            .await
            .unwrap(),
    );
    let method = Method::new("Trees", "depth");
    let outcome = client.call::<_, u64>(&method, &(Raw(payload),)).await;
    // Refusing it (INVALID_ARGUMENTS) or answering it are both fine; losing the server
    // is not.
    assert!(
        !matches!(outcome, Err(RpcError::ConnectionClosed { .. })),
        "the server went away: {outcome:?}"
    );
    let fresh = TreesClient::new(
        traitrpc_transport_tcp::connect(addr.as_str())
            .await
            .unwrap(),
    );
    assert_eq!(fresh.ping().await.unwrap(), 1);
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the server process died"
    );
    let _ = child.kill();
    let _ = child.wait();
}
