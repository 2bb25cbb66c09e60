//! The calculator from the README: a service with a plain method and a fallible one, served
//! over TCP and called from a client, including the divide-by-zero application error.

use serde::{Deserialize, Serialize};
use traitrpc::{service, CallError};

/// Why a calculation failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivideByZero,
}

#[service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides `a` by `b`, refusing to divide by zero.
    async fn divide(&self, a: i64, b: i64) -> Result<i64, MathError>;
}

struct Calc;

impl Calculator for Calc {
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
    // Server: one call binds, spawns and returns a handle.
    let server = traitrpc::serve("127.0.0.1:0", CalculatorServer::new(Calc)).await?;
    println!("calculator listening on {}", server.local_addr());

    // Client: one multiplexed connection; the client is cheap to clone.
    let conn = traitrpc::connect(server.local_addr()).await?;
    let calc = CalculatorClient::new(conn);

    let sum = calc.add(1, 2).await?;
    println!("add(1, 2)      = {sum}");
    assert_eq!(sum, 3);

    println!("divide(84, 2)  = {}", calc.divide(84, 2).await?);

    // The application's error comes back flat, told apart from transport failures.
    match calc.divide(1, 0).await {
        Err(CallError::Application(MathError::DivideByZero)) => {
            println!("divide(1, 0)   = error: division by zero (the application's MathError)")
        }
        Err(CallError::Rpc(e)) => return Err(e.into()),
        Ok(v) => anyhow::bail!("1 / 0 returned {v}"),
    }

    // Many calls in flight at once on the one connection, completing in any order.
    let calls = (0..100).map(|i| {
        let calc = calc.clone();
        tokio::spawn(async move { calc.add(i, i).await })
    });
    let mut total = 0;
    for call in calls {
        total += call.await??;
    }
    println!("100 concurrent adds, total = {total}");

    server.shutdown().await;
    println!("server shut down gracefully");
    Ok(())
}
