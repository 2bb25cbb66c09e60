//! Generates the rewritten trait, `{Trait}Request`, `{Trait}Response`, `{Trait}Client` and
//! `{Trait}Server` from a [`ServiceDef`]. Every path is fully qualified so the output
//! compiles under `#![no_implicit_prelude]`; the framework's items are reached through
//! [`ServiceDef::krate`] (`::traitrpc_core`, `::traitrpc`, or what `#[service(crate = "...")]`
//! says). Internal bindings are prefixed `__rpc_` so they cannot collide with argument
//! names.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{Ident, TraitItem};

use crate::model::{is_compress_attr, is_idempotent_attr, MethodDef, Output, ServiceDef};

pub fn expand(def: ServiceDef) -> TokenStream {
    let trait_def = rewrite_trait(&def);
    let request = request_enum(&def);
    let response = response_enum(&def);
    let client = client(&def);
    let server = server(&def);
    let type_checks = crate::type_checks::type_checks(&def);
    quote! {
        #type_checks
        #trait_def
        #request
        #response
        #client
        #server
    }
}

fn generated_name(def: &ServiceDef, suffix: &str) -> Ident {
    format_ident!("{}{}", def.item.ident.unraw_string(), suffix)
}

trait UnrawString {
    fn unraw_string(&self) -> String;
}

impl UnrawString for Ident {
    fn unraw_string(&self) -> String {
        syn::ext::IdentExt::unraw(self).to_string()
    }
}

