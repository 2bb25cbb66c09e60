// The generated code reaches the framework through the `crate` argument: a path that does
// not exist fails to resolve (so a renamed dependency is honoured, not ignored).
use traitrpc_core::service;

#[service(crate = "no_such_framework")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
