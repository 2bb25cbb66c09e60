//! [`EtcdClient`]: a small etcd v3 client over etcd's JSON gateway (`POST /v3/...`, served
//! on the client port and on by default since etcd 3.4), with hyper 1. It makes exactly
//! the calls registration and discovery need (range, put, delete, lease grant, keep-alive
//! and revoke, watch), so nothing in the build needs `protoc`, tonic or HTTP/2.
//!
//! Each request goes to the endpoint that answered last, and to the next one when an
//! endpoint cannot be reached. A keep-alive is one POST per refresh (a second refresh
//! streamed on the same request is ignored by etcd's gateway); a watch is one long-lived
//! POST whose answer is a stream of JSON messages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::json::{self, prefix_end, Int, B64};

/// The default time an etcd request may take (watches: until their first answer).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read from etcd (a range over many keys is still far below it).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// gRPC's UNAUTHENTICATED code, as etcd reports an expired or invalid token.
const UNAUTHENTICATED: i32 = 16;

/// Why an etcd request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// An endpoint is not an `http://host:port` URL.
    #[error("invalid etcd endpoint `{endpoint}`: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No endpoint could be reached (connection refused, reset, or timed out).
    #[error("etcd unreachable at {endpoint}: {reason}")]
    Unreachable {
        /// The last endpoint tried.
        endpoint: String,
        /// The last failure.
        reason: String,
    },
    /// etcd answered with an error.
    #[error("etcd refused the request (HTTP {status}, code {code}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// etcd's gRPC status code (0 if it gave none).
        code: i32,
        /// etcd's message.
        message: String,
    },
    /// etcd's answer was not what its API specifies.
    #[error("unexpected answer from etcd: {0}")]
    Decode(String),
}

impl EtcdError {
    fn unreachable(endpoint: &str, reason: impl ToString) -> Self {
        EtcdError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// One key and its value as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the key's last modification.
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

impl From<json::KeyValue> for KeyValue {
    fn from(kv: json::KeyValue) -> Self {
        KeyValue {
            key: kv.key.0,
            value: kv.value.0,
            mod_revision: kv.mod_revision.0,
            lease: kv.lease.0,
        }
    }
}

/// The keys under a prefix, at one revision.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The store's revision when the keys were read: watch from `revision + 1` to miss
    /// nothing.
    pub revision: i64,
    /// The keys, in key order.
    pub kvs: Vec<KeyValue>,
}

/// What happened to a watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was written (created or changed).
    Put(KeyValue),
    /// The key was deleted, or its lease expired.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// One message of a watch.
#[derive(Debug, Clone, Default)]
pub struct WatchUpdate {
    /// The store's revision after these events.
    pub revision: i64,
    /// The watch was just created (the first message).
    pub created: bool,
    /// The watch is over (etcd cancelled it); list again.
    pub canceled: bool,
    /// Non-zero: the start revision was compacted away; list again.
    pub compact_revision: i64,
    /// Why etcd cancelled the watch, if it said.
    pub cancel_reason: String,
    /// The changes, in order.
    pub events: Vec<WatchEvent>,
}

/// A client of one etcd cluster (one or more member URLs). Cheap to clone; clones share
/// their connections.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    /// Member URLs without a trailing slash.
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    timeout: Duration,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.inner.endpoints)
            .finish()
    }
}

/// Settings of an [`EtcdClient`].
#[derive(Debug, Clone)]
pub struct EtcdClientBuilder {
    endpoints: Vec<String>,
    timeout: Duration,
    credentials: Option<(String, String)>,
}

impl EtcdClientBuilder {
    /// The time one request may take (default 5 s, [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Authenticates as `user` (etcd's password authentication): a token is fetched with
    /// `/v3/auth/authenticate` before the first request and again when it expires.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// The client. Checks the endpoints but connects only when a request is made.
    pub fn build(self) -> Result<EtcdClient, EtcdError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no endpoint given".into(),
            });
        }
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for endpoint in self.endpoints {
            endpoints.push(normalize_endpoint(&endpoint)?);
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.timeout));
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                http,
                endpoints,
                preferred: AtomicUsize::new(0),
                timeout: self.timeout,
                credentials: self.credentials,
                token: Mutex::new(None),
            }),
        })
    }
}

