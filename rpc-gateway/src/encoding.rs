//! Request compression, as Connect clients send it: `identity` or `gzip`, named by
//! `Content-Encoding` on a unary body, `Connect-Content-Encoding` on a stream's envelopes
//! (each compressed envelope flagged), or `compression=` on a GET. Anything else is
//! refused as `unimplemented`, naming what is served. Decompression stops at the
//! gateway's body limit, so a small compressed body cannot expand past it.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::GzDecoder;

use crate::connect::Code;

/// The encodings the gateway reads, as its refusals list them.
pub(crate) const SERVED: &str = "gzip, identity";

/// A request's content encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Not compressed.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
}

impl Encoding {
    /// The encoding named `name` (absent: identity), or the refusal's message.
    pub(crate) fn named(name: Option<&str>) -> Result<Encoding, String> {
        match name.map(|n| n.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(Encoding::Identity),
            Some("gzip") => Ok(Encoding::Gzip),
            Some(other) => Err(format!(
                "content encoding `{other}` is not supported; this server accepts {SERVED}"
            )),
        }
    }

    /// `data` decoded (borrowed as it is for identity), at most `limit` bytes; `Err` names
    /// what went wrong.
    pub(crate) fn decode(self, data: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, Refused> {
        match self {
            Encoding::Identity => Ok(Cow::Borrowed(data)),
            Encoding::Gzip => gunzip(data, limit).map(Cow::Owned),
        }
    }
}

impl Encoding {
    /// [`Encoding::decode`], its refusal as a Connect code and message naming `what` was
    /// decoded (`body`, `message`).
    pub(crate) fn decode_or_refuse<'a>(
        self,
        data: &'a [u8],
        limit: usize,
        what: &str,
    ) -> Result<Cow<'a, [u8]>, (Code, String)> {
        self.decode(data, limit).map_err(|refused| match refused {
            Refused::TooLarge(limit) => (
                Code::ResourceExhausted,
                format!(
                    "the decompressed {what} is larger than the gateway's limit of {limit} bytes"
                ),
            ),
            Refused::Malformed(message) => (Code::InvalidArgument, message),
        })
    }
}

/// Why a compressed body was refused.
#[derive(Debug, PartialEq)]
pub(crate) enum Refused {
    /// It expands past the limit.
    TooLarge(usize),
    /// It is not gzip.
    Malformed(String),
}

fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, Refused> {
    let mut out = Vec::new();
    let read = GzDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Refused::Malformed(format!("the body is not valid gzip: {e}")))?;
    if read > limit {
        return Err(Refused::TooLarge(limit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_is_read_within_the_limit_and_other_encodings_are_named() {
        assert_eq!(Encoding::named(None), Ok(Encoding::Identity));
        assert_eq!(Encoding::named(Some("GZIP")), Ok(Encoding::Gzip));
        assert!(Encoding::named(Some("br"))
            .unwrap_err()
            .contains("gzip, identity"));
        let body = gzip(br#"{"a":1}"#);
        assert_eq!(&*Encoding::Gzip.decode(&body, 100).unwrap(), br#"{"a":1}"#);
        // A bomb: 1 MiB of zeros in about a kilobyte, refused at a 1 KiB limit.
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 4096);
        assert_eq!(
            Encoding::Gzip.decode(&bomb, 1024),
            Err(Refused::TooLarge(1024))
        );
        assert!(matches!(
            Encoding::Gzip.decode(b"not gzip", 100),
            Err(Refused::Malformed(_))
        ));
    }
}
