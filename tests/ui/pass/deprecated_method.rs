#![deny(warnings)]

use traitrpc_core::service;

// Deprecating a method warns callers of the client method, not the code the macro
// generates, nor the implementation.
#[service]
pub trait Svc {
    #[deprecated(note = "call `ping2`")]
    async fn ping(&self) -> u8;
    async fn ping2(&self) -> u8;
}

struct Impl;

impl Svc for Impl {
    async fn ping(&self) -> u8 {
        1
    }

    async fn ping2(&self) -> u8 {
        2
    }
}

fn main() {
    let server = SvcServer::new(Impl);
    match futures::executor::block_on(server.handle(SvcRequest::Ping {})) {
        SvcResponse::Ping(1) => {}
        _ => panic!("wrong response"),
    }
}
