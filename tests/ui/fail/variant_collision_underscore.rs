use traitrpc_core::service;

#[service]
trait Svc {
    async fn get(&self) -> u8;
    async fn _get(&self) -> u8;
}

fn main() {}
