//! The `traitrpc` binary against a real server in this process: a small service served on
//! the native protocol and through the HTTP gateway (both on 127.0.0.1, any free port),
//! called by running the built binary as a child process and reading its standard
//! output, standard error and exit status. Every child is bounded by a timeout; nothing
//! waits by sleeping (the stream test opens a gate when it has read the first item).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use traitrpc::gateway::{self, GatewayConfig, GatewayHandle};
use traitrpc::health::ServingStatus;
use traitrpc::{Router, RpcError, ServerHandle, Streaming};

/// How long one run of the binary may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

#[traitrpc::service]
pub trait Calculator {
    /// `a + b`.
    #[idempotent]
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `a / b`, or an error for `b == 0`.
    async fn divide(&self, a: i64, b: i64) -> Result<i64, String>;
    /// `1, 2, ..., to`.
    async fn count(&self, to: u32) -> Streaming<u32>;
    /// `1`, then (once the test opens the gate) `2`.
    async fn gated(&self) -> Streaming<u32>;
    /// `1`, then the stream fails.
    async fn breaks(&self) -> Streaming<u32>;
    /// Answers after `ms` milliseconds.
    async fn sleep(&self, ms: u64) -> u64;
    /// The caller's metadata value for `key`.
    async fn metadata(&self, key: String) -> Option<String>;
}

struct Calc {
    /// Permits for `gated`'s second item.
    gate: Arc<Semaphore>,
}

impl Calculator for Calc {
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
    async fn count(&self, to: u32) -> Streaming<u32> {
        Streaming::iter(1..=to)
    }
    async fn gated(&self) -> Streaming<u32> {
        let gate = Arc::clone(&self.gate);
        Streaming::from_stream(futures::stream::unfold(1, move |n| {
            let gate = Arc::clone(&gate);
            async move {
                match n {
                    1 => Some((1, 2)),
                    2 => {
                        gate.acquire().await.expect("the gate stays open").forget();
                        Some((2, 3))
                    }
                    _ => None,
                }
            }
        }))
    }
    async fn breaks(&self) -> Streaming<u32> {
        Streaming::from_results(futures::stream::iter([
            Ok(1),
            Err(RpcError::Unavailable {
                reason: "the sensor was unplugged".into(),
            }),
        ]))
    }
    async fn sleep(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn metadata(&self, key: String) -> Option<String> {
        let context = traitrpc::context::current()?;
        context.metadata().get_str(&key).map(str::to_owned)
    }
}

/// The service on both protocols.
struct Servers {
    native: ServerHandle<std::net::SocketAddr>,
    http: GatewayHandle,
    gate: Arc<Semaphore>,
}

impl Servers {
    async fn start() -> Servers {
        let gate = Arc::new(Semaphore::new(0));
        let router = Router::from(CalculatorServer::new(Calc {
            gate: Arc::clone(&gate),
        }));
        let native = traitrpc::serve("127.0.0.1:0", router.clone())
            .await
            .expect("native server");
        let http = gateway::serve("127.0.0.1:0", router, GatewayConfig::default())
            .await
            .expect("gateway");
        Servers { native, http, gate }
    }

    /// ADDR of the native server.
    fn native(&self) -> String {
        self.native.local_addr().to_string()
    }

    /// ADDR of the gateway.
    fn http(&self) -> String {
        format!("http://{}", self.http.local_addr())
    }

    /// Both ADDRs.
    fn both(&self) -> [String; 2] {
        [self.native(), self.http()]
    }
}

/// What a run of the binary printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Its standard output as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "{self:?}");
        assert_eq!(self.stderr, "", "{self:?}");
        self
    }

    #[track_caller]
    fn assert_failed(&self, stderr_has: &str) -> &Self {
        assert_eq!(self.code, 1, "{self:?}");
        assert!(self.stderr.starts_with("error: "), "{self:?}");
        assert!(self.stderr.contains(stderr_has), "{stderr_has:?}: {self:?}");
        self
    }
}

