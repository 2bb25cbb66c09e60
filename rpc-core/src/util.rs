//! Small shared helpers.

use std::hash::Hasher;

/// A hasher for call ids, which are sequential integers: a multiplicative hash spreads
/// them well, and SipHash's resistance to chosen keys buys nothing for a per-connection
/// map whose size the in-flight limit bounds.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A new shared list: `list`'s items (if any), then `item`. For the layer and observer
/// lists of clients and routers, which are built once and then only read.
pub(crate) fn appended<T: ?Sized>(
    list: Option<&[std::sync::Arc<T>]>,
    item: std::sync::Arc<T>,
) -> std::sync::Arc<[std::sync::Arc<T>]> {
    let mut items = list.map(<[_]>::to_vec).unwrap_or_default();
    items.push(item);
    items.into()
}

/// The text of a panic payload (`panic!` with a literal or a format string).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}
