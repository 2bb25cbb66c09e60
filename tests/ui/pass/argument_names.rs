#![deny(warnings)]

use traitrpc_core::service;

// Argument names that match names the generated code uses for its own items must not
// collide with them.
#[service]
pub trait Names {
    #[allow(clippy::too_many_arguments)]
    async fn shadowing(
        &self,
        client: u8,
        request: u8,
        method: String,
        inner: u8,
        metadata: u8,
        timeout: u8,
        connection: u8,
        service: u8,
    ) -> u32;
    async fn args(&self, args: Vec<u8>, out: u8, reply: u8, call: u8) -> u32;
}

struct Impl;

impl Names for Impl {
    async fn shadowing(
        &self,
        client: u8,
        request: u8,
        method: String,
        inner: u8,
        metadata: u8,
        timeout: u8,
        connection: u8,
        service: u8,
    ) -> u32 {
        [
            client, request, inner, metadata, timeout, connection, service,
        ]
        .iter()
        .map(|&v| u32::from(v))
        .sum::<u32>()
            + method.len() as u32
    }

    async fn args(&self, args: Vec<u8>, out: u8, reply: u8, call: u8) -> u32 {
        args.len() as u32 + u32::from(out) + u32::from(reply) + u32::from(call)
    }
}

fn main() {
    let server = NamesServer::new(Impl);
    let request = NamesRequest::Shadowing {
        client: 1,
        request: 1,
        method: "ab".into(),
        inner: 1,
        metadata: 1,
        timeout: 1,
        connection: 1,
        service: 1,
    };
    match futures::executor::block_on(server.handle(request)) {
        NamesResponse::Shadowing(sum) => assert_eq!(sum, 9),
        _ => panic!("wrong response"),
    }
}
