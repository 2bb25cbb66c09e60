//! The direct codec against the reference (prost-reflect's dynamic messages) on many
//! generated values: both write messages that read back equal, both read the same
//! arguments from the same bytes; and arbitrary bytes never panic it.

use std::collections::BTreeMap;

use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use traitrpc_proto::prost_reflect::DynamicMessage;
use traitrpc_proto::{ProtoCodec, ServiceInput};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Status {
    Active,
    Held(u64),
    Moved { to: String, floor: i32 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    sku: String,
    qty: u32,
    weight: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    total: i64,
    small: i8,
    ratio: f32,
    big: i128,
    note: Option<String>,
    count: Option<u32>,
    blob: Vec<u8>,
    status: Status,
    previous: Option<Status>,
    tags: Vec<String>,
    amounts: Vec<i64>,
    lines: Vec<Line>,
    counts: BTreeMap<String, u32>,
    by_id: BTreeMap<u64, Line>,
    flag: bool,
    initial: char,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Node {
    value: u32,
    children: Vec<Node>,
}

#[allow(dead_code)]
#[traitrpc_core::service(name = "shop.Orders")]
trait Orders {
    async fn tree(&self, root: Node) -> u32;
    async fn place(&self, order: Order, urgent: bool, tries: Vec<u32>) -> Order;
    async fn nothing(&self) -> ();
    async fn maybe(&self, id: u64) -> Option<Line>;
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn int(&mut self) -> i64 {
        match self.below(4) {
            0 => 0,
            1 => -(self.below(1000) as i64),
            2 => self.next() as i64,
            _ => self.below(300) as i64,
        }
    }
    fn text(&mut self) -> String {
        let n = self.below(6);
        (0..n)
            .map(|_| ['a', 'é', '☃', ' ', '"', '0'][self.below(6) as usize])
            .collect()
    }
    fn line(&mut self) -> Line {
        Line {
            sku: self.text(),
            qty: self.below(5) as u32,
            weight: self.int() as f64 / 8.0,
        }
    }
    fn status(&mut self) -> Status {
        match self.below(3) {
            0 => Status::Active,
            1 => Status::Held(self.next()),
            _ => Status::Moved {
                to: self.text(),
                floor: self.int() as i32,
            },
        }
    }
    fn order(&mut self) -> Order {
        Order {
            id: self.next(),
            total: self.int(),
            small: self.int() as i8,
            ratio: (self.int() as f32) / 4.0,
            // serde_json holds 128-bit integers only within 64 bits.
            big: i128::from(self.int()),
            note: (self.below(2) == 0).then(|| self.text()),
            count: (self.below(2) == 0).then(|| self.below(3) as u32),
            blob: (0..self.below(5)).map(|_| self.next() as u8).collect(),
            status: self.status(),
            previous: (self.below(2) == 0).then(|| self.status()),
            tags: (0..self.below(3)).map(|_| self.text()).collect(),
            amounts: (0..self.below(4)).map(|_| self.int()).collect(),
            lines: (0..self.below(3)).map(|_| self.line()).collect(),
            counts: (0..self.below(3))
                .map(|_| (self.text(), self.below(9) as u32))
                .collect(),
            by_id: (0..self.below(3))
                .map(|_| (self.next(), self.line()))
                .collect(),
            flag: self.below(2) == 0,
            initial: ['x', 'é', '☃'][self.below(3) as usize],
        }
    }
}

fn codec() -> ProtoCodec {
    ProtoCodec::new(vec![ServiceInput {
        schema: OrdersClient::service_schema().clone(),
        idempotent: Default::default(),
    }])
    .expect("exports")
}

fn as_json(codec: &ProtoCodec, message: &str, bytes: &[u8]) -> Value {
    let descriptor = codec.pool().get_message_by_name(message).unwrap();
    serde_json::to_value(DynamicMessage::decode(descriptor, bytes).expect("decodes")).unwrap()
}

#[test]
fn direct_and_reference_codecs_agree_on_generated_values() {
    let codec = codec();
    let place = codec.method("shop.Orders", "place").unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..500 {
        let order = serde_json::to_value(rng.order()).unwrap();
        // Writing: both messages read back the same.
        let direct = place.encode_result(order.clone()).unwrap();
        let reference = place.encode_result_dynamic(order.clone()).unwrap();
        assert_eq!(
            as_json(&codec, "shop.OrdersPlaceResponse", &direct),
            as_json(&codec, "shop.OrdersPlaceResponse", &reference),
            "round {round}: {order}"
        );
        // Reading: the same arguments from the same bytes (the reference's, which is what
        // other languages' encoders write).
        let args = json!({
            "order": order,
            "urgent": rng.below(2) == 0,
            "tries": (0..rng.below(4)).map(|_| rng.below(100)).collect::<Vec<_>>(),
        });
        let request = DynamicMessage::deserialize(
            codec
                .pool()
                .get_message_by_name("shop.OrdersPlaceRequest")
                .unwrap(),
            request_proto_json(place, &args),
        )
        .unwrap()
        .encode_to_vec();
        let read = place.decode_request(&request).unwrap();
        assert_eq!(
            read,
            place.decode_request_dynamic(&request).unwrap(),
            "round {round}"
        );
        // And it is what was sent, as serde reads it.
        let back: Order = serde_json::from_value(read["order"].clone()).unwrap();
        assert_eq!(
            serde_json::to_value(back).unwrap(),
            args["order"],
            "round {round}"
        );
    }
}

/// The request message's proto3 JSON for `args` (serde's JSON by parameter).
fn request_proto_json(method: &traitrpc_proto::MethodCodec, args: &Value) -> Value {
    let mapping = traitrpc_proto::json::JsonMapping::new(&method.schema().types);
    let object = method
        .schema()
        .params
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                mapping.proto_of(args[&p.name].clone(), &p.shape),
            )
        })
        .filter(|(_, v)| !v.is_null())
        .collect();
    Value::Object(object)
}

