//! The structural description of a method's types: what the tracer finds, what a
//! snapshot stores (as JSON, stable and reviewable in a diff) and what the checker
//! compares.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::json::MethodKind;

/// The shape of one value in serde's data model, as bincode lays it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// `()`.
    Unit,
    /// `bool`.
    Bool,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `i128`.
    I128,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `u128`.
    U128,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `char`.
    Char,
    /// A string.
    Str,
    /// A byte string (`serde_bytes`, or a `Vec<u8>` parameter, which travels as bytes).
    Bytes,
    /// `Option<T>`.
    Option(Box<Shape>),
    /// A sequence of any length (`Vec<T>`, sets).
    Seq(Box<Shape>),
    /// A map (`HashMap<K, V>`, `BTreeMap<K, V>`): key, value.
    Map(Box<Shape>, Box<Shape>),
    /// A tuple, or a fixed-size array `[T; N]` (serde and bincode do not tell them
    /// apart).
    Tuple(Vec<Shape>),
    /// A named type (struct or enum), defined in the method's `types`.
    Named(String),
    /// A type the tracer cannot describe, with the reason: it needs a self-describing
    /// format (`#[serde(untagged)]`, `flatten`, `serde_json::Value`), or its
    /// `Deserialize` refused the tracer's sample values. Two opaque types compare equal,
    /// so a change inside one is not detected.
    Opaque(String),
    /// Not observed yet (only while tracing; a finished schema has none).
    #[doc(hidden)]
    Unknown,
}

/// The definition of a named type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeShape {
    /// `struct S;`
    UnitStruct,
    /// `struct S(T);`
    NewtypeStruct(Shape),
    /// `struct S(T, U, ..);`
    TupleStruct(Vec<Shape>),
    /// `struct S { .. }`: its fields in declaration order.
    Struct {
        /// The fields.
        fields: Vec<Field>,
        /// Whether it refuses fields it does not know (`#[serde(deny_unknown_fields)]`).
        #[serde(default, skip_serializing_if = "is_false")]
        deny_unknown_fields: bool,
    },
    /// `enum E { .. }`: its variants in declaration order (bincode sends the index).
    Enum(Vec<Variant>),
}

/// A field of a struct or struct variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Its name (after serde's renames).
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// Whether it may be missing when read by name: an `Option`, or a field with
    /// `#[serde(default)]`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
}

/// A variant of an enum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Its name (after serde's renames).
    pub name: String,
    /// What it carries.
    pub shape: VariantShape,
}

/// What an enum variant carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantShape {
    /// Nothing: `A`.
    Unit,
    /// One value: `A(T)`.
    Newtype(Shape),
    /// Several values: `A(T, U)`.
    Tuple(Vec<Shape>),
    /// Named fields: `A { x: T }`.
    Struct(Vec<Field>),
}

/// A parameter of a method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    /// Its name in the trait.
    pub name: String,
    /// Its shape on the wire.
    pub shape: Shape,
}

/// A method's fingerprint: the first 8 bytes of the SHA-256 of its canonical form
/// (`docs/PROTOCOL.md`, section 24), as 16 lowercase hex digits in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() != 16 {
            return Err(serde::de::Error::custom("a fingerprint is 16 hex digits"));
        }
        u64::from_str_radix(&text, 16)
            .map(Fingerprint)
            .map_err(serde::de::Error::custom)
    }
}

/// The schema of one method: everything that travels, and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodSchema {
    /// The method's name on the wire.
    pub name: String,
    /// How it exchanges values.
    pub kind: MethodKind,
    /// The fingerprint of everything below (names of named types excluded).
    pub fingerprint: Fingerprint,
    /// The parameters that travel in the request (a streaming parameter excluded).
    pub params: Vec<Param>,
    /// The return value (of a `Result`, its `Ok`; of a stream, each item).
    pub result: Shape,
    /// The method's own error (the `Err` of a `Result`), if it declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Shape>,
    /// The items of the stream the method takes, if it takes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Shape>,
    /// The named types the shapes above refer to, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub types: BTreeMap<String, TypeShape>,
}

/// The schema of a service: its methods in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSchema {
    /// The service's name on the wire.
    pub service: String,
    /// Its methods.
    pub methods: Vec<MethodSchema>,
}

impl ServiceSchema {
    /// The method named `name`.
    pub fn method(&self, name: &str) -> Option<&MethodSchema> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// The snapshot form: pretty JSON, one value per line where it helps a diff.
    pub fn to_snapshot(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a schema always encodes");
        text.push('\n');
        text
    }

    /// Reads a snapshot written by [`ServiceSchema::to_snapshot`]. The fingerprints are
    /// computed again from the shapes (a file edited by hand, or written by another
    /// version of the tracer, cannot make two schemas look identical).
    pub fn from_snapshot(text: &str) -> Result<Self, serde_json::Error> {
        let mut schema: ServiceSchema = serde_json::from_str(text)?;
        for method in &mut schema.methods {
            method.fingerprint = super::fingerprint(method);
        }
        Ok(schema)
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}
