#![deny(warnings)]

use traitrpc_core::service;

#[service(name = "pkg.v1.Foo")]
pub trait Foo {
    async fn ping(&self) -> u8;
}

// A trailing comma after the argument is accepted too (kept by skipping rustfmt).
#[rustfmt::skip]
#[service(name = "pkg.v1.Bar",)]
pub trait Bar {}

struct Impl;

impl Foo for Impl {
    async fn ping(&self) -> u8 {
        1
    }
}

fn main() {
    assert_eq!(FooClient::SERVICE_NAME, "pkg.v1.Foo");
    assert_eq!(traitrpc_core::Service::name(&FooServer::new(Impl)), "pkg.v1.Foo");
    assert_eq!(BarClient::SERVICE_NAME, "pkg.v1.Bar");
}
