//! How serde's data model maps onto protobuf's: the type of the field that carries a
//! [`Shape`], or why none can.
//!
//! | serde (the traced shape) | protobuf |
//! |---|---|
//! | `bool`; `i8`..`i32`; `i64`; `u8`..`u32`; `u64`; `f32`; `f64` | `bool`; `int32`; `int64`; `uint32`; `uint64`; `float`; `double` |
//! | `i128`, `u128`; `char`, `String` | `string` (decimal); `string` |
//! | bytes (`serde_bytes`, `Vec<u8>`) | `bytes` |
//! | `()` , a unit struct | `google.protobuf.Empty`, an empty message |
//! | `Option<T>` | `optional T` (a message field: presence is its own) |
//! | `Vec<T>`, sets; `HashMap`/`BTreeMap<K, V>` | `repeated T`; `map<K, V>` (K a string, an integer or a bool) |
//! | a struct; a newtype struct | a message with a field per field; the inner type itself |
//! | an enum | a message with one `oneof variant`: a unit variant as `google.protobuf.Empty`, a newtype variant as its value, a struct variant as a nested message `{Variant}Fields` |
//! | an opaque type (`serde_json::Value`, untagged, flatten) | `google.protobuf.Value` (any JSON) |
//!
//! No equivalent (the method is left out of the export, with the reason): tuples, tuple
//! structs and tuple variants, an `Option` of an `Option`, a list or a map, a list of
//! `Option`s, lists or maps, map values that are `Option`s, lists or maps, and a newtype
//! variant carrying one of those.

use std::collections::BTreeMap;

use prost_types::field_descriptor_proto::Type;
use traitrpc_core::schema::{Shape, TypeShape};

/// The well-known empty message, for `()` and unit variants.
pub(crate) const EMPTY: &str = ".google.protobuf.Empty";
/// The well-known "any JSON" message, for opaque types.
pub(crate) const VALUE: &str = ".google.protobuf.Value";

/// A field's singular type: a scalar, or a message by fully qualified name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Scalar(Type),
    Message(String),
}

/// How a field carries its shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Carrier {
    /// One value (`optional`: with explicit presence).
    Single { kind: Kind, optional: bool },
    /// `repeated`.
    Repeated(Kind),
    /// `map<key, value>`.
    Map { key: Type, value: Kind },
}

/// Maps shapes to fields, with the named types of a method and the package's prefix for
/// fully qualified names (`.shop.`, or `.` without a package).
pub(crate) struct Mapper<'a> {
    pub types: &'a BTreeMap<String, TypeShape>,
    pub prefix: &'a str,
}

/// Newtype structs are their inner type; deeper than this is a cycle.
const MAX_NEWTYPES: usize = 32;

