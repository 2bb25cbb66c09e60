use traitrpc_core::service;

#[service]
trait Svc {
    async fn add(a: i32, b: i32) -> i32;
}

fn main() {}
