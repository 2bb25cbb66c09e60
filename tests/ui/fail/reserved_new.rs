use traitrpc_core::service;

#[service]
trait Svc {
    async fn new(&self, name: String) -> u64;
}

fn main() {}
