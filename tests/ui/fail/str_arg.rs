use traitrpc_core::service;

#[service]
trait Svc {
    async fn greet(&self, name: &str) -> String;
}

fn main() {}
