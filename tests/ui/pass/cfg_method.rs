#![deny(warnings)]

use traitrpc_core::service;

#[service]
pub trait Svc {
    async fn kept(&self) -> u8;

    // Configured out: removed from the trait, the client, both enums and the dispatch, so
    // even its undefined argument type is never looked at.
    #[cfg(any())]
    async fn removed(&self, value: ThisTypeDoesNotExist) -> u8;

    #[cfg(all())]
    async fn configured_in(&self) -> u8;
}

struct Impl;

// The implementation does not (and could not) provide `removed`.
impl Svc for Impl {
    async fn kept(&self) -> u8 {
        1
    }

    async fn configured_in(&self) -> u8 {
        2
    }
}

fn main() {
    let server = SvcServer::new(Impl);
    assert_eq!(
        traitrpc_core::Service::methods(&server),
        ["kept", "configured_in"]
    );
    // Exhaustive without a `Removed` arm.
    match futures::executor::block_on(server.handle(SvcRequest::Kept {})) {
        SvcResponse::Kept(value) => assert_eq!(value, 1),
        SvcResponse::ConfiguredIn(_) => panic!("wrong response"),
    }
}
