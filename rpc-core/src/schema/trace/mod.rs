//! The tracer: finds a type's [`Shape`] by running its own `Deserialize` against a
//! deserializer that records what is asked for, as bincode would be asked (not human
//! readable, positional structs).
//!
//! A value is built on every pass, so choices are made where the data would choose: an
//! enum's variant, whether an `Option` is `Some`, a sequence's length. Each pass
//! explores one more variant of every enum it meets, until all are seen. Recursive types
//! terminate because, once a named type appears twice on the stack, options are `None`,
//! sequences and maps are empty and enums take a variant already known to end.
//!
//! Probe passes then read one struct by name with one field left out (a field that may
//! be missing: an `Option` or `#[serde(default)]`) or with an extra field (refused under
//! `#[serde(deny_unknown_fields)]`): what the checker needs to know about reading by name.
//!
//! Why not `serde-reflection`: its tracer (0.6) needs each nested enum traced as its own
//! top-level type (a method's types are not known by name at run time), leaves variants
//! of an enum nested in a recursive type with provisional indices, and keys its registry
//! by the unqualified name, so two types of the same name collide.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::de;
use serde::Deserialize;

use super::model::{Field, Shape, TypeShape, VariantShape};

mod access;

use access::De;

/// Named types nested deeper than this end a pass (a type the rules above cannot end).
const MAX_DEPTH: usize = 64;
/// Passes per traced type before it is given up as opaque.
const MAX_PASSES: usize = 512;
/// The key an unknown-field probe adds.
const PROBE_KEY: &str = "__traitrpc_unknown_field__";

/// Why a pass ended.
#[derive(Debug)]
pub(crate) struct TraceError {
    kind: ErrorKind,
    message: String,
}

#[derive(Debug, PartialEq, Eq)]
enum ErrorKind {
    Other,
    MissingField,
    UnknownField,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TraceError {
            kind: ErrorKind::Other,
            message: msg.to_string(),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        TraceError {
            kind: ErrorKind::MissingField,
            message: format!("missing field `{field}`"),
        }
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        TraceError {
            kind: ErrorKind::UnknownField,
            message: format!("unknown field `{field}`"),
        }
    }
}

fn unsupported(what: &str) -> TraceError {
    de::Error::custom(format!(
        "{what} needs a self-describing format (`#[serde(untagged)]`, `flatten`, \
         `serde_json::Value` and the like), which bincode is not"
    ))
}

/// One enum's exploration.
struct EnumState {
    /// Per variant: seen to completion at least once.
    done: Vec<bool>,
}

