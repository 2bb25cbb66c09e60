//! A user crate whose framework dependency is renamed (`my_rpc = { package = "traitrpc" }`):
//! `#[service(crate = "my_rpc")]` points the generated code at the new name.

use my_rpc::service;

#[service(crate = "my_rpc")]
pub trait Greeter {
    async fn greet(&self, name: String) -> String;
}

struct English;
impl Greeter for English {
    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = my_rpc::serve("127.0.0.1:0", GreeterServer::new(English)).await?;
    let greeter = GreeterClient::new(my_rpc::connect(server.local_addr()).await?);
    assert_eq!(greeter.greet("Ada".into()).await?, "Hello, Ada!");
    server.shutdown().await;
    println!("external crate with a renamed dependency: ok");
    Ok(())
}
