//! The Python client (`clients/python`, written from docs/PROTOCOL.md alone) against the
//! reference server: starts the `http` example serving natively on a free loopback port,
//! then runs the client's unittest suite against it with `python3`, bounded in time.
//!
//! Without `python3` on the PATH the test fails and says so (it never passes unrun).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::KillOnDrop;

/// How long the whole Python suite may take.
const SUITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether `python3` can be started.
fn python_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// Reads all of `pipe` on a thread; the handle returns it.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn python_client_against_the_http_example() {
    assert!(
        python_available(),
        "the Python client's tests need python3 on the PATH"
    );
    let server = common::start_http_example();
    let addr = server.native.clone();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf();
    let mut python = KillOnDrop(
        Command::new("python3")
            .args([
                "-m",
                "unittest",
                "discover",
                "-s",
                "clients/python/tests",
                "-v",
            ])
            .current_dir(&root)
            .env("RRPC_NATIVE_ADDR", &addr)
            .env("PYTHONPATH", root.join("clients").join("python"))
            // No __pycache__ directories in the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python3"),
    );
    let stdout = drain(python.0.stdout.take().expect("piped stdout"));
    let stderr = drain(python.0.stderr.take().expect("piped stderr"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = python.0.try_wait().expect("wait for python3") {
            break Some(status);
        }
        if started.elapsed() > SUITE_TIMEOUT {
            let _ = python.0.kill();
            let _ = python.0.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    match status {
        None => panic!(
            "the Python client's tests did not finish within {} s:\n{output}",
            SUITE_TIMEOUT.as_secs()
        ),
        Some(status) => {
            assert!(
                status.success(),
                "the Python client's tests failed ({status}):\n{output}"
            );
            // The server tests skip themselves without RRPC_NATIVE_ADDR: none may here.
            assert!(
                !output.contains("skipped"),
                "some of the Python client's tests were skipped:\n{output}"
            );
            // unittest reports on stderr; show the summary in `cargo test -- --nocapture`.
            println!("{output}");
        }
    }
}
