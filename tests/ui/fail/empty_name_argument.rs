use traitrpc_core::service;

#[service(name = "")]
trait Svc {
    async fn ping(&self) -> u8;
}

fn main() {}
