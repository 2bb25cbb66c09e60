//! Protobuf's binary form read into serde's JSON, and serde's JSON written as protobuf,
//! directly from the traced shapes: the codec's fast path (no dynamic message, no proto3
//! JSON in between). It follows the export's mapping ([`crate::mapping`]) and numbering
//! ([`crate::numbers`]) exactly; `prost-reflect` stays the reference the tests compare it
//! with, and the path for opaque values (`google.protobuf.Value`).
//!
//! Reading is total: any bytes give a value or a [`WireError`] (bounded nesting, no
//! panic); unknown fields are skipped, as protobuf readers do, so a newer client's extra
//! fields reach an older server harmlessly. An absent field reads as its default (an enum
//! has none: `null`, which serde refuses).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Number, Value};
use traitrpc_core::schema::{Shape, TypeShape, VariantShape};

use crate::numbers::field_number;

/// Why bytes are not a message of the expected type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(pub String);

/// Messages nest at most this deep (protobuf's own readers stop at 100).
const MAX_DEPTH: usize = 100;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// The fields of every message of one method, by field number, computed once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plans {
    /// Named types' fields (structs) and variants (enums): number -> (name, shape).
    types: HashMap<String, Fields>,
    /// Struct variants' fields, by enum, then variant (looked up with borrowed names).
    variants: HashMap<String, HashMap<String, Fields>>,
}

/// A message's fields: by number, and in declaration order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields {
    by_number: HashMap<u32, usize>,
    list: Vec<(u32, String, Shape)>,
}

impl Fields {
    /// The fields `(name, shape)`, numbered from their names.
    pub(crate) fn new<'a>(fields: impl IntoIterator<Item = (&'a str, &'a Shape)>) -> Fields {
        let list: Vec<(u32, String, Shape)> = fields
            .into_iter()
            .map(|(name, shape)| (field_number(name), name.to_string(), shape.clone()))
            .collect();
        let by_number = list.iter().enumerate().map(|(i, f)| (f.0, i)).collect();
        Fields { by_number, list }
    }
}

impl Plans {
    /// The plans of `types` (a method's named types): a struct's fields and an enum's
    /// variants under the type's name, a struct variant's fields under the enum's and
    /// the variant's.
    pub(crate) fn new(types: &BTreeMap<String, TypeShape>) -> Plans {
        let mut plans = HashMap::new();
        let mut struct_variants: HashMap<String, HashMap<String, Fields>> = HashMap::new();
        for (name, shape) in types {
            match shape {
                TypeShape::Struct { fields, .. } => {
                    let fields = Fields::new(fields.iter().map(|f| (f.name.as_str(), &f.shape)));
                    plans.insert(name.clone(), fields);
                }
                TypeShape::Enum(variants) => {
                    let numbered =
                        Fields::new(variants.iter().map(|v| (v.name.as_str(), &Shape::Unit)));
                    plans.insert(name.clone(), numbered);
                    for variant in variants {
                        if let VariantShape::Struct(fields) = &variant.shape {
                            let fields =
                                Fields::new(fields.iter().map(|f| (f.name.as_str(), &f.shape)));
                            struct_variants
                                .entry(name.clone())
                                .or_default()
                                .insert(variant.name.clone(), fields);
                        }
                    }
                }
                _ => {}
            }
        }
        Plans {
            types: plans,
            variants: struct_variants,
        }
    }

    fn variant(&self, name: &str, variant: &str) -> &Fields {
        &self.variants[name][variant]
    }
}

/// Reads and writes with one method's shapes.
pub(crate) struct Wire<'a> {
    pub types: &'a BTreeMap<String, TypeShape>,
    pub plans: &'a Plans,
}

/// A cursor over a message's bytes.
struct Reader<'b> {
    bytes: &'b [u8],
}

impl<'b> Reader<'b> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&byte, rest)) = self.bytes.split_first() else {
                return Err(WireError("a varint ends early".into()));
            };
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError("a varint is longer than 10 bytes".into()))
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError(format!(
                "a field says {n} bytes but {} remain",
                self.bytes.len()
            )));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    /// The next field: number, wire type, and its payload (a varint's value, or bytes).
    fn field(&mut self) -> Result<(u32, u8, Payload<'b>), WireError> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .map_err(|_| WireError("a field number is out of range".into()))?;
        if number == 0 {
            return Err(WireError("field number 0".into()));
        }
        let wire_type = (key & 7) as u8;
        let payload = match wire_type {
            VARINT => Payload::Varint(self.varint()?),
            FIXED64 => Payload::Bytes(self.take(8)?),
            LEN => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| WireError("a length is out of range".into()))?;
                Payload::Bytes(self.take(len)?)
            }
            FIXED32 => Payload::Bytes(self.take(4)?),
            other => {
                return Err(WireError(format!(
                    "wire type {other} is not one this reads"
                )))
            }
        };
        Ok((number, wire_type, payload))
    }
}

