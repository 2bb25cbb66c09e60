//! A documented service in a crate that denies missing docs: the generated items carry
//! their own docs.
#![deny(missing_docs)]

use traitrpc_core::service;

/// A documented service.
#[service]
pub trait Documented {
    /// Adds.
    async fn add(&self, a: i64, r#type: i64) -> i64;
    /// Nothing.
    async fn unit(&self);
}

fn main() {}