/// `http://host:port` as given, without a trailing slash; `host:port` gets `http://`.
fn normalize_endpoint(endpoint: &str) -> Result<String, EtcdError> {
    let invalid = |reason: &str| EtcdError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = endpoint.trim();
    let url = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let url = url.trim_end_matches('/').to_string();
    if url.len() <= "http://".len() {
        return Err(invalid("no host"));
    }
    if url.starts_with("https://") {
        return Err(invalid(
            "https is not supported by this client: reach etcd over http on a trusted network \
             (for example its loopback or a sidecar)",
        ));
    }
    if !url.starts_with("http://") {
        return Err(invalid("the scheme must be http://"));
    }
    let uri: hyper::Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
    if uri.host().is_none() {
        return Err(invalid("no host"));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(invalid("a path is not allowed"));
    }
    Ok(url)
}

impl EtcdClient {
    /// A builder over the cluster members at `endpoints` (`http://host:port`).
    pub fn builder<E: AsRef<str>>(endpoints: impl IntoIterator<Item = E>) -> EtcdClientBuilder {
        EtcdClientBuilder {
            endpoints: endpoints
                .into_iter()
                .map(|e| e.as_ref().to_string())
                .collect(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            credentials: None,
        }
    }

    /// A client with default settings that has reached one of `endpoints` (it reads the
    /// cluster's revision once, so a wrong address fails here rather than later).
    pub async fn connect<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
    ) -> Result<EtcdClient, EtcdError> {
        let client = Self::builder(endpoints).build()?;
        client.get_prefix(b"\0").await?;
        Ok(client)
    }