/// A probe of one struct read by name.
#[derive(Clone)]
enum Probe {
    /// Leave this field out.
    Omit(String, &'static str),
    /// Add an unknown field.
    Unknown(String),
}

/// What the tracer has learned so far (shared by every pass and every type of a method).
#[derive(Default)]
pub(crate) struct Tracer {
    /// Display names by Rust type (`type_name`), and the Rust type behind each name.
    names: HashMap<&'static str, String>,
    owners: HashMap<String, &'static str>,
    /// Definitions, merged across passes.
    pub(crate) types: BTreeMap<String, TypeShape>,
    /// Struct fields per type, in declaration order (for probes).
    field_names: BTreeMap<String, &'static [&'static str]>,
    enums: HashMap<String, EnumState>,
    /// Named types being read, outermost first, with the variant being explored.
    stack: Vec<(&'static str, Option<usize>)>,
    /// Structs whose fields were probed.
    probed: std::collections::BTreeSet<String>,
    /// The probe of this pass; taken when applied.
    probe: Option<Probe>,
    probe_applied: bool,
}

impl Tracer {
    /// Traces `T`: its shape, or opaque with the reason.
    pub(crate) fn trace<T: for<'de> Deserialize<'de>>(&mut self) -> Shape {
        let traced =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.trace_inner::<T>()));
        match traced {
            Ok(Ok(shape)) => shape,
            Ok(Err(e)) => Shape::Opaque(e.message),
            Err(_) => Shape::Opaque("its `Deserialize` panicked while traced".into()),
        }
    }

    fn trace_inner<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Shape, TraceError> {
        let mut shape = Shape::Unknown;
        let mut complete = false;
        for _ in 0..MAX_PASSES {
            let mut pass = Shape::Unknown;
            self.stack.clear();
            T::deserialize(De {
                t: self,
                out: &mut pass,
            })?;
            shape.merge(pass);
            if self.enums.values().all(|e| e.done.iter().all(|d| *d)) {
                complete = true;
                break;
            }
        }
        if !complete {
            return Err(de::Error::custom(
                "its enums could not all be explored (a variant that never ends?)",
            ));
        }
        self.probe_structs::<T>();
        Ok(shape)
    }

    /// Runs the probe passes for every struct met so far that has not been probed.
    fn probe_structs<T: for<'de> Deserialize<'de>>(&mut self) {
        let structs: Vec<(String, &'static [&'static str])> = self
            .field_names
            .iter()
            .map(|(name, fields)| (name.clone(), *fields))
            .collect();
        for (name, fields) in structs {
            let is_struct = matches!(self.types.get(&name), Some(TypeShape::Struct { .. }));
            if !is_struct || self.probed.contains(&name) {
                continue;
            }
            let mut defaults = Vec::new();
            for field in fields {
                let ok = self.probe_pass::<T>(Probe::Omit(name.clone(), field));
                defaults.push(ok == Some(true));
            }
            let unknown_ok = self.probe_pass::<T>(Probe::Unknown(name.clone()));
            if let Some(TypeShape::Struct {
                fields: known,
                deny_unknown_fields,
            }) = self.types.get_mut(&name)
            {
                for (field, default) in known.iter_mut().zip(defaults) {
                    field.default = default;
                }
                *deny_unknown_fields = unknown_ok == Some(false);
            }
            self.probed.insert(name);
        }
    }

    /// One pass with `probe`: `Some(true)` if the value was read, `Some(false)` if the
    /// probe made it fail as probes do, `None` if the probe never applied or something
    /// else failed.
    fn probe_pass<T: for<'de> Deserialize<'de>>(&mut self, probe: Probe) -> Option<bool> {
        self.probe = Some(probe);
        self.probe_applied = false;
        self.stack.clear();
        let mut scratch = Shape::Unknown;
        let result = T::deserialize(De {
            t: self,
            out: &mut scratch,
        });
        self.probe = None;
        if !self.probe_applied {
            return None;
        }
        match result {
            Ok(_) => Some(true),
            Err(e) if e.kind != ErrorKind::Other => Some(false),
            Err(_) => None,
        }
    }

    /// The display name of Rust type `rust` named `serde_name` by serde: that name,
    /// or that name with a `#2`, `#3`... suffix if another type already has it.
    fn name_for(&mut self, rust: &'static str, serde_name: &'static str) -> String {
        if let Some(name) = self.names.get(rust) {
            return name.clone();
        }
        let mut name = serde_name.to_string();
        let mut n = 1;
        while self.owners.contains_key(&name) {
            n += 1;
            name = format!("{serde_name}#{n}");
        }
        self.names.insert(rust, name.clone());
        self.owners.insert(name.clone(), rust);
        name
    }

    /// Whether a named type appears twice on the stack: the value is recursing.
    fn recursing(&self) -> bool {
        let stack = &self.stack;
        (1..stack.len()).any(|i| stack[..i].iter().any(|(t, _)| *t == stack[i].0))
    }

    fn enter(&mut self, rust: &'static str) -> Result<(), TraceError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(de::Error::custom("it nests deeper than the tracer follows"));
        }
        self.stack.push((rust, None));
        Ok(())
    }

    fn define(&mut self, name: &str, shape: TypeShape) {
        match self.types.get_mut(name) {
            Some(known) => known.merge(shape),
            None => {
                self.types.insert(name.to_string(), shape);
            }
        }
    }

    /// The variant of enum `name` (of `count` variants) to read next.
    fn choose_variant(&mut self, name: &str, rust: &'static str, count: usize) -> usize {
        let recursing = self.recursing();
        let exploring: Vec<usize> = self
            .stack
            .iter()
            .filter(|(t, _)| *t == rust)
            .filter_map(|(_, v)| *v)
            .collect();
        let state = self.enums.entry(name.to_string()).or_insert(EnumState {
            done: vec![false; count],
        });
        let first_done = state.done.iter().position(|d| *d);
        let first_new = (0..count).find(|i| !state.done[*i] && !exploring.contains(i));
        if recursing {
            first_done.or(first_new).unwrap_or(0)
        } else {
            first_new.or(first_done).unwrap_or(0)
        }
    }

    fn apply_probe(&mut self, name: &str) -> Option<Probe> {
        let probe = self.probe.as_ref()?;
        let target = match probe {
            Probe::Omit(target, _) | Probe::Unknown(target) => target,
        };
        if target != name || self.probe_applied {
            return None;
        }
        self.probe_applied = true;
        self.probe.clone()
    }
}

