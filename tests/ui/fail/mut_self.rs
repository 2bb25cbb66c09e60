use traitrpc_core::service;

#[service]
trait Svc {
    async fn bump(&mut self) -> u64;
}

fn main() {}