impl Mapper<'_> {
    /// The message name of named type `name`, fully qualified.
    pub fn qualified(&self, name: &str) -> String {
        format!("{}{}", self.prefix, message_name(name))
    }

    /// `shape` with newtype structs unwrapped.
    pub fn resolve<'s>(&'s self, mut shape: &'s Shape) -> Result<&'s Shape, String> {
        for _ in 0..MAX_NEWTYPES {
            match shape {
                Shape::Named(name) => match self.types.get(name) {
                    Some(TypeShape::NewtypeStruct(inner)) => shape = inner,
                    Some(_) => return Ok(shape),
                    None => return Err(format!("type `{name}` is not defined in the schema")),
                },
                _ => return Ok(shape),
            }
        }
        Err("newtype structs nest too deeply".into())
    }

    /// How a field of `shape` carries it.
    pub fn carrier(&self, shape: &Shape) -> Result<Carrier, String> {
        let shape = self.resolve(shape)?;
        match shape {
            Shape::Option(inner) => {
                let inner = self.resolve(inner)?;
                match inner {
                    Shape::Option(_) => {
                        Err("an Option of an Option has no protobuf equivalent".into())
                    }
                    Shape::Seq(item) if !self.is_byte(item)? => {
                        Err("an Option of a list has no protobuf equivalent".into())
                    }
                    Shape::Map(..) => Err("an Option of a map has no protobuf equivalent".into()),
                    _ => Ok(Carrier::Single {
                        kind: self.singular(inner)?,
                        optional: true,
                    }),
                }
            }
            Shape::Seq(item) if self.is_byte(item)? => Ok(Carrier::Single {
                kind: Kind::Scalar(Type::Bytes),
                optional: false,
            }),
            Shape::Seq(item) => {
                let item = self.resolve(item)?;
                match item {
                    Shape::Option(_) | Shape::Map(..) => {
                        Err("a list of Options or maps has no protobuf equivalent".into())
                    }
                    Shape::Seq(inner) if !self.is_byte(inner)? => {
                        Err("a list of lists has no protobuf equivalent".into())
                    }
                    _ => Ok(Carrier::Repeated(self.singular(item)?)),
                }
            }
            Shape::Map(key, value) => {
                let key = match self.resolve(key)? {
                    Shape::Str | Shape::Char => Type::String,
                    Shape::Bool => Type::Bool,
                    Shape::I8 | Shape::I16 | Shape::I32 => Type::Int32,
                    Shape::I64 => Type::Int64,
                    Shape::U8 | Shape::U16 | Shape::U32 => Type::Uint32,
                    Shape::U64 => Type::Uint64,
                    _ => return Err("map keys must be strings, integers or bools".into()),
                };
                let value = self.resolve(value)?;
                match value {
                    Shape::Option(_) | Shape::Map(..) => Err(
                        "map values that are Options or maps have no protobuf equivalent".into(),
                    ),
                    Shape::Seq(inner) if !self.is_byte(inner)? => {
                        Err("map values that are lists have no protobuf equivalent".into())
                    }
                    _ => Ok(Carrier::Map {
                        key,
                        value: self.singular(value)?,
                    }),
                }
            }
            _ => Ok(Carrier::Single {
                kind: self.singular(shape)?,
                optional: false,
            }),
        }
    }

    /// The type of one value of `shape` (not an Option, list or map).
    pub fn singular(&self, shape: &Shape) -> Result<Kind, String> {
        let scalar = |t| Ok(Kind::Scalar(t));
        match self.resolve(shape)? {
            Shape::Unit => Ok(Kind::Message(EMPTY.into())),
            Shape::Bool => scalar(Type::Bool),
            Shape::I8 | Shape::I16 | Shape::I32 => scalar(Type::Int32),
            Shape::I64 => scalar(Type::Int64),
            Shape::U8 | Shape::U16 | Shape::U32 => scalar(Type::Uint32),
            Shape::U64 => scalar(Type::Uint64),
            Shape::I128 | Shape::U128 | Shape::Char | Shape::Str => scalar(Type::String),
            Shape::F32 => scalar(Type::Float),
            Shape::F64 => scalar(Type::Double),
            Shape::Bytes => scalar(Type::Bytes),
            Shape::Seq(item) if self.is_byte(item)? => scalar(Type::Bytes),
            Shape::Opaque(_) => Ok(Kind::Message(VALUE.into())),
            Shape::Named(name) => match self.types.get(name) {
                Some(TypeShape::TupleStruct(_)) => Err(format!(
                    "tuple struct `{name}` has no protobuf equivalent (use named fields)"
                )),
                Some(_) => Ok(Kind::Message(self.qualified(name))),
                None => Err(format!("type `{name}` is not defined in the schema")),
            },
            Shape::Tuple(_) => {
                Err("tuples have no protobuf equivalent (use a struct with named fields)".into())
            }
            Shape::Option(_) | Shape::Seq(_) | Shape::Map(..) => Err(
                "an Option, list or map inside an enum variant has no protobuf equivalent".into(),
            ),
            Shape::Unknown => Err("the tracer did not see this value".into()),
        }
    }

    /// Whether `shape` is a byte (so a list of it is `bytes`).
    fn is_byte(&self, shape: &Shape) -> Result<bool, String> {
        Ok(*self.resolve(shape)? == Shape::U8)
    }
}

