//! Reads a `#[service]` trait into a [`ServiceDef`], rejecting every unsupported shape with
//! an error that points at the offending tokens.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, PathArguments,
    ReturnType, TraitItem, TraitItemFn, Type,
};

/// Names the generated `{Trait}Client` defines itself; a method may not take them.
const RESERVED_CLIENT_NAMES: &[&str] = &[
    "new",
    "from_client",
    "client",
    "with_timeout",
    "with_metadata",
    "with_routing_key",
    "with_compression",
    "with_hedging",
    "service_schema",
    "SERVICE_NAME",
];

/// The macro's own arguments: `#[service]`, `#[service(name = "pkg.Svc")]`,
/// `#[service(crate = "my_rpc")]`, or both.
pub struct ServiceArgs {
    pub name: Option<LitStr>,
    /// The path the generated code reaches the framework by, when it is not the
    /// default of the entry point (the dependency was renamed, or is re-exported).
    pub krate: Option<syn::Path>,
}

impl syn::parse::Parse for ServiceArgs {
    fn parse(input: syn::parse::ParseStream) -> syn::Result<Self> {
        let mut args = ServiceArgs {
            name: None,
            krate: None,
        };
        while !input.is_empty() {
            let key = input.call(Ident::parse_any)?;
            let duplicate = match key.to_string().as_str() {
                "name" => args.name.is_some(),
                "crate" => args.krate.is_some(),
                _ => return Err(Error::new(
                    key.span(),
                    "unknown #[service] argument; expected `name = \"...\"` or `crate = \"...\"`",
                )),
            };
            if duplicate {
                return Err(Error::new(
                    key.span(),
                    format!("duplicate #[service] argument `{key}`"),
                ));
            }
            input.parse::<syn::Token![=]>()?;
            let value: LitStr = input.parse()?;
            if key == "name" {
                if value.value().is_empty() || value.value().len() > 255 {
                    return Err(Error::new(
                        value.span(),
                        "the service name must be 1 to 255 bytes long",
                    ));
                }
                args.name = Some(value);
            } else {
                let path = value.parse::<syn::Path>().map_err(|_| {
                    Error::new(
                        value.span(),
                        "`crate` must name a path, for example `crate = \"my_rpc\"` or `crate = \"::my_app::rpc\"`",
                    )
                })?;
                args.krate = Some(path);
            }
            if !input.is_empty() {
                input.parse::<syn::Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// A validated service trait.
pub struct ServiceDef {
    /// The trait as written; its methods are rewritten during expansion.
    pub item: ItemTrait,
    /// The name on the wire.
    pub wire_name: String,
    /// The path of the framework crate in the generated code.
    pub krate: syn::Path,
    pub methods: Vec<MethodDef>,
}

/// One validated method.
pub struct MethodDef {
    /// Index of the method among the trait's items.
    pub item_index: usize,
    pub ident: Ident,
    /// The method name on the wire (the identifier without `r#`).
    pub wire_name: String,
    /// The `{Trait}Request`/`{Trait}Response` variant.
    pub variant: Ident,
    pub args: Vec<(Ident, Type)>,
    pub output: Output,
    /// `#[doc]` and `#[deprecated]` attributes, carried to the client method.
    pub docs: Vec<Attribute>,
    /// `#[cfg]` attributes, carried to every generated item of the method.
    pub cfgs: Vec<Attribute>,
    /// Declared `#[idempotent]`: safe to run more than once, so a balanced client may
    /// retry it after a failure that leaves its outcome unknown.
    pub idempotent: bool,
    /// `#[compress]` (`Some(true)`) or `#[compress(false)]`: whether its payloads are
    /// compressed whatever the connection's threshold says; `None` if not declared.
    pub compress: Option<bool>,
    /// The `Streaming<T>` argument (client streaming), if any: its position among the
    /// arguments and its item type. It travels as stream items, not in the request.
    pub stream_arg: Option<(usize, Type)>,
}

impl MethodDef {
    /// The arguments that travel in the request (all but a `Streaming<T>` one), in order.
    pub fn request_args(&self) -> impl Iterator<Item = &(Ident, Type)> {
        let stream_index = self.stream_arg.as_ref().map(|(i, _)| *i);
        self.args
            .iter()
            .enumerate()
            .filter(move |(i, _)| Some(*i) != stream_index)
            .map(|(_, arg)| arg)
    }
}

/// What a method returns.
pub enum Output {
    /// A plain value (`()` when none is declared).
    Value(Type),
    /// `Result<T, E>`: the client flattens `E` into `CallError::Application`.
    Fallible {
        ok: Box<Type>,
        err: Box<Type>,
        whole: Box<Type>,
    },
    /// `Streaming<T>`: the answer is a stream of `T` (server streaming).
    Stream { item: Box<Type>, whole: Box<Type> },
}

impl Output {
    /// The declared return type.
    pub fn declared(&self) -> &Type {
        match self {
            Output::Value(ty) => ty,
            Output::Fallible { whole, .. } | Output::Stream { whole, .. } => whole,
        }
    }
}

/// Validates `item`; `default_crate` is the framework's path unless `args` names one.
pub fn parse(
    args: ServiceArgs,
    item: ItemTrait,
    default_crate: syn::Path,
) -> syn::Result<ServiceDef> {
    let mut errors = Errors::default();
    check_trait_shape(&item, &mut errors);

    let mut methods = Vec::new();
    for (index, trait_item) in item.items.iter().enumerate() {
        match trait_item {
            TraitItem::Fn(method) => {
                if let Some(def) = parse_method(index, method, &mut errors) {
                    methods.push(def);
                }
            }
            TraitItem::Type(ty) => errors.push_spanned(
                join(&ty.type_token, &ty.ident),
                "associated types are not supported in a #[service] trait",
            ),
            TraitItem::Const(c) => errors.push_spanned(
                join(&c.const_token, &c.ident),
                "associated constants are not supported in a #[service] trait",
            ),
            other => errors.push_spanned(
                other,
                "only `async fn` methods are supported in a #[service] trait",
            ),
        }
    }
    check_collisions(&methods, &mut errors);
    errors.finish()?;

    let wire_name = match args.name {
        Some(name) => name.value(),
        None => item.ident.unraw().to_string(),
    };
    Ok(ServiceDef {
        item,
        wire_name,
        krate: args.krate.unwrap_or(default_crate),
        methods,
    })
}

fn check_trait_shape(item: &ItemTrait, errors: &mut Errors) {
    if !item.generics.params.is_empty() {
        errors.push_spanned(&item.generics, "a #[service] trait cannot be generic");
    } else if let Some(where_clause) = &item.generics.where_clause {
        errors.push_spanned(
            where_clause,
            "a #[service] trait cannot have a `where` clause",
        );
    }
    if let Some(unsafety) = &item.unsafety {
        errors.push(unsafety.span(), "a #[service] trait cannot be `unsafe`");
    }
    if let Some(auto) = &item.auto_token {
        errors.push(auto.span(), "a #[service] trait cannot be an auto trait");
    }
}

fn parse_method(index: usize, method: &TraitItemFn, errors: &mut Errors) -> Option<MethodDef> {
    let sig = &method.sig;
    let before = errors.len();
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span(),
            "RPC methods must be `async fn`: write `async fn` here",
        );
    }
    if let Some(c) = &sig.constness {
        errors.push(c.span(), "RPC methods cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        errors.push(u.span(), "RPC methods cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.push(abi.span(), "RPC methods cannot declare an ABI");
    }
    if let Some(v) = &sig.variadic {
        errors.push(v.span(), "RPC methods cannot be variadic");
    }
    if !sig.generics.params.is_empty() {
        errors.push_spanned(
            &sig.generics,
            "RPC methods cannot be generic: arguments and return types must be concrete",
        );
    } else if let Some(where_clause) = &sig.generics.where_clause {
        errors.push_spanned(where_clause, "RPC methods cannot have a `where` clause");
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver)) => {
            if receiver.colon_token.is_some() {
                errors.push_spanned(
                    receiver,
                    "RPC methods take `&self`; typed receivers like `self: Arc<Self>` are not supported",
                );
            } else if receiver.reference.is_none() {
                errors.push_spanned(
                    receiver,
                    "RPC methods take `&self`, not `self` by value: the server shares one implementation across calls",
                );
            } else if let Some(m) = &receiver.mutability {
                errors.push(
                    m.span(),
                    "RPC methods take `&self`, not `&mut self`: the server runs calls concurrently (use interior mutability)",
                );
            }
        }
        Some(other) => errors.push_spanned(
            other,
            "RPC methods must take `&self` as their first argument",
        ),
        None => errors.push(
            sig.paren_token.span.join(),
            "RPC methods must take `&self` as their first argument",
        ),
    }

    let mut args = Vec::new();
    let mut stream_arg = None;
    for input in sig.inputs.iter().skip(1) {
        let FnArg::Typed(pat_type) = input else {
            errors.push_spanned(input, "`self` may only be the first argument");
            continue;
        };
        let ident = match &*pat_type.pat {
            Pat::Ident(pat)
                if pat.by_ref.is_none() && pat.mutability.is_none() && pat.subpat.is_none() =>
            {
                Some(pat.ident.clone())
            }
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                errors.push_spanned(
                    pat,
                    format!(
                        "`mut` is not allowed on arguments of a #[service] trait: write `{}` (an implementation may still take `mut {}`)",
                        pat.ident, pat.ident
                    ),
                );
                None
            }
            other => {
                errors.push_spanned(
                    other,
                    "argument patterns are not supported in RPC methods: use a plain name like `arg: T`",
                );
                None
            }
        };
        if let Some(item) = streaming_item(&pat_type.ty) {
            if stream_arg.is_some() {
                errors.push_spanned(
                    &pat_type.ty,
                    "at most one argument of an RPC method may be a `Streaming<T>` stream",
                );
            }
            stream_arg = Some((args.len(), item));
        } else if mentions_streaming(&pat_type.ty) {
            errors.push_spanned(
                &pat_type.ty,
                "`Streaming<T>` is supported only as a whole argument type (`items: Streaming<T>`), not inside another type",
            );
            continue;
        }
        if check_argument_type(&pat_type.ty, errors) {
            if let Some(ident) = ident {
                args.push((ident, (*pat_type.ty).clone()));
            }
        }
    }