/// Rewrites each `async fn m(&self, ..) -> T` into
/// `fn m(&self, ..) -> impl Future<Output = T> + Send`, so implementations can still write
/// `async fn` while the server can spawn their futures.
fn rewrite_trait(def: &ServiceDef) -> TokenStream {
    let mut item = def.item.clone();
    for method in &def.methods {
        let TraitItem::Fn(f) = &mut item.items[method.item_index] else {
            continue;
        };
        f.sig.asyncness = None;
        // `#[idempotent]` and `#[compress]` are this macro's own attributes; the compiler
        // would reject them.
        f.attrs
            .retain(|attr| !is_idempotent_attr(attr) && !is_compress_attr(attr));
        let output = method.output.declared();
        // Spanned at the method, so that a non-`Send` implementation is reported against
        // the method's declaration rather than the attribute.
        let bound = quote_spanned!(method.ident.span()=> ::core::marker::Send);
        f.sig.output = syn::parse_quote! {
            -> impl ::core::future::Future<Output = #output> + #bound
        };
        if let Some(body) = &mut f.default {
            let stmts = &body.stmts;
            *body = syn::parse_quote!({ async move { #(#stmts)* } });
            // The default body's future holds `&Self`, which is only `Send` if `Self: Sync`
            // (which the server requires of an implementation anyway).
            f.sig
                .generics
                .make_where_clause()
                .predicates
                .push(syn::parse_quote!(Self: ::core::marker::Sync));
        }
    }
    quote!(#item)
}

fn arg_types(method: &MethodDef) -> Vec<&syn::Type> {
    method.args.iter().map(|(_, ty)| ty).collect()
}

/// Whether `ty` is written `Option<..>` (optionally with a `std::option::`/`core::option::`
/// path): such a parameter may be left out of a JSON call.
fn is_option(ty: &syn::Type) -> bool {
    let syn::Type::Path(path) = ty else {
        return false;
    };
    path.qself.is_none()
        && path.path.segments.last().is_some_and(|last| {
            last.ident == "Option"
                && matches!(last.arguments, syn::PathArguments::AngleBracketed(_))
        })
}

/// Whether `ty` is written `Vec<u8>` (optionally `std::vec::Vec<u8>` or
/// `alloc::vec::Vec<u8>`): such values take the byte-string fast path, which bincode
/// encodes to the same bytes as a sequence of `u8`s.
fn is_byte_vec(ty: &syn::Type) -> bool {
    let syn::Type::Path(path) = ty else {
        return false;
    };
    if path.qself.is_some() {
        return false;
    }
    let segments: Vec<_> = path.path.segments.iter().collect();
    let Some((last, prefix)) = segments.split_last() else {
        return false;
    };
    let prefix_ok = prefix.iter().all(|s| {
        s.arguments.is_none() && ["std", "alloc", "vec"].contains(&s.ident.to_string().as_str())
    });
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    prefix_ok
        && last.ident == "Vec"
        && args.args.len() == 1
        && matches!(args.args.first(), Some(syn::GenericArgument::Type(syn::Type::Path(p))) if p.qself.is_none() && p.path.is_ident("u8"))
}

/// The type an argument or return value is decoded as: `ByteBuf` for `Vec<u8>`.
fn wire_type(krate: &syn::Path, ty: &syn::Type) -> TokenStream {
    if is_byte_vec(ty) {
        quote!(#krate::ByteBuf)
    } else {
        quote!(#ty)
    }
}

/// An expression that serializes `value` (of type `ty`) the way it goes on the wire.
fn wire_value(krate: &syn::Path, ty: &syn::Type, value: TokenStream) -> TokenStream {
    if is_byte_vec(ty) {
        quote!(#krate::__private::BytesRef(&#value))
    } else {
        value
    }
}

fn arg_names(method: &MethodDef) -> Vec<&Ident> {
    method.args.iter().map(|(name, _)| name).collect()
}

fn request_enum(def: &ServiceDef) -> TokenStream {
    let vis = &def.item.vis;
    let serde_derive = serde_derive(def);
    let name = generated_name(def, "Request");
    let trait_name = &def.item.ident;
    let doc = format!(
        "A call to one method of [`{}`]: one variant per method, holding its arguments.",
        trait_name.unraw_string()
    );
    let variants = def.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let variant = &m.variant;
        let names = arg_names(m);
        let types = arg_types(m);
        let doc = format!("The arguments of `{}`.", m.wire_name);
        let field_docs = m
            .args
            .iter()
            .map(|(name, _)| format!("The `{}` argument.", syn::ext::IdentExt::unraw(name)));
        quote! { #(#cfgs)* #[doc = #doc] #variant { #( #[doc = #field_docs] #names: #types ),* } }
    });
    let arms = def.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let variant = &m.variant;
        let wire = &m.wire_name;
        quote! { #(#cfgs)* #name::#variant { .. } => #wire }
    });
    quote! {
        #[doc = #doc]
        #serde_derive
        #[allow(clippy::large_enum_variant)]
        #vis enum #name {
            #(#variants,)*
        }

        impl #name {
            /// The name of the called method, as on the wire.
            pub fn method_name(&self) -> &'static str {
                match *self {
                    #(#arms,)*
                }
            }
        }
    }
}

fn response_enum(def: &ServiceDef) -> TokenStream {
    let vis = &def.item.vis;
    let serde_derive = serde_derive(def);
    let name = generated_name(def, "Response");
    let doc = format!(
        "The outcome of one method of [`{}`]: one variant per method, holding its return value.",
        def.item.ident.unraw_string()
    );
    let variants = def.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let variant = &m.variant;
        let ty = m.output.declared();
        let doc = format!("The return value of `{}`.", m.wire_name);
        quote! { #(#cfgs)* #[doc = #doc] #variant(#ty) }
    });
    quote! {
        #[doc = #doc]
        #serde_derive
        #[allow(clippy::large_enum_variant)]
        #vis enum #name {
            #(#variants,)*
        }
    }
}

