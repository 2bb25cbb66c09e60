use traitrpc_core::service;

#[service]
trait Svc {
    async fn ping(self: std::sync::Arc<Self>) -> u8;
}

fn main() {}
