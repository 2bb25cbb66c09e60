use traitrpc_core::service;

#[service]
trait Svc {
    type Item;
    async fn ping(&self) -> u8;
}

fn main() {}