fn command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_traitrpc"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `traitrpc ARGS` to its end.
async fn traitrpc(args: &[&str]) -> Run {
    let output = tokio::time::timeout(RUN_LIMIT, command(args).output())
        .await
        .unwrap_or_else(|_| panic!("traitrpc {args:?} did not finish within {RUN_LIMIT:?}"))
        .expect("the binary runs");
    Run {
        code: output.status.code().expect("an exit status"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// Runs `traitrpc ARGS` with `input` on its standard input.
async fn rrpc_with_input(args: &[&str], input: &str) -> Run {
    let mut command = command(args);
    command.stdin(Stdio::piped());
    let mut child = command.spawn().expect("the binary runs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("traitrpc finished in time")
        .expect("the binary runs");
    Run {
        code: output.status.code().expect("an exit status"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// The line of `text` that starts with `start`, after it, trimmed.
fn rest_of_line<'a>(text: &'a str, start: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(start))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_explains_every_command_and_usage_errors_exit_2() {
    let help = traitrpc(&["--help"]).await;
    help.assert_ok();
    for needle in [
        "list",
        "describe",
        "call",
        "health",
        "schema",
        "Examples:",
        "Exit status:",
    ] {
        assert!(help.stdout.contains(needle), "{needle}: {}", help.stdout);
    }
    for command in [
        "list",
        "describe",
        "call",
        "health",
        "schema",
        "schema export",
        "schema diff",
    ] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let help = traitrpc(&args).await;
        help.assert_ok();
        assert!(
            help.stdout.contains("Examples:")
                && help.stdout.contains(&format!("traitrpc {command}")),
            "{command}: {}",
            help.stdout
        );
    }
    let call_help = traitrpc(&["call", "--help"]).await;
    for option in [
        "--metadata",
        "-H",
        "--timeout",
        "--stream",
        "[default: 30s]",
    ] {
        assert!(call_help.stdout.contains(option), "{option}");
    }

    // clap's usage errors and ours are all 2.
    for args in [
        &[][..],
        &["frobnicate"],
        &["list"],
        &["list", "localhost"],
        &["list", "https://127.0.0.1:1"],
        &["call", "127.0.0.1:1", "Calculator"],
        &["call", "--timeout", "soon", "127.0.0.1:1", "Calculator.add"],
        &["call", "-H", "novalue", "127.0.0.1:1", "Calculator.add"],
        &["call", "127.0.0.1:1", "Calculator.add", "{a: 1}"],
        &["schema"],
        &["schema", "export", "127.0.0.1:1"],
        &["schema", "diff", "old.json"],
        &["schema", "diff", "-", "-"],
        &[
            "schema",
            "diff",
            "/nonexistent/old.json",
            "/nonexistent/new.json",
        ],
    ] {
        let run = traitrpc(args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.contains("error"), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}: {run:?}");
    }
    let version = traitrpc(&["--version"]).await;
    version.assert_ok();
    assert!(version.stdout.starts_with("traitrpc "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_one_line_per_method() {
    let servers = Servers::start().await;
    for addr in servers.both() {
        let run = traitrpc(&["list", &addr]).await;
        run.assert_ok();
        let out = &run.stdout;
        assert_eq!(
            rest_of_line(out, "Calculator.add(a, b) "),
            Some("unary idempotent"),
            "{out}"
        );
        assert_eq!(rest_of_line(out, "Calculator.divide(a, b) "), Some("unary"));
        assert_eq!(
            rest_of_line(out, "Calculator.count(to) "),
            Some("server_stream")
        );
        assert_eq!(
            rest_of_line(out, "Calculator.gated() "),
            Some("server_stream")
        );
        assert_eq!(rest_of_line(out, "Calculator.sleep(ms) "), Some("unary"));
        assert_eq!(
            rest_of_line(out, "Calculator.metadata(key) "),
            Some("unary")
        );
        let calculator_lines = out.lines().filter(|l| l.starts_with("Calculator.")).count();
        assert_eq!(calculator_lines, 7, "{out}");
    }
    // The native server also hosts reflection and health.
    let native = traitrpc(&["list", &servers.native()]).await;
    assert_eq!(
        rest_of_line(
            &native.stdout,
            "rpc.reflection.v1.Reflection.describe(service) "
        ),
        Some("unary idempotent"),
        "{}",
        native.stdout
    );
    assert_eq!(
        rest_of_line(&native.stdout, "rpc.health.v1.Health.check(service) "),
        Some("unary idempotent")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_prints_the_schemas() {
    let servers = Servers::start().await;
    for addr in servers.both() {
        let run = traitrpc(&["describe", &addr, "Calculator.add"]).await;
        run.assert_ok();
        let out = &run.stdout;
        assert!(
            out.starts_with("Calculator.add(a, b)  unary idempotent\n  arguments:\n"),
            "{out}"
        );
        assert!(out.contains("\"type\": \"integer\""), "{out}");
        assert!(out.contains("\"required\": ["), "{out}");
        assert!(out.contains("  error: none"), "{out}");

        let run = traitrpc(&["describe", &addr, "Calculator/divide"]).await;
        run.assert_ok();
        let error = run
            .stdout
            .split("  error:")
            .nth(1)
            .expect("an error schema");
        assert!(error.contains("\"type\": \"string\""), "{}", run.stdout);

        // The whole service: every method, streams' items described as such.
        let run = traitrpc(&["describe", &addr, "Calculator"]).await;
        run.assert_ok();
        assert_eq!(
            run.stdout.matches("\n  arguments:").count(),
            7,
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains("Calculator.count(to)  server_stream\n"));
        assert!(run.stdout.contains("  result (each item):"));

        // As JSON, the server's own description.
        let run = traitrpc(&["describe", "--json", &addr, "Calculator.add"]).await;
        run.assert_ok();
        let add = run.json();
        assert_eq!(add["name"], "add");
        assert_eq!(add["params"], json!(["a", "b"]));
        assert_eq!(add["kind"], "unary");
        assert_eq!(add["result"]["type"], "integer");

        traitrpc(&["describe", &addr, "Nope"])
            .await
            .assert_failed("no service `Nope`");
        traitrpc(&["describe", &addr, "Calculator.nope"])
            .await
            .assert_failed("`Calculator` has no method `nope`\nhint: its methods are add, divide");
    }
    // A service whose name has dots.
    let run = traitrpc(&["describe", &servers.native(), "rpc.health.v1.Health"]).await;
    run.assert_ok();
    assert!(run
        .stdout
        .starts_with("rpc.health.v1.Health.check(service)  unary idempotent"));
    let run = traitrpc(&["describe", &servers.native(), "rpc.health.v1.Health.watch"]).await;
    run.assert_ok();
    assert!(run
        .stdout
        .starts_with("rpc.health.v1.Health.watch(service)  server_stream"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_the_result_as_json() {
    let servers = Servers::start().await;
    for addr in servers.both() {
        let run = traitrpc(&["call", &addr, "Calculator.add", r#"{"a": 1, "b": 2}"#]).await;
        run.assert_ok();
        assert_eq!(run.json(), json!(3));
        assert_eq!(run.stdout, "3\n");

        let run = traitrpc(&["call", &addr, "Calculator/divide", r#"{"a": 7, "b": 2}"#]).await;
        run.assert_ok();
        assert_eq!(run.json(), json!(3));

        let run = rrpc_with_input(
            &["call", &addr, "Calculator.add", "-"],
            r#"{"a": 40, "b": 2}"#,
        )
        .await;
        run.assert_ok();
        assert_eq!(run.json(), json!(42));

        // No arguments: {}; an Option result.
        let run = traitrpc(&["call", &addr, "Calculator.metadata", r#"{"key": "absent"}"#]).await;
        run.assert_ok();
        assert_eq!(run.json(), Value::Null);
    }
    // Arguments in parameter order: the native protocol's JSON codec takes arrays; for
    // the gateway, which takes objects only, they are named from its listing.
    for addr in servers.both() {
        let run = traitrpc(&["call", &addr, "Calculator.add", "[20, 22]"]).await;
        run.assert_ok();
        assert_eq!(run.json(), json!(42), "{addr}");
        let run = traitrpc(&["call", "--stream", &addr, "Calculator.count", "[2]"]).await;
        run.assert_ok();
        assert_eq!(run.stdout, "1\n2\n", "{addr}");
    }
    // The built-in services are called the same way.
    let run = traitrpc(&[
        "call",
        "--compact",
        &servers.native(),
        "rpc.reflection.v1.Reflection.describe",
        r#"{"service": "Calculator"}"#,
    ])
    .await;
    run.assert_ok();
    assert_eq!(run.stdout.lines().count(), 1);
    assert_eq!(run.json()["name"], "Calculator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_errors_are_readable_and_exit_1() {
    let servers = Servers::start().await;
    for addr in servers.both() {
        // The method's own error.
        let run = traitrpc(&["call", &addr, "Calculator.divide", r#"{"a": 1, "b": 0}"#]).await;
        run.assert_failed("");
        assert_eq!(
            run.stderr, "error: the method returned an error: \"division by zero\"\n",
            "{addr}"
        );
        assert_eq!(run.stdout, "");

        // No such method, no such service.
        let run = traitrpc(&["call", &addr, "Calculator.nope"]).await;
        run.assert_failed("nope");
        assert!(
            run.stderr
                .contains("hint: `Calculator` has the methods add, divide, count"),
            "{run:?}"
        );
        let run = traitrpc(&["call", &addr, "Nope.add"]).await;
        run.assert_failed("Nope");
        assert!(run.stderr.contains("hint: `traitrpc list"), "{run:?}");

        // Valid JSON, wrong arguments: the server refuses them.
        let wrong = traitrpc(&["call", &addr, "Calculator.add", r#"{"a": "one", "b": 2}"#]).await;
        let expected = if addr.starts_with("http") {
            "error: invalid argument: "
        } else {
            "error: the server could not decode the arguments: "
        };
        wrong.assert_failed(expected);
        let unknown = traitrpc(&[
            "call",
            &addr,
            "Calculator.add",
            r#"{"a": 1, "b": 2, "c": 3}"#,
        ])
        .await;
        unknown.assert_failed("`c`");

        // Malformed JSON is a usage error: nothing is sent.
        let run = traitrpc(&["call", &addr, "Calculator.add", r#"{"a": 1,"#]).await;
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run
            .stderr
            .starts_with("error: the arguments are not valid JSON"));
        let run = rrpc_with_input(&["call", &addr, "Calculator.add", "-"], "nope").await;
        assert_eq!(run.code, 2, "{run:?}");
    }
    // Nobody listening.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let closed = format!("127.0.0.1:{port}");
    traitrpc(&["call", &closed, "Calculator.add"])
        .await
        .assert_failed("failed to connect");
    traitrpc(&["call", &format!("http://{closed}"), "Calculator.add"])
        .await
        .assert_failed("failed to connect");
    // The wrong protocol for the port.
    let gateway_as_native = servers.http().trim_start_matches("http://").to_string();
    traitrpc(&["list", &gateway_as_native])
        .await
        .assert_failed("hint: if");
    traitrpc(&["list", &format!("http://{}", servers.native())])
        .await
        .assert_failed("hint: if it is a native traitrpc server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_takes_key_value_arguments() {
    let servers = Servers::start().await;
    for addr in servers.both() {
        let run = traitrpc(&["call", &addr, "Calculator.add", "a=1", "b=2"]).await;
        run.assert_ok();
        assert_eq!(run.json(), json!(3), "{addr}");
        // KEY:=JSON, and options after the words.
        let run = traitrpc(&["call", &addr, "Calculator.add", "a:=40", "b=2", "--compact"]).await;
        run.assert_ok();
        assert_eq!(run.stdout, "42\n", "{addr}");
        // A value that is not JSON is a string; a quoted one is too.
        let run = traitrpc(&[
            "call",
            "-H",
            "x-user=alice",
            &addr,
            "Calculator.metadata",
            "key=x-user",
        ])
        .await;
        run.assert_ok();
        assert_eq!(run.json(), json!("alice"), "{addr}");
        let run = traitrpc(&["call", &addr, "Calculator.metadata", r#"key="absent""#]).await;
        run.assert_ok();
        assert_eq!(run.json(), Value::Null, "{addr}");
        // One word is enough; a server stream takes them too.
        let run = traitrpc(&["call", &addr, "Calculator.count", "to=2"]).await;
        run.assert_ok();
        assert_eq!(run.stdout, "1\n2\n", "{addr}");
        // The server checks them as it checks JSON: a missing parameter is named.
        traitrpc(&["call", &addr, "Calculator.add", "a=1"])
            .await
            .assert_failed("missing parameter `b`");
        traitrpc(&["call", &addr, "Calculator.add", "a=one", "b=2"])
            .await
            .assert_failed("`a`");
    }
    let help = traitrpc(&["call", "--help"]).await;
    help.assert_ok();
    for needle in [
        "KEY=VALUE",
        "KEY:=JSON",
        "traitrpc call 127.0.0.1:7070 Calculator.add a=1 b=2",
    ] {
        assert!(help.stdout.contains(needle), "{needle}: {}", help.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_key_value_arguments_are_usage_errors_naming_the_word() {
    // Usage errors: nothing is sent, so nobody needs to listen.
    for (args, expected) in [
        (
            &["a=1", "a=2"][..],
            "error: `a=2`: the parameter `a` is given twice",
        ),
        (&["a=1", "b"], "error: `b` is not KEY=VALUE"),
        (
            &[r#"{"a": 1}"#, "b=2"],
            r#"error: `{"a": 1}` is not KEY=VALUE"#,
        ),
        (&["-", "b=2"], "error: `-` is not KEY=VALUE"),
        (
            &["a:=one", "b=2"],
            "error: `a:=one`: the value after `:=` is not valid JSON",
        ),
        (&["=1"], "error: `=1` has no parameter name"),
    ] {
        let mut command = vec!["call", "127.0.0.1:1", "Calculator.add"];
        command.extend(args);
        let run = traitrpc(&command).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(expected), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}: {run:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streams_print_one_json_line_per_item() {
    let servers = Servers::start().await;
    for addr in servers.both() {
        let run = traitrpc(&["call", &addr, "Calculator.count", r#"{"to": 3}"#]).await;
        run.assert_ok();
        assert_eq!(run.stdout, "1\n2\n3\n", "{addr}");
        // Forced, without reflection.
        let run = traitrpc(&[
            "call",
            "--stream",
            &addr,
            "Calculator.count",
            r#"{"to": 2}"#,
        ])
        .await;
        run.assert_ok();
        assert_eq!(run.stdout, "1\n2\n");
        let run = traitrpc(&["call", &addr, "Calculator.count", r#"{"to": 0}"#]).await;
        run.assert_ok();
        assert_eq!(run.stdout, "");

        // A stream that fails after its first item: the item, then the error.
        let run = traitrpc(&["call", &addr, "Calculator.breaks"]).await;
        run.assert_failed("the sensor was unplugged");
        assert_eq!(run.stdout, "1\n", "{addr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_items_are_printed_as_they_arrive() {
    let servers = Servers::start().await;
    for addr in servers.both() {
        let mut child = command(&["call", &addr, "Calculator.gated"])
            .spawn()
            .expect("the binary runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        // The first item is printed while the second is held back by the gate.
        let mut first = String::new();
        tokio::time::timeout(RUN_LIMIT, stdout.read_line(&mut first))
            .await
            .expect("the first item in time")
            .expect("read stdout");
        assert_eq!(first, "1\n", "{addr}");
        servers.gate.add_permits(1);
        let mut rest = String::new();
        tokio::time::timeout(RUN_LIMIT, stdout.read_to_string(&mut rest))
            .await
            .expect("the rest in time")
            .expect("read stdout");
        assert_eq!(rest, "2\n", "{addr}");
        let status = tokio::time::timeout(RUN_LIMIT, child.wait())
            .await
            .expect("exit in time")
            .expect("exit status");
        assert!(status.success(), "{addr}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_the_calls_deadline() {
    let servers = Servers::start().await;
    for addr in servers.both() {
        let started = Instant::now();
        let run = traitrpc(&[
            "call",
            "--timeout",
            "300ms",
            &addr,
            "Calculator.sleep",
            r#"{"ms": 60000}"#,
        ])
        .await;
        run.assert_failed("error: deadline exceeded: no answer within 300ms (--timeout)");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{addr}: {:?}",
            started.elapsed()
        );
        // Within it, the answer.
        let run = traitrpc(&[
            "call",
            "--timeout",
            "1m",
            &addr,
            "Calculator.sleep",
            r#"{"ms": 1}"#,
        ])
        .await;
        run.assert_ok();
        assert_eq!(run.json(), json!(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_reaches_the_handler() {
    let servers = Servers::start().await;
    for addr in servers.both() {
        let run = traitrpc(&[
            "call",
            "--metadata",
            "x-user=alice",
            "-H",
            "x-team: blue=green",
            &addr,
            "Calculator.metadata",
            r#"{"key": "x-user"}"#,
        ])
        .await;
        run.assert_ok();
        assert_eq!(run.json(), json!("alice"), "{addr}");
        let run = traitrpc(&[
            "call",
            "-H",
            "x-team: blue=green",
            &addr,
            "Calculator.metadata",
            r#"{"key": "x-team"}"#,
        ])
        .await;
        run.assert_ok();
        assert_eq!(run.json(), json!("blue=green"), "{addr}");
    }
    // A header name HTTP cannot carry is a usage error there.
    let run = traitrpc(&["call", "-H", "bad key=1", &servers.http(), "Calculator.add"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("not a valid HTTP header name"),
        "{run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_only_when_serving() {
    let servers = Servers::start().await;
    let native = servers.native();
    for service in [None, Some("Calculator")] {
        let mut args = vec!["health", native.as_str()];
        args.extend(service);
        let run = traitrpc(&args).await;
        run.assert_ok();
        assert_eq!(run.stdout, "Serving\n");
    }
    let run = traitrpc(&["health", &native, "Nope"]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (1, "ServiceUnknown\n"),
        "{run:?}"
    );
    servers
        .native
        .health()
        .set("Calculator", ServingStatus::NotServing);
    let run = traitrpc(&["health", &native, "Calculator"]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (1, "NotServing\n"),
        "{run:?}"
    );

    // The gateway has no health service of its own: it is Serving if it answers and
    // lists the service, and says so.
    let http = servers.http();
    let run = traitrpc(&["health", &http]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "Serving\n"), "{run:?}");
    assert!(run
        .stderr
        .starts_with("note: the gateway hosts no rpc.health.v1.Health"));
    let run = traitrpc(&["health", &http, "Calculator"]).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "Serving\n"), "{run:?}");
    let run = traitrpc(&["health", &http, "Nope"]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (1, "ServiceUnknown\n"),
        "{run:?}"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_sockets_speak_the_native_protocol() {
    let path = std::env::temp_dir().join(format!("traitrpc-cli-test-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = traitrpc::unix::serve(
        &path,
        CalculatorServer::new(Calc {
            gate: Arc::new(Semaphore::new(0)),
        }),
    )
    .await
    .expect("unix server");
    let addr = format!("unix:{}", path.display());
    let run = traitrpc(&["call", &addr, "Calculator.add", r#"{"a": 2, "b": 3}"#]).await;
    run.assert_ok();
    assert_eq!(run.json(), json!(5));
    let run = traitrpc(&["list", &addr]).await;
    run.assert_ok();
    assert!(run.stdout.starts_with("Calculator.add(a, b)"), "{run:?}");
    server.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

/// Three versions of one service, `shop.Orders`, as three releases of a crate would have
/// it: the deployed one, a compatible change (a field with a default, a new method) and
/// a breaking one (a parameter's type). Only their schemas are used, and v1's server.
#[allow(dead_code)]
mod orders_v1 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Order {
        pub id: u64,
        pub qty: u32,
    }

    #[traitrpc::service(name = "shop.Orders")]
    pub trait Orders {
        /// Places an order; its number.
        async fn place(&self, order: Order) -> u64;
        /// Cancels order `id`; whether there was one.
        async fn cancel(&self, id: u64) -> bool;
    }

    pub struct Shop;

    impl Orders for Shop {
        async fn place(&self, order: Order) -> u64 {
            order.id
        }
        async fn cancel(&self, _id: u64) -> bool {
            false
        }
    }
}

/// `Order` has a new field with a default, and there is a new method.
#[allow(dead_code)]
mod orders_v2_compatible {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Order {
        pub id: u64,
        pub qty: u32,
        #[serde(default)]
        pub note: String,
    }

    #[traitrpc::service(name = "shop.Orders")]
    pub trait Orders {
        async fn place(&self, order: Order) -> u64;
        async fn cancel(&self, id: u64) -> bool;
        async fn track(&self, id: u64) -> String;
    }
}

/// `cancel` takes an `i64` instead of a `u64`.
#[allow(dead_code)]
mod orders_v2_breaking {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Order {
        pub id: u64,
        pub qty: u32,
    }

    #[traitrpc::service(name = "shop.Orders")]
    pub trait Orders {
        async fn place(&self, order: Order) -> u64;
        async fn cancel(&self, id: i64) -> bool;
    }
}

/// A directory of its own for one test's files, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("traitrpc-cli-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }

    /// Writes `text` to the file `name` in it; its path.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a file");
        path.to_str().expect("a UTF-8 path").to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_export_prints_the_snapshot_file_byte_for_byte() {
    let servers = Servers::start().await;
    let expected = CalculatorClient::service_schema().to_snapshot();
    let run = traitrpc(&["schema", "export", &servers.native(), "Calculator"]).await;
    run.assert_ok();
    assert_eq!(run.stdout, expected);
    assert_eq!(
        traitrpc::schema::ServiceSchema::from_snapshot(&run.stdout).unwrap(),
        *CalculatorClient::service_schema()
    );
    // The built-in services have snapshots too.
    let run = traitrpc(&[
        "schema",
        "export",
        &servers.native(),
        "rpc.health.v1.Health",
    ])
    .await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        traitrpc::health::HealthClient::service_schema().to_snapshot()
    );
    traitrpc(&["schema", "export", &servers.native(), "Nope"])
        .await
        .assert_failed("the server hosts no service `Nope`\nhint: `traitrpc list");

    // Over HTTP, from a gateway of the native server's router (with its reflection
    // service); a gateway of the bare router has none, and the error says what to do.
    let router = Router::from(CalculatorServer::new(Calc {
        gate: Arc::new(Semaphore::new(0)),
    }));
    let router = traitrpc::Server::new(router).router().clone();
    let gateway = gateway::serve("127.0.0.1:0", router, GatewayConfig::default())
        .await
        .expect("gateway");
    let http = format!("http://{}", gateway.local_addr());
    let run = traitrpc(&["schema", "export", &http, "Calculator"]).await;
    run.assert_ok();
    assert_eq!(run.stdout, expected);
    traitrpc(&["schema", "export", &http, "Nope"])
        .await
        .assert_failed("no service `Nope`");
    traitrpc(&["schema", "export", &servers.http(), "Calculator"])
        .await
        .assert_failed("hint: the gateway serves no reflection service");

    // A service of another name (with dots), exported and compared with a later version.
    let shop = traitrpc::serve("127.0.0.1:0", orders_v1::OrdersServer::new(orders_v1::Shop))
        .await
        .expect("native server");
    let shop_addr = shop.local_addr().to_string();
    let run = traitrpc(&["schema", "export", &shop_addr, "shop.Orders"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        orders_v1::OrdersClient::service_schema().to_snapshot()
    );
    let dir = TempDir::new("export");
    let breaking = dir.write(
        "breaking.json",
        &orders_v2_breaking::OrdersClient::service_schema().to_snapshot(),
    );
    let run = rrpc_with_input(&["schema", "diff", "-", &breaking], &run.stdout).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run
        .stdout
        .contains("cancel: old client -> new server: BREAKING"));
    shop.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_diff_exits_0_unless_deployed_clients_break() {
    let dir = TempDir::new("diff");
    let v1 = dir.write(
        "v1.json",
        &orders_v1::OrdersClient::service_schema().to_snapshot(),
    );
    let v1_again = dir.write(
        "v1-again.json",
        &orders_v1::OrdersClient::service_schema().to_snapshot(),
    );
    let compatible = dir.write(
        "compatible.json",
        &orders_v2_compatible::OrdersClient::service_schema().to_snapshot(),
    );
    let breaking = dir.write(
        "breaking.json",
        &orders_v2_breaking::OrdersClient::service_schema().to_snapshot(),
    );

    // Identical.
    let run = traitrpc(&["schema", "diff", &v1, &v1_again]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "no differences: every method is identical on the wire\n\
         verdict: identical: nothing changes on the wire\n"
    );
    traitrpc(&["schema", "diff", "--strict", &v1, &v1_again])
        .await
        .assert_ok();

    // A field with a default: translated both ways; the new method only breaks new
    // clients against old servers, which --strict fails on.
    let run = traitrpc(&["schema", "diff", &v1, &compatible]).await;
    run.assert_ok();
    let out = &run.stdout;
    assert!(
        out.contains("place: old client -> new server: translated by name"),
        "{out}"
    );
    assert!(
        out.contains("place: new client -> old server: translated by name"),
        "{out}"
    );
    assert!(
        out.contains("track: new client -> old server: BREAKING\n    - the method is new"),
        "{out}"
    );
    assert!(!out.contains("cancel"), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("verdict: compatible: clients built from OLD keep working"),
        "{out}"
    );
    let run = traitrpc(&["schema", "diff", "--strict", &v1, &compatible]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "");
    assert!(
        run.stdout.ends_with(
            "\nverdict: BREAKING (--strict): clients built from NEW break against servers \
             built from OLD\n"
        ),
        "{run:?}"
    );

    // A parameter's type: old clients break.
    let run = traitrpc(&["schema", "diff", &v1, &breaking]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "");
    let out = &run.stdout;
    assert!(
        out.contains("cancel: old client -> new server: BREAKING\n    - parameter `id`"),
        "{out}"
    );
    assert!(!out.contains("place"), "{out}");
    assert!(
        out.ends_with(
            "\nverdict: BREAKING: clients built from OLD break against servers built from NEW\n"
        ),
        "{out}"
    );

    // As JSON: the comparison itself, the same exit status.
    let run = traitrpc(&["schema", "diff", "--json", &v1, &breaking]).await;
    assert_eq!(run.code, 1, "{run:?}");
    let diff = run.json();
    let cancel = diff["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "cancel")
        .expect("cancel is listed");
    assert_eq!(cancel["old_client_new_server"]["verdict"], "breaking");
    let run = traitrpc(&["schema", "diff", "--json", &v1, &compatible]).await;
    run.assert_ok();
    assert_eq!(run.json()["methods"][0]["method"], "place");

    // A snapshot from standard input.
    let snapshot = orders_v1::OrdersClient::service_schema().to_snapshot();
    let run = rrpc_with_input(&["schema", "diff", &v1, "-"], &snapshot).await;
    run.assert_ok();
    assert!(run.stdout.starts_with("no differences"), "{run:?}");

    // Files that are not snapshots are usage errors; snapshots of two services fail.
    let not_json = dir.write("not.json", "{\"service\": ");
    let run = traitrpc(&["schema", "diff", &v1, &not_json]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .starts_with(&format!("error: {not_json} is not a schema snapshot")),
        "{run:?}"
    );
    let missing = format!("{v1}.missing");
    let run = traitrpc(&["schema", "diff", &missing, &v1]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .starts_with(&format!("error: cannot read {missing}")),
        "{run:?}"
    );
    let calculator = dir.write(
        "calculator.json",
        &CalculatorClient::service_schema().to_snapshot(),
    );
    traitrpc(&["schema", "diff", &v1, &calculator])
        .await
        .assert_failed("is a snapshot of `shop.Orders`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_prints_the_exported_proto_of_the_services() {
    let shop = traitrpc::serve("127.0.0.1:0", orders_v1::OrdersServer::new(orders_v1::Shop))
        .await
        .expect("native server");
    let addr = shop.local_addr().to_string();
    let run = traitrpc(&["proto", &addr]).await;
    run.assert_ok();
    let input = traitrpc_proto::ServiceInput {
        schema: orders_v1::OrdersClient::service_schema().clone(),
        idempotent: Default::default(),
    };
    let export = traitrpc_proto::export(&[input]);
    assert_eq!(
        run.stdout,
        traitrpc_proto::to_proto_text(&export.files[0], &export.skipped)
    );
    assert!(run.stdout.contains("package shop;"));
    assert!(run.stdout.contains("service Orders {"));
    assert!(
        !run.stdout.contains("rpc.health"),
        "built-in services are left out"
    );

    let dir = TempDir::new("proto");
    let out = dir.0.join("out");
    let run = traitrpc(&[
        "proto",
        &addr,
        "shop.Orders",
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    run.assert_ok();
    assert_eq!(
        std::fs::read_to_string(out.join("shop.proto")).unwrap(),
        traitrpc_proto::to_proto_text(&export.files[0], &export.skipped)
    );
    traitrpc(&["proto", &addr, "Nope"])
        .await
        .assert_failed("the server hosts no service `Nope`");
    shop.shutdown().await;
}
