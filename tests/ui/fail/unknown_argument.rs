use traitrpc_core::service;

#[service(bogus = 1)]
trait Svc {
    async fn ping(&self) -> u8;
}

fn main() {}
