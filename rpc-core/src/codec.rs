//! The payload codec: bincode 2 (serde), standard configuration (little-endian, varint
//! integers), encoding straight into the connection's write buffer.
//!
//! Decoding never allocates more than a small multiple of the payload's own size: bincode
//! allocates a string or byte buffer at its claimed length before reading it, so every
//! decode runs with a byte limit chosen from the payload's length (a claim past the limit
//! is a typed error, not an allocation).
//!
//! Nor can a payload overflow the stack: bincode decodes nested values (trees, recursive
//! enums) recursively, and a stack overflow aborts the whole process. Every level of
//! nesting reads at least one byte, so the reader refuses to read once the thread's
//! remaining stack drops below a reserve, and a too-deep value is a decode error.

use bincode::config::{self, Config, Configuration};
use std::cell::Cell;

use bincode::de::read::Reader;
use bincode::enc::write::Writer;
use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::RpcError;

/// The bincode configuration used for every payload.
const CONFIG: Configuration = config::standard();

/// A bincode writer appending to a `BytesMut`, so values are encoded once, in place.
struct BytesMutWriter<'a>(&'a mut BytesMut);

impl Writer for BytesMutWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.put_slice(bytes);
        Ok(())
    }
}

/// Appends the bincode encoding of `value` to `buf`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut BytesMut) -> Result<(), RpcError> {
    bincode::serde::encode_into_writer(value, BytesMutWriter(buf), CONFIG)
        .map_err(|e| RpcError::Encode(e.to_string()))
}

/// [`encode_into`] for values produced by a handler: a `Serialize` implementation that
/// panics is reported as [`RpcError::HandlerPanicked`] instead of unwinding through the
/// connection (the frame being written is rolled back by its caller).
pub(crate) fn encode_catching<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut BytesMut,
) -> Result<(), RpcError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| encode_into(value, buf)))
        .unwrap_or_else(|panic| {
            Err(RpcError::HandlerPanicked {
                message: format!(
                    "serializing the result panicked: {}",
                    crate::util::panic_message(&*panic)
                ),
            })
        })
}

/// Decodes a `T` that must span all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcError> {
    // Legitimate claims add up to at most the payload's length, so the smallest bucket
    // at or above it never rejects valid data; the buckets keep monomorphised copies few.
    const KIB_64: usize = 64 * 1024;
    const MIB_1: usize = 1024 * 1024;
    const MIB_16: usize = 16 * 1024 * 1024;
    const GIB_4: usize = u32::MAX as usize;
    let len = bytes.len();
    if len <= KIB_64 {
        decode_with(bytes, CONFIG.with_limit::<KIB_64>())
    } else if len <= MIB_1 {
        decode_with(bytes, CONFIG.with_limit::<MIB_1>())
    } else if len <= MIB_16 {
        decode_with(bytes, CONFIG.with_limit::<MIB_16>())
    } else {
        decode_with(bytes, CONFIG.with_limit::<GIB_4>())
    }
}

fn decode_with<T: DeserializeOwned, C: Config>(bytes: &[u8], config: C) -> Result<T, RpcError> {
    let left = Cell::new(bytes.len());
    let reader = StackGuardedReader {
        rest: bytes,
        left: &left,
    };
    let mut decoder = bincode::serde::OwnedSerdeDecoder::from_reader(reader, config);
    let value = T::deserialize(decoder.as_deserializer()).map_err(|e| match e {
        bincode::error::DecodeError::Other(TOO_DEEP) => {
            RpcError::Decode(format!("{TOO_DEEP} to decode on this thread's stack"))
        }
        e => RpcError::Decode(e.to_string()),
    })?;
    if left.get() != 0 {
        return Err(RpcError::Decode(format!(
            "{} trailing bytes after the value",
            left.get()
        )));
    }
    Ok(value)
}

/// Why a read was refused: the value nests deeper than the stack allows.
const TOO_DEEP: &str = "the value is nested too deeply";

/// Stack kept free while decoding (generous, for debug builds and user `Deserialize`
/// code between reads).
const STACK_RESERVE: usize = 128 * 1024;

/// A slice reader that refuses to read when the thread's stack runs low, and reports
/// how many bytes it has left (to find trailing bytes).
struct StackGuardedReader<'a> {
    rest: &'a [u8],
    left: &'a Cell<usize>,
}

impl StackGuardedReader<'_> {
    fn check_stack() -> Result<(), bincode::error::DecodeError> {
        match stacker::remaining_stack() {
            Some(left) if left < STACK_RESERVE => Err(bincode::error::DecodeError::Other(TOO_DEEP)),
            _ => Ok(()),
        }
    }
}

impl Reader for StackGuardedReader<'_> {
    #[inline]
    fn read(&mut self, bytes: &mut [u8]) -> Result<(), bincode::error::DecodeError> {
        Self::check_stack()?;
        if bytes.len() > self.rest.len() {
            return Err(bincode::error::DecodeError::UnexpectedEnd {
                additional: bytes.len() - self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(bytes.len());
        bytes.copy_from_slice(head);
        self.rest = tail;
        self.left.set(tail.len());
        Ok(())
    }

    #[inline]
    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        Self::check_stack().ok()?;
        self.rest.get(..n)
    }

    #[inline]
    fn consume(&mut self, n: usize) {
        self.rest = self.rest.get(n..).unwrap_or_default();
        self.left.set(self.rest.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes() {
        let mut buf = BytesMut::new();
        encode_into(&(1i64, String::from("x")), &mut buf).unwrap();
        let v: (i64, String) = decode(&buf).unwrap();
        assert_eq!(v, (1, "x".into()));
        buf.put_u8(0);
        assert!(matches!(
            decode::<(i64, String)>(&buf),
            Err(RpcError::Decode(_))
        ));
        assert!(matches!(decode::<u64>(&[]), Err(RpcError::Decode(_))));
    }

    #[test]
    fn values_nested_deeper_than_the_stack_allows_are_errors_not_crashes() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        enum Tree {
            Leaf,
            Node(Box<Tree>),
        }
        // A million levels: variant 1 (Node) a million times, then 0 (Leaf).
        let mut deep = vec![1u8; 1_000_000];
        deep.push(0);
        // On a small stack, so the guard is what stops it.
        let outcome = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || decode::<Tree>(&deep).map(|_| ()))
            .unwrap()
            .join()
            .expect("no stack overflow");
        match outcome {
            Err(RpcError::Decode(message)) => {
                assert!(message.contains("nested too deeply"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // Shallow nesting still decodes.
        let shallow = [1u8, 1, 1, 0];
        assert!(decode::<Tree>(&shallow).is_ok());
    }

    #[test]
    fn claimed_lengths_beyond_the_payload_are_errors_not_allocations() {
        // varint 253 = a u64 length follows: u64::MAX, then nothing.
        let mut huge = vec![253u8];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode::<String>(&huge), Err(RpcError::Decode(_))));
        assert!(matches!(decode::<Vec<u8>>(&huge), Err(RpcError::Decode(_))));
        // A 1 GiB claim in a 9-byte payload.
        let mut gib = vec![253u8];
        gib.extend_from_slice(&(1u64 << 30).to_le_bytes());
        assert!(matches!(decode::<String>(&gib), Err(RpcError::Decode(_))));
        assert!(matches!(
            decode::<Vec<String>>(&gib),
            Err(RpcError::Decode(_))
        ));
    }
}
