use traitrpc_core::{service, Streaming};

#[service]
trait Merge {
    async fn merge(&self, left: Streaming<u64>, right: Streaming<u64>) -> u64;
}

fn main() {}
