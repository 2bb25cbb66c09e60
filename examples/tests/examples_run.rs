//! Every example runs to its end and prints what its doc says: each is started as a real
//! process (built by `cargo test` next to this test), bounded in time, and its output
//! checked for the lines that show it worked.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::example;

/// Runs example `name` (killed after 60 s) and returns its standard output. A failure
/// shows both of its output streams.
fn run(name: &str) -> String {
    let path = example(name);
    assert!(path.exists(), "{} is not built", path.display());
    let mut child = Command::new(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (stdout.join().unwrap(), stderr.join().unwrap());
            panic!("{name} did not finish within 60 s:\n{out}\n--- standard error ---\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = stdout.join().unwrap();
    let err = stderr.join().unwrap();
    assert!(
        status.success(),
        "{name} failed ({status}):\n{out}\n--- standard error ---\n{err}"
    );
    out
}

/// Reads `stream` to its end on a thread of its own (so neither pipe can fill and block
/// the child).
fn drain(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    })
}

fn assert_prints(name: &str, expected: &[&str]) {
    let out = run(name);
    for line in expected {
        assert!(out.contains(line), "{name} did not print {line:?}:\n{out}");
    }
}

#[test]
fn hello() {
    assert_prints("hello", &["Hello, world!"]);
}

#[test]
fn calculator() {
    assert_prints(
        "calculator",
        &[
            "add(1, 2)      = 3",
            "divide(1, 0)   = error: division by zero",
            "total = 9900",
            "server shut down gracefully",
        ],
    );
}

#[test]
fn two_services() {
    assert_prints(
        "two_services",
        &["Greeter.greet   -> Hello, Grace!", "Counter.increment -> 6"],
    );
}

#[test]
fn file_transfer() {
    assert_prints("file_transfer", &["uploaded 64 MiB", "checksum matches"]);
}

#[test]
fn chat() {
    assert_prints(
        "chat",
        &["[bob hears] alice: hi bob", "[alice hears] bob: hi alice"],
    );
}

#[test]
fn secure() {
    assert_prints(
        "secure",
        &[
            "app without token     -> unauthenticated",
            "ops: rotate           -> 42",
            "the server requires a client certificate",
        ],
    );
}

#[test]
fn cluster() {
    assert_prints(
        "cluster",
        &["using a static list of the three addresses", "call 3:"],
    );
}

#[test]
fn auth() {
    assert_prints(
        "auth",
        &[
            "(no token)     -> UNAUTHENTICATED: missing bearer token",
            "mallory-token  -> UNAUTHENTICATED: unknown token",
            "bob-token      -> PERMISSION_DENIED: bob may not read secrets",
            "alice-token    -> the secret is 0000",
        ],
    );
}

#[test]
fn observability() {
    assert_prints(
        "observability",
        &[
            "quote(tea, 3) = 90",
            "rpc_server_call_duration_seconds_count{service=\"Shop\",method=\"quote\",status=\"OK\"}",
            "rpc_client_call_duration_seconds_count{service=\"Pricing\",method=\"price\",target=\"pricing\",status=\"OK\"}",
            "/readyz: 200 OK: serving",
            "/readyz: 503 Service Unavailable: notserving",
        ],
    );
}

#[test]
fn http() {
    assert_prints(
        "http",
        &[
            "native: add(1, 2)    = 3",
            "native JSON: Calculator.add {\"a\":1,\"b\":2} -> 3",
            "-> 200 3",
            "HTTP on the native port: POST /Calculator/add {\"a\":2,\"b\":2} -> 200 4",
            r#"-> 400 {"code":"failed_precondition","details":[{"debug":"division by zero","type":"google.protobuf.StringValue","value":"ChIiZGl2aXNpb24gYnkgemVybyI"}],"error":"division by zero","message":"the method returned an error"}"#,
            r#"-> 400 {"code":"invalid_argument""#,
        ],
    );
}
