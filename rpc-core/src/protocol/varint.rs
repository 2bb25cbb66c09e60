//! The compact integers of version 5 frames (`docs/PROTOCOL.md`, section 22): unsigned
//! LEB128, seven bits per byte, least significant group first, the high bit set on every
//! byte but the last. `0` is `00`, `127` is `7f`, `128` is `80 01`, `300` is `ac 02`.

use bytes::{Buf, BufMut, Bytes};

use crate::error::RpcError;

/// The most bytes a `u64` takes.
pub const MAX_LEN: usize = 10;

/// How many bytes `value` takes.
pub fn len(value: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 takes one byte too.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `value`.
pub fn put(buf: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Takes one value off the front of `body`: a truncated value, or one longer than ten
/// bytes or above `u64::MAX`, is a protocol error naming `what`.
pub fn take(body: &mut Bytes, what: &str) -> Result<u64, RpcError> {
    let mut value = 0u64;
    for (index, &byte) in body.iter().enumerate().take(MAX_LEN) {
        let group = u64::from(byte & 0x7f);
        if index == MAX_LEN - 1 && byte > 1 {
            break;
        }
        value |= group << (7 * index);
        if byte & 0x80 == 0 {
            body.advance(index + 1);
            return Ok(value);
        }
    }
    Err(RpcError::Protocol(format!(
        "malformed {what}: a truncated or oversized varint"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples() {
        for (value, wire) in [
            (0u64, &[0x00][..]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut buf = Vec::new();
            put(&mut buf, value);
            assert_eq!(buf, wire, "{value}");
            assert_eq!(len(value), wire.len(), "{value}");
            let mut body = Bytes::copy_from_slice(wire);
            assert_eq!(take(&mut body, "test").unwrap(), value);
            assert!(body.is_empty());
        }
    }

    #[test]
    fn every_length_round_trips() {
        for shift in 0..64 {
            for value in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                let mut buf = Vec::new();
                put(&mut buf, value);
                buf.push(0xee);
                assert_eq!(buf.len() - 1, len(value));
                let mut body = Bytes::from(buf);
                assert_eq!(take(&mut body, "test").unwrap(), value);
                assert_eq!(&body[..], [0xee]);
            }
        }
    }

    #[test]
    fn truncated_and_oversized_values_are_errors() {
        for wire in [
            &[][..],
            &[0x80],
            &[0xff, 0xff],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ],
        ] {
            let mut body = Bytes::copy_from_slice(wire);
            assert!(take(&mut body, "test").is_err(), "{wire:?}");
        }
    }
}