/// `shape` with newtype structs unwrapped (they are their inner type on every wire);
/// a chain deeper than 32 (a cycle) stops where it is.
pub(crate) fn unwrap_newtypes<'s>(
    types: &'s BTreeMap<String, TypeShape>,
    mut shape: &'s Shape,
) -> &'s Shape {
    for _ in 0..MAX_NEWTYPES {
        match shape {
            Shape::Named(name) => match types.get(name) {
                Some(TypeShape::NewtypeStruct(inner)) => shape = inner,
                _ => return shape,
            },
            _ => return shape,
        }
    }
    shape
}

/// Whether `shape` is a byte, so that a list of it is protobuf's `bytes`.
pub(crate) fn is_byte(types: &BTreeMap<String, TypeShape>, shape: &Shape) -> bool {
    *unwrap_newtypes(types, shape) == Shape::U8
}

/// A message name from a traced type name: serde's name, with characters protobuf does
/// not take as `_` (the tracer names a second type of the same serde name `Name#2`).
pub fn message_name(name: &str) -> String {
    identifier(name)
}

/// `text` as a protobuf identifier: letters, digits and `_`, not starting with a digit.
pub(crate) fn identifier(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `get_order` -> `GetOrder`.
pub(crate) fn pascal(name: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in identifier(name).chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper(types: &BTreeMap<String, TypeShape>) -> Mapper<'_> {
        Mapper {
            types,
            prefix: ".shop.",
        }
    }

    #[test]
    fn shapes_map_to_fields() {
        let mut types = BTreeMap::new();
        types.insert("Id".into(), TypeShape::NewtypeStruct(Shape::U64));
        types.insert(
            "Ids".into(),
            TypeShape::NewtypeStruct(Shape::Seq(Box::new(Shape::Str))),
        );
        types.insert(
            "Pair".into(),
            TypeShape::TupleStruct(vec![Shape::U8, Shape::U8]),
        );
        let m = mapper(&types);
        let single = |kind| Carrier::Single {
            kind,
            optional: false,
        };
        assert_eq!(
            m.carrier(&Shape::I64),
            Ok(single(Kind::Scalar(Type::Int64)))
        );
        assert_eq!(
            m.carrier(&Shape::Named("Id".into())),
            Ok(single(Kind::Scalar(Type::Uint64)))
        );
        assert_eq!(
            m.carrier(&Shape::Named("Ids".into())),
            Ok(Carrier::Repeated(Kind::Scalar(Type::String)))
        );
        assert_eq!(
            m.carrier(&Shape::Seq(Box::new(Shape::U8))),
            Ok(single(Kind::Scalar(Type::Bytes)))
        );
        assert_eq!(
            m.carrier(&Shape::Option(Box::new(Shape::Str))),
            Ok(Carrier::Single {
                kind: Kind::Scalar(Type::String),
                optional: true
            })
        );
        assert_eq!(
            m.carrier(&Shape::Map(Box::new(Shape::U32), Box::new(Shape::Unit))),
            Ok(Carrier::Map {
                key: Type::Uint32,
                value: Kind::Message(EMPTY.into())
            })
        );
        let nested = Shape::Option(Box::new(Shape::Option(Box::new(Shape::Str))));
        assert!(m
            .carrier(&nested)
            .unwrap_err()
            .contains("Option of an Option"));
        let lists = Shape::Seq(Box::new(Shape::Seq(Box::new(Shape::Str))));
        assert!(m.carrier(&lists).unwrap_err().contains("list of lists"));
        assert!(m
            .carrier(&Shape::Tuple(vec![Shape::U8]))
            .unwrap_err()
            .contains("tuples"));
        assert!(m
            .carrier(&Shape::Named("Pair".into()))
            .unwrap_err()
            .contains("`Pair`"));
        let float_keys = Shape::Map(Box::new(Shape::F64), Box::new(Shape::Str));
        assert!(m.carrier(&float_keys).unwrap_err().contains("map keys"));
    }

    #[test]
    fn names_become_identifiers() {
        assert_eq!(pascal("get_order"), "GetOrder");
        assert_eq!(pascal("add"), "Add");
        assert_eq!(message_name("Order#2"), "Order_2");
        assert_eq!(identifier("9lives"), "_9lives");
        assert_eq!(identifier("my-field"), "my_field");
    }
}
