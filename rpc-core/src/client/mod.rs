//! The client side: a multiplexed [`Connection`] and the [`Client`] that generated
//! `{Trait}Client` types wrap. A client sends through one connection or through any
//! [`Channel`] (a balanced set of endpoints, for example).

mod channel;
mod config;
mod connection;
mod handshake;
mod middleware;
pub mod observer;
mod routing;
mod task;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

/// The buffer [`EncodeArgs`] encode into (re-exported for middleware that wraps them).
pub use bytes::BytesMut;
pub use channel::{Channel, ChannelFuture, ConnectionFuture, EncodeArgs, Hedging, OutgoingCall};
pub use config::ClientConfig;
pub(crate) use config::DEFAULT_MAX_IN_FLIGHT;
pub use connection::Connection;
pub use handshake::with_version_fallback;
pub use middleware::{ClientMiddleware, ClientNext, Destination};
pub use observer::ClientObserver;

use observer::{ClientObservers, ClientWatch};
pub use routing::{fnv1a, RoutingKey};

use crate::codec;
use crate::context::{self, Metadata};
use crate::error::{CallError, RpcError};
use crate::protocol::{status, PayloadCodec, ResponseFrame};
use crate::Streaming;

/// A method as the client addresses it on the wire. The `#[service]` macro generates one
/// per trait method.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    /// The service name (the trait's name unless renamed).
    pub service: &'static str,
    /// The method name.
    pub name: &'static str,
    /// Whether a retry of this method is safe.
    pub idempotent: bool,
    /// Whether its payloads are compressed (`#[compress]`): `Some(true)` whenever that
    /// makes them smaller, `Some(false)` never, `None` as the connection's threshold
    /// says. Needs protocol version 5 and a peer that can decompress; see
    /// [`crate::ClientConfig::compression`].
    pub compress: Option<bool>,
    /// Its parameter names in order (a streaming parameter excluded): a call sent in
    /// JSON by name (protocol version 6, when the server's schema differs) uses them.
    pub params: &'static [&'static str],
    /// The schema of its service ([`crate::schema`]), whose fingerprint for this method
    /// is compared with the server's on protocol version 6; `None`: never compared.
    pub schema: Option<fn() -> &'static crate::schema::ServiceSchema>,
}

/// Methods are equal when they name the same method the same way (the schema is not
/// compared).
impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.service == other.service
            && self.name == other.name
            && self.idempotent == other.idempotent
            && self.compress == other.compress
            && self.params == other.params
    }
}

impl Eq for Method {}

impl Method {
    /// A method of `service` named `name`: not idempotent, compressed as the
    /// connection's threshold says. For callers that build methods by hand; the
    /// `#[service]` macro generates them.
    pub const fn new(service: &'static str, name: &'static str) -> Self {
        Method {
            service,
            name,
            idempotent: false,
            compress: None,
            params: &[],
            schema: None,
        }
    }
}

/// Per-call settings carried by a [`Client`]: a timeout, metadata, a routing key, a
/// compression choice.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    metadata: Metadata,
    routing_key: Option<u64>,
    compress: Option<bool>,
    hedging: Option<Hedging>,
}

impl CallOptions {
    /// The timeout of calls made with these options, if set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The metadata attached to calls made with these options.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The key for consistent-hash routing, if set.
    pub fn routing_key(&self) -> Option<u64> {
        self.routing_key
    }

    /// Whether calls made with these options compress what they send, if set (it
    /// overrides the method's `#[compress]` and the connection's threshold).
    pub fn compression(&self) -> Option<bool> {
        self.compress
    }

    /// The hedging choice of calls made with these options, if set.
    pub fn hedging(&self) -> Option<Hedging> {
        self.hedging
    }
}

/// Where a [`Client`] sends its calls.
#[derive(Clone)]
enum Target {
    /// One connection: the direct, allocation-free path.
    Connection(Connection),
    /// Anything else.
    Channel(Arc<dyn Channel>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Connection(c) => c.fmt(f),
            Target::Channel(_) => f.write_str("Channel"),
        }
    }
}

/// A connection (or [`Channel`]) plus per-call options: what every generated
/// `{Trait}Client` holds.
///
/// Cloning is cheap (reference counts). The `with_*` methods return a copy with changed
/// options, so a single call can be given its own timeout or metadata:
/// `calc.with_timeout(Duration::from_millis(50)).add(1, 2).await`.
#[derive(Clone)]
pub struct Client {
    target: Target,
    options: CallOptions,
    /// Middleware around every call ([`Client::layer`]); `None`: the direct path.
    layers: Option<Arc<[Arc<dyn ClientMiddleware>]>>,
    /// Observers of every unary call ([`Client::observe`]).
    observers: Option<ClientObservers>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .field("options", &self.options)
            .field("layers", &self.layers.as_ref().map_or(0, |l| l.len()))
            .finish()
    }
}

