//! What a server hosts: [`Service`]s (one per `#[service]` trait, generated as
//! `{Trait}Server`), gathered in a [`Router`] by name, and the [`IncomingCall`] /
//! [`ReplyTo`] pair through which a service reads arguments and answers.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::interceptor::{Interceptor, Rejection};
use super::middleware::{InterceptorLayer, Middleware};
use super::observer::{CallWatch, Observers, ServerObserver};
use super::state::ConnectionState;
use crate::codec;
use crate::error::RpcError;
use crate::protocol::fit_message;
use crate::protocol::{flags, kind, status, PayloadCodec, STREAMING_VERSION};
use crate::stream::{send_items_with, Sent, StreamPeer};
use crate::Streaming;

/// The future of one running handler. It answers through its [`ReplyTo`] and ends with
/// what the answer was.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Answered> + Send + 'static>>;

/// How a call was answered, as a [`ReplyTo`] reports it: the status sent (none if the
/// call had already ended, for example cancelled), the size of the answer, and the
/// stream items each way. Only a `ReplyTo` makes one, so a handler future that returns
/// one has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    status: Option<u8>,
    response_bytes: usize,
    items_sent: u64,
    items_received: u64,
}

impl Answered {
    /// The status sent ([`crate::protocol::status`]); `None` if nothing was sent because
    /// the call had already ended (cancelled, the connection closing).
    pub fn status(&self) -> Option<u8> {
        self.status
    }

    /// Bytes of the answer's payload: the encoded value, or an error's message.
    pub fn response_bytes(&self) -> usize {
        self.response_bytes
    }

    /// Items of the call's stream sent to the caller (server streaming).
    pub fn items_sent(&self) -> u64 {
        self.items_sent
    }

    /// Items of the caller's stream received (client streaming).
    pub fn items_received(&self) -> u64 {
        self.items_received
    }

    /// An answer given outside a connection (an HTTP gateway's): `status` and the body's
    /// size.
    pub fn external(status: u8, response_bytes: usize) -> Self {
        Answered {
            status: Some(status),
            response_bytes,
            items_sent: 0,
            items_received: 0,
        }
    }

    /// No answer: the call ended before one was sent.
    pub(crate) fn unanswered() -> Self {
        Answered {
            status: None,
            response_bytes: 0,
            items_sent: 0,
            items_received: 0,
        }
    }

    /// The same answer with stream item counts.
    pub fn with_items(mut self, sent: u64, received: u64) -> Self {
        self.items_sent = sent;
        self.items_received = received;
        self
    }
}

/// Why a service could not start a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchError {
    /// The service has no method of that name.
    UnknownMethod,
    /// The arguments did not decode as the method's parameters.
    InvalidArguments(String),
    /// The arguments of a call translated by name (protocol version 6) do not fit this
    /// server's schema of the method.
    SchemaMismatch(String),
}

impl DispatchError {
    /// The refusal the error means for a call of `service.method` (UNKNOWN_METHOD or
    /// INVALID_ARGUMENTS), for any transport that answers it.
    pub fn into_rejection(self, service: &str, method: &str) -> Rejection {
        match self {
            DispatchError::UnknownMethod => Rejection::status(
                status::UNKNOWN_METHOD,
                format!("`{service}` has no method `{method}`"),
            ),
            DispatchError::InvalidArguments(message) => {
                Rejection::status(status::INVALID_ARGUMENTS, message)
            }
            DispatchError::SchemaMismatch(message) => {
                Rejection::status(status::SCHEMA_MISMATCH, message)
            }
        }
    }
}

/// A service a server can host: the `#[service]` macro implements it for each generated
/// `{Trait}Server`. Hand-written implementations are possible (proxies, gateways).
pub trait Service: Send + Sync + 'static {
    /// The name clients address the service by.
    fn name(&self) -> &'static str;

    /// The names of its methods.
    fn methods(&self) -> &'static [&'static str];

    /// Starts `method` for `call`: decodes the arguments and returns the handler future,
    /// which must answer through [`IncomingCall::into_reply`].
    fn call(&self, method: &str, call: IncomingCall) -> Result<HandlerFuture, DispatchError>;

    /// The same service callable in JSON ([`crate::json`]), if it offers that: every
    /// service `#[service]` generates does. The default offers nothing.
    fn json(&self) -> Option<&dyn crate::json::JsonService> {
        None
    }

    /// The schema of its methods ([`crate::schema`]), announced to clients of protocol
    /// version 6 as fingerprints: every service `#[service]` generates has one. The
    /// default has none (clients then cannot detect a different version of a method).
    fn schema(&self) -> Option<&'static crate::schema::ServiceSchema> {
        None
    }
}

/// A call that arrived for a service: its encoded arguments and where to send the answer.
pub struct IncomingCall {
    payload: Bytes,
    reply: ReplyTo,
}

