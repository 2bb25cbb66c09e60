//! The `rrpc` command line (crate `rrpc-cli`) calls the `http` example, both processes
//! real: over the native protocol's JSON codec, over the gateway, and over HTTP on the
//! native port. `cargo test --workspace` builds the `rrpc` binary with everything else;
//! under `CI` a missing binary fails the test, elsewhere it is skipped with a note.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::target_dir;

/// Runs `rrpc args...`, bounded in time.
fn rrpc(binary: &PathBuf, args: &[&str]) -> Output {
    let child = Command::new(binary)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rrpc");
    let (done, finished) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let output = child.wait_with_output().expect("rrpc ran");
    let _ = done.send(());
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_command_line_calls_the_example_natively_and_over_http() {
    let binary = target_dir().join(format!("rrpc{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is not built (cargo test --workspace builds it)",
            binary.display()
        );
        eprintln!("{} is not built: skipping", binary.display());
        return;
    }
    let example = common::start_http_example();
    let (native, http) = (example.native.clone(), example.http.clone());
    let shared = format!("http://{native}");
    for addr in [native.as_str(), http.as_str(), shared.as_str()] {
        let listed = rrpc(&binary, &["list", addr]);
        assert!(listed.status.success(), "list {addr}: {listed:?}");
        assert!(
            stdout(&listed).contains("Calculator.count(to, every_ms)"),
            "{addr}: {}",
            stdout(&listed)
        );
        let sum = rrpc(
            &binary,
            &["call", addr, "Calculator.add", r#"{"a": 1, "b": 2}"#],
        );
        assert!(sum.status.success(), "{addr}: {sum:?}");
        assert_eq!(stdout(&sum).trim(), "3", "{addr}");
        let items = rrpc(
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
        let failed = rrpc(&binary, &["call", addr, "Calculator.divide", "[1, 0]"]);
        assert_eq!(failed.status.code(), Some(1), "{addr}: {failed:?}");
        assert!(
            String::from_utf8_lossy(&failed.stderr).contains("division by zero"),
            "{addr}: {failed:?}"
        );
        let late = rrpc(
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
        let echoed = rrpc(
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
        let health = rrpc(&binary, &["health", addr]);
        assert!(health.status.success(), "{addr}: {health:?}");
    }
}
