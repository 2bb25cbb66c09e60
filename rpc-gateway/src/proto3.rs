//! Arguments in proto3's canonical JSON mapping, as Connect clients send them, read into
//! serde's JSON: guided by the method's schema (`traitrpc_core::schema`), a 64-bit (or
//! any) integer written as a decimal string becomes a number, bytes (a byte string or a
//! `Vec<u8>`) written as base64 become serde's array of numbers. An enum written as a
//! number is not read: without a `.proto` fixing the numbers, a number would name a
//! variant by its position, which inserting a variant changes. Everything serde's JSON
//! already accepts (what curl users send)
//! is left as it is, so both spellings work. A value that matches neither is left for
//! serde to refuse with its usual message.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::{Map, Number, Value};
use traitrpc_core::schema::{MethodSchema, Shape, TypeShape, VariantShape};

/// Base64 as proto3 JSON and Connect write it: standard or URL-safe, padded or not.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
/// URL-safe base64, padded or not (also Connect's GET `base64=1`).
pub(crate) const URL_SAFE_LENIENT: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// Rewrites the proto3 spellings in `args` (an object by parameter name) into serde's,
/// following `method`'s parameter shapes.
pub(crate) fn normalize_arguments(method: &MethodSchema, args: &mut Map<String, Value>) {
    for param in &method.params {
        if let Some(value) = args.get_mut(&param.name) {
            normalize(value, &param.shape, method, 0);
        }
    }
}

/// Nesting deeper than this is left alone (serde refuses it anyway).
const MAX_DEPTH: usize = 64;

fn normalize(value: &mut Value, shape: &Shape, method: &MethodSchema, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let next = depth + 1;
    match shape {
        Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 | Shape::I128 => {
            if let Some(n) = value.as_str().and_then(|s| s.parse::<i64>().ok()) {
                *value = Value::Number(n.into());
            }
        }
        Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 | Shape::U128 => {
            if let Some(n) = value.as_str().and_then(|s| s.parse::<u64>().ok()) {
                *value = Value::Number(n.into());
            }
        }
        Shape::F32 | Shape::F64 => {
            let parsed = value.as_str().and_then(|s| s.parse::<f64>().ok());
            if let Some(number) = parsed.and_then(Number::from_f64) {
                *value = Value::Number(number);
            }
        }
        Shape::Bytes => {
            if let Some(bytes) = value.as_str().and_then(decode_base64) {
                *value = Value::Array(bytes.into_iter().map(Value::from).collect());
            }
        }
        Shape::Option(inner) => normalize(value, inner, method, next),
        // A `Vec<u8>` field: proto3's `bytes`, base64 in JSON.
        Shape::Seq(item) if **item == Shape::U8 && value.is_string() => {
            normalize(value, &Shape::Bytes, method, next)
        }
        Shape::Seq(item) => {
            if let Some(items) = value.as_array_mut() {
                for item_value in items {
                    normalize(item_value, item, method, next);
                }
            }
        }
        Shape::Map(_, item) => {
            if let Some(entries) = value.as_object_mut() {
                for entry in entries.values_mut() {
                    normalize(entry, item, method, next);
                }
            }
        }
        Shape::Tuple(items) => {
            if let Some(values) = value.as_array_mut() {
                for (v, s) in values.iter_mut().zip(items) {
                    normalize(v, s, method, next);
                }
            }
        }
        Shape::Named(name) => {
            if let Some(def) = method.types.get(name) {
                normalize_named(value, def, method, next);
            }
        }
        _ => {}
    }
}

fn normalize_named(value: &mut Value, def: &TypeShape, method: &MethodSchema, depth: usize) {
    match def {
        TypeShape::NewtypeStruct(inner) => normalize(value, inner, method, depth),
        TypeShape::TupleStruct(items) => {
            normalize(value, &Shape::Tuple(items.clone()), method, depth)
        }
        TypeShape::Struct { fields, .. } => {
            if let Some(object) = value.as_object_mut() {
                for field in fields {
                    if let Some(v) = object.get_mut(&field.name) {
                        normalize(v, &field.shape, method, depth);
                    }
                }
            }
        }
        TypeShape::Enum(variants) => {
            let Some(object) = value.as_object_mut() else {
                return;
            };
            for variant in variants {
                let Some(v) = object.get_mut(&variant.name) else {
                    continue;
                };
                match &variant.shape {
                    VariantShape::Unit => {}
                    VariantShape::Newtype(inner) => normalize(v, inner, method, depth),
                    VariantShape::Tuple(items) => {
                        normalize(v, &Shape::Tuple(items.clone()), method, depth)
                    }
                    VariantShape::Struct(fields) => {
                        if let Some(inner) = v.as_object_mut() {
                            for field in fields {
                                if let Some(fv) = inner.get_mut(&field.name) {
                                    normalize(fv, &field.shape, method, depth);
                                }
                            }
                        }
                    }
                }
            }
        }
        TypeShape::UnitStruct => {}
    }
}

/// Base64 in any of proto3 JSON's spellings.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use traitrpc_core::json::MethodKind;
    use traitrpc_core::schema::MethodTrace;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        id: u64,
        amounts: Vec<i64>,
        data: traitrpc_core::ByteBuf,
        status: Status,
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    enum Status {
        Active,
        Suspended,
    }

    #[test]
    fn proto3_spellings_become_serde_s_and_serde_s_stay() {
        let method = MethodTrace::new("m", MethodKind::Unary)
            .param::<i64>("a")
            .param::<Order>("order")
            .param::<Option<u32>>("n")
            .result::<()>()
            .finish();
        let mut args = json!({
            "a": "-9007199254740993",
            "order": {"id": "18446744073709551615", "amounts": ["1", 2], "data": "AQID", "status": 1},
            "n": "7",
        });
        normalize_arguments(&method, args.as_object_mut().unwrap());
        assert_eq!(
            args,
            json!({
                "a": -9007199254740993i64,
                // An enum's number is left alone (serde refuses it).
                "order": {"id": 18446744073709551615u64, "amounts": [1, 2], "data": [1, 2, 3], "status": 1},
                "n": 7,
            })
        );
        // What serde's JSON sends already is unchanged; what fits neither is left for
        // serde to refuse.
        let mut plain = json!({"a": 5, "n": null, "order": {"status": "Active", "data": [4]}});
        let before = plain.clone();
        normalize_arguments(&method, plain.as_object_mut().unwrap());
        assert_eq!(plain, before);
        let mut bad = json!({"a": "five"});
        normalize_arguments(&method, bad.as_object_mut().unwrap());
        assert_eq!(bad, json!({"a": "five"}));
    }
}