impl IncomingCall {
    pub(crate) fn new(payload: Bytes, reply: ReplyTo) -> Self {
        IncomingCall { payload, reply }
    }

    /// Decodes the arguments as `A` (the tuple of the method's parameter types).
    pub fn decode_args<A: DeserializeOwned>(&self) -> Result<A, DispatchError> {
        codec::decode(&self.payload).map_err(|e| DispatchError::InvalidArguments(e.to_string()))
    }

    /// The raw encoded arguments.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The stream the caller sends after the request (a client-streaming method's
    /// `Streaming` argument). Items that arrive before the handler reads them wait, within
    /// the stream's flow-control window.
    pub fn take_stream<T>(&self) -> Result<Streaming<T>, DispatchError> {
        let connection = &self.reply.connection;
        if connection.version < STREAMING_VERSION {
            return Err(DispatchError::InvalidArguments(format!(
                "streaming methods need protocol version {STREAMING_VERSION}; the client speaks {}",
                connection.version
            )));
        }
        let inbound = connection.streams.new_inbound();
        connection
            .streams
            .add_inbound(self.reply.id, Arc::clone(&inbound));
        let _ = self.reply.inbound.set(Arc::clone(&inbound));
        Ok(Streaming::remote(
            inbound,
            Arc::clone(connection) as Arc<dyn StreamPeer>,
            self.reply.id,
            None,
            None,
            PayloadCodec::Bincode,
        ))
    }

    /// The handle through which the handler answers.
    pub fn into_reply(self) -> ReplyTo {
        self.reply
    }
}

/// Where a handler sends its answer: encodes it straight into the connection's write
/// buffer. Consumed by the answer, so a handler answers at most once; a call that was
/// cancelled or shut down meanwhile is not answered again.
pub struct ReplyTo {
    connection: Arc<ConnectionState>,
    id: u64,
    /// The call's instance if it is registered as running (answering first claims it),
    /// 0 if not.
    instance: u64,
    /// The caller's stream, if the handler took it (to count its items).
    inbound: std::sync::OnceLock<Arc<crate::stream::Inbound>>,
    /// Whether the answer is compressed ([`ReplyTo::with_compression`]); `None`: as the
    /// server's threshold says.
    compress: Option<bool>,
    /// The call is in JSON by name (version 6): its value `RESPONSE` is flagged JSON.
    json: bool,
}

impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo").field("id", &self.id).finish()
    }
}

impl ReplyTo {
    /// For call `id`, whose handler is (about to be) registered as running as `instance`.
    pub(crate) fn registered(connection: Arc<ConnectionState>, id: u64, instance: u64) -> Self {
        ReplyTo {
            connection,
            id,
            instance,
            inbound: std::sync::OnceLock::new(),
            compress: None,
            json: false,
        }
    }

    /// This reply for a call in JSON by name (version 6).
    pub(crate) fn in_json(mut self) -> Self {
        self.json = true;
        self
    }

    /// For a call that never ran (refused before dispatch) or was already claimed.
    pub(crate) fn unregistered(connection: Arc<ConnectionState>, id: u64) -> Self {
        ReplyTo {
            connection,
            id,
            instance: 0,
            inbound: std::sync::OnceLock::new(),
            compress: None,
            json: false,
        }
    }

    /// Whether this reply may still answer: claims a registered call.
    fn claim(&self) -> bool {
        self.instance == 0 || self.connection.claim(self.id, self.instance)
    }

    /// What answering nothing (the call already ended) reports.
    fn unanswered(&self) -> Answered {
        Answered {
            status: None,
            response_bytes: 0,
            items_sent: 0,
            items_received: self.items_received(),
        }
    }

    fn items_received(&self) -> u64 {
        self.inbound.get().map_or(0, |i| i.items_received())
    }

    fn answered(&self, status: u8, response_bytes: usize) -> Answered {
        Answered {
            status: Some(status),
            response_bytes,
            items_sent: 0,
            items_received: self.items_received(),
        }
    }

    /// This reply with its value or stream items compressed whenever that makes them
    /// smaller (`true`), or never (`false`), whatever the server's threshold says (what
    /// a method declared `#[compress]` or `#[compress(false)]` answers with). It needs
    /// protocol version 5 and a client that can decompress.
    pub fn with_compression(mut self, compress: bool) -> Self {
        self.compress = Some(compress);
        self
    }

    /// Answers with the handler's return value.
    pub fn ok<T: Serialize + ?Sized>(self, value: &T) -> Answered {
        self.payload(status::OK, value)
    }

    /// Answers with a stream (a server-streaming method): sends its items as the client
    /// grants credit, then ends the call. An `Err` item ends it with status `ABORTED`.
    pub async fn stream<T: Serialize>(self, items: Streaming<T>) -> Answered {
        self.stream_with(items, |item, buf| codec::encode_catching(item, buf))
            .await
    }

