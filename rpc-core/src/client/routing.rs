//! [`RoutingKey`]: what `with_routing_key` takes, hashed by a specified function so that
//! every client routes a key alike.

/// A value calls can be routed by (`with_routing_key`): its bytes, hashed with 64-bit
/// FNV-1a (`docs/SCALING.md` gives the function and test vectors), so that the same key
/// reaches the same endpoint from any client. Strings hash their UTF-8 bytes, byte
/// strings themselves, integers their little-endian bytes (`usize`/`isize` as 64 bits).
pub trait RoutingKey {
    /// The bytes that identify the key.
    fn routing_bytes(&self) -> std::borrow::Cow<'_, [u8]>;

    /// FNV-1a (64-bit) over [`RoutingKey::routing_bytes`].
    fn routing_hash(&self) -> u64 {
        fnv1a(&self.routing_bytes())
    }
}

/// 64-bit FNV-1a: offset basis `0xcbf29ce484222325`, prime `0x100000001b3`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl<T: RoutingKey + ?Sized> RoutingKey for &T {
    fn routing_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        (**self).routing_bytes()
    }
}

impl RoutingKey for str {
    fn routing_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        self.as_bytes().into()
    }
}

impl RoutingKey for String {
    fn routing_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        self.as_bytes().into()
    }
}

impl RoutingKey for [u8] {
    fn routing_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        self.into()
    }
}

impl RoutingKey for Vec<u8> {
    fn routing_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        self.as_slice().into()
    }
}

macro_rules! integer_routing_keys {
    ($($t:ty => $wide:ty),*) => {$(
        impl RoutingKey for $t {
            fn routing_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
                (*self as $wide).to_le_bytes().to_vec().into()
            }
        }
    )*};
}

integer_routing_keys!(u8 => u8, u16 => u16, u32 => u32, u64 => u64, u128 => u128,
    i8 => i8, i16 => i16, i32 => i32, i64 => i64, i128 => i128, usize => u64, isize => i64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_hash_as_specified() {
        // FNV-1a 64 test vectors (as in docs/SCALING.md).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!("a".routing_hash(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!("foobar".routing_hash(), 0x8594_4171_f739_67e8);
        assert_eq!(
            String::from("foobar").routing_hash(),
            "foobar".routing_hash()
        );
        assert_eq!(b"foobar".to_vec().routing_hash(), "foobar".routing_hash());
        // Integers by their little-endian bytes; usize as 64 bits everywhere.
        assert_eq!(42u64.routing_hash(), fnv1a(&42u64.to_le_bytes()));
        assert_eq!(42usize.routing_hash(), 42u64.routing_hash());
        assert_eq!(7u8.routing_hash(), fnv1a(&[7]));
    }
}
