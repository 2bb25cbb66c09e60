use traitrpc_core::service;

#[service]
trait Svc {
    async fn name(&self) -> Option<&'static str>;
}

fn main() {}
