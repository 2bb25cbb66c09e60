//! JSON payloads on the native protocol (version 4): arbitrary bytes as the arguments of
//! each method of the harness's service, on a connection that chose the JSON codec. The
//! first byte picks the method, the rest is the payload.
//!
//! The server must answer every call: INVALID_ARGUMENTS for a payload that is not JSON
//! (or not arguments the method takes), otherwise the method's value or error, as JSON;
//! never a panic, a hang or a dropped connection. Afterwards it still serves a normal
//! client.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traitrpc_core::protocol::{status, Frame};
use traitrpc_fuzz::{
    assert_server_serves, call_raw_after, json_client_hello, request_body, runtime, METHODS,
};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let method = METHODS[pick as usize % METHODS.len()];
    let is_json = payload.iter().all(u8::is_ascii_whitespace)
        || serde_json::from_slice::<serde_json::Value>(payload).is_ok();
    let body = request_body(1, 5_000_000, "Fuzzed", method, payload);
    runtime().block_on(async {
        let (_, answer) = call_raw_after(json_client_hello(), &body, 1).await;
        let Frame::Response(response) = answer else {
            panic!("expected a response, the server sent {answer:?}");
        };
        match response.status {
            status::OK | status::APPLICATION_ERROR => {
                assert!(is_json, "a payload that is not JSON was accepted");
                serde_json::from_slice::<serde_json::Value>(&response.payload)
                    .expect("values travel as JSON");
            }
            status::INVALID_ARGUMENTS => {}
            other => panic!(
                "unexpected status {other}: {:?}",
                String::from_utf8_lossy(&response.payload)
            ),
        }
        assert_server_serves().await;
    });
});
