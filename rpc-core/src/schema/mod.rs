//! The schema of every method, traced from its types' own serde implementations: the
//! shapes of its parameters, result, error and stream items ([`ServiceSchema`]), a stable
//! fingerprint of them ([`fingerprint`], `docs/PROTOCOL.md` section 24), and the
//! breaking-change checker that compares two versions ([`diff`]).
//!
//! `#[service]` generates `{Trait}Client::service_schema()`, traced once per process on first
//! use. Servers announce their fingerprints to clients of protocol version 6, which send
//! a method whose schemas differ in JSON by name instead of positional bincode, so two
//! versions of a trait never reinterpret each other's bytes (`docs/EVOLUTION.md`).

mod canonical;
mod compat;
mod model;
mod snapshot;
mod trace;

pub use canonical::{canonical_form, fingerprint};
pub use compat::{call, describe, diff, MethodChange, SchemaDiff, Verdict};
pub use model::{
    Field, Fingerprint, MethodSchema, Param, ServiceSchema, Shape, TypeShape, Variant, VariantShape,
};
pub use snapshot::{
    assert_compatible, check_snapshot, SnapshotError, SnapshotOutcome, UPDATE_VARIABLE,
};

use serde::de::DeserializeOwned;

use crate::json::MethodKind;
use trace::Tracer;

/// Traces one method's schema. Used by the code `#[service]` generates:
/// `MethodTrace::new("add", MethodKind::Unary).param::<i64>("a").result::<i64>().finish()`.
pub struct MethodTrace {
    tracer: Tracer,
    name: &'static str,
    kind: MethodKind,
    params: Vec<Param>,
    result: Shape,
    error: Option<Shape>,
    upload: Option<Shape>,
}

impl MethodTrace {
    /// Starts the schema of method `name`.
    pub fn new(name: &'static str, kind: MethodKind) -> Self {
        MethodTrace {
            tracer: Tracer::default(),
            name,
            kind,
            params: Vec::new(),
            result: Shape::Unit,
            error: None,
            upload: None,
        }
    }

    /// Adds parameter `name`, sent as a `T`.
    pub fn param<T: DeserializeOwned>(mut self, name: &str) -> Self {
        let shape = self.tracer.trace::<T>();
        self.params.push(Param {
            name: name.to_string(),
            shape,
        });
        self
    }

    /// Sets the result (or the stream item) to `T`.
    pub fn result<T: DeserializeOwned>(mut self) -> Self {
        self.result = self.tracer.trace::<T>();
        self
    }

    /// Sets the method's own error to `E`.
    pub fn error<E: DeserializeOwned>(mut self) -> Self {
        self.error = Some(self.tracer.trace::<E>());
        self
    }

    /// Sets the items of the stream the method takes to `U`.
    pub fn upload<U: DeserializeOwned>(mut self) -> Self {
        self.upload = Some(self.tracer.trace::<U>());
        self
    }

    /// The finished schema, with its fingerprint.
    pub fn finish(self) -> MethodSchema {
        let mut types = self.tracer.types;
        types.values_mut().for_each(TypeShape::close);
        let mut method = MethodSchema {
            name: self.name.to_string(),
            kind: self.kind,
            fingerprint: Fingerprint(0),
            params: self.params,
            result: self.result,
            error: self.error,
            upload: self.upload,
            types,
        };
        for param in &mut method.params {
            param.shape.close();
        }
        method.result.close();
        method.error.iter_mut().for_each(Shape::close);
        method.upload.iter_mut().for_each(Shape::close);
        method.fingerprint = fingerprint(&method);
        method
    }
}
