//! JSON over the native protocol: on a connection whose client chose the JSON payload
//! codec (protocol version 4, `docs/PROTOCOL.md` section 21), every service is served
//! through its JSON dispatcher instead of its bincode one. Framing, deadlines, metadata,
//! cancellation, flow control, middleware and observers are the native protocol's own;
//! only the payloads differ.
//!
//! The connection swaps its router for [`json_view`], whose services are [`OverJson`]
//! wrappers: the rest of the server does not know which codec a connection speaks.

use std::sync::Arc;

use super::{JsonOutcome, JsonService, Map, MethodKind, Value};
use crate::protocol::status;
use crate::server::{DispatchError, HandlerFuture, IncomingCall, Router, Service};

/// `router` with every service answering in JSON (those without a JSON dispatcher refuse
/// every call with INVALID_ARGUMENTS), its middleware and observers unchanged.
pub(crate) fn json_view(router: &Router) -> Router {
    router.map_services(|service| Arc::new(OverJson(service)) as Arc<dyn Service>)
}

/// `service` answering one call in JSON by name (protocol version 6: the client's
/// schema of the method differs from the server's): through its JSON dispatcher, with
/// arguments that do not fit this server's types refused as SCHEMA_MISMATCH.
pub(crate) fn translated(service: &Arc<dyn Service>) -> Arc<dyn Service> {
    Arc::new(Translated(OverJson(Arc::clone(service))))
}

/// A service served through its JSON dispatcher.
struct OverJson(Arc<dyn Service>);

/// [`OverJson`] for a call translated by name.
struct Translated(OverJson);

impl Service for Translated {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn methods(&self) -> &'static [&'static str] {
        self.0.methods()
    }

    fn call(&self, method: &str, call: IncomingCall) -> Result<HandlerFuture, DispatchError> {
        self.0.call(method, call).map_err(|error| match error {
            DispatchError::InvalidArguments(message) => DispatchError::SchemaMismatch(format!(
                "{message} (this server's schema of the method differs from the client's; \
                 the call was read by name)"
            )),
            other => other,
        })
    }

    fn json(&self) -> Option<&dyn JsonService> {
        self.0.json()
    }

    fn schema(&self) -> Option<&'static crate::schema::ServiceSchema> {
        self.0.schema()
    }
}

impl Service for OverJson {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn methods(&self) -> &'static [&'static str] {
        self.0.methods()
    }

    fn call(&self, method: &str, call: IncomingCall) -> Result<HandlerFuture, DispatchError> {
        let Some(json) = self.0.json() else {
            return Err(DispatchError::InvalidArguments(format!(
                "`{}` is not callable in JSON",
                self.0.name()
            )));
        };
        let (args, compress) = arguments(json, method, call.payload())?;
        let running = json.call_json(method, args)?;
        let reply = match compress {
            Some(compress) => call.into_reply().with_compression(compress),
            None => call.into_reply(),
        };
        Ok(Box::pin(async move {
            match running.await {
                Ok(JsonOutcome::Ok(value)) => reply.ok_json(&value),
                Ok(JsonOutcome::ApplicationError(error)) => reply.application_error_json(&error),
                Ok(JsonOutcome::Stream(items)) => reply.stream_json(items).await,
                Err(encode) => reply.error(status::ENCODE_FAILED, &encode.to_string()),
            }
        }))
    }

    fn json(&self) -> Option<&dyn JsonService> {
        self.0.json()
    }

    fn schema(&self) -> Option<&'static crate::schema::ServiceSchema> {
        self.0.schema()
    }
}

/// The arguments of a JSON REQUEST (an object by parameter name, an array in parameter
/// order, or an empty payload: no arguments, `{}`) and the method's `#[compress]` choice.
pub(crate) fn arguments(
    json: &dyn JsonService,
    method: &str,
    payload: &[u8],
) -> Result<(Map<String, Value>, Option<bool>), DispatchError> {
    let value = super::parse_arguments(payload)
        .map_err(|e| DispatchError::InvalidArguments(format!("the arguments are not JSON: {e}")))?;
    let described = json
        .json_methods()
        .iter()
        .find(|m| m.name == method)
        .ok_or(DispatchError::UnknownMethod)?;
    if described.kind != MethodKind::Unary && described.kind != MethodKind::ServerStream {
        // Let the dispatcher say why it refuses the method.
        return Ok((Map::new(), described.compress));
    }
    Ok((
        super::named_arguments(described, value)?,
        described.compress,
    ))
}