    let output = match &sig.output {
        ReturnType::Default => Output::Value(syn::parse_quote!(())),
        ReturnType::Type(_, ty) => {
            check_return_type(ty, errors);
            if let Some(item) = streaming_item(ty) {
                Output::Stream {
                    item: Box::new(item),
                    whole: ty.clone(),
                }
            } else {
                if mentions_streaming(ty) {
                    errors.push_spanned(
                        ty,
                        "a stream is returned as `Streaming<T>` itself, not inside another type (end a stream with an error by yielding `Err` from it)",
                    );
                }
                classify_output(ty)
            }
        }
    };

    let idempotent = parse_idempotent(&method.attrs, errors);
    let compress = parse_compress(&method.attrs, errors);

    let wire_name = sig.ident.unraw().to_string();
    if RESERVED_CLIENT_NAMES.contains(&wire_name.as_str()) {
        errors.push(
            sig.ident.span(),
            format!(
                "the method name `{wire_name}` is reserved by the generated client; rename the method"
            ),
        );
    }
    let variant = upper_camel_case(&wire_name);
    if variant == "Self" || variant.starts_with(|c: char| c.is_ascii_digit()) {
        errors.push(
            sig.ident.span(),
            format!(
                "the method name `{wire_name}` would generate the invalid variant name `{variant}` for the request and response enums; rename the method"
            ),
        );
    }
    if errors.len() > before {
        return None;
    }
    let (docs, cfgs) =
        method
            .attrs
            .iter()
            .fold((Vec::new(), Vec::new()), |(mut docs, mut cfgs), attr| {
                if attr.path().is_ident("doc") || attr.path().is_ident("deprecated") {
                    docs.push(attr.clone());
                } else if attr.path().is_ident("cfg") {
                    cfgs.push(attr.clone());
                }
                (docs, cfgs)
            });
    Some(MethodDef {
        item_index: index,
        ident: sig.ident.clone(),
        variant: Ident::new(&variant, sig.ident.span()),
        wire_name,
        args,
        output,
        docs,
        cfgs,
        idempotent,
        compress,
        stream_arg,
    })
}

