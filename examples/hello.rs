//! The smallest complete server and client: one service, one method, over TCP.

use traitrpc::service;

#[service]
pub trait Hello {
    /// Greets `name`.
    async fn hello(&self, name: String) -> String;
}

struct HelloImpl;

impl Hello for HelloImpl {
    async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = traitrpc::serve("127.0.0.1:0", HelloServer::new(HelloImpl)).await?;
    let client = HelloClient::new(traitrpc::connect(server.local_addr()).await?);
    println!("{}", client.hello("world".to_string()).await?);
    server.shutdown().await;
    Ok(())
}
