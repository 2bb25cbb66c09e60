//! Protobuf requests as gRPC and Connect clients send them to the gateway: arbitrary bytes
//! as the request message of each method of a service whose types use every mapped
//! shape (structs, enums with data, maps, bytes, options, a recursive type), read by
//! `traitrpc-proto`'s direct codec. The first byte picks the method, the rest is the
//! message. Every input gives arguments or a typed error: never a panic, never unbounded
//! recursion.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use traitrpc_proto::{ProtoCodec, ServiceInput};

#[derive(Serialize, Deserialize)]
pub enum Status {
    Active,
    Held(u64),
    Moved { to: String, floor: i32 },
}

#[derive(Serialize, Deserialize)]
pub struct Order {
    id: u64,
    total: i64,
    small: i8,
    ratio: f32,
    note: Option<String>,
    blob: Vec<u8>,
    status: Status,
    tags: Vec<String>,
    amounts: Vec<i64>,
    counts: BTreeMap<String, u32>,
    by_id: BTreeMap<u64, Node>,
}

#[derive(Serialize, Deserialize)]
pub struct Node {
    value: u32,
    children: Vec<Node>,
}

#[allow(dead_code)]
#[traitrpc_core::service(name = "fuzz.Shop")]
trait Shop {
    async fn place(&self, order: Order, urgent: bool) -> Order;
    async fn tree(&self, root: Node, depth: Option<u32>) -> u32;
    async fn add(&self, a: i64, b: i64) -> i64;
}

const METHODS: [&str; 3] = ["place", "tree", "add"];

fn codec() -> &'static ProtoCodec {
    static CODEC: OnceLock<ProtoCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        ProtoCodec::new(vec![ServiceInput {
            schema: ShopClient::service_schema().clone(),
            idempotent: Default::default(),
        }])
        .expect("the shop exports")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let method = METHODS[pick as usize % METHODS.len()];
    let codec = codec().method("fuzz.Shop", method).expect("exported");
    if let Ok(args) = codec.decode_request(message) {
        // What was read is an object by parameter name, and writes back as protobuf
        // (the result side of a method whose result is its argument's type).
        assert!(args.is_object(), "{args}");
    }
});
