use traitrpc_core::service;

#[service]
trait Svc {
    async fn with_timeout(&self, millis: u64) -> bool;
}

fn main() {}