    /// The member URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Every key starting with `prefix`, and the revision they were read at.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<Listing, EtcdError> {
        let answer: json::RangeResponse = self
            .unary(
                "/v3/kv/range",
                &json::RangeRequest {
                    key: B64(prefix.to_vec()),
                    range_end: B64(prefix_end(prefix)),
                },
            )
            .await?;
        Ok(Listing {
            revision: answer.header.revision.0,
            kvs: answer.kvs.into_iter().map(KeyValue::from).collect(),
        })
    }

    /// Writes `key` = `value`, attached to `lease` if it is not 0. Returns the revision.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let answer: json::HeaderOnly = self
            .unary(
                "/v3/kv/put",
                &json::PutRequest {
                    key: B64(key.to_vec()),
                    value: B64(value.to_vec()),
                    lease: Int(lease),
                },
            )
            .await?;
        Ok(answer.header.revision.0)
    }

    /// Deletes `key`. Returns the revision.
    pub async fn delete(&self, key: &[u8]) -> Result<i64, EtcdError> {
        let answer: json::HeaderOnly = self
            .unary(
                "/v3/kv/deleterange",
                &json::DeleteRequest {
                    key: B64(key.to_vec()),
                },
            )
            .await?;
        Ok(answer.header.revision.0)
    }

    /// Compacts the store's history up to `revision`: watches starting before it are
    /// cancelled with [`WatchUpdate::compact_revision`] set.
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let _: json::HeaderOnly = self
            .unary(
                "/v3/kv/compaction",
                &json::CompactionRequest {
                    revision: Int(revision),
                },
            )
            .await?;
        Ok(())
    }

    /// Grants a lease of `ttl_secs` seconds. Returns its id.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<i64, EtcdError> {
        let answer: json::LeaseGrantResponse = self
            .unary(
                "/v3/lease/grant",
                &json::LeaseGrantRequest {
                    TTL: Int(ttl_secs),
                    ID: Int(0),
                },
            )
            .await?;
        if !answer.error.is_empty() || answer.ID.0 == 0 {
            return Err(EtcdError::Refused {
                status: 200,
                code: 0,
                message: format!("lease grant failed: {}", answer.error),
            });
        }
        Ok(answer.ID.0)
    }

    /// Refreshes lease `id` once. Returns its remaining TTL in seconds; 0 means the lease
    /// no longer exists (it expired or was revoked).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        let (endpoint, response) = self
            .send("/v3/lease/keepalive", &json::LeaseId { ID: Int(id) })
            .await?;
        let mut messages = Messages::new(response.into_body());
        let first = tokio::time::timeout(
            self.inner.timeout,
            messages.next::<json::KeepAliveMessage>(),
        )
        .await
        .map_err(|_| EtcdError::unreachable(&endpoint, "the keep-alive timed out"))??;
        match first {
            Some(json::KeepAliveMessage {
                error: Some(error), ..
            }) => Err(EtcdError::Refused {
                status: 200,
                code: error.code,
                message: error.message,
            }),
            Some(json::KeepAliveMessage {
                result: Some(result),
                ..
            }) => Ok(result.TTL.0),
            _ => Err(EtcdError::Decode(
                "the keep-alive answer holds no result".into(),
            )),
        }
    }

    /// Revokes lease `id`: every key attached to it is deleted.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        let _: json::HeaderOnly = self
            .unary("/v3/lease/revoke", &json::LeaseId { ID: Int(id) })
            .await?;
        Ok(())
    }

    /// Watches every key starting with `prefix` from `start_revision` on. The stream ends
    /// (or fails) when the connection to etcd does; list again then.
    pub async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let (endpoint, response) = self
            .send(
                "/v3/watch",
                &json::WatchRequest {
                    create_request: json::WatchCreateRequest {
                        key: B64(prefix.to_vec()),
                        range_end: B64(prefix_end(prefix)),
                        start_revision: Int(start_revision),
                    },
                },
            )
            .await?;
        Ok(Watch {
            endpoint,
            messages: Messages::new(response.into_body()),
        })
    }

    /// Sends a request whose answer is one JSON message and decodes it.
    async fn unary<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, EtcdError> {
        let (endpoint, response) = self.send(path, body).await?;
        let bytes = read_body(response.into_body(), self.inner.timeout)
            .await
            .map_err(|reason| EtcdError::unreachable(&endpoint, reason))?;
        serde_json::from_slice(&bytes).map_err(|e| EtcdError::Decode(format!("{path}: {e}")))
    }

    /// Posts `body` to `path` on the first endpoint that answers, authenticating if
    /// configured. An error status is turned into [`EtcdError::Refused`].
    async fn send<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(String, Response<Incoming>), EtcdError> {
        let body =
            Bytes::from(serde_json::to_vec(body).map_err(|e| EtcdError::Decode(e.to_string()))?);
        let mut authenticated_again = false;
        loop {
            let token = self.token().await?;
            match self
                .post_anywhere(path, body.clone(), token.as_deref())
                .await
            {
                Err(EtcdError::Refused { code, .. })
                    if code == UNAUTHENTICATED
                        && self.inner.credentials.is_some()
                        && !authenticated_again =>
                {
                    // The token expired: fetch a new one, once.
                    *lock(&self.inner.token) = None;
                    authenticated_again = true;
                }
                outcome => return outcome,
            }
        }
    }

    /// The auth token, fetched first if credentials are set and none is held.
    async fn token(&self) -> Result<Option<String>, EtcdError> {
        let Some((name, password)) = &self.inner.credentials else {
            return Ok(None);
        };
        if let Some(token) = lock(&self.inner.token).clone() {
            return Ok(Some(token));
        }
        let body = serde_json::to_vec(&json::AuthenticateRequest { name, password })
            .map_err(|e| EtcdError::Decode(e.to_string()))?;
        let (endpoint, response) = self
            .post_anywhere("/v3/auth/authenticate", Bytes::from(body), None)
            .await?;
        let bytes = read_body(response.into_body(), self.inner.timeout)
            .await
            .map_err(|reason| EtcdError::unreachable(&endpoint, reason))?;
        let answer: json::AuthenticateResponse = serde_json::from_slice(&bytes)
            .map_err(|e| EtcdError::Decode(format!("authenticate: {e}")))?;
        *lock(&self.inner.token) = Some(answer.token.clone());
        Ok(Some(answer.token))
    }

    /// One POST, to the preferred endpoint, then to each other one while endpoints cannot
    /// be reached. A single endpoint is tried twice: a pooled connection the server closed
    /// meanwhile fails once without meaning the server is gone.
    async fn post_anywhere(
        &self,
        path: &str,
        body: Bytes,
        token: Option<&str>,
    ) -> Result<(String, Response<Incoming>), EtcdError> {
        let inner = &*self.inner;
        let count = inner.endpoints.len();
        let start = inner.preferred.load(Ordering::Relaxed) % count;
        let mut last = None;
        for attempt in 0..count.max(2) {
            let index = (start + attempt) % count;
            let endpoint = &inner.endpoints[index];
            let mut request = Request::post(format!("{endpoint}{path}"))
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, token);
            }
            let request = request
                .body(Full::new(body.clone()))
                .map_err(|e| EtcdError::Decode(e.to_string()))?;
            let response =
                match tokio::time::timeout(inner.timeout, inner.http.request(request)).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(error)) => {
                        last = Some(EtcdError::unreachable(endpoint, error_chain(&error)));
                        continue;
                    }
                    Err(_) => {
                        last = Some(EtcdError::unreachable(endpoint, "no answer in time"));
                        continue;
                    }
                };
            inner.preferred.store(index, Ordering::Relaxed);
            if response.status() == StatusCode::OK {
                return Ok((endpoint.clone(), response));
            }
            let status = response.status().as_u16();
            let bytes = read_body(response.into_body(), inner.timeout)
                .await
                .unwrap_or_default();
            let error: json::StreamError =
                serde_json::from_slice(&bytes).unwrap_or_else(|_| json::StreamError {
                    code: 0,
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                });
            return Err(EtcdError::Refused {
                status,
                code: error.code,
                message: error.message,
            });
        }
        Err(last.unwrap_or_else(|| EtcdError::unreachable("(none)", "no endpoint")))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error and its sources, for a message that says what actually failed.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a whole answer, bounded in size and time.
