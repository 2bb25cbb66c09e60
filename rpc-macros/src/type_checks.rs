//! One compile-time check per type that travels in an RPC (arguments, results,
//! application errors, stream items), spanned at the type as written in the trait, so a
//! type without serde's impls is reported there with what to do
//! (`__private::assert_rpc_type`, whose trait carries `#[diagnostic::on_unimplemented]`).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::model::{MethodDef, Output, ServiceDef};

/// A `const _` block asserting that every type of every method can travel.
pub fn type_checks(def: &ServiceDef) -> TokenStream {
    let krate = &def.krate;
    let checks = def.methods.iter().map(|method| {
        let cfgs = &method.cfgs;
        let asserts = travelling_types(method).into_iter().map(|ty| {
            quote_spanned! {ty.span()=>
                #krate::__private::assert_rpc_type::<#ty>();
            }
        });
        quote! {
            #(#cfgs)*
            const _: () = { #(#asserts)* };
        }
    });
    quote! { #(#checks)* }
}

/// The types of one method that are serialized: request arguments, the streamed
/// argument's items, and the result's parts.
fn travelling_types(method: &MethodDef) -> Vec<&syn::Type> {
    let mut types: Vec<&syn::Type> = method.request_args().map(|(_, ty)| ty).collect();
    if let Some((_, item)) = &method.stream_arg {
        types.push(item);
    }
    match &method.output {
        Output::Value(ty) => types.push(ty),
        Output::Fallible { ok, err, .. } => types.extend([&**ok, &**err]),
        Output::Stream { item, .. } => types.push(item),
    }
    types
}
