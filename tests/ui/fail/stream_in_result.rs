use traitrpc_core::{service, Streaming};

#[service]
trait Watch {
    async fn watch(&self, key: String) -> Result<Streaming<u64>, String>;
}

fn main() {}
