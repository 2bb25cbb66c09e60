#![deny(warnings)]
use traitrpc_core::{service, Streaming};

/// All three kinds, with the stream argument in any position and a fallible client
/// stream.
#[service]
trait Pipes {
    async fn download(&self, name: String) -> Streaming<Vec<u8>>;
    async fn upload(&self, chunks: Streaming<Vec<u8>>, name: String) -> Result<u64, String>;
    async fn chat(&self, room: u32, messages: Streaming<String>) -> traitrpc_core::Streaming<String>;
}

fn main() {
    // The client methods' signatures.
    async fn _uses(client: PipesClient) -> Result<(), traitrpc_core::RpcError> {
        let _down: Streaming<Vec<u8>> = client.download("f".into()).await?;
        let _up: Result<u64, traitrpc_core::CallError<String>> =
            client.upload(Streaming::empty(), "f".into()).await;
        let _chat: Streaming<String> = client.chat(1, Streaming::iter(["hi".to_string()])).await?;
        Ok(())
    }
}
