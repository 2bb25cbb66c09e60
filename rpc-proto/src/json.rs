//! serde's JSON and proto3's JSON of the same value, converted both ways with the traced
//! shape as the guide. The services speak serde's JSON (what `serde_json` writes for the
//! Rust types); protobuf clients speak proto3's JSON mapping of the exported `.proto`
//! (and the binary codec goes through it, [`ProtoCodec`](crate::ProtoCodec)). They
//! differ where the mapping says ([`crate::mapping`]):
//!
//! | value | serde | proto3 |
//! |---|---|---|
//! | 64-bit and 128-bit integers | a number | a decimal string |
//! | bytes | an array of numbers | base64 |
//! | `()`, a unit struct | `null` | `{}` |
//! | a unit variant | `"Active"` | `{"Active": {}}` |
//! | a field left at its default | present | may be absent (it reads as the default) |
//!
//! Reading proto3's JSON also accepts serde's spellings where they cannot be confused,
//! so a value that is already serde's passes unchanged.

use std::collections::BTreeMap;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::{Map, Value};
use traitrpc_core::schema::{Field, Shape, TypeShape, VariantShape};

/// Base64 as proto3 JSON reads it: standard or URL-safe, padded or not.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// Deeper than this, values are left as they are (serde refuses them anyway).
const MAX_DEPTH: usize = 128;

/// Converts between the two JSONs for the shapes of one method (its named types).
#[derive(Clone, Copy)]
pub struct JsonMapping<'a> {
    types: &'a BTreeMap<String, TypeShape>,
    /// Absent fields read as protobuf's defaults (else they stay absent).
    defaults: bool,
}

impl<'a> JsonMapping<'a> {
    /// The mapping for shapes that refer to `types` (a method's `types`).
    pub fn new(types: &'a BTreeMap<String, TypeShape>) -> Self {
        JsonMapping {
            types,
            defaults: true,
        }
    }

    /// The same mapping, but reading leaves absent fields absent: for serde's JSON that
    /// may use proto3's spellings (a curl user's), where a missing field is the caller's
    /// mistake for serde to name, not a default.
    pub fn leaving_absent_fields(mut self) -> Self {
        self.defaults = false;
        self
    }

    /// `value` (serde's JSON of a `shape`) in proto3's JSON.
    pub fn proto_of(&self, value: Value, shape: &Shape) -> Value {
        self.proto_at(value, shape, 0)
    }

    /// `value` (proto3's JSON of a `shape`, or serde's) in serde's JSON; an absent
    /// field (`None`) reads as its default, as protobuf reads it.
    pub fn serde_of(&self, value: Option<Value>, shape: &Shape) -> Value {
        self.serde_at(value, shape, 0)
    }