impl From<Connection> for Client {
    fn from(connection: Connection) -> Self {
        Client::new(connection)
    }
}

impl Client {
    /// A client over `connection` with default options.
    pub fn new(connection: Connection) -> Self {
        Client {
            target: Target::Connection(connection),
            options: CallOptions::default(),
            layers: None,
            observers: None,
        }
    }

    /// A client sending through `channel` with default options.
    pub fn from_channel(channel: Arc<dyn Channel>) -> Self {
        Client {
            target: Target::Channel(channel),
            options: CallOptions::default(),
            layers: None,
            observers: None,
        }
    }

    /// The connection, if this client sends through a single connection.
    pub fn connection(&self) -> Option<&Connection> {
        match &self.target {
            Target::Connection(c) => Some(c),
            Target::Channel(_) => None,
        }
    }

    /// The options applied to each call.
    pub fn options(&self) -> &CallOptions {
        &self.options
    }

    /// The return value of a call, or the error its status names.
    fn decode_value<R: DeserializeOwned>(
        &self,
        method: &Method,
        response: ResponseFrame,
    ) -> Result<R, RpcError> {
        match response.status {
            status::OK if response.json => decode_json(method, "result", &response.payload),
            status::OK => codec::decode(&response.payload),
            other => Err(status_error(method, other, &response.payload)),
        }
    }

    /// The return value of a call declared `-> Result<T, E>`: `E` as
    /// [`CallError::Application`], framework failures as [`CallError::Rpc`].
    fn decode_fallible<T: DeserializeOwned, E: DeserializeOwned>(
        &self,
        method: &Method,
        response: ResponseFrame,
    ) -> Result<T, CallError<E>> {
        match response.status {
            status::OK if response.json => Ok(decode_json(method, "result", &response.payload)?),
            status::OK => Ok(codec::decode(&response.payload)?),
            status::APPLICATION_ERROR if response.json => Err(CallError::Application(decode_json(
                method,
                "error",
                &response.payload,
            )?)),
            status::APPLICATION_ERROR => {
                Err(CallError::Application(codec::decode(&response.payload)?))
            }
            other => Err(status_error(method, other, &response.payload).into()),
        }
    }

    /// A copy whose calls pass through `middleware` too (after the layers added before):
    /// it runs around every unary call and may decorate the metadata
    /// of every call. `{Trait}Client::from_client(client.layer(m))` gives a typed client.
    pub fn layer(mut self, middleware: impl ClientMiddleware) -> Self {
        let middleware: Arc<dyn ClientMiddleware> = Arc::new(middleware);
        self.layers = Some(crate::util::appended(self.layers.as_deref(), middleware));
        self
    }

    /// A copy whose unary calls `observer` is told of as they end (see [`observer`]):
    /// what client metrics use, at a fraction of a middleware's cost.
    pub fn observe(mut self, observer: impl ClientObserver) -> Self {
        let observer: Arc<dyn ClientObserver> = Arc::new(observer);
        self.observers = Some(crate::util::appended(self.observers.as_deref(), observer));
        self
    }

