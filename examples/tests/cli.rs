//! The `traitrpc` command line (crate `traitrpc-cli`) calls the `http` example, both processes
//! real: over the native protocol's JSON codec, over the gateway, and over HTTP on the
//! native port. `cargo test --workspace` builds the `traitrpc` binary with everything else;
//! a missing binary fails the test with what to build (it never passes unrun).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::target_dir;

/// Runs `traitrpc args...`, bounded in time.
fn traitrpc(binary: &PathBuf, args: &[&str]) -> Output {
    let child = Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start traitrpc");
    let (done, finished) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let output = child.wait_with_output().expect("traitrpc ran");
    let _ = done.send(());
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_command_line_calls_the_example_natively_and_over_http() {
    let binary = target_dir().join(format!("traitrpc{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is not built: `cargo test --workspace` builds it (or `cargo build -p traitrpc-cli`)",
        binary.display()
    );
    let example = common::start_http_example();
    let (native, http) = (example.native.clone(), example.http.clone());
    let shared = format!("http://{native}");
    for addr in [native.as_str(), http.as_str(), shared.as_str()] {
        let listed = traitrpc(&binary, &["list", addr]);
        assert!(listed.status.success(), "list {addr}: {listed:?}");
        assert!(
            stdout(&listed).contains("Calculator.count(to, every_ms)"),
            "{addr}: {}",
            stdout(&listed)
        );
        let sum = traitrpc(
            &binary,
            &["call", addr, "Calculator.add", r#"{"a": 1, "b": 2}"#],
        );
        assert!(sum.status.success(), "{addr}: {sum:?}");
        assert_eq!(stdout(&sum).trim(), "3", "{addr}");
        let items = traitrpc(
            &binary,
            &[
                "call",
                addr,
                "Calculator.count",
                r#"{"to": 3, "every_ms": 1}"#,
            ],
        );
        assert!(items.status.success(), "{addr}: {items:?}");
        assert_eq!(stdout(&items), "1\n2\n3\n", "{addr}: streams as JSON lines");
        let failed = traitrpc(&binary, &["call", addr, "Calculator.divide", "[1, 0]"]);
        assert_eq!(failed.status.code(), Some(1), "{addr}: {failed:?}");
        assert!(
            String::from_utf8_lossy(&failed.stderr).contains("division by zero"),
            "{addr}: {failed:?}"
        );
        let late = traitrpc(
            &binary,
            &[
                "call",
                "--timeout",
                "100ms",
                addr,
                "Calculator.sleep",
                r#"{"ms": 5000}"#,
            ],
        );
        assert_eq!(late.status.code(), Some(1), "{addr}: {late:?}");
        let echoed = traitrpc(
            &binary,
            &[
                "call",
                "-H",
                "x-user=ann",
                addr,
                "Calculator.metadata",
                r#"{"key": "x-user"}"#,
            ],
        );
        assert_eq!(stdout(&echoed).trim(), r#""ann""#, "{addr}: {echoed:?}");
        let health = traitrpc(&binary, &["health", addr]);
        assert!(health.status.success(), "{addr}: {health:?}");
    }
}