    /// The fields of `object` (proto3's JSON of a message with `fields`, by name) in
    /// serde's JSON: each converted, absent ones at their defaults (an absent `Option`
    /// stays absent).
    pub fn serde_fields_of<'f>(
        &self,
        mut object: Map<String, Value>,
        fields: impl IntoIterator<Item = (&'f str, &'f Shape)>,
    ) -> Map<String, Value> {
        self.serde_fields_at(&mut object, fields, 0);
        object
    }

    fn resolve<'s>(&'s self, shape: &'s Shape) -> &'s Shape {
        crate::mapping::unwrap_newtypes(self.types, shape)
    }

    fn is_bytes(&self, shape: &Shape) -> bool {
        match shape {
            Shape::Bytes => true,
            Shape::Seq(item) => crate::mapping::is_byte(self.types, item),
            _ => false,
        }
    }

    fn proto_at(&self, value: Value, shape: &Shape, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return value;
        }
        let next = depth + 1;
        let shape = self.resolve(shape);
        if self.is_bytes(shape) {
            if let Value::Array(items) = &value {
                let bytes: Option<Vec<u8>> = items
                    .iter()
                    .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
                    .collect();
                if let Some(bytes) = bytes {
                    return Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
                }
            }
            return value;
        }
        match shape {
            Shape::I64 | Shape::U64 | Shape::I128 | Shape::U128 => match value {
                Value::Number(n) => Value::String(n.to_string()),
                other => other,
            },
            Shape::Unit => Value::Object(Map::new()),
            Shape::Option(inner) => match value {
                Value::Null => Value::Null,
                other => self.proto_at(other, inner, next),
            },
            Shape::Seq(item) => match value {
                Value::Array(items) => Value::Array(
                    items
                        .into_iter()
                        .map(|v| self.proto_at(v, item, next))
                        .collect(),
                ),
                other => other,
            },
            Shape::Map(_, item) => match value {
                Value::Object(entries) => Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k, self.proto_at(v, item, next)))
                        .collect(),
                ),
                other => other,
            },
            Shape::Named(name) => match self.types.get(name) {
                Some(TypeShape::UnitStruct) => Value::Object(Map::new()),
                Some(TypeShape::Struct { fields, .. }) => self.struct_to_proto(value, fields, next),
                Some(TypeShape::Enum(variants)) => match value {
                    Value::String(variant) => {
                        let mut object = Map::new();
                        object.insert(variant, Value::Object(Map::new()));
                        Value::Object(object)
                    }
                    Value::Object(object) if object.len() == 1 => {
                        let (variant, inner) = object.into_iter().next().expect("one entry");
                        let converted = match variants.iter().find(|v| v.name == variant) {
                            Some(v) => match &v.shape {
                                VariantShape::Unit => Value::Object(Map::new()),
                                VariantShape::Newtype(shape) => self.proto_at(inner, shape, next),
                                VariantShape::Struct(fields) => {
                                    self.struct_to_proto(inner, fields, next)
                                }
                                VariantShape::Tuple(_) => inner,
                            },
                            None => inner,
                        };
                        let mut object = Map::new();
                        object.insert(variant, converted);
                        Value::Object(object)
                    }
                    other => other,
                },
                _ => value,
            },
            _ => value,
        }
    }

    fn struct_to_proto(&self, value: Value, fields: &[Field], depth: usize) -> Value {
        let Value::Object(object) = value else {
            return value;
        };
        let converted = object
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(key, v)| {
                let v = match fields.iter().find(|f| f.name == key) {
                    Some(field) => self.proto_at(v, &field.shape, depth),
                    None => v,
                };
                (key, v)
            })
            .collect();
        Value::Object(converted)
    }

    fn serde_at(&self, value: Option<Value>, shape: &Shape, depth: usize) -> Value {
        let shape = self.resolve(shape);
        // proto3's JSON reads `null` as the field's default; serde's JSON leaves it for
        // serde to judge (a `null` where a number belongs is an error, never a 0).
        let Some(value) =
            value.filter(|v| !v.is_null() || !self.defaults || matches!(shape, Shape::Option(_)))
        else {
            return self.default_of(shape, depth);
        };
        if depth > MAX_DEPTH {
            return value;
        }
        let next = depth + 1;
        if self.is_bytes(shape) {
            if let Some(bytes) = value.as_str().and_then(decode_base64) {
                return Value::Array(bytes.into_iter().map(Value::from).collect());
            }
            return value;
        }
        match shape {
            Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 | Shape::I128 => match &value {
                Value::String(text) => parse_integer(text, true).unwrap_or(value),
                _ => value,
            },
            Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 | Shape::U128 => match &value {
                Value::String(text) => parse_integer(text, false).unwrap_or(value),
                _ => value,
            },
            Shape::F32 | Shape::F64 => match &value {
                Value::String(text) => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(value),
                _ => value,
            },
            Shape::Unit => Value::Null,
            Shape::Option(inner) => match value {
                Value::Null => Value::Null,
                other => self.serde_at(Some(other), inner, next),
            },
            Shape::Seq(item) => match value {
                Value::Array(items) => Value::Array(
                    items
                        .into_iter()
                        .map(|v| self.serde_at(Some(v), item, next))
                        .collect(),
                ),
                other => other,
            },
            Shape::Map(_, item) => match value {
                Value::Object(entries) => Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k, self.serde_at(Some(v), item, next)))
                        .collect(),
                ),
                other => other,
            },
            // No protobuf form, but serde's JSON with proto3's spellings inside.
            Shape::Tuple(items) => match value {
                Value::Array(values) => Value::Array(
                    values
                        .into_iter()
                        .zip(items.iter().map(Some).chain(std::iter::repeat(None)))
                        .map(|(v, s)| match s {
                            Some(s) => self.serde_at(Some(v), s, next),
                            None => v,
                        })
                        .collect(),
                ),
                other => other,
            },
            Shape::Named(name) => match self.types.get(name) {
                Some(TypeShape::UnitStruct) => Value::Null,
                Some(TypeShape::Struct { fields, .. }) => match value {
                    Value::Object(mut object) => {
                        let fields = fields.iter().map(|f| (f.name.as_str(), &f.shape));
                        self.serde_fields_at(&mut object, fields, next);
                        Value::Object(object)
                    }
                    other => other,
                },
                Some(TypeShape::Enum(variants)) => match value {
                    Value::Object(object) if object.len() == 1 => {
                        let (variant, inner) = object.into_iter().next().expect("one entry");
                        let Some(v) = variants.iter().find(|v| v.name == variant) else {
                            return Value::Object(Map::from_iter([(variant, inner)]));
                        };
                        let inner = match &v.shape {
                            VariantShape::Unit => return Value::String(variant),
                            VariantShape::Newtype(shape) => self.serde_at(Some(inner), shape, next),
                            VariantShape::Struct(fields) => match inner {
                                Value::Object(mut object) => {
                                    let fields = fields.iter().map(|f| (f.name.as_str(), &f.shape));
                                    self.serde_fields_at(&mut object, fields, next);
                                    Value::Object(object)
                                }
                                other => other,
                            },
                            VariantShape::Tuple(_) => inner,
                        };
                        Value::Object(Map::from_iter([(variant, inner)]))
                    }
                    other => other,
                },
                _ => value,
            },
            _ => value,
        }
    }

    fn serde_fields_at<'f>(
        &self,
        object: &mut Map<String, Value>,
        fields: impl IntoIterator<Item = (&'f str, &'f Shape)>,
        depth: usize,
    ) {
        for (name, shape) in fields {
            let present = object.remove(name);
            if present.is_none()
                && (!self.defaults || matches!(self.resolve(shape), Shape::Option(_)))
            {
                continue;
            }
            let value = self.serde_at(present, shape, depth);
            object.insert(name.to_string(), value);
        }
    }

    /// What protobuf reads for an absent field of `shape`, in serde's JSON. An enum has
    /// no default (`null`: serde refuses it, naming the type), so a value left out never
    /// becomes a variant silently.
    fn default_of(&self, shape: &Shape, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        let shape = self.resolve(shape);
        if self.is_bytes(shape) {
            return Value::Array(Vec::new());
        }
        match shape {
            Shape::Bool => Value::Bool(false),
            Shape::I8
            | Shape::I16
            | Shape::I32
            | Shape::I64
            | Shape::I128
            | Shape::U8
            | Shape::U16
            | Shape::U32
            | Shape::U64
            | Shape::U128 => Value::from(0),
            Shape::F32 | Shape::F64 => Value::from(0.0),
            Shape::Str => Value::String(String::new()),
            Shape::Seq(_) => Value::Array(Vec::new()),
            Shape::Map(..) => Value::Object(Map::new()),
            Shape::Named(name) => match self.types.get(name) {
                Some(TypeShape::Struct { fields, .. }) => Value::Object(
                    fields
                        .iter()
                        .filter(|f| !matches!(self.resolve(&f.shape), Shape::Option(_)))
                        .map(|f| (f.name.clone(), self.default_of(&f.shape, depth + 1)))
                        .collect(),
                ),
                _ => Value::Null,
            },
            _ => Value::Null,
        }
    }
}

