//! Field numbers survive the changes docs/EVOLUTION.md calls safe: a client generated
//! from version 1's `.proto` and a server exporting version 2 agree on every value both
//! know, whatever was inserted or reordered in between.

use prost::Message;
use serde_json::{json, Value};
use traitrpc_proto::prost_reflect::DynamicMessage;
use traitrpc_proto::{ProtoCodec, ServiceInput};

#[allow(dead_code)]
mod v1 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum State {
        Active,
        Suspended,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Order {
        pub id: u64,
        pub qty: u32,
        pub state: State,
    }

    #[traitrpc_core::service(name = "shop.Orders")]
    pub trait Orders {
        async fn place(&self, order: Order, urgent: bool) -> Order;
    }
}

/// Version 2: a variant inserted before `Suspended`, a field inserted before `qty`, the
/// fields reordered, a parameter added in front.
#[allow(dead_code)]
mod v2 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum State {
        Active,
        Pending,
        Suspended,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Order {
        pub state: State,
        #[serde(default)]
        pub note: String,
        pub qty: u32,
        pub id: u64,
    }

    #[traitrpc_core::service(name = "shop.Orders")]
    pub trait Orders {
        async fn place(&self, channel: Option<String>, order: Order, urgent: bool) -> Order;
    }
}

fn codec(schema: &traitrpc_core::schema::ServiceSchema) -> ProtoCodec {
    ProtoCodec::new(vec![ServiceInput {
        schema: schema.clone(),
        idempotent: Default::default(),
    }])
    .expect("exports")
}

fn numbers(codec: &ProtoCodec, message: &str) -> Vec<(String, u32)> {
    let mut fields: Vec<(String, u32)> = codec
        .pool()
        .get_message_by_name(message)
        .unwrap()
        .fields()
        .map(|f| (f.name().to_string(), f.number()))
        .collect();
    fields.sort();
    fields
}

#[test]
fn numbers_of_the_fields_both_versions_know_are_the_same() {
    let old = codec(v1::OrdersClient::service_schema());
    let new = codec(v2::OrdersClient::service_schema());
    for message in ["shop.Order", "shop.State", "shop.OrdersPlaceRequest"] {
        let new_numbers = numbers(&new, message);
        for field in numbers(&old, message) {
            assert!(
                new_numbers.contains(&field),
                "{message}: {field:?} changed number in version 2 ({new_numbers:?})"
            );
        }
    }
}

#[test]
fn a_version_1_client_s_request_reads_correctly_on_a_version_2_server() {
    let old = codec(v1::OrdersClient::service_schema());
    let new = codec(v2::OrdersClient::service_schema());
    // What a client generated from version 1's .proto sends.
    let request = DynamicMessage::deserialize(
        old.pool()
            .get_message_by_name("shop.OrdersPlaceRequest")
            .unwrap(),
        json!({"order": {"id": "9", "qty": 3, "state": {"Suspended": {}}}, "urgent": true}),
    )
    .unwrap()
    .encode_to_vec();
    // Version 2 reads it by number: every value lands where its name says, the variant
    // stays `Suspended` (not the inserted `Pending`), the new field takes its default.
    let args: Value = new
        .method("shop.Orders", "place")
        .unwrap()
        .decode_request(&request)
        .unwrap();
    assert_eq!(
        args,
        json!({
            "order": {"state": "Suspended", "note": "", "qty": 3, "id": 9},
            "urgent": true,
        })
    );
    // And the server's arguments deserialize into version 2's types.
    let order: v2::Order = serde_json::from_value(args["order"].clone()).unwrap();
    assert!(matches!(order.state, v2::State::Suspended));
}
