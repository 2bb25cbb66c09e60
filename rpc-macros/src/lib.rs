//! The `#[service]` attribute macro. Use it through `traitrpc::service` or `traitrpc_core::service`,
//! which document what it generates.

use proc_macro::TokenStream;

mod expand;
mod model;
mod type_checks;

/// Turns a trait of `async fn`s into an RPC service; see `traitrpc_core::service`. The
/// generated code reaches the framework as `::traitrpc_core` unless `crate = "..."` says
/// otherwise.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_service(attr, item, syn::parse_quote!(::traitrpc_core))
}

/// `#[service]` as the `traitrpc` facade re-exports it: the generated code reaches the
/// framework as `::traitrpc` unless `crate = "..."` says otherwise.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn service_for_facade(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_service(attr, item, syn::parse_quote!(::traitrpc))
}

fn expand_service(attr: TokenStream, item: TokenStream, default_crate: syn::Path) -> TokenStream {
    let args = syn::parse_macro_input!(attr as model::ServiceArgs);
    let item = syn::parse_macro_input!(item as syn::ItemTrait);
    match model::parse(args, item, default_crate) {
        Ok(def) => expand::expand(def).into(),
        Err(error) => error.to_compile_error().into(),
    }
}
