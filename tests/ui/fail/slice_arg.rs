use traitrpc_core::service;

#[service]
trait Svc {
    async fn checksum(&self, data: &[u8]) -> u32;
}

fn main() {}
