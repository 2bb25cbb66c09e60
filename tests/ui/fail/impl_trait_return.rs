use traitrpc_core::service;

#[service]
trait Svc {
    async fn numbers(&self) -> impl Iterator<Item = u8>;
}

fn main() {}
