//! Method ids of a version 5 connection (`docs/PROTOCOL.md`, section 22): the first
//! request of a method carries its names and binds an id to them, later requests carry
//! only the id. The client side decides ([`MethodIds`], inside the outbox's lock, so the
//! binding request is always written before the first request that uses it); the server
//! side remembers ([`BoundMethods`]).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::error::RpcError;
use crate::protocol::{Binding, Fingerprints, Naming, RequestFrame, WireStr, MAX_METHOD_IDS};
use crate::schema::ServiceSchema;
use crate::util::IdHasher;

type Fast = BuildHasherDefault<IdHasher>;

/// The ids a client bound on one connection, by service and method name, each with
/// whether the method travels in JSON by name on this connection (version 6: the
/// server's fingerprint of it differs from the client's).
#[derive(Default)]
pub(crate) struct MethodIds {
    by_service: HashMap<Box<str>, HashMap<Box<str>, Bound, Fast>, Fast>,
    bound: u32,
    /// The server's fingerprints (version 6).
    fingerprints: Option<Arc<Fingerprints>>,
}

/// A method bound on a connection, and how its calls travel for the schema that bound it.
#[derive(Clone, Copy)]
struct Bound {
    id: u32,
    json: bool,
    /// The address of the client schema the choice was made for (0: none). Clients of
    /// two versions of a trait may share a connection; each gets its own choice.
    schema: usize,
}

/// The address of the schema `schema` returns (0 for none): distinct statics have
/// distinct addresses, so equal addresses mean the same schema.
fn schema_address(schema: Option<fn() -> &'static ServiceSchema>) -> usize {
    schema.map_or(0, |schema| std::ptr::from_ref(schema()) as usize)
}

impl MethodIds {
    /// Ids for a connection whose server announced `fingerprints` (version 6).
    pub(crate) fn knowing(fingerprints: Option<Arc<Fingerprints>>) -> Self {
        MethodIds {
            fingerprints,
            ..MethodIds::default()
        }
    }

    /// How the next request for `service`'s `method` names it: by its id if it has one,
    /// else by its names, binding the next id while there are ids left.
    #[cfg(test)]
    pub(crate) fn naming<'a>(&self, service: &'a str, method: &'a str) -> Naming<'a> {
        self.name(service, method, None).0
    }

    /// [`MethodIds::naming`], and whether the request goes in JSON by name: decided when
    /// the method is bound (from `schema`'s fingerprint and the server's), then kept.
    pub(crate) fn name<'a>(
        &self,
        service: &'a str,
        method: &'a str,
        schema: Option<fn() -> &'static ServiceSchema>,
    ) -> (Naming<'a>, bool) {
        if let Some(bound) = self.by_service.get(service).and_then(|m| m.get(method)) {
            // Without fingerprints (before version 6) every call is bincode.
            if self.fingerprints.is_none() {
                return (Naming::Use(bound.id), false);
            }
            let json = if bound.schema == schema_address(schema) {
                bound.json
            } else {
                self.differs(service, method, schema)
            };
            return (Naming::Use(bound.id), json);
        }
        let json = self.differs(service, method, schema);
        if self.bound < MAX_METHOD_IDS {
            (Naming::Define(self.bound + 1, service, method), json)
        } else {
            (Naming::Inline(service, method), json)
        }
    }

    /// Whether the server's fingerprint of the method differs from ours. Not if either
    /// side has none (an older server, a hand-written service, a method the server does
    /// not have: that one is answered UNKNOWN_METHOD).
    fn differs(
        &self,
        service: &str,
        method: &str,
        schema: Option<fn() -> &'static ServiceSchema>,
    ) -> bool {
        let (Some(fingerprints), Some(schema)) = (&self.fingerprints, schema) else {
            return false;
        };
        let Some(theirs) = fingerprints.get(service, method) else {
            return false;
        };
        schema()
            .method(method)
            .is_some_and(|ours| ours.fingerprint != theirs)
    }

    /// A request named this way, for a client of `schema`, was queued: a binding takes
    /// effect.
    pub(crate) fn queued(
        &mut self,
        naming: Naming<'_>,
        json: bool,
        schema: Option<fn() -> &'static ServiceSchema>,
    ) {
        if let Naming::Define(id, service, method) = naming {
            let bound = Bound {
                id,
                json,
                schema: schema_address(schema),
            };
            self.by_service
                .entry(service.into())
                .or_default()
                .insert(method.into(), bound);
            self.bound = id;
        }
    }
}

