//! The tracer and the fingerprint: shapes of the serde data model traced from types'
//! own `Deserialize`, recursion, renamed and defaulted fields, opaque types, and golden
//! fingerprints (a change of the canonical form fails here, not in a deployed fleet).
#![allow(dead_code)] // The traced types are only read by their `Deserialize`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use traitrpc_core::json::MethodKind;
use traitrpc_core::schema::{canonical_form, MethodTrace, Shape, TypeShape, VariantShape};

#[derive(Serialize, Deserialize)]
enum Status {
    Active,
    Pending(u8),
    Suspended { why: String },
}

#[derive(Serialize, Deserialize)]
enum Inner {
    X,
    Y(Box<Tree>),
}

#[derive(Serialize, Deserialize)]
struct Tree {
    status: Status,
    kids: Vec<Tree>,
    inner: Option<Inner>,
    #[serde(default)]
    count: u32,
    #[serde(rename = "label")]
    name: String,
}

#[derive(Serialize, Deserialize)]
enum List {
    Cons(i64, Box<List>),
    Nil,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Strict {
    a: u16,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    A(u8),
    B(String),
}

fn trace_one<T: serde::de::DeserializeOwned>() -> traitrpc_core::schema::MethodSchema {
    MethodTrace::new("m", MethodKind::Unary)
        .param::<T>("x")
        .result::<()>()
        .finish()
}

#[test]
fn enums_nested_in_recursive_types_are_traced_whole() {
    let method = trace_one::<Tree>();
    let types = &method.types;
    let Some(TypeShape::Enum(status)) = types.get("Status") else {
        panic!("{types:#?}")
    };
    let names: Vec<_> = status.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["Active", "Pending", "Suspended"]);
    assert_eq!(status[1].shape, VariantShape::Newtype(Shape::U8));
    let Some(TypeShape::Enum(inner)) = types.get("Inner") else {
        panic!("{types:#?}")
    };
    assert_eq!(
        inner[1].shape,
        VariantShape::Newtype(Shape::Named("Tree".into()))
    );
    let Some(TypeShape::Struct { fields, .. }) = types.get("Tree") else {
        panic!("{types:#?}")
    };
    let described: Vec<_> = fields
        .iter()
        .map(|f| (f.name.as_str(), f.shape.clone(), f.default))
        .collect();
    assert_eq!(
        described,
        [
            ("status", Shape::Named("Status".into()), false),
            (
                "kids",
                Shape::Seq(Box::new(Shape::Named("Tree".into()))),
                false
            ),
            (
                "inner",
                Shape::Option(Box::new(Shape::Named("Inner".into()))),
                true
            ),
            ("count", Shape::U32, true),
            ("label", Shape::Str, false),
        ]
    );
}

#[test]
fn a_recursive_enum_ends() {
    let method = trace_one::<List>();
    let Some(TypeShape::Enum(list)) = method.types.get("List") else {
        panic!("{:#?}", method.types)
    };
    assert_eq!(
        list[0].shape,
        VariantShape::Tuple(vec![Shape::I64, Shape::Named("List".into())])
    );
    assert_eq!(list[1].shape, VariantShape::Unit);
}

#[test]
fn deny_unknown_fields_is_seen() {
    let method = trace_one::<(Strict, Tree)>();
    assert!(matches!(
        method.types.get("Strict"),
        Some(TypeShape::Struct {
            deny_unknown_fields: true,
            ..
        })
    ));
    assert!(matches!(
        method.types.get("Tree"),
        Some(TypeShape::Struct {
            deny_unknown_fields: false,
            ..
        })
    ));
}

#[test]
fn what_cannot_be_traced_is_opaque_not_a_panic() {
    for method in [trace_one::<Untagged>(), trace_one::<serde_json::Value>()] {
        let Shape::Opaque(reason) = &method.params[0].shape else {
            panic!("{:?}", method.params[0])
        };
        assert!(reason.contains("self-describing"), "{reason}");
    }
    // A validating `Deserialize` that accepts the tracer's samples is traced.
    let method = trace_one::<std::num::NonZeroU32>();
    assert_eq!(method.params[0].shape, Shape::U32);
}

#[test]
fn standard_types_have_their_binary_shape() {
    let method = trace_one::<(std::time::Duration, BTreeMap<String, Vec<u8>>, [u16; 2])>();
    assert_eq!(
        method.params[0].shape,
        Shape::Tuple(vec![
            Shape::Named("Duration".into()),
            Shape::Map(
                Box::new(Shape::Str),
                Box::new(Shape::Seq(Box::new(Shape::U8)))
            ),
            Shape::Tuple(vec![Shape::U16, Shape::U16]),
        ])
    );
}

