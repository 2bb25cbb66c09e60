//! The payload codec: bincode 2 (serde), standard configuration (little-endian, varint
//! integers), encoding straight into the connection's write buffer.

use bincode::config::{self, Configuration};
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
    let (value, used) = bincode::serde::decode_from_slice(bytes, CONFIG)
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
}