/// The names a client bound to method ids on one connection (server side).
#[derive(Default)]
pub(crate) struct BoundMethods {
    /// Index `id - 1`; names copied out of their frame.
    names: Vec<Option<(WireStr, WireStr)>>,
}

impl BoundMethods {
    /// Applies a request's binding: remembers the names it binds, or fills in the names
    /// of the id it uses. An id bound twice, or used before it is bound, is a protocol
    /// error.
    pub(crate) fn resolve(&mut self, request: &mut RequestFrame) -> Result<(), RpcError> {
        match request.binding {
            Binding::Inline => Ok(()),
            Binding::Define(id) => {
                debug_assert!((1..=MAX_METHOD_IDS).contains(&id), "checked by the decoder");
                let index = id as usize - 1;
                if self.names.len() <= index {
                    self.names.resize(index + 1, None);
                }
                let slot = &mut self.names[index];
                if slot.is_some() {
                    return Err(RpcError::Protocol(format!(
                        "method id {id} is already bound"
                    )));
                }
                *slot = Some((request.service.detached(), request.method.detached()));
                Ok(())
            }
            Binding::Use(id) => {
                let bound = self.names.get(id as usize - 1).and_then(Option::as_ref);
                let Some((service, method)) = bound else {
                    return Err(RpcError::Protocol(format!(
                        "method id {id} was never bound"
                    )));
                };
                request.service = service.clone();
                request.method = method.clone();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_binds_and_later_ones_use_the_id() {
        let mut ids = MethodIds::default();
        let first = ids.naming("Calculator", "add");
        assert!(matches!(first, Naming::Define(1, "Calculator", "add")));
        // Not queued (refused locally): nothing is bound.
        assert!(matches!(
            ids.naming("Calculator", "add"),
            Naming::Define(1, ..)
        ));
        ids.queued(first, false, None);
        assert!(matches!(ids.naming("Calculator", "add"), Naming::Use(1)));
        let other = ids.naming("Calculator", "div");
        assert!(matches!(other, Naming::Define(2, ..)));
        ids.queued(other, false, None);
        assert!(matches!(ids.naming("Other", "add"), Naming::Define(3, ..)));
    }

    #[test]
    fn past_the_limit_methods_are_named_inline() {
        let mut ids = MethodIds::default();
        for n in 0..MAX_METHOD_IDS {
            let name = n.to_string();
            let naming = ids.naming("S", &name);
            assert!(matches!(naming, Naming::Define(id, ..) if id == n + 1));
            ids.queued(naming, false, None);
        }
        assert!(matches!(ids.naming("S", "new"), Naming::Inline("S", "new")));
        assert!(matches!(ids.naming("S", "7"), Naming::Use(8)));
    }

    fn request(binding: Binding, service: &'static str, method: &'static str) -> RequestFrame {
        RequestFrame {
            id: 1,
            flags: 0,
            budget_micros: 0,
            service: WireStr::from_static(service),
            method: WireStr::from_static(method),
            binding,
            compressed: false,
            metadata: crate::Metadata::new(),
            payload: bytes::Bytes::new(),
        }
    }

    #[test]
    fn the_server_fills_in_bound_names_and_refuses_unknown_or_rebound_ids() {
        let mut bound = BoundMethods::default();
        bound
            .resolve(&mut request(Binding::Define(2), "Calculator", "add"))
            .unwrap();
        let mut using = request(Binding::Use(2), "", "");
        bound.resolve(&mut using).unwrap();
        assert_eq!(
            (using.service.as_str(), using.method.as_str()),
            ("Calculator", "add")
        );
        assert!(bound
            .resolve(&mut request(Binding::Use(1), "", ""))
            .is_err());
        assert!(bound
            .resolve(&mut request(Binding::Use(3), "", ""))
            .is_err());
        assert!(bound
            .resolve(&mut request(Binding::Define(2), "Other", "x"))
            .is_err());
        let mut inline = request(Binding::Inline, "S", "m");
        bound.resolve(&mut inline).unwrap();
        assert_eq!(inline.service.as_str(), "S");
    }
}
