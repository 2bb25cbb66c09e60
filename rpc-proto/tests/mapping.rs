//! The export of whole traits: what maps (opaque JSON as `google.protobuf.Value`, maps
//! with integer keys, nested types) and what is left out with its reason.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::{json, Value};
use traitrpc_proto::prost_reflect::DynamicMessage;
use traitrpc_proto::{export, to_proto_text, ProtoCodec, ServiceInput};

#[allow(dead_code)]
mod service {
    use std::collections::BTreeMap;

    #[traitrpc_core::service(name = "misc.Misc")]
    pub trait Misc {
        /// Any JSON in and out.
        async fn echo_json(&self, value: serde_json::Value) -> serde_json::Value;
        /// A map with integer keys.
        async fn by_id(&self, names: BTreeMap<u32, String>) -> Vec<u32>;
        /// A tuple: no protobuf form.
        async fn pair(&self, pair: (u8, u8)) -> u8;
        /// A nested option: no protobuf form.
        async fn maybe(&self, value: Option<Option<u8>>) -> bool;
        /// A list of lists: no protobuf form.
        async fn grid(&self, rows: Vec<Vec<u32>>) -> u32;
        /// A list of byte strings: `repeated bytes`.
        async fn blobs(&self, blobs: Vec<Vec<u8>>) -> u32;
    }
}

fn input() -> ServiceInput {
    ServiceInput {
        schema: service::MiscClient::service_schema().clone(),
        idempotent: Default::default(),
    }
}

#[test]
fn methods_without_a_protobuf_form_are_left_out_with_the_reason() {
    let export = export(&[input()]);
    let reasons: BTreeMap<&str, &str> = export
        .skipped
        .iter()
        .map(|s| (s.method.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons["pair"].contains("parameter `pair`: tuples"),
        "{reasons:?}"
    );
    assert!(
        reasons["maybe"].contains("an Option of an Option"),
        "{reasons:?}"
    );
    assert!(reasons["grid"].contains("a list of lists"), "{reasons:?}");
    let text = to_proto_text(&export.files[0], &export.skipped);
    assert!(text.contains("// - misc.Misc.pair: parameter `pair`: tuples"));
    assert!(text.contains("rpc echo_json("));
    assert!(!text.contains("rpc pair("));
    assert!(text.contains("import \"google/protobuf/struct.proto\";"));
    assert!(text.contains("map<uint32, string> names"));
    assert!(text.contains("repeated bytes blobs"));
}

#[test]
fn opaque_json_travels_as_google_protobuf_value() {
    let codec = ProtoCodec::new(vec![input()]).unwrap();
    let method = codec.method("misc.Misc", "echo_json").unwrap();
    let sent = json!({"x": [1.5, "a", null, {"deep": true}]});
    let request = DynamicMessage::deserialize(
        codec
            .pool()
            .get_message_by_name("misc.MiscEchoJsonRequest")
            .unwrap(),
        json!({ "value": sent }),
    )
    .unwrap()
    .encode_to_vec();
    assert_eq!(
        method.decode_request(&request).unwrap(),
        json!({ "value": sent })
    );
    let answer = method.encode_result(sent.clone()).unwrap();
    let decoded = DynamicMessage::decode(
        codec
            .pool()
            .get_message_by_name("misc.MiscEchoJsonResponse")
            .unwrap(),
        &answer[..],
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&decoded).unwrap(),
        json!({ "result": sent })
    );

    // Integer map keys, as strings in JSON both ways.
    let method = codec.method("misc.Misc", "by_id").unwrap();
    let request = DynamicMessage::deserialize(
        codec
            .pool()
            .get_message_by_name("misc.MiscByIdRequest")
            .unwrap(),
        json!({"names": {"7": "seven"}}),
    )
    .unwrap()
    .encode_to_vec();
    let args: Value = method.decode_request(&request).unwrap();
    assert_eq!(args, json!({"names": {"7": "seven"}}));
    let names: BTreeMap<u32, String> = serde_json::from_value(args["names"].clone()).unwrap();
    assert_eq!(names[&7], "seven");
}
