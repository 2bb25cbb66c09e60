//! The service every protobuf client test calls (`tests/clients.rs`, `tests/grpc.rs`, the
//! `shop` example): 64-bit values, structs, an enum with data, bytes, maps, an
//! application error with a value, server streams (one that fails midway), a method that
//! sleeps (deadlines), one that reads metadata, and one that does not map to protobuf.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use traitrpc_core::{service, RpcError, Streaming};

/// Where an order stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Status {
    /// Taken.
    Active,
    /// Held for a number of seconds.
    Held(u64),
    /// Sent elsewhere.
    Moved {
        /// Where to.
        to: String,
    },
}

/// An order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Its id (assigned by `place`).
    pub id: u64,
    /// A signed total, in cents.
    pub total: i64,
    /// A note, if any.
    pub note: Option<String>,
    /// Opaque bytes.
    #[serde(with = "serde_bytes_compat")]
    pub blob: Vec<u8>,
    /// Its status.
    pub status: Status,
    /// Tags.
    pub tags: Vec<String>,
    /// Counts by item.
    pub counts: BTreeMap<String, u32>,
}

/// `Vec<u8>` as serde's byte string (what `serde_bytes` does), written here so the test
/// needs no extra crate.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// Not enough of an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutOfStock {
    /// The item.
    pub item: String,
    /// How many there are.
    pub available: u32,
}

/// The test shop.
#[service(name = "shop.Orders")]
pub trait Orders {
    /// `a + b`, with 64-bit values.
    #[idempotent]
    async fn add(&self, a: i64, b: i64) -> i64;
    /// The order back, with id 7 and `Held(total)` when the status is `Active`.
    async fn place(&self, order: Order) -> Order;
    /// `quantity` of `item`, or `OutOfStock` beyond 10.
    async fn reserve(&self, item: String, quantity: u32) -> Result<u32, OutOfStock>;
    /// `1..=to` as 64-bit values, one by one; response metadata `x-shop-count: to`.
    async fn count(&self, to: u32) -> Streaming<u64>;
    /// `1..=fail_after`, then the stream fails.
    async fn count_then_fail(&self, fail_after: u32) -> Streaming<u32>;
    /// Answers `ms` after `ms` milliseconds.
    async fn sleep(&self, ms: u64) -> u64;
    /// The call's metadata value for `key`, if the caller sent one; response metadata
    /// `x-shop-reply: reply-{value}` (`reply-none` without one).
    #[idempotent]
    async fn metadata(&self, key: String) -> Option<String>;
    /// A tuple: no protobuf form (left out of the .proto, still callable in JSON).
    async fn swap(&self, pair: (u8, u16)) -> (u16, u8);
}

/// The implementation.
pub struct Shop;

impl Orders for Shop {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
    async fn place(&self, mut order: Order) -> Order {
        order.id = 7;
        if order.status == Status::Active {
            order.status = Status::Held(order.total.unsigned_abs());
        }
        order
    }
    async fn reserve(&self, item: String, quantity: u32) -> Result<u32, OutOfStock> {
        if quantity > 10 {
            Err(OutOfStock {
                item,
                available: 10,
            })
        } else {
            Ok(quantity)
        }
    }
    async fn count(&self, to: u32) -> Streaming<u64> {
        traitrpc_core::context::with_current(|cx| {
            cx.set_response_metadata("x-shop-count", to.to_string())
        });
        Streaming::iter((1..=u64::from(to)).map(|n| n * 1_000_000_000_000))
    }
    async fn count_then_fail(&self, fail_after: u32) -> Streaming<u32> {
        let items = (1..=fail_after)
            .map(Ok)
            .chain(std::iter::once(Err(RpcError::Aborted {
                message: "the count failed on purpose".into(),
            })));
        Streaming::from_results(futures::stream::iter(items))
    }
    async fn sleep(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn metadata(&self, key: String) -> Option<String> {
        traitrpc_core::context::with_current(|cx| {
            let value = cx.metadata().get_str(&key).map(String::from);
            let reply = format!("reply-{}", value.as_deref().unwrap_or("none"));
            let _ = cx.set_response_metadata("x-shop-reply", reply);
            value
        })
        .flatten()
    }
    async fn swap(&self, pair: (u8, u16)) -> (u16, u8) {
        (pair.1, pair.0)
    }
}