async fn read_body(body: Incoming, timeout: Duration) -> Result<Bytes, String> {
    let limited = http_body_util::Limited::new(body, MAX_ANSWER);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) => Err(format!("reading the answer failed: {error}")),
        Err(_) => Err("the answer did not arrive in time".into()),
    }
}

/// A stream of JSON messages in one HTTP answer (grpc-gateway writes one per line).
struct Messages {
    body: Incoming,
    buffer: Vec<u8>,
}

impl Messages {
    fn new(body: Incoming) -> Self {
        Messages {
            body,
            buffer: Vec::new(),
        }
    }

    /// The next message; `None` once the answer ended.
    async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, EtcdError> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(Some(message));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                        if self.buffer.len() > MAX_ANSWER {
                            return Err(EtcdError::Decode(
                                "a streamed message is too large".into(),
                            ));
                        }
                    }
                }
                Some(Err(error)) => {
                    return Err(EtcdError::Unreachable {
                        endpoint: String::new(),
                        reason: error_chain(&error),
                    })
                }
                None if self.buffer.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => {
                    return Err(EtcdError::Decode(
                        "the answer ended in the middle of a message".into(),
                    ))
                }
            }
        }
    }

    /// A complete message from the front of the buffer, if there is one.
    fn parse<T: DeserializeOwned>(&mut self) -> Result<Option<T>, EtcdError> {
        let mut values = serde_json::Deserializer::from_slice(&self.buffer).into_iter::<T>();
        match values.next() {
            Some(Ok(message)) => {
                let used = values.byte_offset();
                self.buffer.drain(..used);
                Ok(Some(message))
            }
            // Part of a message: wait for the rest.
            Some(Err(error)) if error.is_eof() => Ok(None),
            Some(Err(error)) => Err(EtcdError::Decode(format!("streamed message: {error}"))),
            None => {
                // Only whitespace so far.
                self.buffer.clear();
                Ok(None)
            }
        }
    }
}

