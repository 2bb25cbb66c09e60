use traitrpc_core::service;
use std::rc::Rc;

#[service]
trait Svc {
    async fn count(&self) -> usize;
}

struct Impl;

async fn yield_now() {}

impl Svc for Impl {
    async fn count(&self) -> usize {
        let shared = Rc::new(5);
        yield_now().await;
        *shared
    }
}

fn main() {}
