use traitrpc_core::service;

#[service(crate = "not a path!")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
