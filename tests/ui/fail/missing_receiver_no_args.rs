use traitrpc_core::service;

#[service]
trait Svc {
    async fn ping() -> u8;
}

fn main() {}
