use traitrpc_core::service;

#[service]
trait Svc {
    const VERSION: u32;
    async fn ping(&self) -> u8;
}

fn main() {}
