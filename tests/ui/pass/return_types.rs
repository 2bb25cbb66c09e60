#![deny(warnings)]

use std::collections::HashMap;

use traitrpc_core::{service, CallError, RpcError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Thing {
    pub id: u64,
}

#[service]
pub trait Returns {
    async fn no_arrow(&self);
    async fn unit(&self) -> ();
    async fn tuple(&self) -> (u8, String, Vec<u8>);
    async fn option(&self) -> Option<Thing>;
    async fn result(&self) -> Result<u8, String>;
    async fn full_path(&self) -> std::result::Result<Thing, (u16, String)>;
    async fn core_path(&self) -> ::core::result::Result<(), String>;
    async fn map(&self) -> HashMap<String, Vec<Option<u8>>>;
    async fn owned_cow(&self) -> std::borrow::Cow<'static, str>;
}

// The client methods' types: `Result<T, RpcError>`, or flat `Result<T, CallError<E>>` for
// a method declared `-> Result<T, E>`.
#[allow(dead_code)]
async fn client_types(client: ReturnsClient) {
    let _: Result<(), RpcError> = client.no_arrow().await;
    let _: Result<(), RpcError> = client.unit().await;
    let _: Result<(u8, String, Vec<u8>), RpcError> = client.tuple().await;
    let _: Result<Option<Thing>, RpcError> = client.option().await;
    let _: Result<u8, CallError<String>> = client.result().await;
    let _: Result<Thing, CallError<(u16, String)>> = client.full_path().await;
    let _: Result<(), CallError<String>> = client.core_path().await;
    let _: Result<HashMap<String, Vec<Option<u8>>>, RpcError> = client.map().await;
    let _: Result<std::borrow::Cow<'static, str>, RpcError> = client.owned_cow().await;
}

// The response enum holds the declared return type, `Result` included.
#[allow(dead_code)]
fn response_types(response: ReturnsResponse) {
    match response {
        ReturnsResponse::NoArrow(()) | ReturnsResponse::Unit(()) => {}
        ReturnsResponse::Tuple((_, _, _)) => {}
        ReturnsResponse::Option(_thing) => {}
        ReturnsResponse::Result(Ok(_) | Err(_)) => {}
        ReturnsResponse::FullPath(_) => {}
        ReturnsResponse::CorePath(_) => {}
        ReturnsResponse::Map(_) => {}
        ReturnsResponse::OwnedCow(_) => {}
    }
}

struct Impl;

impl Returns for Impl {
    async fn no_arrow(&self) {}
    #[allow(clippy::unused_unit)]
    async fn unit(&self) -> () {}
    async fn tuple(&self) -> (u8, String, Vec<u8>) {
        (1, "a".into(), vec![2])
    }
    async fn option(&self) -> Option<Thing> {
        Some(Thing { id: 3 })
    }
    async fn result(&self) -> Result<u8, String> {
        Err("no".into())
    }
    async fn full_path(&self) -> std::result::Result<Thing, (u16, String)> {
        Ok(Thing { id: 4 })
    }
    async fn core_path(&self) -> ::core::result::Result<(), String> {
        Ok(())
    }
    async fn map(&self) -> HashMap<String, Vec<Option<u8>>> {
        HashMap::new()
    }
    async fn owned_cow(&self) -> std::borrow::Cow<'static, str> {
        "static".into()
    }
}

fn main() {
    let server = ReturnsServer::new(Impl);
    futures::executor::block_on(async {
        match server.handle(ReturnsRequest::Result {}).await {
            ReturnsResponse::Result(Err(e)) => assert_eq!(e, "no"),
            _ => panic!("wrong response"),
        }
        match server.handle(ReturnsRequest::Tuple {}).await {
            ReturnsResponse::Tuple((1, a, b)) => assert_eq!((a.as_str(), b), ("a", vec![2])),
            _ => panic!("wrong response"),
        }
    });
}
