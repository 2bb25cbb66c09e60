use traitrpc_core::service;

#[service(name = 1)]
trait Svc {
    async fn ping(&self) -> u8;
}

fn main() {}
