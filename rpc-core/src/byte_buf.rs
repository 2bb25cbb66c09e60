//! [`ByteBuf`]: the fast path for binary payloads.
//!
//! serde treats a `Vec<u8>` as a sequence and encodes it one element at a time; a
//! [`ByteBuf`] is encoded as one byte string, so moving a large payload costs about one
//! `memcpy` on each side. In bincode both encodings are the same bytes (a length, then the
//! bytes), so a `Vec<u8>` can be changed to a `ByteBuf` (or back) without breaking the
//! wire. The `#[service]` macro already uses this path for arguments and return values
//! declared as `Vec<u8>`; use `ByteBuf` for byte fields inside your own types.

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `Vec<u8>` that serializes as one byte string instead of a sequence of `u8`s.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteBuf(Vec<u8>);

impl ByteBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        ByteBuf(Vec::new())
    }

    /// Wraps `bytes` without copying.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        ByteBuf(bytes)
    }

    /// The bytes, without copying.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for ByteBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteBuf({} bytes)", self.0.len())
    }
}

impl Deref for ByteBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for ByteBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl AsRef<[u8]> for ByteBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for ByteBuf {
    fn from(bytes: Vec<u8>) -> Self {
        ByteBuf(bytes)
    }
}

impl From<ByteBuf> for Vec<u8> {
    fn from(buf: ByteBuf) -> Self {
        buf.0
    }
}

impl From<&[u8]> for ByteBuf {
    fn from(bytes: &[u8]) -> Self {
        ByteBuf(bytes.to_vec())
    }
}

impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(ByteBufVisitor)
    }
}

/// Accepts a byte string, or a sequence of `u8` (self-describing formats such as JSON).
struct ByteBufVisitor;

impl<'de> Visitor<'de> for ByteBufVisitor {
    type Value = ByteBuf;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
        Ok(ByteBuf(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
        Ok(ByteBuf(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
        // Never trust a size hint for the allocation.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element()? {
            bytes.push(b);
        }
        Ok(ByteBuf(bytes))
    }
}

/// Serializes a borrowed `Vec<u8>` the fast way; used by generated clients.
#[doc(hidden)]
pub struct BytesRef<'a>(pub &'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn same_bytes_on_the_wire_as_vec_u8() {
        let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut as_vec = BytesMut::new();
        crate::codec::encode_into(&data, &mut as_vec).unwrap();
        let mut as_buf = BytesMut::new();
        crate::codec::encode_into(&ByteBuf::from(data.clone()), &mut as_buf).unwrap();
        assert_eq!(as_vec, as_buf);
        let back: ByteBuf = crate::codec::decode(&as_vec).unwrap();
        assert_eq!(back.into_vec(), data);
        let back: Vec<u8> = crate::codec::decode(&as_buf).unwrap();
        assert_eq!(back.len(), 300);
    }
}
