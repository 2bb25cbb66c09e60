//! The JSON dispatcher `#[service]` generates: one implementation answers JSON calls
//! (arguments by parameter name) with the same types the native protocol uses.

use serde::{Deserialize, Serialize};
use serde_json::json;
use traitrpc_core::json::{JsonMethod, JsonOutcome, JsonService, MethodKind, Value};
use traitrpc_core::{service, DispatchError, Service, Streaming};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    x: i32,
    y: i32,
}

#[service]
pub trait Geometry {
    /// Adds two numbers.
    #[idempotent]
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn divide(&self, a: i64, b: i64) -> Result<i64, String>;
    async fn shift(&self, p: Point, by: Option<i32>) -> Point;
    async fn r#type(&self, r#match: String) -> String;
    async fn nothing(&self);
    async fn count(&self, n: u32) -> Streaming<u32>;
    async fn total(&self, items: Streaming<u32>) -> u32;
}

struct Shapes;

impl Geometry for Shapes {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn divide(&self, a: i64, b: i64) -> Result<i64, String> {
        if b == 0 {
            Err("division by zero".into())
        } else {
            Ok(a / b)
        }
    }
    async fn shift(&self, p: Point, by: Option<i32>) -> Point {
        let by = by.unwrap_or(1);
        Point {
            x: p.x + by,
            y: p.y + by,
        }
    }
    async fn r#type(&self, r#match: String) -> String {
        format!("type of {match}", match = r#match)
    }
    async fn nothing(&self) {}
    async fn count(&self, n: u32) -> Streaming<u32> {
        Streaming::iter(0..n)
    }
    async fn total(&self, _items: Streaming<u32>) -> u32 {
        0
    }
}

async fn call(method: &str, args: Value) -> Result<JsonOutcome, DispatchError> {
    let server = GeometryServer::new(Shapes);
    let json = Service::json(&server).expect("generated services answer JSON");
    let Value::Object(args) = args else {
        panic!("arguments are an object")
    };
    let future = json.call_json(method, args)?;
    Ok(future.await.expect("encodable"))
}

#[tokio::test]
async fn unary_methods_answer_json_by_parameter_name() {
    assert_eq!(
        call("add", json!({"a": 1, "b": 2})).await,
        Ok(JsonOutcome::Ok(json!(3)))
    );
    assert_eq!(
        call("divide", json!({"a": 1, "b": 0})).await,
        Ok(JsonOutcome::ApplicationError(json!("division by zero")))
    );
    assert_eq!(
        call("shift", json!({"p": {"x": 1, "y": 2}})).await,
        Ok(JsonOutcome::Ok(json!({"x": 2, "y": 3}))),
        "a missing Option parameter is None"
    );
    assert_eq!(
        call("type", json!({"match": "m"})).await,
        Ok(JsonOutcome::Ok(json!("type of m"))),
        "raw identifiers by their plain names"
    );
    assert_eq!(
        call("nothing", json!({})).await,
        Ok(JsonOutcome::Ok(Value::Null))
    );
}

#[tokio::test]
async fn a_server_stream_answers_its_items_as_json() {
    use futures::StreamExt;
    let Ok(JsonOutcome::Stream(items)) = call("count", json!({"n": 3})).await else {
        panic!("a server-streaming method answers a stream");
    };
    let items: Vec<_> = items.map(Result::unwrap).collect().await;
    assert_eq!(items, [json!(0), json!(1), json!(2)]);
}

#[tokio::test]
async fn bad_arguments_are_typed_errors_naming_the_parameter() {
    let invalid = |r: Result<JsonOutcome, DispatchError>| match r {
        Err(DispatchError::InvalidArguments(message)) => message,
        other => panic!("expected InvalidArguments, got {other:?}"),
    };
    assert!(invalid(call("add", json!({"a": 1})).await).contains("`b`"));
    assert!(invalid(call("add", json!({"a": "one", "b": 2})).await).contains("`a`"));
    assert!(invalid(call("add", json!({"a": 1, "b": 2, "c": 3})).await).contains("`c`"));
    assert!(invalid(call("total", json!({})).await).contains("takes a stream"));
    assert!(matches!(
        call("nope", json!({})).await,
        Err(DispatchError::UnknownMethod)
    ));
}

#[test]
fn methods_are_listed_with_parameters_and_kinds() {
    let server = GeometryServer::new(Shapes);
    let methods = JsonService::json_methods(&server);
    let add = methods.iter().find(|m| m.name == "add").unwrap();
    assert_eq!(
        *add,
        JsonMethod {
            name: "add",
            params: &["a", "b"],
            idempotent: true,
            compress: None,
            kind: MethodKind::Unary
        }
    );
    let count = methods.iter().find(|m| m.name == "count").unwrap();
    assert_eq!(count.kind, MethodKind::ServerStream);
    assert_eq!(methods.len(), 7);
}