    /// The metadata `method`'s calls carry: the options', decorated by the layers.
    fn metadata_for(&self, method: &Method) -> std::borrow::Cow<'_, Metadata> {
        match &self.layers {
            None => std::borrow::Cow::Borrowed(&self.options.metadata),
            Some(layers) => std::borrow::Cow::Owned(middleware::decorated(
                layers,
                method,
                &self.options.metadata,
            )),
        }
    }

    /// A copy whose calls time out after `timeout` (overrides the connection's default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// A copy whose calls carry `metadata` (replacing metadata set before).
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.options.metadata = metadata;
        self
    }

    /// A copy whose calls carry `key` for consistent-hash routing: on a balanced channel,
    /// calls with the same key go to the same endpoint while the set is stable. The key
    /// is hashed with a specified function ([`RoutingKey`]), so every client, whatever
    /// its Rust version or language, routes it the same way.
    pub fn with_routing_key(mut self, key: impl RoutingKey) -> Self {
        self.options.routing_key = Some(key.routing_hash());
        self
    }

    /// A copy whose calls compress what they send (the arguments and any uploaded
    /// stream's items) whenever that makes it smaller (`true`), or never (`false`),
    /// whatever the method's `#[compress]` and the connection's threshold say. It needs
    /// protocol version 5 and a server that can decompress; the server's answers follow
    /// its own settings.
    pub fn with_compression(mut self, compress: bool) -> Self {
        self.options.compress = Some(compress);
        self
    }

    /// A copy whose calls hedge as `hedging` says, whatever the channel's own policy:
    /// [`Hedging::After`] a delay, or [`Hedging::Off`]. Only `#[idempotent]` methods are
    /// ever hedged, and only by a channel that hedges (a balanced channel; a single
    /// connection has nowhere else to send a hedge). See docs/SCALING.md.
    pub fn with_hedging(mut self, hedging: Hedging) -> Self {
        self.options.hedging = Some(hedging);
        self
    }

    /// `method` as this client's calls send it: with the options' compression choice,
    /// if they make one.
    fn effective(&self, method: &Method) -> Method {
        Method {
            compress: self.options.compress.or(method.compress),
            ..*method
        }
    }

    /// The deadline of a call starting now: the timeout (or the connection's default),
    /// shortened to the deadline of the handler this call is made from, if any.
    fn deadline(&self) -> Instant {
        self.deadline_from(Instant::now())
    }

    /// The deadline of a call starting at `now`.
    fn deadline_from(&self, now: Instant) -> Instant {
        let timeout = self.options.timeout.unwrap_or_else(|| match &self.target {
            Target::Connection(c) => c.config().default_timeout,
            Target::Channel(ch) => ch.default_timeout(),
        });
        // A timeout too large to represent means "no practical limit".
        let own = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(60 * 60 * 24 * 365));
        match context::inherited_deadline() {
            Some(inherited) => own.min(inherited),
            None => own,
        }
    }

    async fn send<A: Serialize + Sync + ?Sized>(
        &self,
        method: &Method,
        args: &A,
    ) -> Result<ResponseFrame, RpcError> {
        let now = Instant::now();
        let deadline = self.deadline_from(now);
        let Some(observers) = &self.observers else {
            return self
                .send_encoded(method, deadline, |buf: &mut BytesMut, c| {
                    encode_args(method, args, buf, c)
                })
                .await;
        };
        let watch = ClientWatch::start(observers, method, now);
        let encode = |buf: &mut BytesMut, c| {
            let before = buf.len();
            let encoded = encode_args(method, args, buf, c);
            watch
                .request_bytes
                .store(buf.len() - before, std::sync::atomic::Ordering::Relaxed);
            encoded
        };
        let outcome = self.send_encoded(method, deadline, encode).await;
        watch.end(&outcome);
        outcome
    }

    /// Sends one unary call whose arguments `encode` writes.
    async fn send_encoded<E>(
        &self,
        method: &Method,
        deadline: Instant,
        encode: E,
    ) -> Result<ResponseFrame, RpcError>
    where
        E: Fn(&mut BytesMut, PayloadCodec) -> Result<(), RpcError> + Send + Sync,
    {
        if let Some(layers) = &self.layers {
            let metadata = middleware::decorated(layers, method, &self.options.metadata);
            let call = OutgoingCall {
                method,
                metadata: &metadata,
                deadline,
                routing_key: self.options.routing_key,
                encode: &encode,
                hedging: self.options.hedging,
            };
            let destination = match &self.target {
                Target::Connection(connection) => Destination::Connection(connection),
                Target::Channel(channel) => Destination::Channel(&**channel),
            };
            return ClientNext::new(layers, destination).run(call).await;
        }
        match &self.target {
            Target::Connection(connection) => {
                connection
                    .call(method, &self.options.metadata, deadline, &encode)
                    .await
            }
            Target::Channel(channel) => {
                channel
                    .call(OutgoingCall {
                        method,
                        metadata: &self.options.metadata,
                        deadline,
                        routing_key: self.options.routing_key,
                        encode: &encode,
                        hedging: self.options.hedging,
                    })
                    .await
            }
        }
    }

    /// A unary call with the JSON `args` as its payload (a connection of the JSON codec):
    /// its answer undecoded.
    pub(crate) async fn send_json(
        &self,
        method: &Method,
        args: &serde_json::Value,
    ) -> Result<ResponseFrame, RpcError> {
        let method = &self.effective(method);
        let deadline = self.deadline();
        self.send_encoded(method, deadline, |buf: &mut BytesMut, _| {
            crate::json::write_json(args, buf)
        })
        .await
    }

    /// A server-streaming call with the JSON `args` as its payload, on `connection`.
    pub(crate) async fn open_json_stream(
        &self,
        connection: &Connection,
        method: &Method,
        args: &serde_json::Value,
    ) -> Result<Streaming<serde_json::Value>, RpcError> {
        let method = &self.effective(method);
        let deadline = self.deadline();
        let metadata = self.metadata_for(method);
        connection
            .open_stream::<_, (), _>(
                method,
                &metadata,
                deadline,
                |buf, _| crate::json::write_json(args, buf),
                None,
            )
            .await
    }

    /// Calls `method` with `args` (a tuple of the arguments) and decodes its return value.
    pub async fn call<A, R>(&self, method: &Method, args: &A) -> Result<R, RpcError>
    where
        A: Serialize + Sync + ?Sized,
        R: DeserializeOwned,
    {
        let method = &self.effective(method);
        let response = self.send(method, args).await?;
        self.decode_value(method, response)
    }

    /// The connection a streaming call goes on (the direct one, or the channel's pick).
    async fn stream_connection<A: Serialize + Sync + ?Sized>(
        &self,
        method: &Method,
        args: &A,
        deadline: Instant,
        metadata: &Metadata,
    ) -> Result<Connection, RpcError> {
        match &self.target {
            Target::Connection(connection) => Ok(connection.clone()),
            Target::Channel(channel) => {
                let encode = |buf: &mut BytesMut, c| encode_args(method, args, buf, c);
                let call = OutgoingCall {
                    method,
                    metadata,
                    deadline,
                    routing_key: self.options.routing_key,
                    encode: &encode,
                    hedging: self.options.hedging,
                };
                channel.stream_connection(&call).await
            }
        }
    }

    /// Calls a method whose answer is a stream (server streaming). Returns once the call
    /// is sent; the stream yields the items, and an `Err` if the call fails. The call's
    /// deadline covers the whole stream; dropping the stream cancels the call.
    pub async fn call_server_stream<A, T>(
        &self,
        method: &Method,
        args: &A,
    ) -> Result<Streaming<T>, RpcError>
    where
        A: Serialize + Sync + ?Sized,
        T: DeserializeOwned + Send + 'static,
    {
        let method = &self.effective(method);
        let deadline = self.deadline();
        let metadata = self.metadata_for(method);
        let connection = self
            .stream_connection(method, args, deadline, &metadata)
            .await?;
        connection
            .open_stream::<_, (), T>(
                method,
                &metadata,
                deadline,
                |buf, c| encode_args(method, args, buf, c),
                None,
            )
            .await
    }

    /// Calls a method that takes a stream and returns a stream (bidirectional): `items`
    /// are sent as the server grants credit while the answer streams back.
    pub async fn call_bidi_stream<A, U, T>(
        &self,
        method: &Method,
        args: &A,
        items: Streaming<U>,
    ) -> Result<Streaming<T>, RpcError>
    where
        A: Serialize + Sync + ?Sized,
        U: Serialize + DeserializeOwned + Send + 'static,
        T: DeserializeOwned + Send + 'static,
    {
        let method = &self.effective(method);
        let deadline = self.deadline();
        let metadata = self.metadata_for(method);
        let connection = self
            .stream_connection(method, args, deadline, &metadata)
            .await?;
        connection
            .open_stream(
                method,
                &metadata,
                deadline,
                |buf, c| encode_args(method, args, buf, c),
                Some(items),
            )
            .await
    }

    async fn send_with_upload<A, U>(
        &self,
        method: &Method,
        args: &A,
        items: Streaming<U>,
    ) -> Result<ResponseFrame, RpcError>
    where
        A: Serialize + Sync + ?Sized,
        U: Serialize + DeserializeOwned + Send + 'static,
    {
        let deadline = self.deadline();
        let metadata = self.metadata_for(method);
        let connection = self
            .stream_connection(method, args, deadline, &metadata)
            .await?;
        connection
            .call_with_upload(
                method,
                &metadata,
                deadline,
                |buf, c| encode_args(method, args, buf, c),
                items,
            )
            .await
    }

    /// Calls a method that takes a stream and returns one value (client streaming).
    pub async fn call_client_stream<A, U, R>(
        &self,
        method: &Method,
        args: &A,
        items: Streaming<U>,
    ) -> Result<R, RpcError>
    where
        A: Serialize + Sync + ?Sized,
        U: Serialize + DeserializeOwned + Send + 'static,
        R: DeserializeOwned,
    {
        let method = &self.effective(method);
        let response = self.send_with_upload(method, args, items).await?;
        self.decode_value(method, response)
    }

    /// [`Client::call_client_stream`] for a method declared `-> Result<T, E>`.
    pub async fn call_client_stream_fallible<A, U, T, E>(
        &self,
        method: &Method,
        args: &A,
        items: Streaming<U>,
    ) -> Result<T, CallError<E>>
    where
        A: Serialize + Sync + ?Sized,
        U: Serialize + DeserializeOwned + Send + 'static,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let method = &self.effective(method);
        let response = self.send_with_upload(method, args, items).await?;
        self.decode_fallible(method, response)
    }

    /// Calls a method declared `-> Result<T, E>`: the handler's `Err(e)` comes back as
    /// [`CallError::Application`], framework failures as [`CallError::Rpc`].
    pub async fn call_fallible<A, T, E>(&self, method: &Method, args: &A) -> Result<T, CallError<E>>
    where
        A: Serialize + Sync + ?Sized,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let method = &self.effective(method);
        let response = self.send(method, args).await?;
        self.decode_fallible(method, response)
    }
}

