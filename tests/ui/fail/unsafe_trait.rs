use traitrpc_core::service;

#[service]
unsafe trait Svc {
    async fn ping(&self) -> u8;
}

fn main() {}
