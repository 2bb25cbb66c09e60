//! The matrix of docs/EVOLUTION.md: every ordinary change of `shop.Orders`, in both
//! directions of a rolling upgrade, over the native protocol (version 6: bincode where
//! the fingerprints agree, JSON by name where they differ), the native JSON codec and the
//! HTTP gateway. Each call either delivers its value with its meaning, or fails with a
//! typed error that names the difference: a value that arrives changed fails the test.
//! And the checker's verdict for each method and direction agrees with what the wire did.

use std::net::SocketAddr;
use std::process::Command;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use traitrpc_core::json::JsonClient;
use traitrpc_core::schema::{diff, ServiceSchema, Verdict};
use traitrpc_core::{CallError, Client, ClientConfig, Method, PayloadCodec, RpcError, Streaming};
use traitrpc_evolution_tests::{v1, v2};

const SERVICE: &str = "shop.Orders";

/// How one version's client reaches the other version's server.
enum Caller {
    /// The generated client's path: typed values, protocol version 6.
    Native {
        client: Client,
        schema: fn() -> &'static ServiceSchema,
    },
    /// A connection of the JSON codec (protocol version 4's `JsonClient`), with values
    /// made from the client version's types.
    JsonCodec(JsonClient),
    /// The HTTP gateway, by curl.
    Gateway(String),
}

/// What a call did.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// The value arrived with its meaning.
    Meaning,
    /// A typed error, naming the difference.
    Typed(String),
}