impl Shape {
    /// Fills what `self` has not observed from `other` (`Unknown` parts).
    pub(crate) fn merge(&mut self, other: Shape) {
        match (self, other) {
            (_, Shape::Unknown) => {}
            (this @ Shape::Unknown, other) => *this = other,
            (Shape::Option(a), Shape::Option(b)) | (Shape::Seq(a), Shape::Seq(b)) => a.merge(*b),
            (Shape::Map(k, v), Shape::Map(k2, v2)) => {
                k.merge(*k2);
                v.merge(*v2);
            }
            (Shape::Tuple(a), Shape::Tuple(b)) => merge_all(a, b),
            _ => {}
        }
    }

    /// Replaces what was never observed with an opaque shape.
    pub(crate) fn close(&mut self) {
        match self {
            Shape::Unknown => *self = Shape::Opaque("never observed by the tracer".into()),
            Shape::Option(a) | Shape::Seq(a) => a.close(),
            Shape::Map(k, v) => {
                k.close();
                v.close();
            }
            Shape::Tuple(a) => a.iter_mut().for_each(Shape::close),
            _ => {}
        }
    }
}

fn merge_all(a: &mut [Shape], b: Vec<Shape>) {
    for (a, b) in a.iter_mut().zip(b) {
        a.merge(b);
    }
}

fn merge_fields(a: &mut [Field], b: Vec<Field>) {
    for (a, b) in a.iter_mut().zip(b) {
        a.shape.merge(b.shape);
    }
}

impl TypeShape {
    fn merge(&mut self, other: TypeShape) {
        match (self, other) {
            (TypeShape::NewtypeStruct(a), TypeShape::NewtypeStruct(b)) => a.merge(b),
            (TypeShape::TupleStruct(a), TypeShape::TupleStruct(b)) => merge_all(a, b),
            (TypeShape::Struct { fields: a, .. }, TypeShape::Struct { fields: b, .. }) => {
                merge_fields(a, b)
            }
            (TypeShape::Enum(a), TypeShape::Enum(b)) => {
                for (a, b) in a.iter_mut().zip(b) {
                    a.shape.merge(b.shape);
                }
            }
            _ => {}
        }
    }

    /// Replaces what was never observed with an opaque shape.
    pub(crate) fn close(&mut self) {
        match self {
            TypeShape::UnitStruct => {}
            TypeShape::NewtypeStruct(s) => s.close(),
            TypeShape::TupleStruct(s) => s.iter_mut().for_each(Shape::close),
            TypeShape::Struct { fields, .. } => fields.iter_mut().for_each(|f| f.shape.close()),
            TypeShape::Enum(variants) => variants.iter_mut().for_each(|v| v.shape.close()),
        }
    }
}

impl VariantShape {
    fn merge(&mut self, other: VariantShape) {
        match (self, other) {
            (VariantShape::Newtype(a), VariantShape::Newtype(b)) => a.merge(b),
            (VariantShape::Tuple(a), VariantShape::Tuple(b)) => merge_all(a, b),
            (VariantShape::Struct(a), VariantShape::Struct(b)) => merge_fields(a, b),
            _ => {}
        }
    }

    fn close(&mut self) {
        match self {
            VariantShape::Unit => {}
            VariantShape::Newtype(s) => s.close(),
            VariantShape::Tuple(s) => s.iter_mut().for_each(Shape::close),
            VariantShape::Struct(f) => f.iter_mut().for_each(|f| f.shape.close()),
        }
    }
}
