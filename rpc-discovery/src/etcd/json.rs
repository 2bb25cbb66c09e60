//! The JSON shapes of etcd's v3 gateway (grpc-gateway over etcd's protobuf messages): field
//! names as in the `.proto` files, keys and values base64, 64-bit integers as strings,
//! fields at their default value left out. Only what registration and discovery use.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes that travel as a base64 string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct B64(pub(crate) Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64
            .decode(text.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

/// An `int64`: a JSON string on the way out (as the gateway writes them) and a string or a
/// number on the way in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Int(pub(crate) i64);

impl Serialize for Int {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Number(i64),
        }
        match Either::deserialize(deserializer)? {
            Either::Number(n) => Ok(Int(n)),
            Either::Text(text) => text.parse().map(Int).map_err(serde::de::Error::custom),
        }
    }
}

/// Every response's header; only the revision is used.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default)]
    pub(crate) revision: Int,
}

/// `mvccpb.KeyValue`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct KeyValue {
    pub(crate) key: B64,
    #[serde(default)]
    pub(crate) value: B64,
    #[serde(default)]
    pub(crate) mod_revision: Int,
    #[serde(default)]
    pub(crate) lease: Int,
}

/// `RangeRequest` (a prefix is `key` .. `range_end`).
#[derive(Debug, Serialize)]
pub(crate) struct RangeRequest {
    pub(crate) key: B64,
    pub(crate) range_end: B64,
}

/// `RangeResponse`.
#[derive(Debug, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub(crate) header: Header,
    #[serde(default)]
    pub(crate) kvs: Vec<KeyValue>,
}

/// `PutRequest`; lease 0 means none.
#[derive(Debug, Serialize)]
pub(crate) struct PutRequest {
    pub(crate) key: B64,
    pub(crate) value: B64,
    pub(crate) lease: Int,
}

/// `DeleteRangeRequest` for one key.
#[derive(Debug, Serialize)]
pub(crate) struct DeleteRequest {
    pub(crate) key: B64,
}

/// `CompactionRequest`.
#[derive(Debug, Serialize)]
pub(crate) struct CompactionRequest {
    pub(crate) revision: Int,
}

/// A response of which only the header matters.
#[derive(Debug, Deserialize)]
pub(crate) struct HeaderOnly {
    #[serde(default)]
    pub(crate) header: Header,
}

/// `LeaseGrantRequest` (ID 0: etcd chooses).
#[derive(Debug, Serialize)]
#[allow(non_snake_case)]
pub(crate) struct LeaseGrantRequest {
    pub(crate) TTL: Int,
    pub(crate) ID: Int,
}

/// `LeaseGrantResponse`.
#[derive(Debug, Deserialize)]
#[allow(non_snake_case)]
pub(crate) struct LeaseGrantResponse {
    #[serde(default)]
    pub(crate) ID: Int,
    #[serde(default)]
    pub(crate) error: String,
}

/// `LeaseKeepAliveRequest` / `LeaseRevokeRequest`.
#[derive(Debug, Serialize)]
#[allow(non_snake_case)]
pub(crate) struct LeaseId {
    pub(crate) ID: Int,
}

/// One message of the (streaming) keep-alive call: `{"result": LeaseKeepAliveResponse}`.
#[derive(Debug, Deserialize)]
pub(crate) struct KeepAliveMessage {
    #[serde(default)]
    pub(crate) result: Option<KeepAliveResult>,
    #[serde(default)]
    pub(crate) error: Option<StreamError>,
}

/// `LeaseKeepAliveResponse`: a TTL of 0 (left out) means the lease is gone.
#[derive(Debug, Deserialize)]
#[allow(non_snake_case)]
pub(crate) struct KeepAliveResult {
    #[serde(default)]
    pub(crate) TTL: Int,
}

/// `WatchRequest` with a `create_request`.
#[derive(Debug, Serialize)]
pub(crate) struct WatchRequest {
    pub(crate) create_request: WatchCreateRequest,
}