#[derive(Clone, Copy)]
enum Payload<'b> {
    Varint(u64),
    Bytes(&'b [u8]),
}

impl Wire<'_> {
    fn resolve<'s>(&'s self, shape: &'s Shape) -> &'s Shape {
        crate::mapping::unwrap_newtypes(self.types, shape)
    }

    fn is_byte(&self, shape: &Shape) -> bool {
        crate::mapping::is_byte(self.types, shape)
    }

    /// The fields of a message in `bytes`, as serde's JSON object.
    pub(crate) fn read_message(
        &self,
        bytes: &[u8],
        fields: &Fields,
        depth: usize,
    ) -> Result<Map<String, Value>, WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError("messages nest too deeply".into()));
        }
        let mut reader = Reader { bytes };
        let mut values: Vec<Option<Value>> = vec![None; fields.list.len()];
        while !reader.bytes.is_empty() {
            let (number, wire_type, payload) = reader.field()?;
            let Some(&index) = fields.by_number.get(&number) else {
                continue; // unknown: skipped
            };
            let (_, name, shape) = &fields.list[index];
            let slot = &mut values[index];
            self.read_into(slot, wire_type, payload, shape, depth)
                .map_err(|WireError(e)| WireError(format!("field `{name}`: {e}")))?;
        }
        let mut object = Map::new();
        for ((_, name, shape), value) in fields.list.iter().zip(values) {
            match value {
                Some(value) => {
                    object.insert(name.clone(), value);
                }
                None if matches!(self.resolve(shape), Shape::Option(_)) => {}
                None => {
                    object.insert(name.clone(), self.default_of(shape));
                }
            }
        }
        Ok(object)
    }

    /// Reads one occurrence of a field of `shape` into `slot` (a repeated field or a map
    /// accumulates).
    fn read_into(
        &self,
        slot: &mut Option<Value>,
        wire_type: u8,
        payload: Payload<'_>,
        shape: &Shape,
        depth: usize,
    ) -> Result<(), WireError> {
        let shape = self.resolve(shape);
        match shape {
            Shape::Option(inner) => self.read_into(slot, wire_type, payload, inner, depth),
            Shape::Seq(item) if !self.is_byte(item) => {
                let items = slot.get_or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = items else {
                    unreachable!("a list's slot")
                };
                let item = self.resolve(item);
                match (payload, is_packable(item)) {
                    // Packed: a run of numbers in one field.
                    (Payload::Bytes(bytes), true) if wire_type == LEN => {
                        let mut reader = Reader { bytes };
                        while !reader.bytes.is_empty() {
                            let one = match fixed_width(item) {
                                Some(width) => Payload::Bytes(reader.take(width)?),
                                None => Payload::Varint(reader.varint()?),
                            };
                            items.push(self.read_single(one, item, depth)?);
                        }
                    }
                    _ => items.push(self.read_single(payload, item, depth)?),
                }
                Ok(())
            }
            Shape::Map(key, value) => {
                let Payload::Bytes(entry) = payload else {
                    return Err(WireError("a map entry is not length-delimited".into()));
                };
                let entries = slot.get_or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(entries) = entries else {
                    unreachable!("a map's slot")
                };
                let (mut k, mut v) = (None, None);
                let mut reader = Reader { bytes: entry };
                while !reader.bytes.is_empty() {
                    match reader.field()? {
                        (1, _, p) => k = Some(self.read_single(p, key, depth + 1)?),
                        (2, _, p) => v = Some(self.read_single(p, value, depth + 1)?),
                        _ => {}
                    }
                }
                let key = match k.unwrap_or_else(|| self.default_of(key)) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let value = v.unwrap_or_else(|| self.default_of(value));
                entries.insert(key, value);
                Ok(())
            }
            _ => {
                *slot = Some(self.read_single(payload, shape, depth)?);
                Ok(())
            }
        }
    }

    /// One value of `shape` (not a list or a map).
    fn read_single(
        &self,
        payload: Payload<'_>,
        shape: &Shape,
        depth: usize,
    ) -> Result<Value, WireError> {
        let shape = self.resolve(shape);
        let wrong = || WireError(format!("wrong wire type for {}", describe(shape)));
        let bytes = || match payload {
            Payload::Bytes(b) => Ok(b),
            Payload::Varint(_) => Err(wrong()),
        };
        let varint = || match payload {
            Payload::Varint(v) => Ok(v),
            Payload::Bytes(_) => Err(wrong()),
        };
        let text =
            || std::str::from_utf8(bytes()?).map_err(|_| WireError("a string is not UTF-8".into()));
        Ok(match shape {
            Shape::Bool => Value::Bool(varint()? != 0),
            Shape::I8 | Shape::I16 | Shape::I32 => Value::from(varint()? as i32),
            Shape::I64 => Value::from(varint()? as i64),
            Shape::U8 | Shape::U16 | Shape::U32 => Value::from(varint()? as u32),
            Shape::U64 => Value::from(varint()?),
            Shape::F32 => {
                let b: [u8; 4] = bytes()?.try_into().map_err(|_| wrong())?;
                float(f64::from(f32::from_le_bytes(b)))
            }
            Shape::F64 => {
                let b: [u8; 8] = bytes()?.try_into().map_err(|_| wrong())?;
                float(f64::from_le_bytes(b))
            }
            Shape::I128 | Shape::U128 => {
                let digits = text()?;
                serde_json::from_str::<Number>(digits)
                    .map(Value::Number)
                    .unwrap_or_else(|_| Value::String(digits.to_string()))
            }
            Shape::Char | Shape::Str => Value::String(text()?.to_string()),
            Shape::Bytes => Value::Array(bytes()?.iter().map(|&b| Value::from(b)).collect()),
            Shape::Seq(item) if self.is_byte(item) => {
                Value::Array(bytes()?.iter().map(|&b| Value::from(b)).collect())
            }
            Shape::Unit => {
                bytes()?;
                Value::Null
            }
            Shape::Named(name) => match self.types.get(name) {
                Some(TypeShape::UnitStruct) => {
                    bytes()?;
                    Value::Null
                }
                Some(TypeShape::Struct { .. }) => {
                    let fields = &self.plans.types[name];
                    Value::Object(self.read_message(bytes()?, fields, depth + 1)?)
                }
                Some(TypeShape::Enum(variants)) => {
                    self.read_variant(bytes()?, name, variants, depth + 1)?
                }
                _ => return Err(WireError(format!("`{name}` has no protobuf form"))),
            },
            _ => {
                return Err(WireError(format!(
                    "{} has no protobuf form here",
                    describe(shape)
                )))
            }
        })
    }

    /// An enum's message: the one variant set, as serde's JSON (`"Unit"`, `{"V": ..}`).
    fn read_variant(
        &self,
        bytes: &[u8],
        name: &str,
        variants: &[traitrpc_core::schema::Variant],
        depth: usize,
    ) -> Result<Value, WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError("messages nest too deeply".into()));
        }
        let plan = &self.plans.types[name];
        let mut reader = Reader { bytes };
        let mut chosen = Value::Null; // no variant: serde refuses it, naming the type
        while !reader.bytes.is_empty() {
            let (number, _, payload) = reader.field()?;
            let Some(&index) = plan.by_number.get(&number) else {
                continue;
            };
            let variant = &variants[index];
            chosen = match &variant.shape {
                VariantShape::Unit => Value::String(variant.name.clone()),
                VariantShape::Newtype(shape) => {
                    let value = self.read_single(payload, shape, depth)?;
                    Value::Object(Map::from_iter([(variant.name.clone(), value)]))
                }
                VariantShape::Struct(_) => {
                    let Payload::Bytes(inner) = payload else {
                        return Err(WireError(format!(
                            "variant `{}`: wrong wire type",
                            variant.name
                        )));
                    };
                    let fields = self.plans.variant(name, &variant.name);
                    let value = Value::Object(self.read_message(inner, fields, depth + 1)?);
                    Value::Object(Map::from_iter([(variant.name.clone(), value)]))
                }
                VariantShape::Tuple(_) => {
                    return Err(WireError(format!(
                        "variant `{}` has no protobuf form",
                        variant.name
                    )))
                }
            };
        }
        Ok(chosen)
    }

    /// What protobuf reads for an absent field.
    fn default_of(&self, shape: &Shape) -> Value {
        crate::json::JsonMapping::new(self.types).serde_of(None, shape)
    }

    /// `value` (serde's JSON of a `shape`) as field `number` of a message.
    pub(crate) fn write_value(
        &self,
        number: u32,
        value: &Value,
        shape: &Shape,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        self.write_field(number, value, shape, out, 0)
    }

    /// `object` (serde's JSON of a message with `fields`) as protobuf bytes.
    pub(crate) fn write_message(
        &self,
        object: &Map<String, Value>,
        fields: &Fields,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError("values nest too deeply".into()));
        }
        for (number, name, shape) in &fields.list {
            if let Some(value) = object.get(name) {
                self.write_field(*number, value, shape, out, depth)
                    .map_err(|WireError(e)| WireError(format!("field `{name}`: {e}")))?;
            }
        }
        Ok(())
    }

    fn write_field(
        &self,
        number: u32,
        value: &Value,
        shape: &Shape,
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), WireError> {
        let shape = self.resolve(shape);
        match shape {
            Shape::Option(inner) => {
                if value.is_null() {
                    return Ok(());
                }
                // Present, even at its default: `optional` has presence.
                self.write_single(number, value, inner, out, depth, true)
            }
            Shape::Seq(item) if !self.is_byte(item) => {
                let Value::Array(items) = value else {
                    return Err(WireError("not a list".into()));
                };
                let item = self.resolve(item);
                if is_packable(item) {
                    if items.is_empty() {
                        return Ok(());
                    }
                    let mut packed = Vec::new();
                    for v in items {
                        write_scalar(v, item, &mut packed)?;
                    }
                    key(number, LEN, out);
                    varint(packed.len() as u64, out);
                    out.extend_from_slice(&packed);
                } else {
                    for v in items {
                        self.write_single(number, v, item, out, depth, true)?;
                    }
                }
                Ok(())
            }
            Shape::Map(key_shape, value_shape) => {
                let Value::Object(entries) = value else {
                    return Err(WireError("not a map".into()));
                };
                for (k, v) in entries {
                    let key_value = match self.resolve(key_shape) {
                        Shape::Str | Shape::Char => Value::String(k.clone()),
                        Shape::Bool => Value::Bool(k == "true"),
                        _ => serde_json::from_str(k)
                            .map_err(|_| WireError(format!("map key {k:?} is not a number")))?,
                    };
                    let mut entry = Vec::new();
                    self.write_single(1, &key_value, key_shape, &mut entry, depth, true)?;
                    self.write_single(2, v, value_shape, &mut entry, depth, true)?;
                    key(number, LEN, out);
                    varint(entry.len() as u64, out);
                    out.extend_from_slice(&entry);
                }
                Ok(())
            }
            _ => self.write_single(number, value, shape, out, depth, false),
        }
    }

    /// One value as field `number`; a scalar at its default is left out unless
    /// `present` (an `optional`, a list's item, a map entry's part).
    fn write_single(
        &self,
        number: u32,
        value: &Value,
        shape: &Shape,
        out: &mut Vec<u8>,
        depth: usize,
        present: bool,
    ) -> Result<(), WireError> {
        let shape = self.resolve(shape);
        if let Some(wire_type) = scalar_wire_type(shape, self) {
            // A 128-bit integer travels as a decimal string: its 0 is "0", not the
            // string default "".
            let as_text = matches!(shape, Shape::I128 | Shape::U128);
            if !present && !as_text && is_default(value) {
                return Ok(());
            }
            key(number, wire_type, out);
            if wire_type == LEN {
                let mut body = Vec::new();
                write_scalar(value, shape, &mut body)?;
                varint(body.len() as u64, out);
                out.extend_from_slice(&body);
                return Ok(());
            }
            return write_scalar(value, shape, out);
        }
        let mut body = Vec::new();
        match shape {
            Shape::Unit => {}
            Shape::Named(name) => match self.types.get(name) {
                Some(TypeShape::UnitStruct) => {}
                Some(TypeShape::Struct { .. }) => {
                    let Value::Object(object) = value else {
                        return Err(WireError(format!("`{name}` is not an object")));
                    };
                    self.write_message(object, &self.plans.types[name], &mut body, depth + 1)?;
                }
                Some(TypeShape::Enum(variants)) => {
                    self.write_variant(value, name, variants, &mut body, depth + 1)?
                }
                _ => return Err(WireError(format!("`{name}` has no protobuf form"))),
            },
            other => {
                return Err(WireError(format!(
                    "{} has no protobuf form here",
                    describe(other)
                )))
            }
        }
        key(number, LEN, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(&body);
        Ok(())
    }

    fn write_variant(
        &self,
        value: &Value,
        name: &str,
        variants: &[traitrpc_core::schema::Variant],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), WireError> {
        let (variant_name, inner) = match value {
            Value::String(v) => (v.as_str(), None),
            Value::Object(object) if object.len() == 1 => {
                let (k, v) = object.iter().next().expect("one entry");
                (k.as_str(), Some(v))
            }
            _ => return Err(WireError(format!("`{name}` is not a variant"))),
        };
        let Some(variant) = variants.iter().find(|v| v.name == variant_name) else {
            return Err(WireError(format!(
                "`{name}` has no variant `{variant_name}`"
            )));
        };
        let number = field_number(&variant.name);
        match (&variant.shape, inner) {
            (VariantShape::Unit, _) => {
                key(number, LEN, out);
                varint(0, out);
            }
            (VariantShape::Newtype(shape), Some(inner)) => {
                self.write_single(number, inner, shape, out, depth, true)?
            }
            (VariantShape::Struct(_), Some(Value::Object(object))) => {
                let fields = self.plans.variant(name, &variant.name);
                let mut body = Vec::new();
                self.write_message(object, fields, &mut body, depth + 1)?;
                key(number, LEN, out);
                varint(body.len() as u64, out);
                out.extend_from_slice(&body);
            }
            _ => {
                return Err(WireError(format!(
                    "variant `{variant_name}` has no protobuf form"
                )))
            }
        }
        Ok(())
    }
}

