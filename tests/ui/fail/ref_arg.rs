use traitrpc_core::service;

#[service]
trait Svc {
    async fn store(&self, value: &Vec<u64>) -> bool;
}

fn main() {}
