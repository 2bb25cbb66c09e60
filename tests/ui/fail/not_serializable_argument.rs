// A type without serde's impls in a method: one error per missing impl, at the type in
// the trait, saying what to add.
use traitrpc_core::service;

pub struct Point {
    pub x: i32,
}

#[service]
pub trait Geo {
    async fn at(&self, point: Point) -> String;
}

fn main() {}
