//! What the example tests share: finding the built examples, child processes that die
//! with the test, and the `http` example serving on free loopback ports.
#![allow(dead_code)] // Each test uses its part.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `target/<profile>/`, where this test's `deps/` directory is.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// The built example `name`: `target/<profile>/examples/<name>`.
pub fn example(name: &str) -> PathBuf {
    target_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// A child process killed (and reaped) when dropped, so that a panicking test does not
/// leave it running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `http` example serving (`--serve`) on free loopback ports.
pub struct HttpExample {
    /// The process, killed when this is dropped.
    pub process: KillOnDrop,
    /// The native protocol's address, `127.0.0.1:PORT` (it speaks HTTP too).
    pub native: String,
    /// The gateway's own URL, `http://127.0.0.1:PORT`.
    pub http: String,
}

/// Starts the `http` example and reads its addresses from the first line it prints
/// (`native protocol on ADDR, HTTP/JSON on http://ADDR`), within 30 s.
pub fn start_http_example() -> HttpExample {
    let path = example("http");
    assert!(path.exists(), "{} is not built", path.display());
    let mut process = KillOnDrop(
        Command::new(&path)
            .args([
                "--serve",
                "--native",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display())),
    );
    let stdout = process.0.stdout.take().expect("piped stdout");
    let (lines, first_line) = mpsc::channel();
    // Keeps reading (and discarding) what the example prints after its first line, so
    // it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        let _ = reader.read_line(&mut first);
        let _ = lines.send(first);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let first = first_line
        .recv_timeout(Duration::from_secs(30))
        .expect("the http example printed its addresses in time");
    let (native, http) = first
        .trim()
        .strip_prefix("native protocol on ")
        .and_then(|rest| rest.split_once(", HTTP/JSON on "))
        .unwrap_or_else(|| panic!("unexpected first line of the http example: {first:?}"));
    HttpExample {
        native: native.to_string(),
        http: http.to_string(),
        process,
    }
}
