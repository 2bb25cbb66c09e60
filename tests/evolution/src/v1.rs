//! The first version of `shop.Orders`.

use serde::{Deserialize, Serialize};
use traitrpc_core::{service, Streaming};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub qty: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Legacy {
    pub id: u64,
    pub legacy: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub a: u32,
    pub b: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Status {
    Active,
    Suspended,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Fault {
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u32,
}

#[service(name = "shop.Orders")]
pub trait Orders {
    /// Identical in both versions.
    async fn unchanged(&self, order: Order) -> Order;
    /// v2 adds a field with `#[serde(default)]`.
    async fn add_field(&self, order: Order) -> Order;
    /// v2 adds a field without a default.
    async fn add_required_field(&self, order: Order) -> Order;
    /// v2 removes the field `legacy`.
    async fn remove_field(&self, order: Legacy) -> Legacy;
    /// v2 renames `qty` to `quantity`.
    async fn rename_field(&self, order: Order) -> Order;
    /// v2 declares the fields in the other order.
    async fn reorder_fields(&self, pair: Pair) -> Pair;
    /// v2 inserts a variant in the middle (`Active, Pending, Suspended`).
    async fn insert_variant(&self, status: Status) -> String;
    /// v2 appends a variant (`Active, Suspended, Closed`).
    async fn append_variant(&self, status: Status) -> String;
    /// v2 widens `u32` to `u64`.
    async fn widen_int(&self, n: u32) -> String;
    /// v2 changes `u64` to `i64` (the issue's `total(2, 3)`).
    async fn total(&self, a: u64, b: u64) -> u64;
    /// v2 wraps the parameter in an `Option`.
    async fn wrap_option(&self, n: u32) -> String;
    /// v2 adds a parameter `b: Option<u32>`.
    async fn add_optional_param(&self, a: u32) -> String;
    /// v2 adds a parameter `b: u32`.
    async fn add_required_param(&self, a: u32) -> String;
    /// v2 removes the parameter `b`.
    async fn remove_param(&self, a: u32, b: u32) -> String;
    /// v2 renames `count` to `n`.
    async fn rename_param(&self, count: u32) -> String;
    /// v2 swaps the parameters (same types): bincode alone would swap the values.
    async fn reorder_params(&self, from: String, to: String) -> String;
    /// v2 returns a `String` instead of a `u32`.
    async fn change_result(&self, n: u32) -> u32;
    /// v2's error enum gains a variant.
    async fn add_error_variant(&self, fail: bool) -> Result<u32, Fault>;
    /// v2 renames the Rust type `Order` to `Purchase` (same fields).
    async fn rename_type(&self, order: Order) -> Order;
    /// v2 wraps the id in a newtype struct `OrderId(u64)`.
    async fn newtype_wrap(&self, id: u64) -> String;
    /// v2's stream items gain a defaulted field.
    async fn watch(&self, count: u32) -> Streaming<Event>;
    /// v2's uploaded items gain a defaulted field (a method that takes a stream is not
    /// translated).
    async fn upload(&self, items: Streaming<Event>) -> u32;
    /// Removed in v2.
    async fn removed_method(&self) -> String;
}

/// The v1 server: echoes what it received.
pub struct Shop;

impl Orders for Shop {
    async fn unchanged(&self, order: Order) -> Order {
        order
    }
    async fn add_field(&self, order: Order) -> Order {
        order
    }
    async fn add_required_field(&self, order: Order) -> Order {
        order
    }
    async fn remove_field(&self, order: Legacy) -> Legacy {
        order
    }
    async fn rename_field(&self, order: Order) -> Order {
        order
    }
    async fn reorder_fields(&self, pair: Pair) -> Pair {
        pair
    }
    async fn insert_variant(&self, status: Status) -> String {
        format!("{status:?}")
    }
    async fn append_variant(&self, status: Status) -> String {
        format!("{status:?}")
    }
    async fn widen_int(&self, n: u32) -> String {
        n.to_string()
    }
    async fn total(&self, a: u64, b: u64) -> u64 {
        a + b
    }
    async fn wrap_option(&self, n: u32) -> String {
        n.to_string()
    }
    async fn add_optional_param(&self, a: u32) -> String {
        a.to_string()
    }
    async fn add_required_param(&self, a: u32) -> String {
        a.to_string()
    }
    async fn remove_param(&self, a: u32, b: u32) -> String {
        format!("{a} {b}")
    }
    async fn rename_param(&self, count: u32) -> String {
        count.to_string()
    }
    async fn reorder_params(&self, from: String, to: String) -> String {
        format!("from {from} to {to}")
    }
    async fn change_result(&self, n: u32) -> u32 {
        n
    }
    async fn add_error_variant(&self, fail: bool) -> Result<u32, Fault> {
        if fail {
            Err(Fault::NotFound)
        } else {
            Ok(1)
        }
    }
    async fn rename_type(&self, order: Order) -> Order {
        order
    }
    async fn newtype_wrap(&self, id: u64) -> String {
        id.to_string()
    }
    async fn watch(&self, count: u32) -> Streaming<Event> {
        Streaming::iter((0..count).map(|seq| Event { seq }))
    }
    async fn upload(&self, items: Streaming<Event>) -> u32 {
        use futures::StreamExt;
        items.filter_map(|e| async move { e.ok() }).count().await as u32
    }
    async fn removed_method(&self) -> String {
        "v1".into()
    }
}
