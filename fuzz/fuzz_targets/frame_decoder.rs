//! The frame decoder: arbitrary bytes through the length-delimited codec the connections
//! use (with a maximum frame size), then `Frame::decode_with` on every frame in both
//! layouts (fixed, versions 1 to 4; compact, version 5), reading every field the way
//! client and server do, and decompressing every payload flagged compressed.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use traitrpc_core::protocol::{Frame, FrameLayout, HEADER_LEN};
use traitrpc_fuzz::{split_frames, touch, MAX_FRAME};

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
        match Frame::decode_with(body.clone(), FrameLayout::Compact) {
            Ok(frame) => {
                assert!(body.len() >= 3);
                touch(&frame);
                let compressed = match &frame {
                    Frame::Request(r) if r.compressed => Some(r.payload.clone()),
                    Frame::Response(r) if r.compressed => Some(r.payload.clone()),
                    Frame::StreamItem {
                        payload,
                        compressed: true,
                        ..
                    } => Some(payload.clone()),
                    _ => None,
                };
                if let Some(payload) = compressed {
                    match traitrpc_core::compression::decompress(payload, MAX_FRAME) {
                        Ok(original) => assert!(original.len() <= MAX_FRAME),
                        Err(e) => assert!(!e.to_string().is_empty()),
                    }
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
