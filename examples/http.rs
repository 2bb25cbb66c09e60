//! One implementation, reachable from everywhere: a calculator served natively (bincode
//! for Rust clients, JSON for other languages and tools) and over HTTP/JSON (Connect's
//! protocol) from the same router, so curl, a browser's `fetch`, the Python client or the
//! `traitrpc` command line can call it.
//!
//! ```text
//! cargo run --example http              # calls itself both ways and exits
//! cargo run --example http -- --serve   # keeps serving (native 127.0.0.1:7070, HTTP
//!                                       # 127.0.0.1:8080) until Ctrl-C
//! curl -H 'Content-Type: application/json' -d '{"a":1,"b":2}' http://127.0.0.1:8080/Calculator/add
//! ```
//!
//! `http://127.0.0.1:8080/` is a page that calls it from the browser with `fetch`
//! (`examples/web/index.html`: a unary call and a server stream).
//!
//! `--native ADDR` and `--http ADDR` choose the addresses (`127.0.0.1:0`: any free port;
//! the first line printed names both).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use traitrpc::gateway::{self, GatewayConfig};
use traitrpc::{service, Router, Streaming};

#[service]
pub trait Calculator {
    /// `a + b`.
    #[idempotent]
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `a / b`, or an error for `b == 0`.
    async fn divide(&self, a: i64, b: i64) -> Result<i64, String>;
    /// `1, 2, ..., to`, one item every `every_ms` milliseconds.
    async fn count(&self, to: u32, every_ms: u64) -> Streaming<u32>;
    /// Answers after `ms` milliseconds (deadlines and cancellation at work).
    async fn sleep(&self, ms: u64) -> u64;
    /// The call's metadata value for `key`, if the caller sent one.
    #[idempotent]
    async fn metadata(&self, key: String) -> Option<String>;
}

struct Calc;
impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn divide(&self, a: i64, b: i64) -> Result<i64, String> {
        if b == 0 {
            Err("division by zero".into())
        } else {
            Ok(a / b)
        }
    }
    async fn count(&self, to: u32, every_ms: u64) -> Streaming<u32> {
        let every = Duration::from_millis(every_ms);
        Streaming::from_stream(futures::stream::unfold(1, move |n| async move {
            if n > to {
                return None;
            }
            if n > 1 && !every.is_zero() {
                tokio::time::sleep(every).await;
            }
            Some((n, n + 1))
        }))
    }
    async fn sleep(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn metadata(&self, key: String) -> Option<String> {
        let context = traitrpc::context::current()?;
        context.metadata().get_str(&key).map(str::to_owned)
    }
}

/// The value after `flag` on the command line, or `default`.
fn flag(flag: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let serve = std::env::args().any(|a| a == "--serve");
    let (native_addr, http_addr) = if serve {
        (
            flag("--native", "127.0.0.1:7070"),
            flag("--http", "127.0.0.1:8080"),
        )
    } else {
        ("127.0.0.1:0".to_string(), "127.0.0.1:0".to_string())
    };
    let router = Router::from(CalculatorServer::new(Calc));
    let http_config = GatewayConfig::default().allow_origin("*").asset(
        "/",
        "text/html; charset=utf-8",
        include_str!("web/index.html"),
    );
    // The native port speaks HTTP too (one address for everything); the gateway also
    // listens on a port of its own.
    // The server's router has the health and reflection services it adds: HTTP callers
    // get them too.
    let server = traitrpc::Server::new(router);
    let router = server.router().clone();
    let listener = traitrpc::tcp::TcpListener::bind(native_addr.as_str()).await?;
    let native_local = listener.local_addr()?;
    let native = server
        .share_port(gateway::on_native_port(router.clone(), http_config.clone()))
        .serve(listener, native_local);
    let http = gateway::serve(http_addr.as_str(), router, http_config).await?;
    println!(
        "native protocol on {}, HTTP/JSON on http://{}",
        native.local_addr(),
        http.local_addr()
    );

    let calculator = CalculatorClient::new(traitrpc::connect(native.local_addr()).await?);
    println!("native: add(1, 2)    = {}", calculator.add(1, 2).await?);
    // The same port in JSON, for callers without the Rust types (tools, other languages).
    let json_connection = traitrpc::connect_with_config(
        native.local_addr(),
        traitrpc::ClientConfig::default().codec(traitrpc::PayloadCodec::Json),
    )
    .await?;
    let json = traitrpc::json::JsonClient::new(json_connection)?;
    let args = serde_json::json!({"a": 1, "b": 2});
    println!(
        "native JSON: Calculator.add {args} -> {}",
        json.call("Calculator", "add", &args).await?
    );
    let addr = http.local_addr();
    println!(
        "HTTP:   POST /Calculator/add {{\"a\":1,\"b\":2}} -> {}",
        post(addr, "/Calculator/add", r#"{"a":1,"b":2}"#).await?
    );
    println!(
        "HTTP:   POST /Calculator/divide {{\"a\":1,\"b\":0}} -> {}",
        post(addr, "/Calculator/divide", r#"{"a":1,"b":0}"#).await?
    );
    println!(
        "HTTP:   POST /Calculator/add {{\"a\":\"one\"}} -> {}",
        post(addr, "/Calculator/add", r#"{"a":"one"}"#).await?
    );
    println!(
        "HTTP on the native port: POST /Calculator/add {{\"a\":2,\"b\":2}} -> {}",
        post(native.local_addr(), "/Calculator/add", r#"{"a":2,"b":2}"#).await?
    );
    println!(
        "\ntry: curl -H 'Content-Type: application/json' -d '{{\"a\":1,\"b\":2}}' http://{addr}/Calculator/add"
    );

    if serve {
        tokio::signal::ctrl_c().await?;
    }
    http.shutdown().await;
    native.shutdown().await;
    Ok(())
}

/// A plain HTTP/1.0 POST of JSON on loopback: the status code and the body.
async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let code = head.split(' ').nth(1).unwrap_or("?");
    Ok(format!("{code} {body}"))
}