impl Caller {
    fn name(&self) -> &'static str {
        match self {
            Caller::Native { .. } => "native",
            Caller::JsonCodec(_) => "json codec",
            Caller::Gateway(_) => "gateway",
        }
    }

    /// Calls `method` with `args` (a tuple, in `params` order); the error as text.
    async fn call<A, R>(
        &self,
        method: &'static str,
        params: &'static [&'static str],
        args: A,
    ) -> Result<R, String>
    where
        A: Serialize + Sync,
        R: DeserializeOwned,
    {
        match self {
            Caller::Native { client, schema } => {
                let method = Method {
                    params,
                    schema: Some(*schema),
                    ..Method::new(SERVICE, method)
                };
                client.call(&method, &args).await.map_err(typed)
            }
            Caller::JsonCodec(json) => {
                let args = by_name(params, &args);
                let value = json
                    .call(SERVICE, method, &args)
                    .await
                    .map_err(|e| match e {
                        CallError::Rpc(e) => typed(e),
                        CallError::Application(v) => format!("application error {v}"),
                    })?;
                serde_json::from_value(value).map_err(|e| format!("decode: {e}"))
            }
            Caller::Gateway(base) => {
                let (status, body) =
                    post(format!("{base}/{SERVICE}/{method}"), by_name(params, &args)).await;
                if status != 200 {
                    return Err(format!("HTTP {status}: {body}"));
                }
                serde_json::from_value(body).map_err(|e| format!("decode: {e}"))
            }
        }
    }

    /// Calls a method declared `-> Result<T, E>`: `Ok(Ok)`, `Ok(Err(application error))`.
    async fn call_fallible<A, T, E>(
        &self,
        method: &'static str,
        params: &'static [&'static str],
        args: A,
    ) -> Result<Result<T, E>, String>
    where
        A: Serialize + Sync,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        match self {
            Caller::Native { client, schema } => {
                let method = Method {
                    params,
                    schema: Some(*schema),
                    ..Method::new(SERVICE, method)
                };
                match client.call_fallible::<_, T, E>(&method, &args).await {
                    Ok(v) => Ok(Ok(v)),
                    Err(CallError::Application(e)) => Ok(Err(e)),
                    Err(CallError::Rpc(e)) => Err(typed(e)),
                }
            }
            Caller::JsonCodec(json) => {
                let args = by_name(params, &args);
                match json.call(SERVICE, method, &args).await {
                    Ok(v) => serde_json::from_value(v)
                        .map(Ok)
                        .map_err(|e| format!("decode: {e}")),
                    Err(CallError::Application(e)) => serde_json::from_value(e)
                        .map(Err)
                        .map_err(|e| format!("decode: {e}")),
                    Err(CallError::Rpc(e)) => Err(typed(e)),
                }
            }
            Caller::Gateway(base) => {
                let (status, body) =
                    post(format!("{base}/{SERVICE}/{method}"), by_name(params, &args)).await;
                match status {
                    200 => serde_json::from_value(body)
                        .map(Ok)
                        .map_err(|e| format!("decode: {e}")),
                    _ => {
                        // Connect carries the method's own error in the error body.
                        match body.get("error") {
                            Some(error) => serde_json::from_value(error.clone())
                                .map(Err)
                                .map_err(|e| format!("decode: {e}")),
                            None => Err(format!("HTTP {status}: {body}")),
                        }
                    }
                }
            }
        }
    }

    /// A server-streaming call: the items, decoded as `T`.
    async fn stream<A, T>(
        &self,
        method: &'static str,
        params: &'static [&'static str],
        args: A,
    ) -> Result<Vec<T>, String>
    where
        A: Serialize + Sync,
        T: DeserializeOwned + Send + 'static,
    {
        match self {
            Caller::Native { client, schema } => {
                let method = Method {
                    params,
                    schema: Some(*schema),
                    ..Method::new(SERVICE, method)
                };
                let stream: Streaming<T> = client
                    .call_server_stream(&method, &args)
                    .await
                    .map_err(typed)?;
                let items: Vec<Result<T, RpcError>> = stream.collect().await;
                items.into_iter().map(|i| i.map_err(typed)).collect()
            }
            Caller::JsonCodec(json) => {
                let args = by_name(params, &args);
                let stream = json
                    .server_stream(SERVICE, method, &args)
                    .await
                    .map_err(typed)?;
                let items: Vec<_> = stream.collect().await;
                items
                    .into_iter()
                    .map(|i| {
                        serde_json::from_value(i.map_err(typed)?)
                            .map_err(|e| format!("decode: {e}"))
                    })
                    .collect()
            }
            Caller::Gateway(base) => {
                // Connect's server streaming: enveloped JSON both ways.
                let body = serde_json::to_vec(&by_name(params, &args)).unwrap();
                let mut envelope = vec![0u8];
                envelope.extend_from_slice(&(body.len() as u32).to_be_bytes());
                envelope.extend_from_slice(&body);
                let url = format!("{base}/{SERVICE}/{method}");
                let out = tokio::task::spawn_blocking(move || {
                    let path = std::env::temp_dir().join(format!(
                        "traitrpc-evolution-{}-{method}",
                        std::process::id()
                    ));
                    std::fs::write(&path, &envelope).unwrap();
                    let out = Command::new("curl")
                        .args(["-s", "--max-time", "20", "-H"])
                        .arg("Content-Type: application/connect+json")
                        .arg("--data-binary")
                        .arg(format!("@{}", path.display()))
                        .arg(url)
                        .output()
                        .expect("run curl (install curl)");
                    let _ = std::fs::remove_file(&path);
                    out.stdout
                })
                .await
                .unwrap();
                let mut rest = &out[..];
                let mut items = Vec::new();
                while rest.len() >= 5 {
                    let flags = rest[0];
                    let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
                    let message: Value = serde_json::from_slice(&rest[5..5 + len]).unwrap();
                    rest = &rest[5 + len..];
                    if flags & 0x02 != 0 {
                        if let Some(error) = message.get("error") {
                            return Err(format!("end of stream: {error}"));
                        }
                        break;
                    }
                    items
                        .push(serde_json::from_value(message).map_err(|e| format!("decode: {e}"))?);
                }
                Ok(items)
            }
        }
    }
}

/// A framework error as text, after checking that it is one of the typed refusals a
/// version difference may cause (never a generic decode failure of bincode bytes).
fn typed(e: RpcError) -> String {
    assert!(
        matches!(
            e,
            RpcError::SchemaMismatch { .. }
                | RpcError::UnknownMethod { .. }
                | RpcError::InvalidArguments { .. }
        ),
        "not a typed refusal: {e:?}"
    );
    e.to_string()
}

