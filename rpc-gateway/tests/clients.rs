//! Real, unmodified protobuf clients from npm and PyPI against the gateway, each with code
//! its own ecosystem's generator made from the `.proto` the gateway exports:
//!
//! - `node`: Connect's Node clients (`@connectrpc/connect-node`: Connect JSON and binary,
//!   gRPC over h2c, gRPC-Web), code from `protoc-gen-es` through `buf generate`;
//! - `python`: grpcio (with grpcio-status and grpcio-reflection) and connectrpc (Connect,
//!   gRPC, gRPC-Web), code from grpcio-tools' protoc and `protoc-gen-connectrpc`;
//! - `buf`: `buf curl` with each protocol, with the `.proto` as its schema and with server
//!   reflection.
//!
//! Each test serves the test shop (`support/shop.rs`) in-process, writes its `.proto` to a
//! temporary directory and runs `tests/clients/run.sh SUITE` with `SHOP_URL` and
//! `PROTO_DIR`; the suite prints one line per case. The clients are installed (pinned, into
//! `target/clients/`) by `bash .ci/clients.sh`, or by `run.sh` on first use. The tests are
//! `#[ignore]`d with the reason, so a plain `cargo test` lists them as ignored;
//! `-- --include-ignored` runs them, and then a missing Node.js, npm or Python fails them.

#[path = "support/shop.rs"]
mod shop;

use std::path::PathBuf;
use std::time::Duration;

use traitrpc_core::Router;

/// A suite's whole run (installing on first use included) may take this long.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

async fn run_suite(suite: &str) {
    let router = Router::from(shop::OrdersServer::new(shop::Shop));
    let codec = traitrpc_proto::ProtoCodec::for_router(&router).expect("the shop maps to protobuf");
    let proto_dir = std::env::temp_dir().join(format!(
        "traitrpc-clients-{suite}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&proto_dir).unwrap();
    for (name, text) in codec.proto_files() {
        std::fs::write(proto_dir.join(name), text).unwrap();
    }

    let gateway = traitrpc_gateway::serve("127.0.0.1:0", router, Default::default())
        .await
        .unwrap();
    let url = format!("http://{}", gateway.local_addr());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/run.sh");
    let run = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(suite)
        .env("SHOP_URL", &url)
        .env("PROTO_DIR", &proto_dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SUITE_TIMEOUT, run).await;
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&proto_dir);

    let out = out
        .unwrap_or_else(|_| panic!("the {suite} suite did not finish within {SUITE_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("bash {} {suite} did not start: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the {suite} clients' suite failed ({}); install its clients with `bash .ci/clients.sh` \
         (npm and PyPI) if they are missing:\n{stdout}\n{stderr}",
        out.status
    );
    // What passed, in the test's output (`cargo test -- --nocapture` shows it).
    println!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the npm/PyPI clients: bash .ci/clients.sh"]
async fn connect_node_clients_call_every_method_with_each_protocol() {
    run_suite("node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the npm/PyPI clients: bash .ci/clients.sh"]
async fn grpcio_and_connectrpc_python_clients_call_every_method() {
    run_suite("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the npm/PyPI clients: bash .ci/clients.sh"]
async fn buf_curl_calls_with_the_schema_and_with_reflection() {
    run_suite("buf").await;
}
