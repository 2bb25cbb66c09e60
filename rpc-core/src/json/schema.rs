//! JSON Schemas (draft 2020-12) of each method's arguments and result, for reflection and
//! the gateway's OpenAPI document. With the `schema` feature, every type that derives
//! `schemars::JsonSchema` next to its `Serialize` is described exactly; a type without it
//! (or any type, without the feature) is described as `{}`: any JSON. Nothing is written
//! twice: the schema comes from the same Rust type the handler takes.
//!
//! `#[service]` generates [`JsonService::json_schemas`](super::JsonService::json_schemas)
//! with the probes below, which pick the `JsonSchema` description where the type has one:
//! `(&&SchemaProbe::<T>::new()).schema()` finds [`ViaJsonSchema`] (implemented for
//! `&SchemaProbe<T>` when `T: JsonSchema`) before it derefs to [`WithoutSchema`]
//! (implemented for every `SchemaProbe<T>`), decided at the call site for each concrete
//! type.

use std::marker::PhantomData;

use serde_json::{json, Map, Value};

/// The schemas of one method.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSchemas {
    /// The arguments: an object with one property per parameter (parameters that are not
    /// `Option`s are required), `additionalProperties: false`. Types it refers to are
    /// under its `$defs`.
    pub arguments: Value,
    /// The return value (of a `Result`, its `Ok`; of a stream, each item).
    pub result: Value,
    /// The method's own error (the `Err` of a `Result`), if it declares one.
    pub error: Option<Value>,
}

/// Used by generated code: stands for type `T` when looking for its schema.
#[doc(hidden)]
pub struct SchemaProbe<T: ?Sized>(PhantomData<T>);

impl<T: ?Sized> SchemaProbe<T> {
    /// A probe of `T`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        SchemaProbe(PhantomData)
    }
}

/// Used by generated code: the schema of a type that has one (`schema` feature).
#[doc(hidden)]
pub trait ViaJsonSchema {
    /// The type's schema.
    fn schema(&self) -> Option<Value>;
}

#[cfg(feature = "schema")]
impl<T: schemars::JsonSchema + ?Sized> ViaJsonSchema for &SchemaProbe<T> {
    fn schema(&self) -> Option<Value> {
        Some(schemars::schema_for!(T).to_value())
    }
}

/// Used by generated code: no schema known (any JSON).
#[doc(hidden)]
pub trait WithoutSchema {
    /// `None`: nothing is known of the type.
    fn schema(&self) -> Option<Value> {
        None
    }
}

impl<T: ?Sized> WithoutSchema for SchemaProbe<T> {}

/// Used by generated code: a method's schemas from those of its parameters (name, schema,
/// whether it may be left out), its result and its error.
#[doc(hidden)]
pub fn method_schemas(
    params: &[(&str, Option<Value>, bool)],
    result: Option<Value>,
    error: Option<Option<Value>>,
) -> MethodSchemas {
    let mut defs = Map::new();
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, schema, optional) in params {
        properties.insert(name.to_string(), hoisted(schema.clone(), &mut defs));
        if !optional {
            required.push(Value::from(*name));
        }
    }
    let mut arguments = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    if !defs.is_empty() {
        arguments["$defs"] = Value::Object(defs);
    }
    MethodSchemas {
        arguments,
        result: standalone(result),
        error: error.map(standalone),
    }
}

/// A type's schema as a document of its own (`{}` if none is known), without `$schema`.
fn standalone(schema: Option<Value>) -> Value {
    let mut schema = schema.unwrap_or_else(|| json!({}));
    if let Value::Object(object) = &mut schema {
        object.remove("$schema");
    }
    schema
}

/// A type's schema as a part of a larger one: its `$defs` moved into `defs` (references
/// `#/$defs/...` then resolve at the larger schema's root).
fn hoisted(schema: Option<Value>, defs: &mut Map<String, Value>) -> Value {
    let mut schema = standalone(schema);
    if let Value::Object(object) = &mut schema {
        if let Some(Value::Object(own)) = object.remove("$defs") {
            defs.extend(own);
        }
    }
    schema
}

/// Rewrites every `$ref` under `#/$defs/` in `schema` to point under `prefix` instead
/// (for example `#/components/schemas/` in an OpenAPI document), and moves its `$defs`
/// into `defs`.
pub fn relocate_defs(schema: &mut Value, prefix: &str, defs: &mut Map<String, Value>) {
    if let Value::Object(object) = schema {
        if let Some(Value::Object(own)) = object.remove("$defs") {
            for (name, mut def) in own {
                relocate_defs(&mut def, prefix, defs);
                defs.insert(name, def);
            }
        }
    }
    rewrite_refs(schema, prefix);
}

fn rewrite_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(object) => {
            for (key, item) in object.iter_mut() {
                match item {
                    Value::String(target) if key == "$ref" => {
                        if let Some(name) = target.strip_prefix("#/$defs/") {
                            *target = format!("{prefix}{name}");
                        }
                    }
                    _ => rewrite_refs(item, prefix),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_refs(item, prefix)),
        _ => {}
    }
}