/// `args` as a JSON object keyed by `params`.
fn by_name<A: Serialize>(params: &[&str], args: &A) -> Value {
    let values = match serde_json::to_value(args).unwrap() {
        Value::Array(values) => values,
        Value::Null => Vec::new(),
        other => panic!("arguments are a tuple, not {other}"),
    };
    assert_eq!(values.len(), params.len());
    Value::Object(
        params
            .iter()
            .map(|p| p.to_string())
            .zip(values)
            .collect::<Map<_, _>>(),
    )
}

async fn post(url: String, body: Value) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
            .args(["-H", "Content-Type: application/json", "-d"])
            .arg(body.to_string())
            .arg(&url)
            .output()
            .expect("run curl (install curl)");
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        let (body, code) = text.rsplit_once('\n').expect("the status line");
        let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
        (code.parse().expect("a status"), value)
    })
    .await
    .unwrap()
}

/// What a call that returned `got` when `want` was sent did: a different value is a
/// silent change, which fails the test at once.
fn seen<T: PartialEq + std::fmt::Debug>(row: &str, got: Result<T, String>, want: T) -> Seen {
    match got {
        Ok(value) => {
            assert_eq!(value, want, "{row}: the value changed silently");
            Seen::Meaning
        }
        Err(e) => Seen::Typed(e),
    }
}

/// The calls of v1's clients to v2's servers.
async fn old_client_new_server(c: &Caller) -> Vec<(&'static str, Seen)> {
    let order = v1::Order { id: 7, qty: 3 };
    let mut rows = Vec::new();
    let mut row = |name: &'static str, seen: Seen| rows.push((name, seen));
    row(
        "unchanged",
        seen(
            "unchanged",
            c.call("unchanged", &["order"], (order.clone(),)).await,
            order.clone(),
        ),
    );
    row(
        "add_field",
        seen(
            "add_field",
            c.call("add_field", &["order"], (order.clone(),)).await,
            order.clone(),
        ),
    );
    row(
        "add_required_field",
        seen(
            "add_required_field",
            c.call("add_required_field", &["order"], (order.clone(),))
                .await,
            order.clone(),
        ),
    );
    let legacy = v1::Legacy {
        id: 1,
        legacy: "x".into(),
    };
    row(
        "remove_field",
        seen(
            "remove_field",
            c.call("remove_field", &["order"], (legacy.clone(),)).await,
            legacy,
        ),
    );
    row(
        "rename_field",
        seen(
            "rename_field",
            c.call("rename_field", &["order"], (order.clone(),)).await,
            order.clone(),
        ),
    );
    let pair = v1::Pair { a: 1, b: 2 };
    row(
        "reorder_fields",
        seen(
            "reorder_fields",
            c.call("reorder_fields", &["pair"], (pair.clone(),)).await,
            pair,
        ),
    );
    row(
        "insert_variant",
        seen(
            "insert_variant",
            c.call("insert_variant", &["status"], (v1::Status::Suspended,))
                .await,
            "Suspended".to_string(),
        ),
    );
    row(
        "append_variant",
        seen(
            "append_variant",
            c.call("append_variant", &["status"], (v1::Status::Suspended,))
                .await,
            "Suspended".to_string(),
        ),
    );
    row(
        "widen_int",
        seen(
            "widen_int",
            c.call("widen_int", &["n"], (u32::MAX,)).await,
            u32::MAX.to_string(),
        ),
    );
    // The case: an old client's u64 read by a new server's i64. In bincode alone
    // `total(2, 3)` returned 1; a value beyond i64 must fail, never wrap.
    row(
        "total",
        seen(
            "total",
            c.call("total", &["a", "b"], (u64::MAX - 1, 0u64)).await,
            u64::MAX - 1,
        ),
    );
    row(
        "total (fits)",
        seen(
            "total (fits)",
            c.call("total", &["a", "b"], (2u64, 3u64)).await,
            5u64,
        ),
    );
    row(
        "wrap_option",
        seen(
            "wrap_option",
            c.call("wrap_option", &["n"], (5u32,)).await,
            "5".to_string(),
        ),
    );
    row(
        "add_optional_param",
        seen(
            "add_optional_param",
            c.call("add_optional_param", &["a"], (5u32,)).await,
            "5".to_string(),
        ),
    );
    row(
        "add_required_param",
        seen(
            "add_required_param",
            c.call("add_required_param", &["a"], (5u32,)).await,
            "5".to_string(),
        ),
    );
    row(
        "remove_param",
        seen(
            "remove_param",
            c.call("remove_param", &["a", "b"], (5u32, 6u32)).await,
            "5 6".to_string(),
        ),
    );
    row(
        "rename_param",
        seen(
            "rename_param",
            c.call("rename_param", &["count"], (5u32,)).await,
            "5".to_string(),
        ),
    );
    row(
        "reorder_params",
        seen(
            "reorder_params",
            c.call(
                "reorder_params",
                &["from", "to"],
                ("a".to_string(), "b".to_string()),
            )
            .await,
            "from a to b".to_string(),
        ),
    );
    row(
        "change_result",
        seen(
            "change_result",
            c.call("change_result", &["n"], (5u32,)).await,
            5u32,
        ),
    );
    row(
        "add_error_variant",
        seen(
            "add_error_variant",
            c.call_fallible::<_, u32, v1::Fault>("add_error_variant", &["fail"], (true,))
                .await,
            Err(v1::Fault::NotFound),
        ),
    );
    row(
        "rename_type",
        seen(
            "rename_type",
            c.call("rename_type", &["order"], (order.clone(),)).await,
            order.clone(),
        ),
    );
    row(
        "newtype_wrap",
        seen(
            "newtype_wrap",
            c.call("newtype_wrap", &["id"], (9u64,)).await,
            "9".to_string(),
        ),
    );
    row(
        "watch",
        seen(
            "watch",
            c.stream("watch", &["count"], (2u32,)).await,
            vec![v1::Event { seq: 0 }, v1::Event { seq: 1 }],
        ),
    );
    if let Caller::Native { client, schema } = c {
        let method = Method {
            params: &[],
            schema: Some(*schema),
            ..Method::new(SERVICE, "upload")
        };
        let items = Streaming::iter([v1::Event { seq: 1 }]);
        let got = client
            .call_client_stream::<_, v1::Event, u32>(&method, &(), items)
            .await
            .map_err(typed);
        row("upload", seen("upload", got, 1));
    }
    row(
        "removed_method",
        seen(
            "removed_method",
            c.call("removed_method", &[], ()).await,
            "v1".to_string(),
        ),
    );
    rows
}

