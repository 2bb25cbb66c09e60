use traitrpc_core::service;

#[service]
trait Svc {
    async fn add(&self, (a, b): (i32, i32)) -> i32;
}

fn main() {}