/// A decimal integer written as a string, as a JSON number (signed or not).
fn parse_integer(text: &str, signed: bool) -> Option<Value> {
    if signed {
        if let Ok(n) = text.parse::<i64>() {
            return Some(Value::from(n));
        }
        text.parse::<i128>()
            .ok()
            .and_then(|n| serde_json::from_str(&n.to_string()).ok())
    } else {
        if let Ok(n) = text.parse::<u64>() {
            return Some(Value::from(n));
        }
        text.parse::<u128>()
            .ok()
            .and_then(|n| serde_json::from_str(&n.to_string()).ok())
    }
}

/// Base64 in any of the spellings proto3 JSON readers accept.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use traitrpc_core::schema::Variant;

    fn types() -> BTreeMap<String, TypeShape> {
        let mut types = BTreeMap::new();
        types.insert(
            "Status".into(),
            TypeShape::Enum(vec![
                Variant {
                    name: "Active".into(),
                    shape: VariantShape::Unit,
                },
                Variant {
                    name: "Held".into(),
                    shape: VariantShape::Newtype(Shape::U64),
                },
                Variant {
                    name: "Moved".into(),
                    shape: VariantShape::Struct(vec![Field {
                        name: "to".into(),
                        shape: Shape::Str,
                        default: false,
                    }]),
                },
            ]),
        );
        types.insert(
            "Order".into(),
            TypeShape::Struct {
                fields: vec![
                    Field {
                        name: "id".into(),
                        shape: Shape::U64,
                        default: false,
                    },
                    Field {
                        name: "note".into(),
                        shape: Shape::Option(Box::new(Shape::Str)),
                        default: true,
                    },
                    Field {
                        name: "blob".into(),
                        shape: Shape::Bytes,
                        default: false,
                    },
                    Field {
                        name: "status".into(),
                        shape: Shape::Named("Status".into()),
                        default: false,
                    },
                    Field {
                        name: "tags".into(),
                        shape: Shape::Seq(Box::new(Shape::Str)),
                        default: false,
                    },
                ],
                deny_unknown_fields: false,
            },
        );
        types
    }

    #[test]
    fn serde_json_becomes_proto3_json_and_back() {
        let types = types();
        let mapping = JsonMapping::new(&types);
        let order = Shape::Named("Order".into());
        let serde = json!({"id": 9007199254740993u64, "note": null, "blob": [1, 2, 255],
            "status": {"Held": 5}, "tags": ["a"]});
        let proto = mapping.proto_of(serde.clone(), &order);
        assert_eq!(
            proto,
            json!({"id": "9007199254740993", "blob": "AQL/", "status": {"Held": "5"}, "tags": ["a"]})
        );
        let back = mapping.serde_of(Some(proto), &order);
        let mut expected = serde;
        expected.as_object_mut().unwrap().remove("note");
        assert_eq!(back, expected);

        let unit = mapping.proto_of(json!("Active"), &Shape::Named("Status".into()));
        assert_eq!(unit, json!({"Active": {}}));
        assert_eq!(
            mapping.serde_of(Some(unit), &Shape::Named("Status".into())),
            json!("Active")
        );
        let moved = json!({"Moved": {"to": "x"}});
        assert_eq!(
            mapping.proto_of(moved.clone(), &Shape::Named("Status".into())),
            moved
        );
    }

    #[test]
    fn serde_json_with_proto3_spellings_is_read_without_inventing_fields() {
        let types = types();
        let mapping = JsonMapping::new(&types).leaving_absent_fields();
        let order = Shape::Named("Order".into());
        let sent = json!({"id": "18446744073709551615", "blob": "AQID", "status": {"Held": "4"}});
        assert_eq!(
            mapping.serde_of(Some(sent), &order),
            json!({"id": 18446744073709551615u64, "blob": [1, 2, 3], "status": {"Held": 4}})
        );
        // What fits neither is left for serde to refuse, with its own message; a null is
        // not a default here.
        assert_eq!(
            mapping.serde_of(Some(json!(null)), &Shape::U32),
            json!(null)
        );
        let nulls = json!({"n": null}).as_object().unwrap().clone();
        let read = mapping.serde_fields_of(nulls.clone(), [("n", &Shape::U32)]);
        assert_eq!(read, nulls);
        assert_eq!(
            mapping.serde_of(Some(json!("five")), &Shape::I64),
            json!("five")
        );
        let pair = Shape::Tuple(vec![Shape::I64, Shape::Str]);
        assert_eq!(
            mapping.serde_of(Some(json!(["-3", "x"])), &pair),
            json!([-3, "x"])
        );
    }

    #[test]
    fn absent_fields_read_as_protobuf_defaults_but_enums_have_none() {
        let types = types();
        let mapping = JsonMapping::new(&types);
        let order = mapping.serde_of(Some(json!({})), &Shape::Named("Order".into()));
        assert_eq!(
            order,
            json!({"id": 0, "blob": [], "status": null, "tags": []})
        );
        assert_eq!(mapping.serde_of(None, &Shape::I64), json!(0));
        assert_eq!(
            mapping.serde_of(None, &Shape::Option(Box::new(Shape::I64))),
            json!(null)
        );
        // serde's own spellings pass unchanged.
        let serde = json!({"id": 3, "blob": [1], "status": "Active", "tags": []});
        assert_eq!(
            mapping.serde_of(Some(serde.clone()), &Shape::Named("Order".into())),
            serde
        );
    }
}
