use traitrpc_core::service;

#[service]
trait Svc {
    async fn self_(&self) -> u8;
}

fn main() {}
