//! A real browser calls the gateway: the `http` example serves its page
//! (`examples/web/index.html`), a headless Chromium loads it, and the page calls a unary
//! method and a server stream with `fetch`. The test drives Chromium over the DevTools
//! protocol and awaits the page's own `window.finished` promise (no sleeps), then checks
//! what the page shows and takes a screenshot (`docs/browser.png` when
//! `RRPC_UPDATE_SCREENSHOT=1`; otherwise into the target directory).
//!
//! Needs Debian's `chromium` (`.ci/tools.sh` installs it), so it is `#[ignore]`d with the
//! reason; `cargo test -- --include-ignored` runs it, and then a missing Chromium fails it.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use common::{target_dir, KillOnDrop};

/// The first line `child` prints on `stream` that contains `marker`, within `limit`.
fn line_with(stream: impl Read + Send + 'static, marker: &'static str, limit: Duration) -> String {
    let (found, line) = mpsc::channel();
    std::thread::spawn(move || {
        for text in BufReader::new(stream).lines().map_while(Result::ok) {
            if text.contains(marker) {
                let _ = found.send(text);
                // Keep reading so the child never blocks on a full pipe.
            }
        }
    });
    line.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no line with {marker:?} within {limit:?}"))
}

/// A DevTools session: commands by id, with the page's session id once attached.
struct DevTools {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    session: Option<String>,
}

impl DevTools {
    fn connect(url: &str) -> DevTools {
        // ws://127.0.0.1:PORT/devtools/browser/ID
        let authority = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("a host and port");
        let stream = TcpStream::connect(authority).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (socket, _) = tungstenite::client(url, stream).expect("the WebSocket handshake");
        DevTools {
            socket,
            next_id: 1,
            session: None,
        }
    }

    /// Sends `method` and returns its result; events that arrive meanwhile are passed to
    /// `on_event`.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.call_watching(method, params, |_| {})
    }

    fn call_watching(
        &mut self,
        method: &str,
        params: Value,
        mut on_event: impl FnMut(&Value),
    ) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            command["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .expect("send a DevTools command");
        loop {
            let message: Value = self.next_message();
            if message["id"] == json!(id) {
                assert!(message["error"].is_null(), "{method} failed: {message}");
                return message["result"].clone();
            }
            on_event(&message);
        }
    }

    fn next_message(&mut self) -> Value {
        loop {
            match self.socket.read().expect("read from DevTools") {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Close(_) => panic!("DevTools closed the connection"),
                _ => {}
            }
        }
    }

    /// Waits for the event `name` of the attached page.
    fn wait_event(&mut self, name: &str) {
        loop {
            if self.next_message()["method"] == json!(name) {
                return;
            }
        }
    }
}

#[test]
#[ignore = "needs chromium: `source .ci/tools.sh` (or apt-get install chromium), then --include-ignored"]
fn chromium_calls_a_unary_method_and_a_server_stream_through_the_gateway() {
    assert!(
        Command::new("chromium").arg("--version").output().is_ok(),
        "no `chromium` on PATH: `source .ci/tools.sh` (or apt-get install chromium)"
    );
    let example = common::start_http_example();
    let http = example.http.clone();
    let profile = target_dir().join(format!("chromium-profile-{}", std::process::id()));
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=900,420",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let stderr = chromium.stderr.take().unwrap();
    let chromium = KillOnDrop(chromium);
    let listening = line_with(stderr, "DevTools listening on ", Duration::from_secs(60));
    let browser_url = listening
        .rsplit("DevTools listening on ")
        .next()
        .unwrap()
        .trim()
        .to_string();

    let mut devtools = DevTools::connect(&browser_url);
    let target = devtools.call("Target.createTarget", json!({ "url": "about:blank" }));
    let attached = devtools.call(
        "Target.attachToTarget",
        json!({ "targetId": target["targetId"], "flatten": true }),
    );
    devtools.session = Some(attached["sessionId"].as_str().unwrap().to_string());
    devtools.call("Page.enable", json!({}));
    let started = Instant::now();
    devtools.call("Page.navigate", json!({ "url": format!("{http}/") }));
    devtools.wait_event("Page.loadEventFired");
    // The page's own promise: it settles when every call has ended.
    let finished = devtools.call(
        "Runtime.evaluate",
        json!({ "expression": "window.finished", "awaitPromise": true, "returnByValue": true }),
    );
    assert_eq!(finished["result"]["value"], "done", "{finished}");
    assert_eq!(devtools_text(&mut devtools, "add"), "3");
    assert_eq!(
        devtools_text(&mut devtools, "divide"),
        "failed_precondition: \"division by zero\""
    );
    assert_eq!(devtools_text(&mut devtools, "stream"), "1 2 3 4 5 (end)");
    eprintln!("the page finished in {:?}", started.elapsed());

    let shot = devtools.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = if std::env::var_os("RRPC_UPDATE_SCREENSHOT").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/browser.png")
    } else {
        target_dir().join("browser.png")
    };
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    drop(chromium);
    let _ = std::fs::remove_dir_all(&profile);
}

/// The text of the page's element `id`.
fn devtools_text(devtools: &mut DevTools, id: &str) -> String {
    let result = devtools.call(
        "Runtime.evaluate",
        json!({
            "expression": format!("document.getElementById({id:?}).textContent"),
            "returnByValue": true,
        }),
    );
    result["result"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
