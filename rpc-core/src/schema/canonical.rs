//! The canonical form of a method's schema and its fingerprint (`docs/PROTOCOL.md`,
//! section 24): compact JSON in a fixed order, in which named types are numbered by
//! first appearance, so renaming a Rust type changes nothing while every name that
//! travels in JSON (parameters, fields, variants) and every layout bincode depends on
//! (order, widths, signs) does.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use sha2::{Digest, Sha256};

use super::model::{Field, Fingerprint, MethodSchema, Shape, TypeShape, VariantShape};
use crate::json::MethodKind;

/// The canonical form of `method` (its `fingerprint` field is not part of it).
pub fn canonical_form(method: &MethodSchema) -> String {
    let mut numbering = Numbering::default();
    let roots = method
        .params
        .iter()
        .map(|p| &p.shape)
        .chain(Some(&method.result))
        .chain(&method.error)
        .chain(&method.upload);
    for shape in roots {
        numbering.walk(shape, &method.types);
    }
    let mut out = String::new();
    out.push_str("{\"kind\":");
    string(&mut out, kind_name(method.kind));
    out.push_str(",\"params\":[");
    for (i, param) in method.params.iter().enumerate() {
        comma(&mut out, i);
        out.push('[');
        string(&mut out, &param.name);
        out.push(',');
        numbering.shape(&mut out, &param.shape);
        out.push(']');
    }
    out.push_str("],\"result\":");
    numbering.shape(&mut out, &method.result);
    out.push_str(",\"error\":");
    numbering.optional(&mut out, method.error.as_ref());
    out.push_str(",\"upload\":");
    numbering.optional(&mut out, method.upload.as_ref());
    out.push_str(",\"types\":[");
    for (i, name) in numbering.order.iter().enumerate() {
        comma(&mut out, i);
        match method.types.get(name) {
            Some(def) => numbering.definition(&mut out, def),
            None => out.push_str("\"opaque\""),
        }
    }
    out.push_str("]}");
    out
}

/// The fingerprint of `method`: the first 8 bytes (big-endian) of the SHA-256 of its
/// canonical form.
pub fn fingerprint(method: &MethodSchema) -> Fingerprint {
    let digest = Sha256::digest(canonical_form(method).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Fingerprint(u64::from_be_bytes(first))
}

fn kind_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::ServerStream => "server_stream",
        MethodKind::ClientStream => "client_stream",
        MethodKind::BidiStream => "bidi_stream",
    }
}

fn comma(out: &mut String, i: usize) {
    if i > 0 {
        out.push(',');
    }
}

/// A JSON string: `"`, `\` and control characters escaped, the rest as UTF-8.
fn string(out: &mut String, text: &str) {
    out.push_str(&serde_json::to_string(text).expect("a string always encodes"));
}

/// Named types numbered by first appearance in a depth-first walk.
#[derive(Default)]
struct Numbering {
    index: HashMap<String, usize>,
    order: Vec<String>,
}

impl Numbering {
    fn walk(&mut self, shape: &Shape, types: &BTreeMap<String, TypeShape>) {
        match shape {
            Shape::Option(s) | Shape::Seq(s) => self.walk(s, types),
            Shape::Map(k, v) => {
                self.walk(k, types);
                self.walk(v, types);
            }
            Shape::Tuple(items) => items.iter().for_each(|s| self.walk(s, types)),
            Shape::Named(name) => {
                if self.index.contains_key(name) {
                    return;
                }
                self.index.insert(name.clone(), self.order.len());
                self.order.push(name.clone());
                match types.get(name) {
                    Some(TypeShape::NewtypeStruct(s)) => self.walk(s, types),
                    Some(TypeShape::TupleStruct(items)) => {
                        items.iter().for_each(|s| self.walk(s, types))
                    }
                    Some(TypeShape::Struct { fields, .. }) => {
                        fields.iter().for_each(|f| self.walk(&f.shape, types))
                    }
                    Some(TypeShape::Enum(variants)) => {
                        for variant in variants {
                            match &variant.shape {
                                VariantShape::Unit => {}
                                VariantShape::Newtype(s) => self.walk(s, types),
                                VariantShape::Tuple(items) => {
                                    items.iter().for_each(|s| self.walk(s, types))
                                }
                                VariantShape::Struct(fields) => {
                                    fields.iter().for_each(|f| self.walk(&f.shape, types))
                                }
                            }
                        }
                    }
                    Some(TypeShape::UnitStruct) | None => {}
                }
            }
            _ => {}
        }
    }