/// The calls of v2's clients to v1's servers.
async fn new_client_old_server(c: &Caller) -> Vec<(&'static str, Seen)> {
    let mut rows = Vec::new();
    let mut row = |name: &'static str, seen: Seen| rows.push((name, seen));
    let order = v2::Order { id: 7, qty: 3 };
    row(
        "unchanged",
        seen(
            "unchanged",
            c.call("unchanged", &["order"], (order.clone(),)).await,
            order,
        ),
    );
    // The old server does not know `note`: it is dropped there, and the answer reads
    // it as its default. The rest keeps its meaning.
    let noted = v2::Noted {
        id: 7,
        qty: 3,
        note: "gift".into(),
    };
    let got: Result<v2::Noted, String> = c.call("add_field", &["order"], (noted,)).await;
    row(
        "add_field",
        seen(
            "add_field",
            got,
            v2::Noted {
                id: 7,
                qty: 3,
                note: String::new(),
            },
        ),
    );
    let prioritised = v2::Prioritised {
        id: 7,
        qty: 3,
        priority: 1,
    };
    row(
        "add_required_field",
        seen(
            "add_required_field",
            c.call("add_required_field", &["order"], (prioritised.clone(),))
                .await,
            prioritised,
        ),
    );
    let slim = v2::Slim { id: 1 };
    row(
        "remove_field",
        seen(
            "remove_field",
            c.call("remove_field", &["order"], (slim.clone(),)).await,
            slim,
        ),
    );
    let renamed = v2::Renamed { id: 1, quantity: 2 };
    row(
        "rename_field",
        seen(
            "rename_field",
            c.call("rename_field", &["order"], (renamed.clone(),)).await,
            renamed,
        ),
    );
    let pair = v2::Pair { b: 2, a: 1 };
    row(
        "reorder_fields",
        seen(
            "reorder_fields",
            c.call("reorder_fields", &["pair"], (pair.clone(),)).await,
            pair,
        ),
    );
    row(
        "insert_variant",
        seen(
            "insert_variant",
            c.call("insert_variant", &["status"], (v2::Inserted::Pending,))
                .await,
            "Pending".to_string(),
        ),
    );
    row(
        "append_variant",
        seen(
            "append_variant",
            c.call("append_variant", &["status"], (v2::Appended::Closed,))
                .await,
            "Closed".to_string(),
        ),
    );
    let big = u64::from(u32::MAX) + 1;
    row(
        "widen_int",
        seen(
            "widen_int",
            c.call("widen_int", &["n"], (big,)).await,
            big.to_string(),
        ),
    );
    row(
        "total",
        seen(
            "total",
            c.call("total", &["a", "b"], (-1i64, 0i64)).await,
            -1i64,
        ),
    );
    row(
        "total (fits)",
        seen(
            "total (fits)",
            c.call("total", &["a", "b"], (2i64, 3i64)).await,
            5i64,
        ),
    );
    row(
        "wrap_option",
        seen(
            "wrap_option",
            c.call("wrap_option", &["n"], (None::<u32>,)).await,
            "none".to_string(),
        ),
    );
    row(
        "add_optional_param",
        seen(
            "add_optional_param",
            c.call("add_optional_param", &["a", "b"], (5u32, Some(6u32)))
                .await,
            "5 6".to_string(),
        ),
    );
    row(
        "add_required_param",
        seen(
            "add_required_param",
            c.call("add_required_param", &["a", "b"], (5u32, 6u32))
                .await,
            "5 6".to_string(),
        ),
    );
    row(
        "remove_param",
        seen(
            "remove_param",
            c.call("remove_param", &["a"], (5u32,)).await,
            "5".to_string(),
        ),
    );
    row(
        "rename_param",
        seen(
            "rename_param",
            c.call("rename_param", &["n"], (5u32,)).await,
            "5".to_string(),
        ),
    );
    row(
        "reorder_params",
        seen(
            "reorder_params",
            c.call(
                "reorder_params",
                &["to", "from"],
                ("b".to_string(), "a".to_string()),
            )
            .await,
            "from a to b".to_string(),
        ),
    );
    row(
        "change_result",
        seen(
            "change_result",
            c.call("change_result", &["n"], (5u32,)).await,
            "5".to_string(),
        ),
    );
    row(
        "add_error_variant",
        seen(
            "add_error_variant",
            c.call_fallible::<_, u32, v2::Fault>("add_error_variant", &["fail"], (true,))
                .await,
            Err(v2::Fault::NotFound),
        ),
    );
    let purchase = v2::Purchase { id: 1, qty: 2 };
    row(
        "rename_type",
        seen(
            "rename_type",
            c.call("rename_type", &["order"], (purchase.clone(),)).await,
            purchase,
        ),
    );
    row(
        "newtype_wrap",
        seen(
            "newtype_wrap",
            c.call("newtype_wrap", &["id"], (v2::OrderId(9),)).await,
            "9".to_string(),
        ),
    );
    row(
        "watch",
        seen(
            "watch",
            c.stream("watch", &["count"], (2u32,)).await,
            vec![
                v2::Event {
                    seq: 0,
                    source: String::new(),
                },
                v2::Event {
                    seq: 1,
                    source: String::new(),
                },
            ],
        ),
    );
    if let Caller::Native { client, schema } = c {
        let method = Method {
            params: &[],
            schema: Some(*schema),
            ..Method::new(SERVICE, "upload")
        };
        let items = Streaming::iter([v2::Event {
            seq: 1,
            source: "x".into(),
        }]);
        let got = client
            .call_client_stream::<_, v2::Event, u32>(&method, &(), items)
            .await
            .map_err(typed);
        row("upload", seen("upload", got, 1));
    }
    row(
        "added_method",
        seen(
            "added_method",
            c.call("added_method", &[], ()).await,
            "v2".to_string(),
        ),
    );
    rows
}

