use traitrpc_core::service;

#[service]
trait Svc {
    async fn ping(self) -> u8;
}

fn main() {}