/// A watch on a key prefix ([`EtcdClient::watch_prefix`]).
pub struct Watch {
    endpoint: String,
    messages: Messages,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Watch {
    /// The next update; `None` when the watch's connection ended. An error message from
    /// etcd is [`EtcdError::Refused`].
    pub async fn next(&mut self) -> Result<Option<WatchUpdate>, EtcdError> {
        let message = match self.messages.next::<json::WatchMessage>().await {
            Ok(message) => message,
            Err(EtcdError::Unreachable { reason, .. }) => {
                return Err(EtcdError::unreachable(&self.endpoint, reason))
            }
            Err(other) => return Err(other),
        };
        let Some(message) = message else {
            return Ok(None);
        };
        if let Some(error) = message.error {
            return Err(EtcdError::Refused {
                status: 200,
                code: error.code,
                message: error.message,
            });
        }
        let result = message.result.unwrap_or_default();
        Ok(Some(WatchUpdate {
            revision: result.header.revision.0,
            created: result.created,
            canceled: result.canceled,
            compact_revision: result.compact_revision.0,
            cancel_reason: result.cancel_reason,
            events: result
                .events
                .into_iter()
                .map(|event| match event.kind {
                    json::EventKind::Put => WatchEvent::Put(event.kv.into()),
                    json::EventKind::Delete => WatchEvent::Delete {
                        key: event.kv.key.0,
                    },
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:2379/").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        for bad in ["https://etcd:2379", "ftp://x", "http://", "http://h:1/v3"] {
            assert!(
                matches!(
                    normalize_endpoint(bad),
                    Err(EtcdError::InvalidEndpoint { .. })
                ),
                "{bad}"
            );
        }
        assert!(EtcdClient::builder(Vec::<String>::new()).build().is_err());
    }

    /// A fake etcd on loopback that answers every request with `reply` (raw HTTP), or
    /// never answers when `reply` is `None`.
    async fn fake_etcd(reply: Option<(&'static str, &'static str)>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let _ = stream.read(&mut request).await;
                    match reply {
                        Some((status, body)) => {
                            let reply = format!(
                                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                                 content-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = stream.write_all(reply.as_bytes()).await;
                            let _ = stream.shutdown().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn client(endpoint: &str) -> EtcdClient {
        EtcdClient::builder([endpoint])
            .request_timeout(Duration::from_millis(300))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn hostile_answers_are_typed_errors() {
        let garbage = fake_etcd(Some(("200 OK", "not json!"))).await;
        let error = client(&garbage).get_prefix(b"/x").await.unwrap_err();
        assert!(matches!(error, EtcdError::Decode(_)), "{error:?}");

        let refused = fake_etcd(Some((
            "400 Bad Request",
            r#"{"error":"bad","code":3,"message":"etcdserver: bad"}"#,
        )))
        .await;
        match client(&refused).put(b"k", b"v", 0).await.unwrap_err() {
            EtcdError::Refused {
                status: 400,
                code: 3,
                message,
            } => assert_eq!(message, "etcdserver: bad"),
            other => panic!("{other:?}"),
        }

        let silent = fake_etcd(None).await;
        let error = client(&silent).lease_grant(5).await.unwrap_err();
        assert!(matches!(error, EtcdError::Unreachable { .. }), "{error:?}");

        let broken_watch = fake_etcd(Some((
            "200 OK",
            "{\"result\":{\"created\":true}}\n{\"result\":[",
        )))
        .await;
        let mut watch = client(&broken_watch).watch_prefix(b"/p/", 1).await.unwrap();
        assert!(watch.next().await.unwrap().unwrap().created);
        let error = watch.next().await;
        assert!(
            matches!(
                error,
                Err(EtcdError::Decode(_)) | Err(EtcdError::Unreachable { .. })
            ),
            "a truncated message is an error, not a hang: {error:?}"
        );
    }
}