/// serde derives for the request and response enums, unless a method streams (a stream
/// is not a value that can be serialized).
fn serde_derive(def: &ServiceDef) -> TokenStream {
    let krate = &def.krate;
    // serde's `crate` attribute takes the path as a string.
    let serde_path = format!("{}::__private::serde", quote!(#krate)).replace(' ', "");
    let streams = def
        .methods
        .iter()
        .any(|m| m.stream_arg.is_some() || matches!(m.output, Output::Stream { .. }));
    if streams {
        TokenStream::new()
    } else {
        quote! {
            #[derive(#krate::__private::serde::Serialize, #krate::__private::serde::Deserialize)]
            #[serde(crate = #serde_path)]
        }
    }
}

fn client(def: &ServiceDef) -> TokenStream {
    let krate = &def.krate;
    let vis = &def.item.vis;
    let name = generated_name(def, "Client");
    let service = &def.wire_name;
    let schema_fn = schema_fn(def);
    let doc = format!(
        "Client of the [`{}`] service: one `async fn` per method. Cheap to clone; usable \
         from many tasks at once over one connection.",
        def.item.ident.unraw_string()
    );
    let methods = def.methods.iter().map(|m| {
        let docs = &m.docs;
        let cfgs = &m.cfgs;
        let ident = &m.ident;
        let wire = &m.wire_name;
        let names = arg_names(m);
        let types = arg_types(m);
        let idempotent = m.idempotent;
        let compress = option_bool(m.compress);
        let params = m.request_args().map(|(name, _)| name.unraw_string());
        let method = quote! {
            &#krate::Method {
                service: #service,
                name: #wire,
                idempotent: #idempotent,
                compress: #compress,
                params: &[#(#params),*],
                schema: ::core::option::Option::Some(Self::service_schema),
            }
        };
        // The stream argument, if any, travels as stream items, not in the request.
        let args = m
            .request_args()
            .map(|(name, ty)| wire_value(krate, ty, quote!(#name)));
        let args = quote!(&( #(#args,)* ));
        let upload = m.stream_arg.as_ref().map(|(i, item)| (&m.args[*i].0, item));
        let (ret, body) = match (&m.output, upload) {
            (Output::Stream { item, whole }, None) => (
                quote!(::core::result::Result<#whole, #krate::RpcError>),
                quote!(self.client.call_server_stream::<_, #item>(#method, #args).await),
            ),
            (Output::Stream { item, whole }, Some((stream, up))) => (
                quote!(::core::result::Result<#whole, #krate::RpcError>),
                quote!(self.client.call_bidi_stream::<_, #up, #item>(#method, #args, #stream).await),
            ),
            (Output::Value(ty), Some((stream, up))) => {
                let wire = wire_type(krate, ty);
                let call = quote!(self.client.call_client_stream::<_, #up, #wire>(#method, #args, #stream).await);
                (
                    quote!(::core::result::Result<#ty, #krate::RpcError>),
                    if is_byte_vec(ty) {
                        quote!(#call.map(#krate::ByteBuf::into_vec))
                    } else {
                        call
                    },
                )
            }
            (Output::Fallible { ok, err, .. }, Some((stream, up))) => {
                let wire = wire_type(krate, ok);
                let call = quote!(self.client.call_client_stream_fallible::<_, #up, #wire, #err>(#method, #args, #stream).await);
                (
                    quote!(::core::result::Result<#ok, #krate::CallError<#err>>),
                    if is_byte_vec(ok) {
                        quote!(#call.map(#krate::ByteBuf::into_vec))
                    } else {
                        call
                    },
                )
            }
            (Output::Value(ty), None) => {
                let wire = wire_type(krate, ty);
                let call = quote!(self.client.call::<_, #wire>(#method, #args).await);
                (
                    quote!(::core::result::Result<#ty, #krate::RpcError>),
                    if is_byte_vec(ty) {
                        quote!(#call.map(#krate::ByteBuf::into_vec))
                    } else {
                        call
                    },
                )
            }
            (Output::Fallible { ok, err, .. }, None) => {
                let wire = wire_type(krate, ok);
                let call =
                    quote!(self.client.call_fallible::<_, #wire, #err>(#method, #args).await);
                (
                    quote!(::core::result::Result<#ok, #krate::CallError<#err>>),
                    if is_byte_vec(ok) {
                        quote!(#call.map(#krate::ByteBuf::into_vec))
                    } else {
                        call
                    },
                )
            }
        };
        quote! {
            #(#docs)*
            #(#cfgs)*
            // The argument list is the trait method's: lint that one, where the user can
            // allow it, rather than this copy, where they cannot.
            #[allow(clippy::too_many_arguments)]
            pub async fn #ident(&self, #( #names: #types ),*) -> #ret {
                #body
            }
        }
    });
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #name {
            client: #krate::Client,
        }

        impl #name {
            /// The service name on the wire.
            pub const SERVICE_NAME: &'static str = #service;

            #schema_fn

            /// A client calling over `target`: a `traitrpc_core::Connection`, or anything else
            /// that converts into a `traitrpc_core::Client` (a balanced channel, for example).
            pub fn new(target: impl ::core::convert::Into<#krate::Client>) -> Self {
                Self { client: ::core::convert::Into::into(target) }
            }

            /// A client calling through `client`, keeping its options.
            pub fn from_client(client: #krate::Client) -> Self {
                Self { client }
            }

            /// The untyped client underneath.
            pub fn client(&self) -> &#krate::Client {
                &self.client
            }

            /// A copy whose calls time out after `timeout` (overriding the connection's
            /// default): `client.with_timeout(d).method(..)` sets it for one call.
            pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                Self { client: ::core::clone::Clone::clone(&self.client).with_timeout(timeout) }
            }

            /// A copy whose calls carry `metadata`, readable by the handler through its
            /// context.
            pub fn with_metadata(&self, metadata: #krate::Metadata) -> Self {
                Self { client: ::core::clone::Clone::clone(&self.client).with_metadata(metadata) }
            }

            /// A copy whose calls compress what they send whenever that makes it smaller
            /// (`true`) or never (`false`), whatever the method's `#[compress]` and the
            /// connection's threshold say (protocol version 5).
            pub fn with_compression(&self, compress: bool) -> Self {
                Self { client: ::core::clone::Clone::clone(&self.client).with_compression(compress) }
            }

            /// A copy whose calls carry `key` for consistent-hash routing on a balanced
            /// channel (same key, same endpoint while the set is stable; the key is hashed
            /// by a specified function, the same in every client).
            pub fn with_routing_key(&self, key: impl #krate::RoutingKey) -> Self {
                Self { client: ::core::clone::Clone::clone(&self.client).with_routing_key(key) }
            }

            /// A copy whose calls hedge as `hedging` says, whatever the channel's policy
            /// (`#[idempotent]` methods on a channel that hedges only).
            pub fn with_hedging(&self, hedging: #krate::Hedging) -> Self {
                Self { client: ::core::clone::Clone::clone(&self.client).with_hedging(hedging) }
            }

            #(#methods)*
        }
    }
}

fn server(def: &ServiceDef) -> TokenStream {
    let krate = &def.krate;
    let vis = &def.item.vis;
    let name = generated_name(def, "Server");
    let client_name = generated_name(def, "Client");
    let request = generated_name(def, "Request");
    let response = generated_name(def, "Response");
    let trait_name = &def.item.ident;
    let service = &def.wire_name;
    let doc = format!(
        "Serves an implementation of [`{}`]: pass it to a server (it implements \
         `traitrpc_core::Service`).",
        trait_name.unraw_string()
    );

    let dispatch_arms = def.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let ident = &m.ident;
        let wire = &m.wire_name;
        let stream_index = m.stream_arg.as_ref().map(|(i, _)| *i);
        let types = m.request_args().map(|(_, ty)| wire_type(krate, ty));
        let mut decoded = 0;
        let fields: Vec<TokenStream> = m
            .args
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| {
                if Some(i) == stream_index {
                    return quote!(__rpc_stream);
                }
                let index = syn::Index::from(decoded);
                decoded += 1;
                if is_byte_vec(ty) {
                    quote!(#krate::ByteBuf::into_vec(__rpc_args.#index))
                } else {
                    quote!(__rpc_args.#index)
                }
            })
            .collect();
        let take_stream = m.stream_arg.as_ref().map(|(_, item)| {
            quote!(let __rpc_stream = __rpc_call.take_stream::<#item>()?;)
        });
        let answer = match &m.output {
            Output::Stream { .. } => quote!(__rpc_reply.stream(__rpc_out).await),
            Output::Value(ty) => {
                let out = wire_value(krate, ty, quote!(__rpc_out));
                quote!(__rpc_reply.ok(&#out))
            }
            Output::Fallible { ok, .. } => {
                let value = wire_value(krate, ok, quote!(__rpc_value));
                quote! {
                    match __rpc_out {
                        ::core::result::Result::Ok(__rpc_value) => __rpc_reply.ok(&#value),
                        ::core::result::Result::Err(__rpc_error) => __rpc_reply.application_error(&__rpc_error),
                    }
                }
            }
        };
        // A method's `#[compress]` governs its answer too.
        let reply = match m.compress {
            Some(compress) => quote!(__rpc_call.into_reply().with_compression(#compress)),
            None => quote!(__rpc_call.into_reply()),
        };
        quote! {
            #(#cfgs)*
            #wire => {
                let __rpc_args: ( #(#types,)* ) = __rpc_call.decode_args()?;
                #take_stream
                let __rpc_inner = ::core::clone::Clone::clone(&self.inner);
                let __rpc_reply = #reply;
                ::core::result::Result::Ok(#krate::__private::Box::pin(async move {
                    let __rpc_out = #trait_name::#ident(&*__rpc_inner, #( #fields ),*).await;
                    #answer
                }))
            }
        }
    });
    let method_names = def.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let wire = &m.wire_name;
        quote! { #(#cfgs)* __rpc_names.push(#wire); }
    });
    let handle_arms = def.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let ident = &m.ident;
        let variant = &m.variant;
        let names = arg_names(m);
        quote! {
            #(#cfgs)*
            #request::#variant { #(#names),* } => {
                #response::#variant(#trait_name::#ident(&*self.inner, #(#names),*).await)
            }
        }
    });

    let json_methods = def.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let wire = &m.wire_name;
        let params = m.request_args().map(|(name, _)| name.unraw_string());
        let idempotent = m.idempotent;
        let compress = option_bool(m.compress);
        let kind = method_kind(m);
        quote! {
            #(#cfgs)*
            __rpc_methods.push(#krate::json::JsonMethod {
                name: #wire,
                params: &[#(#params),*],
                idempotent: #idempotent,
                compress: #compress,
                kind: #krate::json::MethodKind::#kind,
            });
        }
    });
    let json_arms = def.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let ident = &m.ident;
        let wire = &m.wire_name;
        // Client and bidirectional streams take a stream of typed items: not in JSON.
        if m.stream_arg.is_some() {
            return quote! {
                #(#cfgs)*
                #wire => ::core::result::Result::Err(#krate::__private::not_unary(#wire)),
            };
        }
        let locals: Vec<Ident> = (0..m.args.len())
            .map(|i| format_ident!("__rpc_p{}", i))
            .collect();
        let takes = m.args.iter().zip(&locals).map(|((name, ty), local)| {
            let param = name.unraw_string();
            quote!(let #local: #ty = #krate::__private::take_arg(&mut __rpc_args, #param)?;)
        });
        let answer = match &m.output {
            Output::Fallible { .. } => quote! {
                match __rpc_out {
                    ::core::result::Result::Ok(__rpc_value) => ::core::result::Result::Ok(
                        #krate::json::JsonOutcome::Ok(#krate::__private::to_value(&__rpc_value)?),
                    ),
                    ::core::result::Result::Err(__rpc_error) => ::core::result::Result::Ok(
                        #krate::json::JsonOutcome::ApplicationError(#krate::__private::to_value(&__rpc_error)?),
                    ),
                }
            },
            Output::Stream { .. } => quote! {
                ::core::result::Result::Ok(#krate::json::JsonOutcome::Stream(#krate::__private::json_stream(__rpc_out)))
            },
            Output::Value(_) => quote! {
                ::core::result::Result::Ok(#krate::json::JsonOutcome::Ok(#krate::__private::to_value(&__rpc_out)?))
            },
        };
        quote! {
            #(#cfgs)*
            #wire => {
                #(#takes)*
                #krate::__private::no_other_args(&__rpc_args)?;
                let __rpc_inner = ::core::clone::Clone::clone(&self.inner);
                ::core::result::Result::Ok(#krate::__private::Box::pin(async move {
                    let __rpc_out = #trait_name::#ident(&*__rpc_inner, #(#locals),*).await;
                    #answer
                }))
            }
        }
    });

    let probe = |ty: &syn::Type| quote!((&&#krate::__private::SchemaProbe::<#ty>::new()).schema());
    let schema_arms = def.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let wire = &m.wire_name;
        let params = m.request_args().map(|(name, ty)| {
            let param = name.unraw_string();
            let schema = probe(ty);
            let optional = is_option(ty);
            quote!((#param, #schema, #optional))
        });
        let (result, error) = match &m.output {
            Output::Value(ty) => (probe(ty), quote!(::core::option::Option::None)),
            Output::Fallible { ok, err, .. } => {
                let error = probe(err);
                (probe(ok), quote!(::core::option::Option::Some(#error)))
            }
            Output::Stream { item, .. } => (probe(item), quote!(::core::option::Option::None)),
        };
        quote! {
            #(#cfgs)*
            #wire => ::core::option::Option::Some(#krate::__private::method_schemas(
                &[#(#params),*],
                #result,
                #error,
            )),
        }
    });

    quote! {
        #[doc = #doc]
        #vis struct #name<I> {
            inner: #krate::__private::Arc<I>,
        }

        impl<I: #trait_name + ::core::marker::Send + ::core::marker::Sync + 'static> #krate::json::JsonService for #name<I> {
            fn json_methods(&self) -> &'static [#krate::json::JsonMethod] {
                static __RPC_METHODS: ::std::sync::OnceLock<::std::vec::Vec<#krate::json::JsonMethod>> =
                    ::std::sync::OnceLock::new();
                __RPC_METHODS.get_or_init(|| {
                    #[allow(unused_mut)]
                    let mut __rpc_methods = ::std::vec::Vec::new();
                    #(#json_methods)*
                    __rpc_methods
                })
            }

            #[allow(unused_variables, unused_mut, unreachable_code, deprecated, clippy::let_unit_value)]
            fn call_json(
                &self,
                __rpc_method: &str,
                mut __rpc_args: #krate::json::Map<::std::string::String, #krate::json::Value>,
            ) -> ::core::result::Result<#krate::json::JsonFuture, #krate::DispatchError> {
                match __rpc_method {
                    #(#json_arms)*
                    _ => ::core::result::Result::Err(#krate::DispatchError::UnknownMethod),
                }
            }

            #[allow(unused_imports)]
            fn json_schemas(&self, __rpc_method: &str) -> ::core::option::Option<#krate::json::MethodSchemas> {
                use #krate::__private::{ViaJsonSchema as _, WithoutSchema as _};
                match __rpc_method {
                    #(#schema_arms)*
                    _ => ::core::option::Option::None,
                }
            }
        }

        impl<I> #name<I> {
            /// Serves `implementation`.
            pub fn new(implementation: I) -> Self {
                Self { inner: #krate::__private::Arc::new(implementation) }
            }

            /// Serves an implementation that is shared with other code.
            pub fn from_arc(implementation: #krate::__private::Arc<I>) -> Self {
                Self { inner: implementation }
            }

            /// The implementation.
            pub fn get_ref(&self) -> &I {
                &self.inner
            }
        }

        impl<I> ::core::clone::Clone for #name<I> {
            fn clone(&self) -> Self {
                Self { inner: ::core::clone::Clone::clone(&self.inner) }
            }
        }

        impl<I: #trait_name + ::core::marker::Send + ::core::marker::Sync + 'static> #name<I> {
            /// Calls the implementation in-process, without the network.
            #[allow(unused_variables, clippy::unused_async, deprecated)]
            pub async fn handle(&self, request: #request) -> #response {
                match request {
                    #(#handle_arms,)*
                }
            }
        }

        impl<I: #trait_name + ::core::marker::Send + ::core::marker::Sync + 'static> #krate::Service for #name<I> {
            fn name(&self) -> &'static str {
                #service
            }

            fn methods(&self) -> &'static [&'static str] {
                static __RPC_NAMES: ::std::sync::OnceLock<::std::vec::Vec<&'static str>> =
                    ::std::sync::OnceLock::new();
                __RPC_NAMES.get_or_init(|| {
                    #[allow(unused_mut)]
                    let mut __rpc_names = ::std::vec::Vec::new();
                    #(#method_names)*
                    __rpc_names
                })
            }

            fn json(&self) -> ::core::option::Option<&dyn #krate::json::JsonService> {
                ::core::option::Option::Some(self)
            }

            fn schema(&self) -> ::core::option::Option<&'static #krate::schema::ServiceSchema> {
                ::core::option::Option::Some(#client_name::service_schema())
            }

            #[allow(unused_variables, unreachable_code, deprecated)]
            fn call(
                &self,
                __rpc_method: &str,
                __rpc_call: #krate::IncomingCall,
            ) -> ::core::result::Result<#krate::HandlerFuture, #krate::DispatchError> {
                match __rpc_method {
                    #(#dispatch_arms)*
                    _ => ::core::result::Result::Err(#krate::DispatchError::UnknownMethod),
                }
            }
        }
    }
}

/// The `MethodKind` variant of a method.
fn method_kind(m: &MethodDef) -> TokenStream {
    match (&m.output, m.stream_arg.is_some()) {
        (Output::Stream { .. }, true) => quote!(BidiStream),
        (Output::Stream { .. }, false) => quote!(ServerStream),
        (_, true) => quote!(ClientStream),
        (_, false) => quote!(Unary),
    }
}

/// `{Trait}Client::service_schema()`: every method's schema, traced once per process from the
/// types as they travel (wire types: a `Vec<u8>` parameter is bytes).
fn schema_fn(def: &ServiceDef) -> TokenStream {
    let krate = &def.krate;
    let service = &def.wire_name;
    let methods = def.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let wire = &m.wire_name;
        let kind = method_kind(m);
        let params = m.request_args().map(|(name, ty)| {
            let param = name.unraw_string();
            let ty = wire_type(krate, ty);
            quote!(.param::<#ty>(#param))
        });
        let output = match &m.output {
            Output::Value(ty) => {
                let ty = wire_type(krate, ty);
                quote!(.result::<#ty>())
            }
            Output::Fallible { ok, err, .. } => {
                let ok = wire_type(krate, ok);
                quote!(.result::<#ok>().error::<#err>())
            }
            Output::Stream { item, .. } => quote!(.result::<#item>()),
        };
        let upload = m
            .stream_arg
            .as_ref()
            .map(|(_, item)| quote!(.upload::<#item>()));
        quote! {
            #(#cfgs)*
            __rpc_methods.push(
                #krate::schema::MethodTrace::new(#wire, #krate::json::MethodKind::#kind)
                    #(#params)* #output #upload .finish(),
            );
        }
    });
    quote! {
        /// The schema of every method (parameters, result, error and stream items as
        /// they travel) with its fingerprint: traced from the types' own serde
        /// implementations on first use, then kept for the process. Snapshot it in a test
        /// to catch breaking changes (`traitrpc_core::schema`).
        pub fn service_schema() -> &'static #krate::schema::ServiceSchema {
            static __RPC_SCHEMA: ::std::sync::OnceLock<#krate::schema::ServiceSchema> =
                ::std::sync::OnceLock::new();
            __RPC_SCHEMA.get_or_init(|| {
                #[allow(unused_mut)]
                let mut __rpc_methods = ::std::vec::Vec::new();
                #(#methods)*
                #krate::schema::ServiceSchema {
                    service: <::std::string::String as ::core::convert::From<&str>>::from(#service),
                    methods: __rpc_methods,
                }
            })
        }
    }
}

/// `Some(b)` / `None` as tokens.
fn option_bool(value: Option<bool>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}

#[cfg(test)]
mod tests {
    use super::is_byte_vec;

    #[test]
    fn byte_vectors_are_recognised_only_when_written_as_vec_u8() {
        for yes in [
            "Vec<u8>",
            "std::vec::Vec<u8>",
            "alloc::vec::Vec<u8>",
            "::std::vec::Vec<u8>",
        ] {
            assert!(is_byte_vec(&syn::parse_str(yes).unwrap()), "{yes}");
        }
        for no in [
            "Vec<u16>",
            "Vec<i8>",
            "Vec<Vec<u8>>",
            "Option<Vec<u8>>",
            "my::Vec<u8>",
            "u8",
        ] {
            assert!(!is_byte_vec(&syn::parse_str(no).unwrap()), "{no}");
        }
    }
}
