//! The frame decoder: arbitrary bytes through the length-delimited codec the connections
//! use (with a maximum frame size), then `Frame::decode` on every frame, reading every
//! field the way client and server do.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rpc_core::protocol::{Frame, HEADER_LEN};
use rpc_fuzz::{split_frames, touch, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let (frames, _) = split_frames(data, MAX_FRAME);
    for body in frames.into_iter().chain([Bytes::copy_from_slice(data)]) {
        match Frame::decode(body.clone()) {
            Ok(frame) => {
                assert!(body.len() >= HEADER_LEN);
                touch(&frame);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
