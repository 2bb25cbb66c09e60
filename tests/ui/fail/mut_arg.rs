use traitrpc_core::service;

#[service]
trait Svc {
    async fn inc(&self, mut x: i32) -> i32;
}

fn main() {}