    /// Answers with a stream of JSON values (a connection of the JSON codec).
    pub(crate) async fn stream_json(self, items: Streaming<serde_json::Value>) -> Answered {
        self.stream_with(items, crate::json::write_json).await
    }

    /// Answers with a stream whose items `encode` writes.
    async fn stream_with<T, E>(self, mut items: Streaming<T>, encode: E) -> Answered
    where
        E: Fn(&T, &mut BytesMut) -> Result<(), RpcError>,
    {
        let connection = Arc::clone(&self.connection);
        if connection.version < STREAMING_VERSION {
            return self.error(
                status::INVALID_ARGUMENTS,
                "streaming methods need protocol version 2",
            );
        }
        let outbound = connection.streams.add_outbound(self.id);
        let sent = send_items_with(
            &mut items,
            &connection.outbox,
            (&outbound, self.id),
            self.compress,
            encode,
        )
        .await;
        let items_sent = outbound.items_sent();
        let answered = match sent {
            // Stopped: the call ended meanwhile (cancelled, shut down); answering is then a
            // no-op, since the call was claimed.
            Ok(Sent::All | Sent::Stopped) => self.ok(&()),
            Err(RpcError::Aborted { message }) => self.error(status::ABORTED, &message),
            Err(RpcError::HandlerPanicked { message }) => {
                self.error(status::HANDLER_PANICKED, &message)
            }
            Err(RpcError::Encode(message)) => self.error(status::ENCODE_FAILED, &message),
            Err(RpcError::FrameTooLarge { size, limit }) => self.error(
                status::FRAME_TOO_LARGE,
                &format!(
                    "a stream item of {size} bytes exceeds the client's limit of {limit} bytes"
                ),
            ),
            Err(e) => self.error(status::ABORTED, &e.to_string()),
        };
        Answered {
            items_sent,
            ..answered
        }
    }

    /// Answers with the application error `Err(error)` of a method declared
    /// `-> Result<T, E>`.
    pub fn application_error<E: Serialize + ?Sized>(self, error: &E) -> Answered {
        self.payload(status::APPLICATION_ERROR, error)
    }

    /// Answers with a JSON result (a connection of the JSON codec).
    pub(crate) fn ok_json(self, value: &serde_json::Value) -> Answered {
        self.payload_with(status::OK, |buf| crate::json::write_json(value, buf))
    }

    /// Answers with a JSON application error (a connection of the JSON codec).
    pub(crate) fn application_error_json(self, error: &serde_json::Value) -> Answered {
        self.payload_with(status::APPLICATION_ERROR, |buf| {
            crate::json::write_json(error, buf)
        })
    }

    fn payload<T: Serialize + ?Sized>(self, code: u8, value: &T) -> Answered {
        self.payload_with(code, |buf| codec::encode_catching(value, buf))
    }

    /// Answers with status `code` and the payload `encode` writes.
    fn payload_with<E>(self, code: u8, encode: E) -> Answered
    where
        E: FnOnce(&mut BytesMut) -> Result<(), RpcError>,
    {
        if !self.claim() {
            return self.unanswered();
        }
        // Encoded in place, under a panic guard: a `Serialize` impl that panics fails
        // this call (HANDLER_PANICKED), at once, and nothing else.
        let flags = if self.json { flags::JSON } else { 0 };
        let outcome = self.connection.outbox.push(
            (kind::RESPONSE, flags, self.id),
            self.compress,
            |buf| buf.put_u8(code),
            encode,
        );
        match outcome {
            Ok(size) => self.answered(code, size),
            Err(RpcError::FrameTooLarge { size, limit }) => self.push_error(
                status::FRAME_TOO_LARGE,
                &format!(
                    "the response of {size} bytes exceeds the client's limit of {limit} bytes"
                ),
            ),
            Err(RpcError::Encode(message)) => self.push_error(status::ENCODE_FAILED, &message),
            Err(RpcError::HandlerPanicked { message }) => {
                tracing::warn!(id = self.id, %message, "serializing a response panicked");
                self.push_error(status::HANDLER_PANICKED, &message)
            }
            // The connection is closing: nobody is left to answer.
            Err(_) => self.unanswered(),
        }
    }

    /// Answers with a framework status and a message, as a hand-written [`Service`] may
    /// (`status::OVERLOADED`, `status::UNAUTHENTICATED`, ... from
    /// [`crate::protocol::status`]). `OK` and `APPLICATION_ERROR` carry values, not
    /// messages: answer those with [`ReplyTo::ok`] and [`ReplyTo::application_error`]
    /// (given here, the call is answered `INTERNAL`).
    pub fn error(self, code: u8, message: &str) -> Answered {
        if !self.claim() {
            return self.unanswered();
        }
        if code == status::OK || code == status::APPLICATION_ERROR {
            return self.push_error(
                status::INTERNAL,
                &format!("the service answered status {code} without a value: {message}"),
            );
        }
        self.push_error(code, message)
    }

