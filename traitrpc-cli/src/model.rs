//! What a server says it hosts, read from the reflection service's `list()`/`describe()`
//! (native) or the gateway's `GET /.well-known/rrpc/services`, tolerantly: a listing
//! with parameter names only (older gateways) reads as well as one with JSON Schemas.

use serde_json::Value;

/// A hosted service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    /// Its wire name.
    pub name: String,
    /// Its methods, in the server's order.
    pub methods: Vec<MethodInfo>,
    /// The description as the server sent it.
    pub raw: Value,
}

/// One method of a hosted service.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodInfo {
    /// Its wire name.
    pub name: String,
    /// How it exchanges values: `unary`, `server_stream`, `client_stream`,
    /// `bidi_stream` (or whatever a newer server says).
    pub kind: String,
    /// Whether it is safe to retry.
    pub idempotent: bool,
    /// Its parameter names, in order.
    pub params: Vec<String>,
    /// JSON Schema of its arguments, if the server describes them.
    pub arguments: Option<Value>,
    /// JSON Schema of its result (of a stream: each item), if described.
    pub result: Option<Value>,
    /// JSON Schema of its own error, if it has one and the server describes it.
    pub error: Option<Value>,
    /// The description as the server sent it.
    pub raw: Value,
}

/// The kind of a unary method.
pub const UNARY: &str = "unary";
/// The kind of a server-streaming method.
pub const SERVER_STREAM: &str = "server_stream";

impl ServiceInfo {
    /// A service from its description (`{"name", "methods": [...]}`).
    pub fn from_json(value: &Value) -> Result<ServiceInfo, String> {
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .ok_or("a service description without a name")?
            .to_string();
        let methods = match value.get("methods") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(methods)) => methods
                .iter()
                .map(MethodInfo::from_json)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("service {name}: {e}"))?,
            Some(_) => return Err(format!("service {name}: `methods` is not an array")),
        };
        Ok(ServiceInfo {
            name,
            methods,
            raw: value.clone(),
        })
    }

    /// Its method named `name`.
    pub fn method(&self, name: &str) -> Option<&MethodInfo> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// Its method names, comma-separated.
    pub fn method_names(&self) -> String {
        let names: Vec<&str> = self.methods.iter().map(|m| m.name.as_str()).collect();
        names.join(", ")
    }
}

impl MethodInfo {
    /// A method from its description.
    fn from_json(value: &Value) -> Result<MethodInfo, String> {
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .ok_or("a method description without a name")?
            .to_string();
        // Parameters as names, or as objects with a name.
        let params = value
            .get("params")
            .and_then(Value::as_array)
            .map(|params| {
                params
                    .iter()
                    .filter_map(|p| p.as_str().or_else(|| p.get("name")?.as_str()))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let schema = |key: &str| value.get(key).filter(|v| !v.is_null()).cloned();
        Ok(MethodInfo {
            kind: value
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or(UNARY)
                .to_string(),
            idempotent: value
                .get("idempotent")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            params,
            arguments: schema("arguments"),
            result: schema("result"),
            error: schema("error"),
            raw: value.clone(),
            name,
        })
    }

    /// `name(a, b)`.
    pub fn signature(&self) -> String {
        format!("{}({})", self.name, self.params.join(", "))
    }

    /// `unary idempotent`, `server_stream`, ...
    pub fn traits(&self) -> String {
        if self.idempotent {
            format!("{} idempotent", self.kind)
        } else {
            self.kind.clone()
        }
    }
}

/// The services of a listing: an array of descriptions, or `{"services": [...]}`.
pub fn parse_services(value: &Value) -> Result<Vec<ServiceInfo>, String> {
    let services = match value {
        Value::Array(services) => services,
        Value::Object(object) => match object.get("services") {
            Some(Value::Array(services)) => services,
            _ => return Err("the listing has no `services` array".into()),
        },
        _ => return Err("the listing is not an array of services".into()),
    };
    services.iter().map(ServiceInfo::from_json).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listings_old_and_new_read_alike() {
        let old = json!({"services": [{"name": "Calc", "methods": [
            {"name": "add", "params": ["a", "b"], "kind": "unary", "idempotent": true, "path": "/Calc/add"},
        ]}]});
        let new = json!([{"name": "Calc", "methods": [
            {"name": "add", "params": ["a", "b"], "kind": "unary", "idempotent": true,
             "arguments": {"type": "object"}, "result": {"type": "integer"}, "error": null},
        ]}]);
        let old = parse_services(&old).unwrap();
        let new = parse_services(&new).unwrap();
        for services in [&old, &new] {
            let add = services[0].method("add").unwrap();
            assert_eq!(add.signature(), "add(a, b)");
            assert_eq!(add.traits(), "unary idempotent");
            assert_eq!(add.error, None);
        }
        assert_eq!(old[0].methods[0].arguments, None);
        assert_eq!(new[0].methods[0].result, Some(json!({"type": "integer"})));
        assert!(parse_services(&json!({"nope": 1})).is_err());
        assert!(parse_services(&json!([{"methods": []}])).is_err());
    }
}
