//! The `#[service]` attribute macro. Use it through `rpc_core::service`, which documents
//! what it generates.

use proc_macro::TokenStream;

mod expand;
mod model;

/// Turns a trait of `async fn`s into an RPC service; see `rpc_core::service`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = syn::parse_macro_input!(attr as model::ServiceArgs);
    let item = syn::parse_macro_input!(item as syn::ItemTrait);
    match model::parse(args, item) {
        Ok(def) => expand::expand(def).into(),
        Err(error) => error.to_compile_error().into(),
    }
}
