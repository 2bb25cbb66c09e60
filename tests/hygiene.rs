//! The code `#[service]` generates names everything by absolute path, so it compiles in a
//! crate without the implicit prelude, next to local items that shadow the names it would
//! otherwise use, and with arguments named like its own bindings.

#![no_implicit_prelude]

use ::traitrpc_core::service;

#[derive(
    ::serde::Serialize,
    ::serde::Deserialize,
    ::core::fmt::Debug,
    ::core::clone::Clone,
    ::core::cmp::PartialEq,
)]
pub struct Point {
    x: i32,
    y: i32,
}

/// A service whose declaration itself needs no prelude.
#[service]
pub trait Geometry {
    /// Adds two points.
    async fn add(&self, a: Point, b: Point) -> Point;
    /// Fails on division by zero.
    async fn divide(&self, a: i32, b: i32) -> ::core::result::Result<i32, ::std::string::String>;
    async fn labels(
        &self,
        prefix: ::std::string::String,
        count: u32,
    ) -> ::std::vec::Vec<::std::string::String>;
    async fn nothing(&self);
    async fn maybe(&self, value: ::core::option::Option<u8>) -> ::core::option::Option<u8>;
    /// A default body.
    async fn double(&self, value: i32) -> i32 {
        value * 2
    }
}

pub struct Impl;

impl Geometry for Impl {
    async fn add(&self, a: Point, b: Point) -> Point {
        Point {
            x: a.x + b.x,
            y: a.y + b.y,
        }
    }

    async fn divide(&self, a: i32, b: i32) -> ::core::result::Result<i32, ::std::string::String> {
        if b == 0 {
            ::core::result::Result::Err(::std::string::ToString::to_string("division by zero"))
        } else {
            ::core::result::Result::Ok(a / b)
        }
    }

    async fn labels(
        &self,
        prefix: ::std::string::String,
        count: u32,
    ) -> ::std::vec::Vec<::std::string::String> {
        ::core::iter::Iterator::collect(::core::iter::Iterator::map(0..count, |i| {
            ::std::format!("{prefix}{i}")
        }))
    }

    async fn nothing(&self) {}

    async fn maybe(&self, value: ::core::option::Option<u8>) -> ::core::option::Option<u8> {
        value
    }
}

/// Local items named like everything the generated code uses: it must not pick them up.
#[allow(dead_code, non_camel_case_types, clippy::upper_case_acronyms)]
mod shadowed {
    use ::traitrpc_core::service;

    pub struct Ok;
    pub struct Err;
    pub struct Some;
    pub struct None;
    pub struct Result;
    pub struct Option;
    pub struct Box;
    pub struct Arc;
    pub struct Vec;
    pub struct String;
    pub struct Send;
    pub struct Sync;
    pub struct Future;
    pub struct Clone;
    pub struct Debug;
    pub struct Serialize;
    pub struct Deserialize;
    pub struct Client;
    pub struct Connection;
    pub struct Method;
    pub struct Service;
    pub struct Metadata;
    pub struct Duration;
    pub struct OnceLock;
    pub struct Pin;
    pub mod core {}
    pub mod std {}
    pub mod serde {}
    pub mod traitrpc_core {}
    pub mod tokio {}

    #[service]
    pub trait Shadowed {
        async fn call(&self, inner: u8, client: u8, reply: u8) -> u8;
        async fn fallible(&self, fail: bool) -> ::core::result::Result<u8, u8>;
    }

    pub struct Impl;

    impl Shadowed for Impl {
        async fn call(&self, inner: u8, client: u8, reply: u8) -> u8 {
            inner + client + reply
        }

        async fn fallible(&self, fail: bool) -> ::core::result::Result<u8, u8> {
            if fail {
                ::core::result::Result::Err(1)
            } else {
                ::core::result::Result::Ok(0)
            }
        }
    }
}

fn runtime() -> ::tokio::runtime::Runtime {
    ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[::core::prelude::v1::test]
fn calls_over_the_memory_transport() {
    runtime().block_on(async {
        let (listener, connector) = ::traitrpc_core::memory::listener();
        let server = ::traitrpc_core::Server::new(GeometryServer::new(Impl)).serve(listener, ());
        let client = GeometryClient::new(connector.connect().await.expect("connect"));

        let sum = client
            .add(Point { x: 1, y: 2 }, Point { x: 10, y: 20 })
            .await
            .expect("add");
        ::std::assert_eq!(sum, Point { x: 11, y: 22 });

        ::std::assert_eq!(client.divide(7, 2).await, ::core::result::Result::Ok(3));
        match client.divide(1, 0).await {
            ::core::result::Result::Err(::traitrpc_core::CallError::Application(message)) => {
                ::std::assert_eq!(message, "division by zero")
            }
            other => ::std::panic!("expected an application error, got {other:?}"),
        }

        let labels = client
            .labels(::std::string::ToString::to_string("n"), 2)
            .await
            .expect("labels");
        ::std::assert_eq!(labels, ["n0", "n1"]);
        client.nothing().await.expect("nothing");
        ::std::assert_eq!(
            client
                .maybe(::core::option::Option::Some(3))
                .await
                .expect("maybe"),
            ::core::option::Option::Some(3)
        );
        ::std::assert_eq!(client.double(21).await.expect("double"), 42);

        server.shutdown().await;
    });
}

#[::core::prelude::v1::test]
fn shadowing_local_items_are_ignored() {
    runtime().block_on(async {
        let (listener, connector) = ::traitrpc_core::memory::listener();
        let server = ::traitrpc_core::Server::new(shadowed::ShadowedServer::new(shadowed::Impl))
            .serve(listener, ());
        let client = shadowed::ShadowedClient::new(connector.connect().await.expect("connect"));
        ::std::assert_eq!(client.call(1, 2, 3).await.expect("call"), 6);
        ::std::assert_eq!(client.fallible(false).await, ::core::result::Result::Ok(0));
        ::std::assert_eq!(
            client.fallible(true).await,
            ::core::result::Result::Err(::traitrpc_core::CallError::Application(1))
        );
        server.shutdown().await;
    });
}

#[::core::prelude::v1::test]
fn in_process_dispatch() {
    runtime().block_on(async {
        let server = GeometryServer::new(Impl);
        match server.handle(GeometryRequest::Double { value: 4 }).await {
            GeometryResponse::Double(value) => ::std::assert_eq!(value, 8),
            _ => ::std::panic!("wrong response variant"),
        }
        ::std::assert_eq!(
            ::traitrpc_core::Service::methods(&server),
            ["add", "divide", "labels", "nothing", "maybe", "double"]
        );
    });
}
