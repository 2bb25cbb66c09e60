//! One implementation, two protocols: a calculator served natively and over HTTP/JSON
//! (Connect's unary JSON) from the same router, so curl, a browser's `fetch` or a program
//! in any language can call it.
//!
//! ```text
//! cargo run --example http              # calls itself both ways and exits
//! cargo run --example http -- --serve   # keeps serving on 127.0.0.1:8080; try:
//! curl -H 'Content-Type: application/json' -d '{"a":1,"b":2}' http://127.0.0.1:8080/Calculator/add
//! ```

use rrpc::gateway::{self, GatewayConfig};
use rrpc::{service, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[service]
pub trait Calculator {
    /// `a + b`.
    #[idempotent]
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `a / b`, or an error for `b == 0`.
    async fn divide(&self, a: i64, b: i64) -> Result<i64, String>;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let serve = std::env::args().any(|a| a == "--serve");
    let router = Router::from(CalculatorServer::new(Calc));
    let native = rrpc::serve("127.0.0.1:0", router.clone()).await?;
    let http = gateway::serve(
        if serve {
            "127.0.0.1:8080"
        } else {
            "127.0.0.1:0"
        },
        router,
        GatewayConfig::default().allow_origin("*"),
    )
    .await?;
    println!(
        "native protocol on {}, HTTP/JSON on http://{}",
        native.local_addr(),
        http.local_addr()
    );

    let calculator = CalculatorClient::new(rrpc::connect(native.local_addr()).await?);
    println!("native: add(1, 2)    = {}", calculator.add(1, 2).await?);
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