/// What each row's typed error must name: the difference.
fn names_the_difference(row: &str) -> &'static str {
    match row {
        "add_required_field" => "priority",
        "remove_field" => "legacy",
        "rename_field" => "",
        "insert_variant" => "Pending",
        "append_variant" => "Closed",
        "widen_int" | "total" => "integer",
        "wrap_option" => "null",
        "add_optional_param" | "add_required_param" | "remove_param" => "`b`",
        "rename_param" => "",
        "change_result" => "",
        "add_error_variant" => "Forbidden",
        "upload" => "stream",
        "removed_method" | "added_method" => "",
        _ => "",
    }
}

struct Fleet {
    old: traitrpc_core::ServerHandle<SocketAddr>,
    new: traitrpc_core::ServerHandle<SocketAddr>,
    old_gateway: traitrpc_gateway::GatewayHandle,
    new_gateway: traitrpc_gateway::GatewayHandle,
}

async fn fleet() -> Fleet {
    let old = v1::OrdersServer::new(v1::Shop);
    let new = v2::OrdersServer::new(v2::Shop);
    Fleet {
        old: traitrpc_transport_tcp::serve("127.0.0.1:0", old.clone())
            .await
            .unwrap(),
        new: traitrpc_transport_tcp::serve("127.0.0.1:0", new.clone())
            .await
            .unwrap(),
        old_gateway: traitrpc_gateway::serve("127.0.0.1:0", old.into(), Default::default())
            .await
            .unwrap(),
        new_gateway: traitrpc_gateway::serve("127.0.0.1:0", new.into(), Default::default())
            .await
            .unwrap(),
    }
}

