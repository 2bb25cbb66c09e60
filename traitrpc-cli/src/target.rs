//! ADDR on the command line: which server, and which protocol to speak to it.

use std::fmt;
use std::path::PathBuf;

/// A server to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The native protocol over TCP: `host:port`.
    Native(String),
    /// The native protocol over a Unix domain socket: `unix:PATH`.
    Unix(PathBuf),
    /// The HTTP gateway: `http://host:port[/prefix]`.
    Http(HttpTarget),
}

/// Where an HTTP gateway is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` to connect to.
    pub connect: String,
    /// The `Host` header: the authority as written.
    pub authority: String,
    /// A path the gateway is mounted under (empty, or `/api` without a trailing slash).
    pub prefix: String,
}

impl Target {
    /// Parses ADDR: `http://host[:port][/prefix]`, `unix:PATH` or `host:port`.
    pub fn parse(text: &str) -> Result<Target, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, as in unix:/run/app.sock".into());
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(
                "https:// is not supported yet: call the gateway over http://, or the \
                 native protocol as host:port"
                    .into(),
            );
        }
        if lower.starts_with("http://") {
            return HttpTarget::parse(text).map(Target::Http);
        }
        if text.contains("://") {
            return Err(format!(
                "`{text}`: the only URL scheme served is http://; the native protocol is host:port"
            ));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!(
                "`{text}` is not host:port, unix:PATH or http://host:port"
            ));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!(
                "`{text}` is not host:port (a port is a number up to 65535)"
            ));
        }
        Ok(Target::Native(text.to_string()))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Native(addr) => f.write_str(addr),
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Http(http) => write!(f, "http://{}{}", http.authority, http.prefix),
        }
    }
}

impl HttpTarget {
    /// Parses `http://host[:port][/prefix]` (port 80 if not given).
    fn parse(text: &str) -> Result<HttpTarget, String> {
        let uri: hyper::Uri = text
            .parse()
            .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            return Err(format!("`{text}` has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{text}`: credentials in the URL are not sent; use -H authorization=..."
            ));
        }
        if uri.query().is_some() {
            return Err(format!("`{text}`: the address takes no query string"));
        }
        let port = uri.port_u16().unwrap_or(80);
        Ok(HttpTarget {
            connect: format!("{host}:{port}"),
            authority: authority.as_str().to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The request path of `path` (which starts with `/`) under the prefix.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_choose_the_protocol() {
        assert_eq!(
            Target::parse("127.0.0.1:7070"),
            Ok(Target::Native("127.0.0.1:7070".into()))
        );
        assert_eq!(
            Target::parse("localhost:1"),
            Ok(Target::Native("localhost:1".into()))
        );
        assert_eq!(
            Target::parse("[::1]:7070"),
            Ok(Target::Native("[::1]:7070".into()))
        );
        assert_eq!(
            Target::parse("unix:/tmp/a.sock"),
            Ok(Target::Unix("/tmp/a.sock".into()))
        );
        let http = |connect: &str, authority: &str, prefix: &str| {
            Ok(Target::Http(HttpTarget {
                connect: connect.into(),
                authority: authority.into(),
                prefix: prefix.into(),
            }))
        };
        assert_eq!(
            Target::parse("http://127.0.0.1:8080"),
            http("127.0.0.1:8080", "127.0.0.1:8080", "")
        );
        assert_eq!(
            Target::parse("http://127.0.0.1:8080/"),
            http("127.0.0.1:8080", "127.0.0.1:8080", "")
        );
        assert_eq!(
            Target::parse("HTTP://example.com/api/"),
            http("example.com:80", "example.com", "/api")
        );
        assert_eq!(
            Target::parse("http://[::1]:8080"),
            http("[::1]:8080", "[::1]:8080", "")
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:port",
            ":7070",
            "127.0.0.1:70000",
            "https://x:1",
            "grpc://x:1",
            "unix:",
            "http://",
            "http://u:p@x:1",
            "http://x:1/?a=b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }
}
