use traitrpc_core::service;

#[service]
trait Svc {
    async fn name(&self) -> &str;
}

fn main() {}