/// The item type of a type written `Streaming<T>` (any path ending in `Streaming` with
/// one type argument, such as `traitrpc_core::Streaming<T>`).
fn streaming_item(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != "Streaming" {
        return None;
    }
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return None;
    };
    match generics.args.iter().collect::<Vec<_>>()[..] {
        [GenericArgument::Type(item)] => Some(item.clone()),
        _ => None,
    }
}

/// Whether `Streaming` appears anywhere in the type.
fn mentions_streaming(ty: &Type) -> bool {
    fn scan(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            TokenTree::Ident(ident) => ident == "Streaming",
            TokenTree::Group(group) => scan(group.stream()),
            _ => false,
        })
    }
    scan(ty.to_token_stream())
}

/// Whether the method carries `#[idempotent]` (which takes no arguments and may appear
/// once). The attribute is the macro's own: expansion strips it from the trait.
fn parse_idempotent(attrs: &[Attribute], errors: &mut Errors) -> bool {
    let mut found = false;
    for attr in attrs.iter().filter(|a| is_idempotent_attr(a)) {
        if !matches!(attr.meta, syn::Meta::Path(_)) {
            errors.push_spanned(
                &attr.meta,
                "`#[idempotent]` takes no arguments: write `#[idempotent]`",
            );
        } else if found {
            errors.push_spanned(attr, "duplicate `#[idempotent]` attribute");
        }
        found = true;
    }
    found
}

