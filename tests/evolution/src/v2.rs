//! The second version of `shop.Orders`: each method changed as its name (and v1's doc
//! comment) says.

use serde::{Deserialize, Serialize};
use traitrpc_core::{service, Streaming};

/// `unchanged`'s order, the same as v1's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub qty: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Noted {
    pub id: u64,
    pub qty: u32,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prioritised {
    pub id: u64,
    pub qty: u32,
    pub priority: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slim {
    pub id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Renamed {
    pub id: u64,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub b: u32,
    pub a: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Inserted {
    Active,
    Pending,
    Suspended,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Appended {
    Active,
    Suspended,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Fault {
    NotFound,
    Forbidden,
}

/// v1's `Order`, renamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    pub id: u64,
    pub qty: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OrderId(pub u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u32,
    #[serde(default)]
    pub source: String,
}

#[service(name = "shop.Orders")]
pub trait Orders {
    async fn unchanged(&self, order: Order) -> Order;
    async fn add_field(&self, order: Noted) -> Noted;
    async fn add_required_field(&self, order: Prioritised) -> Prioritised;
    async fn remove_field(&self, order: Slim) -> Slim;
    async fn rename_field(&self, order: Renamed) -> Renamed;
    async fn reorder_fields(&self, pair: Pair) -> Pair;
    async fn insert_variant(&self, status: Inserted) -> String;
    async fn append_variant(&self, status: Appended) -> String;
    async fn widen_int(&self, n: u64) -> String;
    async fn total(&self, a: i64, b: i64) -> i64;
    async fn wrap_option(&self, n: Option<u32>) -> String;
    async fn add_optional_param(&self, a: u32, b: Option<u32>) -> String;
    async fn add_required_param(&self, a: u32, b: u32) -> String;
    async fn remove_param(&self, a: u32) -> String;
    async fn rename_param(&self, n: u32) -> String;
    async fn reorder_params(&self, to: String, from: String) -> String;
    async fn change_result(&self, n: u32) -> String;
    async fn add_error_variant(&self, fail: bool) -> Result<u32, Fault>;
    async fn rename_type(&self, order: Purchase) -> Purchase;
    async fn newtype_wrap(&self, id: OrderId) -> String;
    async fn watch(&self, count: u32) -> Streaming<Event>;
    async fn upload(&self, items: Streaming<Event>) -> u32;
    /// New in v2.
    async fn added_method(&self) -> String;
}

/// The v2 server: echoes what it received.
pub struct Shop;

impl Orders for Shop {
    async fn unchanged(&self, order: Order) -> Order {
        order
    }
    async fn add_field(&self, order: Noted) -> Noted {
        order
    }
    async fn add_required_field(&self, order: Prioritised) -> Prioritised {
        order
    }
    async fn remove_field(&self, order: Slim) -> Slim {
        order
    }
    async fn rename_field(&self, order: Renamed) -> Renamed {
        order
    }
    async fn reorder_fields(&self, pair: Pair) -> Pair {
        pair
    }
    async fn insert_variant(&self, status: Inserted) -> String {
        format!("{status:?}")
    }
    async fn append_variant(&self, status: Appended) -> String {
        format!("{status:?}")
    }
    async fn widen_int(&self, n: u64) -> String {
        n.to_string()
    }
    async fn total(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn wrap_option(&self, n: Option<u32>) -> String {
        n.map_or("none".into(), |n| n.to_string())
    }
    async fn add_optional_param(&self, a: u32, b: Option<u32>) -> String {
        match b {
            Some(b) => format!("{a} {b}"),
            None => a.to_string(),
        }
    }
    async fn add_required_param(&self, a: u32, b: u32) -> String {
        format!("{a} {b}")
    }
    async fn remove_param(&self, a: u32) -> String {
        a.to_string()
    }
    async fn rename_param(&self, n: u32) -> String {
        n.to_string()
    }
    async fn reorder_params(&self, to: String, from: String) -> String {
        format!("from {from} to {to}")
    }
    async fn change_result(&self, n: u32) -> String {
        n.to_string()
    }
    async fn add_error_variant(&self, fail: bool) -> Result<u32, Fault> {
        if fail {
            Err(Fault::Forbidden)
        } else {
            Ok(2)
        }
    }
    async fn rename_type(&self, order: Purchase) -> Purchase {
        order
    }
    async fn newtype_wrap(&self, id: OrderId) -> String {
        id.0.to_string()
    }
    async fn watch(&self, count: u32) -> Streaming<Event> {
        Streaming::iter((0..count).map(|seq| Event {
            seq,
            source: "v2".into(),
        }))
    }
    async fn upload(&self, items: Streaming<Event>) -> u32 {
        use futures::StreamExt;
        items.filter_map(|e| async move { e.ok() }).count().await as u32
    }
    async fn added_method(&self) -> String {
        "v2".into()
    }
}
