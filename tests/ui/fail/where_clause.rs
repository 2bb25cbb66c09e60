use traitrpc_core::service;

#[service]
trait Svc {
    async fn ping(&self) -> u8
    where
        Self: Sized;
}

fn main() {}
