//! Payload compression (version 5, `docs/PROTOCOL.md` section 23).
//!
//! Each side announces in its settings the algorithms it can decompress
//! ([`crate::protocol::setting::COMPRESSIONS`]). A side configured to compress
//! ([`crate::ClientConfig::compression`], [`crate::ServerConfig::compression`]) does so
//! only with an algorithm the peer announced, only payloads of at least its threshold, and
//! only when that makes them smaller. A compressed payload has the frame flag
//! [`crate::protocol::flags::COMPRESSED`] and reads: `u8` algorithm id, varint size of the
//! original, the compressed bytes. The receiver refuses a size above its own frame limit
//! before it allocates anything (a decompression bomb is a typed error,
//! [`RpcError::Decompress`]), and the result must have exactly the announced size.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::RpcError;
use crate::protocol::varint;

/// A payload compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// LZ4 block format (`lz4_flex`, pure Rust): fast, modest ratios. Always available.
    Lz4,
    /// Zstandard at level 3: better ratios, more CPU. Needs the `zstd` feature.
    #[cfg(feature = "zstd")]
    Zstd,
}

impl Compression {
    /// Its id on the wire.
    pub fn id(self) -> u8 {
        match self {
            Compression::Lz4 => 1,
            #[cfg(feature = "zstd")]
            Compression::Zstd => 2,
        }
    }

    /// The algorithm with wire id `id`, if this build has it.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Compression::Lz4),
            #[cfg(feature = "zstd")]
            2 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Its bit in a `COMPRESSIONS` mask.
    pub fn bit(self) -> u8 {
        1 << self.id()
    }

    /// The mask of every algorithm this build can decompress.
    pub fn supported() -> u8 {
        let mask = Compression::Lz4.bit();
        #[cfg(feature = "zstd")]
        let mask = mask | Compression::Zstd.bit();
        mask
    }

    /// `data` compressed, or `None` if that fails.
    fn compress(self, data: &[u8]) -> Option<Vec<u8>> {
        match self {
            Compression::Lz4 => Some(lz4_flex::block::compress(data)),
            #[cfg(feature = "zstd")]
            Compression::Zstd => zstd::bulk::compress(data, 3).ok(),
        }
    }

    /// Decompresses `data` into `out`, which has the announced size; returns how many
    /// bytes it wrote.
    fn decompress_into(self, data: &[u8], out: &mut [u8]) -> Result<usize, String> {
        match self {
            Compression::Lz4 => {
                lz4_flex::block::decompress_into(data, out).map_err(|e| e.to_string())
            }
            #[cfg(feature = "zstd")]
            Compression::Zstd => {
                zstd::bulk::decompress_to_buffer(data, out).map_err(|e| e.to_string())
            }
        }
    }
}

/// What a side compresses with on one connection: the algorithm (its configured one if
/// the peer can decompress it, else LZ4 if the peer can) and the threshold of its
/// automatic choice, if it configured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compressor {
    pub(crate) algorithm: Compression,
    /// Payloads at least this long are compressed unless their call or method says not
    /// to; `None`: only the payloads of calls and methods that ask for compression.
    pub(crate) threshold: Option<usize>,
}

impl Compressor {
    /// Whether to try compressing a payload of `len` bytes whose call or method chose
    /// `choice` (`None`: no choice, the threshold decides).
    fn wants(&self, choice: Option<bool>, len: usize) -> bool {
        match choice {
            Some(false) => false,
            Some(true) => len > 0,
            None => self
                .threshold
                .is_some_and(|threshold| len >= threshold.max(1)),
        }
    }

    /// Replaces the payload at `buf[start..]` by its compressed form if `choice` (or,
    /// without one, the threshold) asks for it and the compressed form is shorter.
    /// Returns whether it did.
    pub(crate) fn compress_tail(
        &self,
        buf: &mut BytesMut,
        start: usize,
        choice: Option<bool>,
    ) -> bool {
        let original = buf.len() - start;
        if !self.wants(choice, original) {
            return false;
        }
        let Some(packed) = self.algorithm.compress(&buf[start..]) else {
            return false;
        };
        let header = 1 + varint::len(original as u64);
        if header + packed.len() >= original {
            return false;
        }
        buf.truncate(start);
        buf.put_u8(self.algorithm.id());
        varint::put(buf, original as u64);
        buf.put_slice(&packed);
        true
    }
}