    fn optional(&self, out: &mut String, shape: Option<&Shape>) {
        match shape {
            Some(shape) => self.shape(out, shape),
            None => out.push_str("null"),
        }
    }

    fn shapes(&self, out: &mut String, shapes: &[Shape]) {
        out.push('[');
        for (i, shape) in shapes.iter().enumerate() {
            comma(out, i);
            self.shape(out, shape);
        }
        out.push(']');
    }

    fn fields(&self, out: &mut String, fields: &[Field]) {
        out.push('[');
        for (i, field) in fields.iter().enumerate() {
            comma(out, i);
            out.push('[');
            string(out, &field.name);
            out.push(',');
            self.shape(out, &field.shape);
            out.push(']');
        }
        out.push(']');
    }

    fn shape(&self, out: &mut String, shape: &Shape) {
        let simple = match shape {
            Shape::Unit => "unit",
            Shape::Bool => "bool",
            Shape::I8 => "i8",
            Shape::I16 => "i16",
            Shape::I32 => "i32",
            Shape::I64 => "i64",
            Shape::I128 => "i128",
            Shape::U8 => "u8",
            Shape::U16 => "u16",
            Shape::U32 => "u32",
            Shape::U64 => "u64",
            Shape::U128 => "u128",
            Shape::F32 => "f32",
            Shape::F64 => "f64",
            Shape::Char => "char",
            Shape::Str => "str",
            Shape::Bytes => "bytes",
            Shape::Opaque(_) | Shape::Unknown => "opaque",
            Shape::Option(s) => {
                out.push_str("{\"option\":");
                self.shape(out, s);
                out.push('}');
                return;
            }
            Shape::Seq(s) => {
                out.push_str("{\"seq\":");
                self.shape(out, s);
                out.push('}');
                return;
            }
            Shape::Map(k, v) => {
                out.push_str("{\"map\":[");
                self.shape(out, k);
                out.push(',');
                self.shape(out, v);
                out.push_str("]}");
                return;
            }
            Shape::Tuple(items) => {
                out.push_str("{\"tuple\":");
                self.shapes(out, items);
                out.push('}');
                return;
            }
            Shape::Named(name) => {
                let index = self.index.get(name).copied().unwrap_or(usize::MAX);
                let _ = write!(out, "{{\"ref\":{index}}}");
                return;
            }
        };
        string(out, simple);
    }

    fn definition(&self, out: &mut String, def: &TypeShape) {
        match def {
            TypeShape::UnitStruct => out.push_str("\"unit_struct\""),
            TypeShape::NewtypeStruct(s) => {
                out.push_str("{\"newtype_struct\":");
                self.shape(out, s);
                out.push('}');
            }
            TypeShape::TupleStruct(items) => {
                out.push_str("{\"tuple_struct\":");
                self.shapes(out, items);
                out.push('}');
            }
            TypeShape::Struct { fields, .. } => {
                out.push_str("{\"struct\":");
                self.fields(out, fields);
                out.push('}');
            }
            TypeShape::Enum(variants) => {
                out.push_str("{\"enum\":[");
                for (i, variant) in variants.iter().enumerate() {
                    comma(out, i);
                    out.push('[');
                    string(out, &variant.name);
                    out.push(',');
                    match &variant.shape {
                        VariantShape::Unit => out.push_str("\"unit\""),
                        VariantShape::Newtype(s) => {
                            out.push_str("{\"newtype\":");
                            self.shape(out, s);
                            out.push('}');
                        }
                        VariantShape::Tuple(items) => {
                            out.push_str("{\"tuple\":");
                            self.shapes(out, items);
                            out.push('}');
                        }
                        VariantShape::Struct(fields) => {
                            out.push_str("{\"struct\":");
                            self.fields(out, fields);
                            out.push('}');
                        }
                    }
                    out.push(']');
                }
                out.push_str("]}");
            }
        }
    }
}
