//! The server's method fingerprints (version 6, `docs/PROTOCOL.md` section 24): a block
//! the server sends right after its settings, so a client knows before its first call
//! which methods it sees the way the server does (bincode) and which it must send in
//! JSON by name.
//!
//! Block: `u32` BE length `L` (at most [`MAX_FINGERPRINTS_LEN`]), then `L` bytes of
//! entries, each `u8` length + service name, `u8` length + method name, 8 bytes of
//! fingerprint (BE).

use std::collections::HashMap;

use super::MAX_FINGERPRINTS_LEN;
use crate::error::RpcError;
use crate::schema::{Fingerprint, ServiceSchema};

/// Fingerprints by service and method name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprints {
    by_service: HashMap<Box<str>, HashMap<Box<str>, Fingerprint>>,
}

impl Fingerprints {
    /// The fingerprints of every method of `services`.
    pub fn of<'a>(services: impl IntoIterator<Item = &'a ServiceSchema>) -> Self {
        let mut fingerprints = Fingerprints::default();
        for service in services {
            let methods = fingerprints
                .by_service
                .entry(service.service.as_str().into())
                .or_default();
            for method in &service.methods {
                methods.insert(method.name.as_str().into(), method.fingerprint);
            }
        }
        fingerprints
    }

    /// The fingerprint the server has for `service`'s `method`, if it has one.
    pub fn get(&self, service: &str, method: &str) -> Option<Fingerprint> {
        self.by_service.get(service)?.get(method).copied()
    }

    /// How many methods it lists.
    pub fn len(&self) -> usize {
        self.by_service.values().map(HashMap::len).sum()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block, length included: entries sorted by service, then method name. Names
    /// longer than 255 bytes (which no request can carry either) and entries past the
    /// size limit are left out.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries: Vec<(&str, &str, Fingerprint)> = self
            .by_service
            .iter()
            .flat_map(|(service, methods)| {
                methods
                    .iter()
                    .map(move |(method, print)| (&**service, &**method, *print))
            })
            .filter(|(service, method, _)| service.len() <= 255 && method.len() <= 255)
            .collect();
        entries.sort();
        let mut body = Vec::new();
        for (service, method, print) in entries {
            let size = 2 + service.len() + method.len() + 8;
            if body.len() + size > MAX_FINGERPRINTS_LEN {
                break;
            }
            body.push(service.len() as u8);
            body.extend_from_slice(service.as_bytes());
            body.push(method.len() as u8);
            body.extend_from_slice(method.as_bytes());
            body.extend_from_slice(&print.0.to_be_bytes());
        }
        let mut block = (body.len() as u32).to_be_bytes().to_vec();
        block.extend_from_slice(&body);
        block
    }

    /// Reads the entries of a block (its length already taken off).
    pub fn decode(mut body: &[u8]) -> Result<Self, RpcError> {
        let malformed = |what: &str| RpcError::Protocol(format!("fingerprint block: {what}"));
        let mut fingerprints = Fingerprints::default();
        let name = |body: &mut &[u8]| -> Result<Box<str>, RpcError> {
            let (&len, rest) = body.split_first().ok_or_else(|| malformed("truncated"))?;
            let len = len as usize;
            if rest.len() < len {
                return Err(malformed("a name runs past the block"));
            }
            let text =
                std::str::from_utf8(&rest[..len]).map_err(|_| malformed("a name is not UTF-8"))?;
            *body = &rest[len..];
            Ok(text.into())
        };
        while !body.is_empty() {
            let service = name(&mut body)?;
            let method = name(&mut body)?;
            if body.len() < 8 {
                return Err(malformed("a fingerprint runs past the block"));
            }
            let (print, rest) = body.split_at(8);
            body = rest;
            let print = Fingerprint(u64::from_be_bytes(print.try_into().expect("8 bytes")));
            fingerprints
                .by_service
                .entry(service)
                .or_default()
                .insert(method, print);
        }
        Ok(fingerprints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_bad_ones_are_refused() {
        let mut fingerprints = Fingerprints::default();
        fingerprints
            .by_service
            .entry("Calculator".into())
            .or_default()
            .insert("add".into(), Fingerprint(0x94015a4850279e7d));
        let block = fingerprints.encode();
        assert_eq!(
            block,
            [
                &[0, 0, 0, 0x17][..],
                &[10],
                b"Calculator",
                &[3],
                b"add",
                &[0x94, 0x01, 0x5a, 0x48, 0x50, 0x27, 0x9e, 0x7d],
            ]
            .concat()
        );
        assert_eq!(Fingerprints::decode(&block[4..]).unwrap(), fingerprints);
        for bad in [&block[4..10], &block[4..block.len() - 1], &[1, 0xff, 0][..]] {
            assert!(Fingerprints::decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Fingerprints::decode(&[]).unwrap(), Fingerprints::default());
    }
}