/// `WatchCreateRequest`.
#[derive(Debug, Serialize)]
pub(crate) struct WatchCreateRequest {
    pub(crate) key: B64,
    pub(crate) range_end: B64,
    pub(crate) start_revision: Int,
}

/// One message of a watch stream: `{"result": WatchResponse}` or `{"error": ...}`.
#[derive(Debug, Deserialize)]
pub(crate) struct WatchMessage {
    #[serde(default)]
    pub(crate) result: Option<WatchResult>,
    #[serde(default)]
    pub(crate) error: Option<StreamError>,
}

/// `WatchResponse`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WatchResult {
    #[serde(default)]
    pub(crate) header: Header,
    #[serde(default)]
    pub(crate) created: bool,
    #[serde(default)]
    pub(crate) canceled: bool,
    #[serde(default)]
    pub(crate) compact_revision: Int,
    #[serde(default)]
    pub(crate) cancel_reason: String,
    #[serde(default)]
    pub(crate) events: Vec<Event>,
}

/// `mvccpb.Event`: `type` is left out for a PUT (the default).
#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    #[serde(default, rename = "type")]
    pub(crate) kind: EventKind,
    #[serde(default)]
    pub(crate) kv: KeyValue,
}

/// `mvccpb.Event.EventType`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum EventKind {
    /// A key was written.
    #[default]
    #[serde(rename = "PUT")]
    Put,
    /// A key was deleted (or its lease expired).
    #[serde(rename = "DELETE")]
    Delete,
}

/// An error in a streamed answer, or the body of a failed request
/// (`{"error": "...", "code": N, "message": "..."}`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamError {
    #[serde(default, alias = "grpc_code")]
    pub(crate) code: i32,
    #[serde(default)]
    pub(crate) message: String,
}

/// `AuthenticateRequest`.
#[derive(Debug, Serialize)]
pub(crate) struct AuthenticateRequest<'a> {
    pub(crate) name: &'a str,
    pub(crate) password: &'a str,
}

/// `AuthenticateResponse`.
#[derive(Debug, Deserialize)]
pub(crate) struct AuthenticateResponse {
    pub(crate) token: String,
}

/// The end of the key range holding every key that starts with `prefix`: the prefix with
/// its last byte below `0xff` incremented (and what follows dropped); `\0` (every key) if
/// there is none.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_shapes_decode() {
        // As etcd 3.4's gateway writes them (see the research note's transcript).
        let range: RangeResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","revision":"7"},"kvs":[{"key":"L3N2Yy9jYWxjL2E=","create_revision":"2","mod_revision":"2","version":"1","value":"eA==","lease":"4111120376438289925"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(range.header.revision, Int(7));
        assert_eq!(range.kvs[0].key.0, b"/svc/calc/a");
        assert_eq!(range.kvs[0].value.0, b"x");
        assert_eq!(range.kvs[0].lease, Int(4111120376438289925));
        let watch: WatchMessage = serde_json::from_str(
            r#"{"result":{"header":{"revision":"9"},"events":[{"kv":{"key":"YQ==","value":"Yg=="}},{"type":"DELETE","kv":{"key":"YQ=="}}]}}"#,
        )
        .unwrap();
        let events = watch.result.unwrap().events;
        assert_eq!(events[0].kind, EventKind::Put);
        assert_eq!(events[1].kind, EventKind::Delete);
        let gone: KeepAliveMessage =
            serde_json::from_str(r#"{"result":{"header":{"revision":"3"},"ID":"5"}}"#).unwrap();
        assert_eq!(gone.result.unwrap().TTL, Int(0), "a left-out TTL is 0");
        assert_eq!(
            serde_json::to_string(&LeaseGrantRequest {
                TTL: Int(5),
                ID: Int(0)
            })
            .unwrap(),
            r#"{"TTL":"5","ID":"0"}"#
        );
    }

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
