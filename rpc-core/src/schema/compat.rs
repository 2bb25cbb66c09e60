//! The breaking-change checker: compares two schemas of a service and says, for every
//! method and each direction of a rolling upgrade, what a call does.
//!
//! - [`Verdict::Identical`]: the fingerprints agree; bincode as before.
//! - [`Verdict::Translated`]: the fingerprints differ, so peers of protocol version 6
//!   exchange this method in JSON by name, and every value keeps its meaning.
//! - [`Verdict::Breaking`]: some calls fail with a typed error (`SchemaMismatch`,
//!   `UnknownMethod`...), or carry values JSON cannot tell apart (`Some(None)` read as
//!   `None`), listed with the reason.
//!
//! The rules are serde's for reading JSON by name (what the translation does): fields
//! and variants match by name, unknown fields are ignored unless the reader denies
//! them, a missing field needs `#[serde(default)]` or an `Option`, an integer converts
//! when the reader's type holds every value of the writer's, a missing parameter is
//! `None` if it is an `Option`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::{Field, MethodSchema, ServiceSchema, Shape, TypeShape, VariantShape};

/// What a call of one method does across two versions, in one direction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "reasons")]
pub enum Verdict {
    /// Same fingerprint: identical on the wire.
    Identical,
    /// Different fingerprints, every value read by name keeps its meaning (at JSON's
    /// cost while the versions differ).
    Translated,
    /// Some calls fail with a typed error, or carry values JSON cannot tell apart
    /// (`Some(None)` read as `None`): why.
    Breaking(Vec<String>),
}

/// One method's verdicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodChange {
    /// The method.
    pub method: String,
    /// Clients built from the old schema calling servers built from the new one (the
    /// clients already deployed, when a server is upgraded).
    pub old_client_new_server: Verdict,
    /// Clients built from the new schema calling servers built from the old one (a
    /// client upgraded first, or a server rolled back).
    pub new_client_old_server: Verdict,
}

/// The comparison of two schemas of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaDiff {
    /// Every method of either version, in the new version's order, then removed ones.
    pub methods: Vec<MethodChange>,
}

impl SchemaDiff {
    /// Whether clients already deployed (old) break against the new servers.
    pub fn breaks_old_clients(&self) -> bool {
        self.methods
            .iter()
            .any(|m| matches!(m.old_client_new_server, Verdict::Breaking(_)))
    }

    /// Whether any call breaks in either direction.
    pub fn breaks_anything(&self) -> bool {
        self.breaks_old_clients()
            || self
                .methods
                .iter()
                .any(|m| matches!(m.new_client_old_server, Verdict::Breaking(_)))
    }

    /// The change of `method`.
    pub fn method(&self, method: &str) -> Option<&MethodChange> {
        self.methods.iter().find(|m| m.method == method)
    }
}

