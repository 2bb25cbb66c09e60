// `#[service(crate = "...")]` with a path through a module that re-exports the framework,
// as a crate that wraps the framework for its users would.
mod framework {
    pub use traitrpc_core::*;
}

#[traitrpc_core::service(crate = "crate::framework")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct Calc;
impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

fn main() {
    let _ = CalculatorServer::new(Calc);
}
