//! The contract from the foundation issue, unchanged, in a crate of its own.

use traitrpc::service; // the macro, from the one framework crate
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub enum MathError {
    DivideByZero,
}

#[service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>; // MathError: serde type
}

struct Calc;
impl Calculator for Calc {
    // implemented exactly as declared
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivideByZero)
        } else {
            Ok(a / b)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // server: one call; binds, spawns, returns a handle
    let server = traitrpc::serve("127.0.0.1:0", CalculatorServer::new(Calc)).await?;
    // client: one connection, cheap to clone, usable from many tasks at once
    let conn = traitrpc::connect(server.local_addr()).await?;
    let calc = CalculatorClient::new(conn);
    assert_eq!(calc.add(1, 2).await?, 3);
    assert_eq!(calc.divide(6, 3).await?, 2);
    assert!(matches!(
        calc.divide(1, 0).await,
        Err(traitrpc::CallError::Application(MathError::DivideByZero))
    ));
    server.shutdown().await; // graceful: stop accepting, drain in-flight calls
    println!("external user crate: ok");
    Ok(())
}

/// The schema snapshot a user keeps in their CI (docs/EVOLUTION.md): the first run writes
/// `schema/calculator.json`, later runs fail if a change would break deployed clients.
#[cfg(test)]
mod schema_snapshot {
    #[test]
    fn calculator_stays_compatible() {
        traitrpc::schema::assert_compatible(
            super::CalculatorClient::service_schema(),
            "schema/calculator.json",
        );
    }
}