/// `#[idempotent]` (in any form) on a trait method.
pub fn is_idempotent_attr(attr: &Attribute) -> bool {
    attr.path().is_ident("idempotent")
}

/// The method's `#[compress]` (`Some(true)`), `#[compress(true)]` or `#[compress(false)]`,
/// which may appear once; `None` without one.
fn parse_compress(attrs: &[Attribute], errors: &mut Errors) -> Option<bool> {
    const USAGE: &str =
        "write `#[compress]` (or `#[compress(true)]`) to compress this method's payloads, `#[compress(false)]` never to";
    let mut found = None;
    for attr in attrs.iter().filter(|a| is_compress_attr(a)) {
        let value = match &attr.meta {
            syn::Meta::Path(_) => Some(true),
            syn::Meta::List(list) => match list.parse_args::<syn::LitBool>() {
                Ok(value) => Some(value.value),
                Err(_) => None,
            },
            syn::Meta::NameValue(_) => None,
        };
        match value {
            None => errors.push_spanned(&attr.meta, USAGE),
            Some(_) if found.is_some() => {
                errors.push_spanned(attr, "duplicate `#[compress]` attribute")
            }
            Some(value) => found = Some(value),
        }
    }
    found
}

/// `#[compress]` (in any form) on a trait method.
pub fn is_compress_attr(attr: &Attribute) -> bool {
    attr.path().is_ident("compress")
}

