use traitrpc_core::{service, Streaming};

#[service]
trait Batches {
    async fn upload(&self, batches: Vec<Streaming<u64>>) -> u64;
}

fn main() {}
