//! Server-side message decoding: arbitrary bytes as one frame body of a version 5
//! connection, through `Frame::decode_with` (compact layout), decompression of a
//! payload flagged compressed, and argument decoding (`codec::decode` of the argument tuples of a
//! generated service: integers, strings, byte strings, nested structs, maps, enums), and
//! then through a real server (in-memory transport) hosting that service.
//!
//! The server must answer every request, and its answer must agree with decoding the
//! same payload here: OK for arguments that decode, INVALID_ARGUMENTS for those that do
//! not (or do not decompress), UNKNOWN_SERVICE (checked before decompression) /
//! UNKNOWN_METHOD for bad names; a body
//! that is not a frame, or that uses a method id never bound, gets GO_AWAY
//! PROTOCOL_ERROR. Afterwards the server still serves a normal client.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use traitrpc_core::compression::decompress;
use traitrpc_core::protocol::{go_away, status, Binding, Frame, FrameLayout};
use traitrpc_fuzz::{
    assert_server_serves, call_raw, decode_args, runtime, touch, MAX_FRAME, METHODS,
};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let expected: Option<(u64, u8)> = match Frame::decode_with(body, FrameLayout::Compact) {
        // A fresh connection has no method ids bound: a protocol error.
        Ok(Frame::Request(request)) if matches!(request.binding, Binding::Use(_)) => None,
        Ok(Frame::Request(mut request)) => {
            let mut undecompressable = false;
            if request.compressed {
                match decompress(request.payload.clone(), MAX_FRAME) {
                    Ok(payload) => request.payload = payload,
                    Err(_) => undecompressable = true,
                }
            }
            touch(&Frame::Request(request.clone()));
            // Every argument tuple on this payload (and their ByteBuf/Vec<u8> agreement).
            for method in METHODS {
                decode_args(method, &request.payload);
            }
            // The server refuses an unknown service before it spends work on
            // decompression; an unknown method is found after it. A call flagged JSON
            // (version 6) is read by name: its arguments fit, or SCHEMA_MISMATCH.
            let json = request.flags & traitrpc_core::protocol::flags::JSON != 0;
            let status = if request.service.as_str() != "Fuzzed" {
                status::UNKNOWN_SERVICE
            } else if undecompressable {
                status::INVALID_ARGUMENTS
            } else if json {
                // Arguments that are not JSON are refused before the method is looked up.
                let parsed = traitrpc_core::json::parse_arguments(&request.payload).is_ok();
                match decode_args(request.method.as_str(), &[]) {
                    None if parsed => status::UNKNOWN_METHOD,
                    _ => status::SCHEMA_MISMATCH,
                }
            } else {
                match decode_args(request.method.as_str(), &request.payload) {
                    None => status::UNKNOWN_METHOD,
                    Some(false) => status::INVALID_ARGUMENTS,
                    Some(true) => status::OK,
                }
            };
            Some((request.id, status))
        }
        // Other kinds (cancel, stream frames for calls that do not exist, a client's
        // response or go-away) are not answered one by one; the handshake target sends
        // them in sequences.
        Ok(_) => return,
        Err(_) => None,
    };

    runtime().block_on(async {
        let id = expected.map_or(0, |(id, _)| id);
        let (_, answer) = call_raw(data, id).await;
        match (expected, answer) {
            (Some((_, want)), Frame::Response(response)) => {
                let acceptable = match want {
                    // The handler ran: its value, its application error, or its deadline
                    // (a budget of a few microseconds) passed.
                    status::OK => matches!(
                        response.status,
                        status::OK | status::APPLICATION_ERROR | status::DEADLINE_EXCEEDED
                    ),
                    // In JSON: the handler ran, or the arguments did not fit.
                    status::SCHEMA_MISMATCH => matches!(
                        response.status,
                        status::OK
                            | status::APPLICATION_ERROR
                            | status::DEADLINE_EXCEEDED
                            | status::SCHEMA_MISMATCH
                    ),
                    refused => response.status == refused,
                };
                assert!(
                    acceptable,
                    "expected status {want}, the server answered {} ({:?})",
                    response.status,
                    String::from_utf8_lossy(&response.payload)
                );
            }
            (None, Frame::GoAway { code, .. }) => assert_eq!(code, go_away::PROTOCOL_ERROR),
            (expected, answer) => panic!("expected {expected:?}, the server sent {answer:?}"),
        }
        assert_server_serves().await;
    });
});
