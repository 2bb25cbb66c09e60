//! The payload codec: bincode 2 (serde), standard configuration (little-endian, varint
//! integers), encoding straight into the connection's write buffer.
//!
//! Decoding never allocates more than a small multiple of the payload's own size: bincode
//! allocates a string or byte buffer at its claimed length before reading it, so every
//! decode runs with a byte limit chosen from the payload's length (a claim past the limit
//! is a typed error, not an allocation).

use bincode::config::{self, Config, Configuration};
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
    let (value, used) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| RpcError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(RpcError::Decode(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
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
