//! Field numbers from names: a field's number is a function of its (serde) name alone, so
//! it stays the same whatever else the trait does. Fields may be added, removed or
//! reordered, variants inserted, and every client generated from any version of the
//! `.proto` agrees with every server on what each number means; which is what
//! `docs/EVOLUTION.md` promises for JSON-by-name translation, kept for protobuf.
//!
//! The rule (`docs/HTTP.md`, "Field numbers"): take the SHA-256 of the name's UTF-8
//! bytes, read its first four bytes as a big-endian `u32`, and map it into
//! `1..=MAX_FIELD_NUMBER`; a number in protobuf's reserved range 19000-19999 moves up by
//! 1000. Numbers below 2^18 keep every tag within three bytes on the wire.
//!
//! Two names of one message that land on the same number are a collision; the export
//! refuses the method and names both (rename one with `#[serde(rename)]`). With 30
//! fields in one message that happens about once in 600 messages.

use sha2::{Digest, Sha256};

/// The largest number the rule gives (2^18 - 1).
pub const MAX_FIELD_NUMBER: u32 = (1 << 18) - 1;

/// The field number of a field, parameter or enum variant named `name`.
pub fn field_number(name: &str) -> u32 {
    let digest = Sha256::digest(name.as_bytes());
    let word = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let number = 1 + word % MAX_FIELD_NUMBER;
    if (19_000..20_000).contains(&number) {
        number + 1000
    } else {
        number
    }
}

/// The field number of a response's `result` (the one field of every response message).
pub const RESULT_FIELD: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_fixed_by_the_rule() {
        // Worked examples, as docs/HTTP.md gives them (another language checks against
        // these).
        assert_eq!(field_number("a"), 242_616);
        assert_eq!(field_number("b"), 259_999);
        assert_eq!(field_number("id"), 93_824);
        for name in ["a", "b", "id", "name", "quantity", "Active", "Suspended"] {
            let n = field_number(name);
            assert!((1..=MAX_FIELD_NUMBER + 1000).contains(&n));
            assert!(!(19_000..20_000).contains(&n));
        }
    }
}
