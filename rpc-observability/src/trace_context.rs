//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) in call metadata: the
//! `traceparent` and `tracestate` entries, parsed, formatted, and the trace of the call
//! being handled on this task, so that calls made from a handler continue its trace.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

use traitrpc_core::Metadata;

/// The metadata key of the trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// The metadata key of the vendor trace state (passed along as it came).
pub const TRACESTATE: &str = "tracestate";

/// Where a call sits in a trace: its trace, its own span, the flags, the vendor state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The 16-byte trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The 8-byte id of the span this context names (never all zero).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
    /// The `tracestate` entry, passed along unchanged.
    pub state: Option<String>,
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x7ace);
        hasher.finish() | 1
    });
}

fn random_u64() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn nonzero_u64() -> u64 {
    loop {
        let x = random_u64();
        if x != 0 {
            return x;
        }
    }
}

impl TraceContext {
    /// A new trace, sampled, with a new span.
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&nonzero_u64().to_be_bytes());
        trace_id[8..].copy_from_slice(&random_u64().to_be_bytes());
        TraceContext {
            trace_id,
            span_id: nonzero_u64().to_be_bytes(),
            flags: 1,
            state: None,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: nonzero_u64().to_be_bytes(),
            ..self.clone()
        }
    }

    /// The trace a call's metadata says it belongs to, if its `traceparent` is valid
    /// (version 00, non-zero ids; an invalid one is ignored, as the specification says).
    pub fn from_metadata(metadata: &Metadata) -> Option<Self> {
        let mut context = Self::parse_bytes(metadata.get(TRACEPARENT)?)?;
        context.state = metadata.get_str(TRACESTATE).map(str::to_string);
        Some(context)
    }

    /// Parses a `traceparent` value: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase (surrounding
    /// blanks allowed).
    pub fn parse(value: &str) -> Option<Self> {
        Self::parse_bytes(value.as_bytes())
    }

    fn parse_bytes(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        if value.len() != TRACEPARENT_LEN
            || &value[..3] != b"00-"
            || value[35] != b'-'
            || value[52] != b'-'
        {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flags = [0u8; 1];
        hex_decode(&value[3..35], &mut trace_id)?;
        hex_decode(&value[36..52], &mut span_id)?;
        hex_decode(&value[53..55], &mut flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags: flags[0],
            state: None,
        })
    }

    /// The `traceparent` value, formatted in place (no allocation).
    fn traceparent(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[..2].copy_from_slice(b"00");
        hex_encode(&self.trace_id, &mut out[3..35]);
        hex_encode(&self.span_id, &mut out[36..52]);
        hex_encode(&[self.flags], &mut out[53..55]);
        out
    }

    /// Writes `traceparent` (and `tracestate`, if any) into `metadata`.
    pub fn inject(&self, metadata: &mut Metadata) {
        let _ = metadata.insert(TRACEPARENT, self.traceparent());
        if let Some(state) = &self.state {
            let _ = metadata.insert(TRACESTATE, state);
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.traceparent();
        f.write_str(std::str::from_utf8(&value).expect("hex digits and dashes"))
    }
}

/// `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_encode(bytes, &mut out);
    String::from_utf8(out).expect("hex digits")
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn hex_encode(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0xf)];
    }
}

/// Reads lowercase hex `text` (twice as long as `out`) into `out`; `None` for any other
/// character (the specification allows lowercase only).
fn hex_decode(text: &[u8], out: &mut [u8]) -> Option<()> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The trace context of the call being handled on this task, if a tracing layer set one.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `future` with `context` as the current trace (what server layers do around a
/// handler, so that its outgoing calls continue the trace).
pub async fn scope<F: std::future::Future>(context: TraceContext, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_what_the_specification_rejects() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(value).unwrap();
        assert_eq!(context.to_string(), value);
        assert_eq!(context.flags, 1);
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        let child = context.child();
        assert_eq!(child.trace_id, context.trace_id);
        assert_ne!(child.span_id, context.span_id);
        let root = TraceContext::new_root();
        assert_ne!(root.trace_id, [0; 16]);
    }

    #[test]
    fn metadata_carries_parent_and_state() {
        let mut context = TraceContext::new_root();
        context.state = Some("vendor=1".into());
        let mut md = Metadata::new();
        context.inject(&mut md);
        assert_eq!(TraceContext::from_metadata(&md), Some(context));
    }
}