/// What a side configured with `wanted` (algorithm, threshold) compresses with on a
/// connection of `version` to a peer that announced `peer_accepts`: the configured
/// algorithm if the peer accepts it, else LZ4 if the peer accepts that (a side that
/// configured nothing still compresses what its calls and methods ask to). `None` before
/// version 5, or if the peer accepts nothing this side has.
pub(crate) fn compressor(
    version: u16,
    wanted: Option<(Compression, usize)>,
    peer_accepts: Option<u8>,
) -> Option<Compressor> {
    if version < crate::protocol::COMPACT_VERSION {
        return None;
    }
    let mask = peer_accepts.unwrap_or(0);
    let accepted = |algorithm: Compression| mask & algorithm.bit() != 0;
    let threshold = wanted.map(|(_, threshold)| threshold);
    let algorithm = wanted
        .map(|(algorithm, _)| algorithm)
        .filter(|&algorithm| accepted(algorithm))
        .or_else(|| accepted(Compression::Lz4).then_some(Compression::Lz4))?;
    Some(Compressor {
        algorithm,
        threshold,
    })
}

/// A compressed payload's original bytes (the payload of a frame flagged
/// [`crate::protocol::flags::COMPRESSED`]). `limit` is the largest size this side
/// accepts (its own frame limit): a payload announcing more is refused before anything
/// is allocated.
pub fn decompress(mut payload: Bytes, limit: usize) -> Result<Bytes, RpcError> {
    let bad = |reason: String| RpcError::Decompress { reason };
    if payload.is_empty() {
        return Err(bad("a compressed payload without its algorithm".into()));
    }
    let id = payload[0];
    let algorithm = Compression::from_id(id)
        .ok_or_else(|| bad(format!("unknown compression algorithm {id}")))?;
    bytes::Buf::advance(&mut payload, 1);
    let size =
        varint::take(&mut payload, "compressed payload size").map_err(|e| bad(e.to_string()))?;
    if size > limit as u64 {
        return Err(bad(format!(
            "a compressed payload announces {size} bytes, over the limit of {limit} bytes"
        )));
    }
    let mut out = vec![0u8; size as usize];
    let written = algorithm
        .decompress_into(&payload, &mut out)
        .map_err(|e| bad(format!("malformed {algorithm:?} data: {e}")))?;
    if written != out.len() {
        return Err(bad(format!(
            "a compressed payload announced {size} bytes and held {written}"
        )));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lz4(threshold: usize) -> Compressor {
        Compressor {
            algorithm: Compression::Lz4,
            threshold: Some(threshold),
        }
    }

    #[test]
    fn compressible_payloads_shrink_and_come_back() {
        let text = br#"{"name":"tea","price":3,"tags":["hot","green"]},"#.repeat(200);
        let mut buf = BytesMut::from(&b"header"[..]);
        buf.put_slice(&text);
        assert!(lz4(1024).compress_tail(&mut buf, 6, None));
        assert_eq!(&buf[..6], b"header");
        assert!(buf.len() - 6 < text.len() / 4, "{} bytes", buf.len());
        let payload = buf.freeze().slice(6..);
        assert_eq!(payload[0], Compression::Lz4.id());
        assert_eq!(&decompress(payload, 1 << 20).unwrap()[..], &text[..]);
    }

    #[test]
    fn small_or_incompressible_payloads_are_left_alone() {
        let mut small = BytesMut::from(&b"aaaaaaaaaaaaaaaa"[..]);
        assert!(!lz4(1024).compress_tail(&mut small, 0, None));
        assert_eq!(&small[..], b"aaaaaaaaaaaaaaaa");
        // Pseudo-random bytes do not compress.
        let mut state = 0x1234_5678_9abc_def0u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut buf = BytesMut::from(&noise[..]);
        assert!(!lz4(1024).compress_tail(&mut buf, 0, Some(true)));
        assert_eq!(&buf[..], &noise[..]);
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_it_allocates() {
        // 64 MiB of zeros compresses to a few hundred KiB.
        let zeros = vec![0u8; 64 << 20];
        let mut buf = BytesMut::new();
        buf.put_slice(&zeros);
        assert!(lz4(1).compress_tail(&mut buf, 0, None));
        let bomb = buf.freeze();
        assert!(bomb.len() < 1 << 20);
        let error = decompress(bomb.clone(), 16 << 20).unwrap_err();
        assert!(
            matches!(&error, RpcError::Decompress { reason } if reason.contains("over the limit")),
            "{error}"
        );
        assert_eq!(decompress(bomb, 64 << 20).unwrap().len(), 64 << 20);
    }

    #[test]
    fn malformed_compressed_payloads_are_typed_errors() {
        let mut lying = vec![Compression::Lz4.id()];
        varint::put(&mut lying, 100);
        lying.extend_from_slice(&lz4_flex::block::compress(b"only ten b"));
        for payload in [
            vec![],
            vec![9, 1, 0],
            vec![Compression::Lz4.id()],
            vec![Compression::Lz4.id(), 5, 0xff, 0xff],
            lying,
        ] {
            assert!(
                matches!(
                    decompress(Bytes::from(payload.clone()), 1 << 20),
                    Err(RpcError::Decompress { .. })
                ),
                "{payload:?}"
            );
        }
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_round_trips_and_is_announced() {
        let zstd = Compressor {
            algorithm: Compression::Zstd,
            threshold: Some(16),
        };
        let text = b"zstandard, level 3, ".repeat(100);
        let mut buf = BytesMut::from(&text[..]);
        assert!(zstd.compress_tail(&mut buf, 0, None));
        assert_eq!(buf[0], 2);
        assert_eq!(&decompress(buf.freeze(), 1 << 20).unwrap()[..], &text[..]);
        assert_eq!(Compression::supported(), 0b110);
    }

    #[test]
    fn a_call_s_choice_overrides_the_threshold() {
        let text = b"the same words again, ".repeat(40);
        let fresh = || BytesMut::from(&text[..]);
        // Under the threshold: only an explicit yes compresses.
        assert!(!lz4(4096).compress_tail(&mut fresh(), 0, None));
        assert!(lz4(4096).compress_tail(&mut fresh(), 0, Some(true)));
        // Over it: an explicit no keeps the payload as it is.
        assert!(lz4(16).compress_tail(&mut fresh(), 0, None));
        assert!(!lz4(16).compress_tail(&mut fresh(), 0, Some(false)));
        // Without a configured threshold nothing is compressed unless asked.
        let opt_in_only = Compressor {
            algorithm: Compression::Lz4,
            threshold: None,
        };
        assert!(!opt_in_only.compress_tail(&mut fresh(), 0, None));
        assert!(opt_in_only.compress_tail(&mut fresh(), 0, Some(true)));
        // Asked, but an empty payload has nothing to gain.
        assert!(!opt_in_only.compress_tail(&mut BytesMut::new(), 0, Some(true)));
    }

    #[test]
    fn negotiation_picks_what_the_peer_accepts() {
        let all = Some(Compression::supported());
        let lz4_only = Some(Compression::Lz4.bit());
        let wanted = Some((Compression::Lz4, 10));
        assert_eq!(compressor(5, wanted, all), Some(lz4(10)));
        // Nothing before version 5, nothing the peer cannot read.
        assert_eq!(compressor(4, wanted, all), None);
        assert_eq!(compressor(5, wanted, Some(0)), None);
        assert_eq!(compressor(5, wanted, None), None);
        // Nothing configured: LZ4 for what calls and methods ask to compress.
        let opt_in_only = Compressor {
            algorithm: Compression::Lz4,
            threshold: None,
        };
        assert_eq!(compressor(5, None, lz4_only), Some(opt_in_only));
        #[cfg(feature = "zstd")]
        {
            // A peer without zstd gets LZ4 at the configured threshold.
            assert_eq!(
                compressor(5, Some((Compression::Zstd, 10)), lz4_only),
                Some(lz4(10))
            );
            assert_eq!(
                compressor(5, Some((Compression::Zstd, 10)), all).map(|c| c.algorithm),
                Some(Compression::Zstd)
            );
        }
    }
}