/// Checks one argument type; returns whether it is usable.
fn check_argument_type(ty: &Type, errors: &mut Errors) -> bool {
    match ty {
        Type::Reference(reference) => {
            let suggestion = match &*reference.elem {
                Type::Path(p) if p.path.is_ident("str") => "use `String` instead of `&str`".into(),
                Type::Slice(slice) => {
                    let elem = display(&slice.elem);
                    format!("use `Vec<{elem}>` instead of `&[{elem}]`")
                }
                elem => format!("take `{}` by value", display(elem)),
            };
            errors.push_spanned(
                ty,
                format!("borrowed arguments are not supported in RPC methods: {suggestion}"),
            );
            false
        }
        Type::ImplTrait(_) => {
            errors.push_spanned(
                ty,
                "`impl Trait` arguments are not supported in RPC methods: use a concrete type",
            );
            false
        }
        _ => match find_borrow(ty.to_token_stream()) {
            Some(borrow) => {
                errors.push_spanned(
                    borrow,
                    format!(
                        "RPC arguments must be owned types: `{}` borrows; use owned types such as `String` and `Vec<T>`",
                        display(ty)
                    ),
                );
                false
            }
            None => true,
        },
    }
}

fn check_return_type(ty: &Type, errors: &mut Errors) {
    match ty {
        Type::Reference(reference) => {
            let suggestion = match &*reference.elem {
                Type::Path(p) if p.path.is_ident("str") => "return `String`".into(),
                Type::Slice(slice) => format!("return `Vec<{}>`", display(&slice.elem)),
                elem => format!("return `{}` by value", display(elem)),
            };
            errors.push_spanned(
                ty,
                format!("RPC methods must return an owned type, not a reference: {suggestion}"),
            )
        }
        Type::ImplTrait(_) => errors.push_spanned(
            ty,
            "RPC methods cannot return `impl Trait`: use a concrete type",
        ),
        _ => {
            if let Some(borrow) = find_borrow(ty.to_token_stream()) {
                errors.push_spanned(
                    borrow,
                    format!(
                        "RPC methods must return an owned type: `{}` borrows; use owned types such as `String` and `Vec<T>`",
                        display(ty)
                    ),
                );
            }
        }
    }
}

/// The first reference (`&`, whatever its lifetime: a response or argument is decoded into
/// an owned value) or lifetime other than `'static` in the tokens of a type.
fn find_borrow(tokens: TokenStream) -> Option<TokenStream> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let lifetime_at = |i: usize| match (tokens.get(i), tokens.get(i + 1)) {
        (Some(TokenTree::Punct(p)), Some(TokenTree::Ident(name))) if p.as_char() == '\'' => {
            Some((p, name))
        }
        _ => None,
    };
    for (i, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Punct(p) if p.as_char() == '&' => {
                let end = if lifetime_at(i + 1).is_some() {
                    i + 3
                } else {
                    i + 1
                };
                return Some(tokens[i..end].iter().cloned().collect());
            }
            TokenTree::Group(group) => {
                if let Some(found) = find_borrow(group.stream()) {
                    return Some(found);
                }
            }
            _ => {
                if let Some((p, name)) = lifetime_at(i) {
                    if name != "static" {
                        return Some(join(p, name));
                    }
                }
            }
        }
    }
    None
}

/// Two tokens as one stream, so that an error spans both.
fn join(first: &impl ToTokens, second: &impl ToTokens) -> TokenStream {
    let mut tokens = first.to_token_stream();
    second.to_tokens(&mut tokens);
    tokens
}

/// A type as written, without the spaces `TokenStream`'s `Display` puts between tokens.
fn display(ty: &Type) -> String {
    let text = ty.to_token_stream().to_string();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        if c == ' ' {
            let next = chars.peek().copied().unwrap_or(' ');
            let glued_after = matches!(previous, '<' | '&' | '(' | '[' | ':' | '\'');
            let glued_before = matches!(next, '<' | '>' | ',' | ')' | ']' | ':' | ';');
            if glued_after || glued_before {
                continue;
            }
        }
        out.push(c);
        previous = c;
    }
    out
}