impl fmt::Display for SchemaDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.methods {
            for (direction, verdict) in [
                ("old client -> new server", &change.old_client_new_server),
                ("new client -> old server", &change.new_client_old_server),
            ] {
                match verdict {
                    Verdict::Identical => {}
                    Verdict::Translated => writeln!(
                        f,
                        "{}: {direction}: translated by name (JSON while versions differ)",
                        change.method
                    )?,
                    Verdict::Breaking(reasons) => {
                        writeln!(f, "{}: {direction}: BREAKING", change.method)?;
                        for reason in reasons {
                            writeln!(f, "    - {reason}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Compares the `old` and `new` schemas of a service.
pub fn diff(old: &ServiceSchema, new: &ServiceSchema) -> SchemaDiff {
    let mut methods = Vec::new();
    for method in &new.methods {
        let change = match old.method(&method.name) {
            Some(before) => MethodChange {
                method: method.name.clone(),
                old_client_new_server: call(before, method),
                new_client_old_server: call(method, before),
            },
            None => MethodChange {
                method: method.name.clone(),
                old_client_new_server: Verdict::Identical,
                new_client_old_server: Verdict::Breaking(vec![format!(
                    "the method is new: an old server answers UnknownMethod"
                )]),
            },
        };
        methods.push(change);
    }
    for method in &old.methods {
        if new.method(&method.name).is_none() {
            methods.push(MethodChange {
                method: method.name.clone(),
                old_client_new_server: Verdict::Breaking(vec![format!(
                    "the method is gone: a new server answers UnknownMethod"
                )]),
                new_client_old_server: Verdict::Identical,
            });
        }
    }
    SchemaDiff { methods }
}

/// A call from a client of schema `client` to a server of schema `server`.
pub fn call(client: &MethodSchema, server: &MethodSchema) -> Verdict {
    if client.fingerprint == server.fingerprint {
        return Verdict::Identical;
    }
    let mut problems = Vec::new();
    if client.kind != server.kind {
        problems.push(format!(
            "the client calls it as {:?}, the server serves it as {:?}",
            client.kind, server.kind
        ));
        return Verdict::Breaking(problems);
    }
    if client.upload.is_some() {
        problems.push(
            "a method that takes a stream is not translated: calls fail with SchemaMismatch"
                .to_string(),
        );
        return Verdict::Breaking(problems);
    }
    let mut up = Reader::new(client, server, "the client", "this server");
    for param in &server.params {
        let path = format!("parameter `{}`", param.name);
        match client.params.iter().find(|p| p.name == param.name) {
            Some(sent) => up.value(&path, &sent.shape, &param.shape),
            None if accepts_null(&param.shape, &server.types) => {}
            None => up.problem(
                &path,
                "the client does not send it, and it is not an Option",
            ),
        }
    }
    for param in &client.params {
        if !server.params.iter().any(|p| p.name == param.name) {
            up.problem(
                &format!("parameter `{}`", param.name),
                "this server does not take it (calls fail: unknown parameter)",
            );
        }
    }
    problems.extend(up.problems);
    let mut down = Reader::new(server, client, "the server", "the client");
    let what = match server.kind {
        crate::json::MethodKind::ServerStream | crate::json::MethodKind::BidiStream => "item",
        _ => "result",
    };
    down.value(what, &server.result, &client.result);
    match (&server.error, &client.error) {
        (Some(sent), Some(read)) => down.value("error", sent, read),
        (Some(_), None) => down.problem(
            "error",
            "the server may answer an error the client's method does not declare",
        ),
        (None, _) => {}
    }
    problems.extend(down.problems);
    if problems.is_empty() {
        Verdict::Translated
    } else {
        Verdict::Breaking(problems)
    }
}

fn accepts_null(shape: &Shape, types: &BTreeMap<String, TypeShape>) -> bool {
    match shape {
        Shape::Option(_) | Shape::Unit => true,
        Shape::Named(name) => matches!(types.get(name), Some(TypeShape::UnitStruct)),
        _ => false,
    }
}

/// Reads values written with one schema by another, collecting what would fail.
struct Reader<'a> {
    writer: &'a BTreeMap<String, TypeShape>,
    reader: &'a BTreeMap<String, TypeShape>,
    /// Who writes and who reads, for messages ("the client", "this server").
    sends: &'a str,
    reads: &'a str,
    /// Pairs of named types being compared (recursion ends here).
    seen: HashSet<(String, String)>,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    fn new(
        writer: &'a MethodSchema,
        reader: &'a MethodSchema,
        sends: &'a str,
        reads: &'a str,
    ) -> Self {
        Reader {
            writer: &writer.types,
            reader: &reader.types,
            sends,
            reads,
            seen: HashSet::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, path: &str, what: &str) {
        self.problems.push(format!("{path}: {what}"));
    }

    fn mismatch(&mut self, path: &str, w: &Shape, r: &Shape) {
        let text = format!(
            "{} sends {}, {} expects {}",
            self.sends,
            describe(w),
            self.reads,
            describe(r)
        );
        self.problem(path, &text);
    }

    /// Unwraps newtype structs (transparent in JSON).
    fn resolve<'s>(&self, shape: &'s Shape, types: &'s BTreeMap<String, TypeShape>) -> &'s Shape {
        let mut shape = shape;
        for _ in 0..16 {
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

    fn value(&mut self, path: &str, w: &Shape, r: &Shape) {
        let w = self.resolve(w, self.writer).clone();
        let r = self.resolve(r, self.reader).clone();
        use Shape::*;
        match (&w, &r) {
            (Opaque(_), _) | (_, Opaque(_)) => self.problem(
                path,
                "an opaque type (one the tracer cannot describe) differs or may differ: \
                 not checked",
            ),
            // JSON writes `None` as `null`, and so `Some` of anything written as `null`:
            // `Some(None)`, `Some(())`, `Some(f64::NAN)` would be read as `None`.
            (Option(w), Option(_)) if self.writes_null(w) => self.problem(
                path,
                "an Option of a value JSON writes as null (an Option, (), a float's NaN): \
                 Some of it would be read as None",
            ),
            (Option(w), Option(r)) => self.value(path, w, r),
            (Option(_), _) => self.problem(
                path,
                &format!(
                    "{} an Option, {} requires a value: None fails",
                    self.sends, self.reads
                ),
            ),
            (w, Option(r)) => self.value(path, w, r),
            (Seq(w), Seq(r)) => self.value(&format!("{path} item"), w, r),
            (Bytes, Bytes) | (Bytes, Seq(_)) | (Seq(_), Bytes) => {
                let (w, r) = (bytes_item(&w), bytes_item(&r));
                self.value(&format!("{path} item"), &w, &r)
            }
            (Map(wk, _), Map(..)) if !self.string_key(wk) => self.problem(
                path,
                &format!(
                    "a map keyed by {}: JSON keys are strings, so such maps cannot travel \
                     (calls fail)",
                    describe(wk)
                ),
            ),
            (Map(wk, wv), Map(rk, rv)) => {
                self.value(&format!("{path} key"), wk, rk);
                self.value(&format!("{path} value"), wv, rv);
            }
            (Tuple(wi), Tuple(ri)) => {
                if wi.len() != ri.len() {
                    self.mismatch(path, &Tuple(wi.clone()), &Tuple(ri.clone()));
                } else {
                    for (i, (w, r)) in wi.iter().zip(ri).enumerate() {
                        self.value(&format!("{path}.{i}"), w, r);
                    }
                }
            }
            (Tuple(wi), Seq(r)) => {
                for (i, w) in wi.iter().enumerate() {
                    self.value(&format!("{path}.{i}"), w, r);
                }
            }
            (Named(wn), Named(rn)) => self.named(path, wn, rn),
            (Unit, Unit) => {}
            (Unit, Named(rn)) | (Named(rn), Unit)
                if matches!(
                    self.reader.get(rn).or(self.writer.get(rn)),
                    Some(TypeShape::UnitStruct)
                ) => {}
            (w, r) if w == r => {}
            (w, r) => match (int_range(w), int_range(r)) {
                (Some(wr), Some(rr)) if rr.0 <= wr.0 && wr.1 <= rr.1 => {}
                (Some(_), Some(_)) => {
                    let text = format!(
                        "{} sends {}, {} expects {}: values that do not fit fail with SchemaMismatch",
                        self.sends,
                        describe(w),
                        self.reads,
                        describe(r)
                    );
                    self.problem(path, &text)
                }
                (Some(_), None) if matches!(r, F64 | F32) => {
                    if matches!(r, F32) {
                        self.problem(path, "an integer read as f32 may lose precision")
                    } else if matches!(w, I64 | U64 | I128 | U128) {
                        self.problem(path, "a 64-bit integer read as f64 may lose precision")
                    }
                }
                _ if matches!((w, r), (F32, F64) | (Char, Str)) => {}
                _ => self.mismatch(path, w, r),
            },
        }
    }

    /// Whether JSON may write a value of `shape` (as the writer has it) as `null`.
    fn writes_null(&self, shape: &Shape) -> bool {
        match self.resolve(shape, self.writer) {
            Shape::Option(_) | Shape::Unit | Shape::F32 | Shape::F64 => true,
            Shape::Named(name) => matches!(self.writer.get(name), Some(TypeShape::UnitStruct)),
            _ => false,
        }
    }

    /// Whether serde_json can write a map key of `shape`: strings, chars, integers,
    /// bools and unit variants.
    fn string_key(&self, shape: &Shape) -> bool {
        use Shape::*;
        match self.resolve(shape, self.writer) {
            Str | Char | Bool | I8 | I16 | I32 | I64 | I128 | U8 | U16 | U32 | U64 | U128 => true,
            Named(name) => match self.writer.get(name) {
                Some(TypeShape::Enum(variants)) => variants
                    .iter()
                    .all(|v| matches!(v.shape, VariantShape::Unit)),
                _ => false,
            },
            _ => false,
        }
    }

    fn named(&mut self, path: &str, wn: &str, rn: &str) {
        if !self.seen.insert((wn.to_string(), rn.to_string())) {
            return;
        }
        let (Some(w), Some(r)) = (self.writer.get(wn).cloned(), self.reader.get(rn).cloned())
        else {
            return self.problem(path, "a named type without a definition");
        };
        match (&w, &r) {
            (TypeShape::UnitStruct, TypeShape::UnitStruct) => {}
            (TypeShape::TupleStruct(wi), TypeShape::TupleStruct(ri)) => {
                self.value(path, &Shape::Tuple(wi.clone()), &Shape::Tuple(ri.clone()))
            }
            (
                TypeShape::Struct { fields: wf, .. },
                TypeShape::Struct {
                    fields: rf,
                    deny_unknown_fields,
                },
            ) => self.fields(path, wf, rf, *deny_unknown_fields, true),
            (TypeShape::Enum(wv), TypeShape::Enum(rv)) => {
                for variant in wv {
                    let vpath = format!("{path} variant `{}`", variant.name);
                    let Some(read) = rv.iter().find(|v| v.name == variant.name) else {
                        let text = format!(
                            "{} does not know it: values carrying it fail with SchemaMismatch",
                            self.reads
                        );
                        self.problem(&vpath, &text);
                        continue;
                    };
                    match (&variant.shape, &read.shape) {
                        (VariantShape::Unit, VariantShape::Unit) => {}
                        (VariantShape::Newtype(w), VariantShape::Newtype(r)) => {
                            self.value(&vpath, w, r)
                        }
                        (VariantShape::Tuple(w), VariantShape::Tuple(r)) => {
                            self.value(&vpath, &Shape::Tuple(w.clone()), &Shape::Tuple(r.clone()))
                        }
                        (VariantShape::Struct(w), VariantShape::Struct(r)) => {
                            self.fields(&vpath, w, r, false, false)
                        }
                        _ => self.problem(&vpath, "the variant carries a different kind of value"),
                    }
                }
            }
            _ => self.problem(
                path,
                &format!(
                    "{} sends {}, {} expects {}",
                    self.sends,
                    kind_of(&w),
                    self.reads,
                    kind_of(&r)
                ),
            ),
        }
    }

    fn fields(&mut self, path: &str, w: &[Field], r: &[Field], deny: bool, probed: bool) {
        for field in r {
            let fpath = format!("{path} field `{}`", field.name);
            match w.iter().find(|f| f.name == field.name) {
                Some(sent) => self.value(&fpath, &sent.shape, &field.shape),
                None if field.default || (!probed && matches!(field.shape, Shape::Option(_))) => {}
                None => {
                    let text = format!(
                        "{} does not send it and {} has no default for it \
                         (give it #[serde(default)] or make it an Option)",
                        self.sends, self.reads
                    );
                    self.problem(&fpath, &text)
                }
            }
        }
        for field in w {
            if deny && !r.iter().any(|f| f.name == field.name) {
                let text = format!(
                    "{} refuses fields it does not know (#[serde(deny_unknown_fields)])",
                    self.reads
                );
                self.problem(&format!("{path} field `{}`", field.name), &text);
            }
        }
    }
}

fn bytes_item(shape: &Shape) -> Shape {
    match shape {
        Shape::Bytes => Shape::U8,
        Shape::Seq(item) => (**item).clone(),
        other => other.clone(),
    }
}

fn int_range(shape: &Shape) -> Option<(i128, i128)> {
    Some(match shape {
        Shape::I8 => (i8::MIN.into(), i8::MAX.into()),
        Shape::I16 => (i16::MIN.into(), i16::MAX.into()),
        Shape::I32 => (i32::MIN.into(), i32::MAX.into()),
        Shape::I64 => (i64::MIN.into(), i64::MAX.into()),
        Shape::I128 => (i128::MIN, i128::MAX),
        Shape::U8 => (0, u8::MAX.into()),
        Shape::U16 => (0, u16::MAX.into()),
        Shape::U32 => (0, u32::MAX.into()),
        Shape::U64 => (0, u64::MAX.into()),
        // Wider than i128 reaches; compared by its lower end only.
        Shape::U128 => (0, i128::MAX),
        _ => return None,
    })
}

fn kind_of(def: &TypeShape) -> &'static str {
    match def {
        TypeShape::UnitStruct => "a unit struct",
        TypeShape::NewtypeStruct(_) => "a newtype struct",
        TypeShape::TupleStruct(_) => "a tuple struct",
        TypeShape::Struct { .. } => "a struct",
        TypeShape::Enum(_) => "an enum",
    }
}

/// A shape in words, for messages.
pub fn describe(shape: &Shape) -> String {
    match shape {
        Shape::Named(name) => name.clone(),
        Shape::Option(s) => format!("Option<{}>", describe(s)),
        Shape::Seq(s) => format!("Vec<{}>", describe(s)),
        Shape::Map(k, v) => format!("Map<{}, {}>", describe(k), describe(v)),
        Shape::Tuple(items) => {
            let items: Vec<String> = items.iter().map(describe).collect();
            format!("({})", items.join(", "))
        }
        Shape::Opaque(_) | Shape::Unknown => "an opaque type".into(),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{other:?}")),
    }
}
