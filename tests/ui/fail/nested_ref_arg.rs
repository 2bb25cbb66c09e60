use traitrpc_core::service;

#[service]
trait Svc {
    async fn join(&self, parts: Vec<&str>) -> String;
}

fn main() {}
