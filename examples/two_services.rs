//! One server hosting two services on one port, and one client connection calling both.

use std::sync::atomic::{AtomicU64, Ordering};

use traitrpc::{service, Router};

#[service]
pub trait Greeter {
    /// Greets `name`.
    async fn greet(&self, name: String) -> String;
}

#[service]
pub trait Counter {
    /// Adds `by` to the counter and returns the new value.
    async fn increment(&self, by: u64) -> u64;
}

struct English;
impl Greeter for English {
    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

#[derive(Default)]
struct Count(AtomicU64);
impl Counter for Count {
    async fn increment(&self, by: u64) -> u64 {
        self.0.fetch_add(by, Ordering::SeqCst) + by
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let services = Router::new()
        .add_service(GreeterServer::new(English))?
        .add_service(CounterServer::new(Count::default()))?;
    let server = traitrpc::serve("127.0.0.1:0", services).await?;
    println!("serving Greeter and Counter on {}", server.local_addr());

    // One connection; a client per service on top of it.
    let conn = traitrpc::connect(server.local_addr()).await?;
    let greeter = GreeterClient::new(conn.clone());
    let counter = CounterClient::new(conn);

    let (greeting, count) = tokio::join!(greeter.greet("Grace".into()), counter.increment(5));
    println!("Greeter.greet   -> {}", greeting?);
    println!("Counter.increment -> {}", count?);
    println!("Counter.increment -> {}", counter.increment(1).await?);

    server.shutdown().await;
    Ok(())
}