    /// Queues an error response, its message cut to fit the client's frame limit.
    fn push_error(&self, code: u8, message: &str) -> Answered {
        let message = fit_message(message, self.connection.outbox.max_frame_size());
        let pushed = self.connection.outbox.push(
            (kind::RESPONSE, 0, self.id),
            None,
            |buf| buf.put_u8(code),
            |buf| {
                buf.put_slice(message.as_bytes());
                Ok(())
            },
        );
        match pushed {
            Ok(size) => self.answered(code, size),
            Err(_) => self.unanswered(),
        }
    }
}

/// The services of one server, by name, and the middleware every call passes through
/// ([`Router::layer`], [`Router::with_interceptor`]).
#[derive(Clone, Default)]
pub struct Router {
    services: HashMap<&'static str, Arc<dyn Service>>,
    layers: Vec<Arc<dyn Middleware>>,
    /// `layers` as the connections share it (rebuilt when a layer is added).
    chain: Option<Arc<[Arc<dyn Middleware>]>>,
    /// The observers, as the connections share them (rebuilt when one is added).
    observers: Option<Observers>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.services.keys()).finish()
    }
}

impl Router {
    /// A router with no services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service: `Router::new().add_service(a)?.add_service(b)?`. Two services
    /// cannot share a name (calls address services by name): adding a second one with
    /// a name already taken is an error, and the router is dropped.
    pub fn add_service<S: Service>(mut self, service: S) -> Result<Self, DuplicateService> {
        let name = service.name();
        if self.services.contains_key(name) {
            return Err(DuplicateService { name });
        }
        self.services.insert(name, Arc::new(service));
        Ok(self)
    }

    /// Runs `interceptor` before every call of every service, as a middleware (after the
    /// layers added before it, before those added after).
    pub fn with_interceptor(self, interceptor: impl Interceptor) -> Self {
        self.layer(InterceptorLayer(Arc::new(interceptor)))
    }

    /// Runs `middleware` around every call of every service. The first layer added is
    /// the outermost: it sees the call first and its answer last.
    pub fn layer(mut self, middleware: impl Middleware) -> Self {
        self.layers.push(Arc::new(middleware));
        self.chain = Some(self.layers.clone().into());
        self
    }

    /// Tells `observer` of every call of every service: when it starts and how it ended
    /// (see [`super::observer`]). Observers cost far less than middleware; metrics use
    /// them.
    pub fn observe(mut self, observer: impl ServerObserver) -> Self {
        let observer: Arc<dyn ServerObserver> = Arc::new(observer);
        self.observers = Some(crate::util::appended(self.observers.as_deref(), observer));
        self
    }

    /// The observers, if any was added.
    pub(crate) fn observers(&self) -> Option<&Observers> {
        self.observers.as_ref()
    }

    /// Tells the observers that a call of `service.method` arrived by another transport
    /// (the HTTP gateway), with `request_bytes` of arguments; end it with
    /// [`CallWatch::end`]. `method` is `None` for a name the service does not have
    /// (observers label it as an unknown method). `None` if the router has no observers.
    pub fn watch_call(
        &self,
        id: u64,
        service: &'static str,
        method: Option<&'static str>,
        request_bytes: usize,
    ) -> Option<CallWatch> {
        let observers = self.observers.as_ref()?;
        Some(CallWatch::start(
            observers,
            id,
            service,
            method,
            request_bytes,
            tokio::time::Instant::now(),
        ))
    }

    /// The middleware chain, if any layer was added.
    pub fn middleware(&self) -> Option<&Arc<[Arc<dyn Middleware>]>> {
        self.chain.as_ref()
    }

    /// The service named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Service>> {
        self.services.get(name)
    }

    /// The same router with every service replaced by `wrap(service)` (middleware and
    /// observers kept).
    pub(crate) fn map_services(
        &self,
        wrap: impl Fn(Arc<dyn Service>) -> Arc<dyn Service>,
    ) -> Router {
        Router {
            services: self
                .services
                .iter()
                .map(|(name, service)| (*name, wrap(Arc::clone(service))))
                .collect(),
            ..self.clone()
        }
    }

    /// The names of the hosted services.
    pub fn service_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.services.keys().copied()
    }
}

impl<S: Service> From<S> for Router {
    fn from(service: S) -> Self {
        let mut router = Router::new();
        router.services.insert(service.name(), Arc::new(service));
        router
    }
}

/// [`Router::add_service`] was given a second service with a name already taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a service named `{name}` is already added to this router")]
pub struct DuplicateService {
    /// The name both services have.
    pub name: &'static str,
}