/// `args` (a tuple of the arguments) in `codec`: bincode, or a JSON object keyed by
/// `method`'s parameter names.
fn encode_args<A: Serialize + ?Sized>(
    method: &Method,
    args: &A,
    buf: &mut BytesMut,
    codec: PayloadCodec,
) -> Result<(), RpcError> {
    match codec {
        PayloadCodec::Bincode => codec::encode_into(args, buf),
        PayloadCodec::Json => crate::json::write_args_by_name(method.params, args, buf),
    }
}

/// A value of an answer in JSON by name (version 6), read with this side's types.
fn decode_json<T: DeserializeOwned>(
    method: &Method,
    what: &str,
    payload: &[u8],
) -> Result<T, RpcError> {
    crate::json::decode_translated(Some(method), what, payload)
}

impl RpcError {
    /// The error a non-success response status of a call to `method` means
    /// (`docs/PROTOCOL.md`, section 7): for [`Channel`]s that look at a response before
    /// the caller does (to retry it, or count it against an endpoint).
    pub fn from_status(method: &Method, status: u8, payload: &[u8]) -> RpcError {
        status_error(method, status, payload)
    }
}

/// The [`RpcError`] for a non-success response status (`docs/PROTOCOL.md`, section 7).
pub(crate) fn status_error(method: &Method, code: u8, payload: &[u8]) -> RpcError {
    let message = || String::from_utf8_lossy(payload).into_owned();
    match code {
        status::UNKNOWN_SERVICE => RpcError::UnknownService {
            service: method.service.to_string(),
        },
        status::UNKNOWN_METHOD => RpcError::UnknownMethod {
            service: method.service.to_string(),
            method: method.name.to_string(),
        },
        status::INVALID_ARGUMENTS => RpcError::InvalidArguments {
            message: format!("`{}.{}`: {}", method.service, method.name, message()),
        },
        status::SCHEMA_MISMATCH => RpcError::SchemaMismatch {
            message: format!("`{}.{}` {}", method.service, method.name, message()),
            handler_ran: false,
        },
        status::DEADLINE_EXCEEDED => RpcError::DeadlineExceeded,
        status::HANDLER_PANICKED => RpcError::HandlerPanicked { message: message() },
        status::SHUTTING_DOWN => RpcError::ShuttingDown,
        status::INTERRUPTED => RpcError::Interrupted { message: message() },
        status::ABORTED => RpcError::Aborted { message: message() },
        status::UNAUTHENTICATED => RpcError::Unauthenticated { message: message() },
        status::PERMISSION_DENIED => RpcError::PermissionDenied { message: message() },
        status::OVERLOADED => RpcError::Overloaded { message: message() },
        status::FRAME_TOO_LARGE => RpcError::ResponseTooLarge { message: message() },
        status::ENCODE_FAILED => RpcError::ResponseEncodeFailed { message: message() },
        status::INTERNAL => RpcError::Internal { message: message() },
        status::APPLICATION_ERROR => RpcError::Protocol(format!(
            "`{}.{}` is not declared fallible but the server sent an application error",
            method.service, method.name
        )),
        other => RpcError::Remote {
            status: other,
            message: message(),
        },
    }
}
