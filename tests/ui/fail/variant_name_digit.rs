use traitrpc_core::service;

#[service]
trait Svc {
    async fn _1(&self) -> u8;
}

fn main() {}