/// Golden values: these change only with the canonical form, which is a wire promise.
#[test]
fn fingerprints_are_stable() {
    let add = MethodTrace::new("add", MethodKind::Unary)
        .param::<i64>("a")
        .param::<i64>("b")
        .result::<i64>()
        .finish();
    assert_eq!(
        canonical_form(&add),
        r#"{"kind":"unary","params":[["a","i64"],["b","i64"]],"result":"i64","error":null,"upload":null,"types":[]}"#
    );
    assert_eq!(add.fingerprint.to_string(), "94015a4850279e7d");
    let tree = MethodTrace::new("grow", MethodKind::ServerStream)
        .param::<Tree>("seed")
        .result::<Status>()
        .error::<String>()
        .finish();
    assert_eq!(
        canonical_form(&tree),
        r#"{"kind":"server_stream","params":[["seed",{"ref":0}]],"result":{"ref":1},"error":"str","upload":null,"types":[{"struct":[["status",{"ref":1}],["kids",{"seq":{"ref":0}}],["inner",{"option":{"ref":2}}],["count","u32"],["label","str"]]},{"enum":[["Active","unit"],["Pending",{"newtype":"u8"}],["Suspended",{"struct":[["why","str"]]}]]},{"enum":[["X","unit"],["Y",{"newtype":{"ref":0}}]]}]}"#
    );
    assert_eq!(tree.fingerprint.to_string(), "25dc55dd23785d93");
}

#[test]
fn renaming_a_type_keeps_the_fingerprint_and_reordering_fields_changes_it() {
    mod v1 {
        #[derive(serde::Deserialize)]
        pub struct Order {
            pub id: u64,
            pub qty: u32,
        }
    }
    mod v2 {
        #[derive(serde::Deserialize)]
        pub struct Purchase {
            pub id: u64,
            pub qty: u32,
        }
    }
    mod v3 {
        #[derive(serde::Deserialize)]
        pub struct Order {
            pub qty: u32,
            pub id: u64,
        }
    }
    let a = trace_one::<v1::Order>().fingerprint;
    let b = trace_one::<v2::Purchase>().fingerprint;
    let c = trace_one::<v3::Order>().fingerprint;
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn two_types_of_one_name_do_not_collide() {
    mod a {
        #[derive(serde::Deserialize)]
        pub struct Item {
            pub x: u8,
        }
    }
    mod b {
        #[derive(serde::Deserialize)]
        pub struct Item {
            pub y: String,
        }
    }
    let method = trace_one::<(a::Item, b::Item)>();
    assert_eq!(
        method.params[0].shape,
        Shape::Tuple(vec![
            Shape::Named("Item".into()),
            Shape::Named("Item#2".into())
        ])
    );
}

#[test]
fn snapshots_round_trip() {
    let schema = traitrpc_core::schema::ServiceSchema {
        service: "shop.Orders".into(),
        methods: vec![trace_one::<Tree>()],
    };
    let text = schema.to_snapshot();
    assert_eq!(
        traitrpc_core::schema::ServiceSchema::from_snapshot(&text).unwrap(),
        schema
    );
    // A fingerprint edited by hand is computed again from the shapes.
    let print = schema.methods[0].fingerprint.to_string();
    let edited = text.replace(&print, "0000000000000000");
    assert_ne!(edited, text);
    assert_eq!(
        traitrpc_core::schema::ServiceSchema::from_snapshot(&edited).unwrap(),
        schema
    );
}

/// What JSON cannot carry is breaking when the schemas differ (the call goes by name):
/// `Some` of a value written as `null` reads as `None`; maps with keys JSON cannot write
/// fail.
#[test]
fn the_checker_knows_what_json_cannot_carry() {
    use std::collections::HashMap;
    use traitrpc_core::schema::{call, Verdict};
    let method = |optional: bool, nested: bool| {
        let trace = MethodTrace::new("m", MethodKind::Unary).param::<u32>("a");
        let trace = if optional {
            trace.param::<Option<u8>>("extra")
        } else {
            trace
        };
        if nested {
            trace
                .param::<Option<Option<u8>>>("clear")
                .result::<()>()
                .finish()
        } else {
            trace.result::<()>().finish()
        }
    };
    // An added optional parameter alone is translated...
    assert_eq!(
        call(&method(false, false), &method(true, false)),
        Verdict::Translated
    );
    // ...but `Option<Option<_>>` in a method whose schemas differ is not.
    let Verdict::Breaking(reasons) = call(&method(false, true), &method(true, true)) else {
        panic!()
    };
    assert!(reasons[0].contains("read as None"), "{reasons:?}");
    let keyed = |extra: bool| {
        let trace = MethodTrace::new("m", MethodKind::Unary).param::<HashMap<(u8, u8), u8>>("grid");
        let trace = if extra {
            trace.param::<Option<u8>>("x")
        } else {
            trace
        };
        trace.result::<()>().finish()
    };
    let Verdict::Breaking(reasons) = call(&keyed(false), &keyed(true)) else {
        panic!()
    };
    assert!(reasons[0].contains("JSON keys are strings"), "{reasons:?}");
}