/// Whether a list of `shape` is packed (numbers and bools).
fn is_packable(shape: &Shape) -> bool {
    matches!(
        shape,
        Shape::Bool
            | Shape::I8
            | Shape::I16
            | Shape::I32
            | Shape::I64
            | Shape::U8
            | Shape::U16
            | Shape::U32
            | Shape::U64
            | Shape::F32
            | Shape::F64
    )
}

fn fixed_width(shape: &Shape) -> Option<usize> {
    match shape {
        Shape::F32 => Some(4),
        Shape::F64 => Some(8),
        _ => None,
    }
}

/// The wire type of a scalar shape; `None` for messages.
fn scalar_wire_type(shape: &Shape, wire: &Wire<'_>) -> Option<u8> {
    match shape {
        Shape::F32 => Some(FIXED32),
        Shape::F64 => Some(FIXED64),
        Shape::I128 | Shape::U128 | Shape::Char | Shape::Str | Shape::Bytes => Some(LEN),
        Shape::Seq(item) if wire.is_byte(item) => Some(LEN),
        s if is_packable(s) => Some(VARINT),
        _ => None,
    }
}

/// Whether `value` is proto3's default (left out of the wire for a field without
/// presence).
fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0) && !n.to_string().starts_with('-'),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

/// A scalar's payload (no key; a length-delimited one without its length).
fn write_scalar(value: &Value, shape: &Shape, out: &mut Vec<u8>) -> Result<(), WireError> {
    let wrong = || WireError(format!("{value} is not {}", describe(shape)));
    match shape {
        Shape::Bool => varint(u64::from(value.as_bool().ok_or_else(wrong)?), out),
        Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 => {
            // int32 and int64 alike: a negative value is ten bytes, sign-extended.
            varint(value.as_i64().ok_or_else(wrong)? as u64, out)
        }
        Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 => {
            varint(value.as_u64().ok_or_else(wrong)?, out)
        }
        Shape::F32 => {
            out.extend_from_slice(&(value.as_f64().ok_or_else(wrong)? as f32).to_le_bytes())
        }
        Shape::F64 => out.extend_from_slice(&value.as_f64().ok_or_else(wrong)?.to_le_bytes()),
        Shape::I128 | Shape::U128 => match value {
            Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Value::String(s) => out.extend_from_slice(s.as_bytes()),
            _ => return Err(wrong()),
        },
        Shape::Char | Shape::Str => {
            out.extend_from_slice(value.as_str().ok_or_else(wrong)?.as_bytes())
        }
        _ => {
            // Bytes: serde's array of numbers.
            let items = value.as_array().ok_or_else(wrong)?;
            for item in items {
                let byte = item
                    .as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(wrong)?;
                out.push(byte);
            }
        }
    }
    Ok(())
}

fn key(number: u32, wire_type: u8, out: &mut Vec<u8>) {
    varint((u64::from(number) << 3) | u64::from(wire_type), out);
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn float(value: f64) -> Value {
    Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn describe(shape: &Shape) -> String {
    match shape {
        Shape::Named(name) => format!("`{name}`"),
        other => format!("{other:?}").to_lowercase(),
    }
}