#[test]
fn unit_and_optional_results() {
    let codec = codec();
    let nothing = codec.method("shop.Orders", "nothing").unwrap();
    assert_eq!(
        nothing.encode_result(Value::Null).unwrap(),
        Vec::<u8>::new()
    );
    let maybe = codec.method("shop.Orders", "maybe").unwrap();
    assert_eq!(maybe.encode_result(Value::Null).unwrap(), Vec::<u8>::new());
    let line = json!({"sku": "", "qty": 0, "weight": 0.0});
    let bytes = maybe.encode_result(line.clone()).unwrap();
    assert_eq!(bytes, maybe.encode_result_dynamic(line).unwrap());
    assert_eq!(
        as_json(&codec, "shop.OrdersMaybeResponse", &bytes),
        json!({"result": {}})
    );
}

#[test]
fn arbitrary_bytes_give_a_value_or_an_error_never_a_panic() {
    let codec = codec();
    let place = codec.method("shop.Orders", "place").unwrap();
    let mut rng = Rng(7);
    let valid = place
        .encode_result(serde_json::to_value(rng.order()).unwrap())
        .unwrap();
    for _ in 0..20_000 {
        let mut bytes = if rng.below(2) == 0 {
            valid.clone()
        } else {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        };
        for _ in 0..rng.below(4) {
            if !bytes.is_empty() {
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] = rng.next() as u8;
            }
        }
        if rng.below(3) == 0 {
            bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
        }
        let _ = place.decode_request(&bytes);
    }
    // A recursive type nested without end is refused, not followed.
    let tree = codec.method("shop.Orders", "tree").unwrap();
    let children = traitrpc_proto::field_number("children");
    let root = traitrpc_proto::field_number("root");
    let nest = |number: u32, inner: &[u8]| {
        let mut out = Vec::new();
        put_varint(u64::from(number) << 3 | 2, &mut out);
        put_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(inner);
        out
    };
    let mut node = Vec::new();
    for _ in 0..1000 {
        node = nest(children, &node);
    }
    let request = nest(root, &node);
    let error = tree.decode_request(&request).unwrap_err().to_string();
    assert!(error.contains("nest too deeply"), "{error}");
    // Within the limit it reads.
    let mut node = Vec::new();
    for _ in 0..50 {
        node = nest(children, &node);
    }
    let read = tree.decode_request(&nest(root, &node)).unwrap();
    assert_eq!(read["root"]["value"], 0);
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}
