//! The handshake: `ClientHello::decode` / `ServerHello::decode` on arbitrary 12 bytes,
//! `Settings::decode` and `Fingerprints::decode` (version 6) on what follows them (never
//! a panic, and a decoded block re-encodes to what decodes the same), and
//! arbitrary bytes sent to a real server connection (in-memory transport) in place of a
//! client. The server must answer exactly as the protocol says (accept the versions it
//! speaks, refuse others, say nothing to a wrong magic), write only well-formed frames
//! that a server may send on that version,
//! close the connection, and go on serving a normal client.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traitrpc_core::protocol::{
    handshake_status, ClientHello, Fingerprints, ServerHello, Settings, HANDSHAKE_LEN, MAGIC,
    MIN_VERSION, VERSION,
};
use traitrpc_fuzz::{assert_server_serves, exchange, runtime};

fuzz_target!(|data: &[u8]| {
    let opening: Option<[u8; HANDSHAKE_LEN]> =
        data.get(..HANDSHAKE_LEN).map(|b| b.try_into().unwrap());
    if let Some(bytes) = opening {
        let magic_ok = bytes[..4] == MAGIC;
        match ClientHello::decode(&bytes) {
            Ok(hello) => {
                assert!(magic_ok);
                // Everything but the reserved bytes round-trips.
                let mut canonical = bytes;
                canonical[6..8].fill(0);
                assert_eq!(hello.encode(), canonical);
            }
            Err(_) => assert!(!magic_ok),
        }
        match ServerHello::decode(&bytes) {
            Ok(hello) => {
                let mut canonical = bytes;
                canonical[7] = 0;
                assert_eq!(hello.encode(), canonical);
            }
            Err(_) => assert!(!magic_ok),
        }
    }

    if let Some(rest) = data.get(HANDSHAKE_LEN..) {
        if let Ok(settings) = Settings::decode(rest) {
            assert!(settings.stream_window > 0);
            let wire = settings.encode();
            assert_eq!(Settings::decode(&wire[2..]).unwrap(), settings);
        }
        if let Ok(fingerprints) = Fingerprints::decode(rest) {
            let wire = fingerprints.encode();
            let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
            assert_eq!(len, wire.len() - 4);
            assert_eq!(Fingerprints::decode(&wire[4..]).unwrap(), fingerprints);
        }
    }

    runtime().block_on(async {
        let output = exchange(data).await;
        match opening {
            None => assert!(output.hello.is_none(), "answered a partial hello"),
            Some(bytes) => match ClientHello::decode(&bytes) {
                Err(_) => assert!(output.hello.is_none(), "answered a wrong magic"),
                Ok(hello) => {
                    let reply: ServerHello = output.hello.expect("a hello is answered");
                    // Every version from MIN_VERSION to VERSION is accepted and spoken;
                    // others are refused, naming the server's own version.
                    if (MIN_VERSION..=VERSION).contains(&hello.version) {
                        assert_eq!(reply.status, handshake_status::ACCEPTED);
                        assert_eq!(reply.version, hello.version);
                    } else {
                        assert_eq!(reply.status, handshake_status::UNSUPPORTED_VERSION);
                        assert_eq!(reply.version, VERSION);
                        assert!(output.frames.is_empty());
                    }
                }
            },
        }
        assert_server_serves().await;
    });
});