/// `Result<T, E>` (any path ending in `Result` with two type arguments) is fallible.
fn classify_output(ty: &Type) -> Output {
    if let Type::Path(path) = ty {
        if path.qself.is_none() {
            if let Some(last) = path.path.segments.last() {
                if last.ident == "Result" {
                    if let PathArguments::AngleBracketed(generics) = &last.arguments {
                        let types: Vec<&Type> = generics
                            .args
                            .iter()
                            .filter_map(|arg| match arg {
                                GenericArgument::Type(t) => Some(t),
                                _ => None,
                            })
                            .collect();
                        if types.len() == 2 && generics.args.len() == 2 {
                            return Output::Fallible {
                                ok: Box::new(types[0].clone()),
                                err: Box::new(types[1].clone()),
                                whole: Box::new(ty.clone()),
                            };
                        }
                    }
                }
            }
        }
    }
    Output::Value(ty.clone())
}

fn check_collisions(methods: &[MethodDef], errors: &mut Errors) {
    let mut seen: HashMap<String, &MethodDef> = HashMap::new();
    for method in methods {
        let variant = method.variant.to_string();
        if let Some(first) = seen.get(&variant) {
            errors.push(
                method.ident.span(),
                format!(
                    "methods `{}` and `{}` both generate the variant `{variant}` of the request and response enums; rename one",
                    first.wire_name, method.wire_name
                ),
            );
        } else {
            seen.insert(variant, method);
        }
        if method.wire_name.len() > 255 {
            errors.push(method.ident.span(), "method names are limited to 255 bytes");
        }
    }
}

/// `snake_case` (or anything else) to `UpperCamelCase`: `get_user` → `GetUser`.
fn upper_camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push_str("Method");
    }
    out
}

/// Collects every error so that one compile shows all of them.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.add(Error::new(span, message));
    }

    /// An error spanning all of `tokens` (on stable, `Span::join` is unavailable, so
    /// `push(tokens.span(), ..)` would underline only their first token).
    fn push_spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.add(Error::new_spanned(tokens, message));
    }

    fn add(&mut self, error: Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |e| e.clone().into_iter().count())
    }

    fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case() {
        assert_eq!(upper_camel_case("add"), "Add");
        assert_eq!(upper_camel_case("get_user_by_id"), "GetUserById");
        assert_eq!(upper_camel_case("_private"), "Private");
        assert_eq!(upper_camel_case("fooBar"), "FooBar");
    }

    #[test]
    fn borrows() {
        let found = |tokens: TokenStream| find_borrow(tokens).map(|t| t.to_string());
        assert_eq!(found(quote::quote!(Vec<&'a str>)).as_deref(), Some("& 'a"));
        assert_eq!(
            found(quote::quote!(Vec<&'static str>)).as_deref(),
            Some("& 'static")
        );
        assert_eq!(found(quote::quote!(Vec<&str>)).as_deref(), Some("&"));
        assert_eq!(found(quote::quote!(Cow<'a, str>)).as_deref(), Some("'a"));
        assert_eq!(found(quote::quote!(Cow<'static, str>)), None);
        assert_eq!(found(quote::quote!(Vec<String>)), None);
    }

    #[test]
    fn displayed_types() {
        let ty = |tokens: TokenStream| display(&syn::parse2(tokens).unwrap());
        assert_eq!(ty(quote::quote!(Vec<u64>)), "Vec<u64>");
        assert_eq!(ty(quote::quote!(&'a [u8])), "&'a [u8]");
        assert_eq!(
            ty(quote::quote!(std::collections::HashMap<String, (u8, Vec<u8>)>)),
            "std::collections::HashMap<String, (u8, Vec<u8>)>"
        );
        assert_eq!(ty(quote::quote!(&mut [u8; 4])), "&mut [u8; 4]");
    }
}