async fn callers(
    native: SocketAddr,
    gateway: SocketAddr,
    schema: fn() -> &'static ServiceSchema,
) -> Vec<Caller> {
    let json = traitrpc_transport_tcp::connect_with_config(
        native,
        ClientConfig::default().codec(PayloadCodec::Json),
    )
    .await
    .unwrap();
    vec![
        Caller::Native {
            client: traitrpc_transport_tcp::connect(native)
                .await
                .unwrap()
                .into(),
            schema,
        },
        Caller::JsonCodec(JsonClient::new(json).unwrap()),
        Caller::Gateway(format!("http://{gateway}")),
    ]
}

/// Checks what one transport's calls did against the checker's verdicts.
fn check_rows(
    direction: &str,
    caller: &Caller,
    rows: Vec<(&'static str, Seen)>,
    verdicts: &dyn Fn(&str) -> Verdict,
) {
    for (row, seen) in rows {
        let method = row.split(' ').next().unwrap();
        let verdict = verdicts(method);
        let context = format!(
            "{direction}, {}, {row}: {seen:?}, checker: {verdict:?}",
            caller.name()
        );
        match (&verdict, &seen) {
            (Verdict::Identical | Verdict::Translated, Seen::Meaning) => {}
            // A breaking change fails for the values it cannot carry; a value it can
            // carry (the "fits" rows) still arrives.
            (Verdict::Breaking(_), Seen::Meaning) if row.ends_with("(fits)") => {}
            (Verdict::Breaking(_), Seen::Typed(message)) => {
                let named = names_the_difference(method);
                assert!(
                    message.contains(named),
                    "{context}: the error does not name `{named}`"
                );
            }
            _ => panic!("{context}: the checker and the wire disagree"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_keeps_its_meaning_or_fails_typed_and_the_checker_agrees() {
    let fleet = fleet().await;
    let changes = diff(
        v1::OrdersClient::service_schema(),
        v2::OrdersClient::service_schema(),
    );
    let old_new = |m: &str| changes.method(m).unwrap().old_client_new_server.clone();
    let new_old = |m: &str| changes.method(m).unwrap().new_client_old_server.clone();

    let to_new = callers(
        fleet.new.local_addr(),
        fleet.new_gateway.local_addr(),
        v1::OrdersClient::service_schema,
    )
    .await;
    for caller in &to_new {
        let rows = old_client_new_server(caller).await;
        check_rows("old client -> new server", caller, rows, &old_new);
    }
    let to_old = callers(
        fleet.old.local_addr(),
        fleet.old_gateway.local_addr(),
        v2::OrdersClient::service_schema,
    )
    .await;
    for caller in &to_old {
        let rows = new_client_old_server(caller).await;
        check_rows("new client -> old server", caller, rows, &new_old);
    }

    fleet.old.shutdown().await;
    fleet.new.shutdown().await;
}

#[test]
fn the_checker_classifies_every_change() {
    let changes = diff(
        v1::OrdersClient::service_schema(),
        v2::OrdersClient::service_schema(),
    );
    let verdict = |m: &str| {
        let c = changes.method(m).unwrap_or_else(|| panic!("{m}"));
        (
            short(&c.old_client_new_server),
            short(&c.new_client_old_server),
        )
    };
    use Short::*;
    for (method, want) in [
        ("unchanged", (Identical, Identical)),
        ("rename_type", (Identical, Identical)),
        ("add_field", (Translated, Translated)),
        ("add_required_field", (Breaking, Breaking)),
        ("remove_field", (Breaking, Breaking)),
        ("rename_field", (Breaking, Breaking)),
        ("reorder_fields", (Translated, Translated)),
        ("insert_variant", (Translated, Breaking)),
        ("append_variant", (Translated, Breaking)),
        ("widen_int", (Translated, Breaking)),
        ("total", (Breaking, Breaking)),
        ("wrap_option", (Translated, Breaking)),
        ("add_optional_param", (Translated, Breaking)),
        ("add_required_param", (Breaking, Breaking)),
        ("remove_param", (Breaking, Breaking)),
        ("rename_param", (Breaking, Breaking)),
        ("reorder_params", (Translated, Translated)),
        ("change_result", (Breaking, Breaking)),
        ("add_error_variant", (Breaking, Translated)),
        ("newtype_wrap", (Translated, Translated)),
        ("watch", (Translated, Translated)),
        ("upload", (Breaking, Breaking)),
        ("removed_method", (Breaking, Identical)),
        ("added_method", (Identical, Breaking)),
    ] {
        assert_eq!(
            verdict(method),
            want,
            "{method}: {:#?}",
            changes.method(method)
        );
    }
}

#[derive(Debug, PartialEq)]
enum Short {
    Identical,
    Translated,
    Breaking,
}

fn short(v: &Verdict) -> Short {
    match v {
        Verdict::Identical => Short::Identical,
        Verdict::Translated => Short::Translated,
        Verdict::Breaking(_) => Short::Breaking,
    }
}

/// A server that does not announce its fingerprints sends an empty block: a client of the
/// other version then cannot tell, and its call goes in bincode, as before version 6 (the
/// cost `ServerConfig::announce_fingerprints(false)` documents).
#[tokio::test]
async fn a_server_that_hides_its_fingerprints_gets_bincode() {
    let server = traitrpc_transport_tcp::serve_with_config(
        "127.0.0.1:0",
        v2::OrdersServer::new(v2::Shop),
        traitrpc_core::ServerConfig::default().announce_fingerprints(false),
    )
    .await
    .unwrap();
    let old = v1::OrdersClient::new(
        traitrpc_transport_tcp::connect(server.local_addr())
            .await
            .unwrap(),
    );
    // In bincode a v1 `Pair { a: 1, b: 2 }` is read by v2 as `Pair { b: 1, a: 2 }`, and
    // echoed back position by position: the same bytes, so the round trip hides it. The
    // inserted variant does not hide: v1's `Suspended` (index 1) is v2's `Pending`.
    assert_eq!(
        old.insert_variant(v1::Status::Suspended).await.unwrap(),
        "Pending"
    );
    server.shutdown().await;
}
