//! Services' schemas to protobuf descriptors: one `FileDescriptorProto` per package (the
//! part of a service name before its last dot), with a request and a response message per
//! method, a message per named type, and the service.
//!
//! - A method `add(a, b)` of service `Calculator` takes `CalculatorAddRequest { a, b }`
//!   and answers `CalculatorAddResponse { result = 1 }` (no field for `()`); the
//!   service's name and the method's name are the trait's, so the paths
//!   (`/Calculator/add`) are the ones the native server and the gateway already serve.
//! - Fields are numbered by [`field_number`](crate::field_number) and carry serde's name
//!   as their `json_name`.
//! - `#[idempotent]` methods get `idempotency_level = NO_SIDE_EFFECTS`, which is what lets
//!   Connect clients call them with GET (as the gateway allows).
//! - A method whose types do not map ([`crate::mapping`]), or that takes a stream, is
//!   left out and listed in [`ProtoExport::skipped`] with the reason.

use std::collections::{BTreeMap, BTreeSet};

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::method_options::IdempotencyLevel;
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MessageOptions,
    MethodDescriptorProto, MethodOptions, OneofDescriptorProto, ServiceDescriptorProto,
};
use traitrpc_core::json::MethodKind;
use traitrpc_core::schema::{Field, MethodSchema, ServiceSchema, Shape, TypeShape, VariantShape};

use crate::mapping::{identifier, message_name, pascal, Carrier, Kind, Mapper, EMPTY, VALUE};
use crate::numbers::{field_number, RESULT_FIELD};

/// A service to export: its schema, and which of its methods are `#[idempotent]`.
#[derive(Debug, Clone)]
pub struct ServiceInput {
    /// The traced schema (`{Trait}Client::service_schema()`, or a server's reflection).
    pub schema: ServiceSchema,
    /// The names of its `#[idempotent]` methods.
    pub idempotent: BTreeSet<String>,
}

/// What an export produced.
#[derive(Debug, Clone, Default)]
pub struct ProtoExport {
    /// One file per package, in package order.
    pub files: Vec<FileDescriptorProto>,
    /// The methods that were left out, and why.
    pub skipped: Vec<Skipped>,
    /// The methods exported, with their message types.
    pub methods: Vec<ExportedMethod>,
}

/// A method left out of the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The service's name.
    pub service: String,
    /// The method's name.
    pub method: String,
    /// Why it has no protobuf form.
    pub reason: String,
}

/// A method in the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedMethod {
    /// The service's full name (`shop.Orders`).
    pub service: String,
    /// The method's name.
    pub method: String,
    /// The request message's full name (no leading dot).
    pub request: String,
    /// The response message's full name (no leading dot).
    pub response: String,
}

/// The name of the file holding `package` (`shop` -> `shop.proto`; no package:
/// `services.proto`).
pub fn file_name(package: &str) -> String {
    if package.is_empty() {
        "services.proto".into()
    } else {
        format!("{package}.proto")
    }
}

/// The package and the local name of a service name (`shop.Orders` -> `shop`, `Orders`).
pub fn split_service_name(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap_or(("", name))
}

/// Exports `services`.
pub fn export(services: &[ServiceInput]) -> ProtoExport {
    let mut by_package: BTreeMap<&str, Vec<&ServiceInput>> = BTreeMap::new();
    for service in services {
        let (package, _) = split_service_name(&service.schema.service);
        by_package.entry(package).or_default().push(service);
    }
    let mut export = ProtoExport::default();
    for (package, services) in by_package {
        let file = PackageBuilder::new(package, &services).build(&mut export);
        export.files.push(file);
    }
    export
}

/// Builds one package's file.
struct PackageBuilder<'a> {
    package: &'a str,
    prefix: String,
    services: &'a [&'a ServiceInput],
    /// Every named type's message name in the package (request and response names avoid
    /// them).
    taken: BTreeSet<String>,
    /// The named types exported so far, by traced name.
    types: BTreeMap<String, TypeShape>,
    messages: Vec<DescriptorProto>,
    uses_empty: bool,
    uses_value: bool,
}

impl<'a> PackageBuilder<'a> {
    fn new(package: &'a str, services: &'a [&'a ServiceInput]) -> Self {
        let taken = services
            .iter()
            .flat_map(|s| &s.schema.methods)
            .flat_map(|m| m.types.keys())
            .map(|name| message_name(name))
            .collect();
        PackageBuilder {
            package,
            prefix: if package.is_empty() {
                ".".into()
            } else {
                format!(".{package}.")
            },
            services,
            taken,
            types: BTreeMap::new(),
            messages: Vec::new(),
            uses_empty: false,
            uses_value: false,
        }
    }

    fn build(mut self, export: &mut ProtoExport) -> FileDescriptorProto {
        let mut services = Vec::new();
        for service in self.services {
            let (_, local) = split_service_name(&service.schema.service);
            let mut methods = Vec::new();
            for method in &service.schema.methods {
                match self.method(local, method, service.idempotent.contains(&method.name)) {
                    Ok(descriptor) => {
                        export.methods.push(ExportedMethod {
                            service: service.schema.service.clone(),
                            method: method.name.clone(),
                            request: descriptor.input_type()[1..].to_string(),
                            response: descriptor.output_type()[1..].to_string(),
                        });
                        methods.push(descriptor);
                    }
                    Err(reason) => export.skipped.push(Skipped {
                        service: service.schema.service.clone(),
                        method: method.name.clone(),
                        reason,
                    }),
                }
            }
            services.push(ServiceDescriptorProto {
                name: Some(local.to_string()),
                method: methods,
                options: None,
            });
        }
        let mut dependency = Vec::new();
        if self.uses_empty {
            dependency.push("google/protobuf/empty.proto".to_string());
        }
        if self.uses_value {
            dependency.push("google/protobuf/struct.proto".to_string());
        }
        FileDescriptorProto {
            name: Some(file_name(self.package)),
            package: (!self.package.is_empty()).then(|| self.package.to_string()),
            dependency,
            message_type: self.messages,
            service: services,
            syntax: Some("proto3".into()),
            ..Default::default()
        }
    }

    /// A fresh message name based on `base`, taken by no named type.
    fn fresh(&mut self, base: String) -> String {
        let mut name = base;
        while self.taken.contains(&name) {
            name.push('_');
        }
        self.taken.insert(name.clone());
        name
    }

    /// One method's messages, added to the file if all of them map.
    fn method(
        &mut self,
        service: &str,
        method: &MethodSchema,
        idempotent: bool,
    ) -> Result<MethodDescriptorProto, String> {
        if matches!(
            method.kind,
            MethodKind::ClientStream | MethodKind::BidiStream
        ) {
            return Err("it takes a stream, which the gateway does not serve yet".into());
        }
        let prefix = self.prefix.clone();
        let mapper = Mapper {
            types: &method.types,
            prefix: &prefix,
        };
        let mut reachable = BTreeSet::new();
        for param in &method.params {
            reach(&param.shape, &method.types, &mut reachable);
        }
        reach(&method.result, &method.types, &mut reachable);
        for name in &reachable {
            let shape = &method.types[name];
            if let Some(known) = self.types.get(name) {
                if known != shape {
                    return Err(format!(
                        "type `{name}` is defined differently by another method of the package"
                    ));
                }
            }
        }
        let base = format!("{}{}", identifier(service), pascal(&method.name));
        let mut request = named(&format!("{base}Request"));
        let fields: Vec<(&str, &Shape)> = method
            .params
            .iter()
            .map(|p| (p.name.as_str(), &p.shape))
            .collect();
        self.add_fields(&mut request, &fields, &mapper)
            .map_err(|e| format!("parameter {e}"))?;
        let mut response = named(&format!("{base}Response"));
        if method.result != Shape::Unit {
            let carrier = mapper
                .carrier(&method.result)
                .map_err(|e| format!("the result: {e}"))?;
            let qualified = format!("{}{base}Response", self.prefix);
            self.add_field(
                &mut response,
                &qualified,
                "result",
                RESULT_FIELD,
                carrier,
                None,
            );
        }
        let mut new_types = Vec::new();
        for name in &reachable {
            if self.types.contains_key(name) {
                continue;
            }
            if let Some(message) = self.type_message(name, &method.types[name], &mapper)? {
                new_types.push(message);
            }
        }
        // Everything maps: the method is in.
        let request_name = self.fresh(format!("{base}Request"));
        let response_name = self.fresh(format!("{base}Response"));
        request.name = Some(request_name.clone());
        response.name = Some(response_name.clone());
        fix_entry_names(&mut request, &format!("{base}Request"), &request_name);
        fix_entry_names(&mut response, &format!("{base}Response"), &response_name);
        for name in &reachable {
            self.types
                .entry(name.clone())
                .or_insert_with(|| method.types[name].clone());
        }
        self.messages.push(request);
        self.messages.push(response);
        self.messages.extend(new_types);
        let options = idempotent.then(|| MethodOptions {
            idempotency_level: Some(IdempotencyLevel::NoSideEffects as i32),
            ..Default::default()
        });
        Ok(MethodDescriptorProto {
            name: Some(method.name.clone()),
            input_type: Some(format!("{}{request_name}", self.prefix)),
            output_type: Some(format!("{}{response_name}", self.prefix)),
            options,
            client_streaming: Some(false),
            server_streaming: Some(method.kind == MethodKind::ServerStream),
        })
    }

    /// The message of named type `name` (none for a newtype struct, which is its inner
    /// type).
    fn type_message(
        &mut self,
        name: &str,
        shape: &TypeShape,
        mapper: &Mapper<'_>,
    ) -> Result<Option<DescriptorProto>, String> {
        let qualified = mapper.qualified(name);
        let mut message = named(&message_name(name));
        match shape {
            TypeShape::NewtypeStruct(_) => return Ok(None),
            TypeShape::UnitStruct => {}
            TypeShape::TupleStruct(_) => {
                return Err(format!(
                    "tuple struct `{name}` has no protobuf equivalent (use named fields)"
                ))
            }
            TypeShape::Struct { fields, .. } => {
                self.add_struct_fields(&mut message, fields, mapper)
                    .map_err(|e| format!("field {e} of `{name}`"))?;
            }
            TypeShape::Enum(variants) => {
                let mut numbers = BTreeMap::new();
                for variant in variants {
                    let number = field_number(&variant.name);
                    if let Some(other) = numbers.insert(number, &variant.name) {
                        return Err(format!(
                            "variants `{other}` and `{}` of `{name}` have the same field number {number}: rename one (#[serde(rename)])",
                            variant.name
                        ));
                    }
                    let kind = match &variant.shape {
                        VariantShape::Unit => Kind::Message(EMPTY.into()),
                        VariantShape::Newtype(inner) => match mapper.carrier(inner) {
                            Ok(Carrier::Single { kind, optional: false }) => kind,
                            Ok(_) => {
                                return Err(format!(
                                    "variant `{}` of `{name}` carries an Option, list or map, which a oneof cannot hold (wrap it in a struct)",
                                    variant.name
                                ))
                            }
                            Err(e) => return Err(format!("variant `{}` of `{name}`: {e}", variant.name)),
                        },
                        VariantShape::Tuple(_) => {
                            return Err(format!(
                                "tuple variant `{}` of `{name}` has no protobuf equivalent (use named fields)",
                                variant.name
                            ))
                        }
                        VariantShape::Struct(fields) => {
                            // Not the variant's own name: that is the oneof field's, and
                            // fields and nested types share a message's scope.
                            let nested_name = format!("{}Fields", pascal(&variant.name));
                            let mut nested = named(&nested_name);
                            let nested_qualified = format!("{qualified}.{nested_name}");
                            let fields: Vec<(&str, &Shape)> =
                                fields.iter().map(|f| (f.name.as_str(), &f.shape)).collect();
                            self.add_fields_in(&mut nested, &nested_qualified, &fields, mapper)
                                .map_err(|e| {
                                    format!("field {e} of variant `{}` of `{name}`", variant.name)
                                })?;
                            message.nested_type.push(nested);
                            Kind::Message(nested_qualified)
                        }
                    };
                    let carrier = Carrier::Single {
                        kind,
                        optional: false,
                    };
                    self.add_field(
                        &mut message,
                        &qualified,
                        &variant.name,
                        number,
                        carrier,
                        Some(0),
                    );
                }
                if !variants.is_empty() {
                    message.oneof_decl.insert(
                        0,
                        OneofDescriptorProto {
                            name: Some("variant".into()),
                            options: None,
                        },
                    );
                }
            }
        }
        Ok(Some(message))
    }

    fn add_struct_fields(
        &mut self,
        message: &mut DescriptorProto,
        fields: &[Field],
        mapper: &Mapper<'_>,
    ) -> Result<(), String> {
        let fields: Vec<(&str, &Shape)> =
            fields.iter().map(|f| (f.name.as_str(), &f.shape)).collect();
        self.add_fields(message, &fields, mapper)
    }

    fn add_fields(
        &mut self,
        message: &mut DescriptorProto,
        fields: &[(&str, &Shape)],
        mapper: &Mapper<'_>,
    ) -> Result<(), String> {
        let qualified = format!("{}{}", self.prefix, message.name());
        self.add_fields_in(message, &qualified, fields, mapper)
    }

    /// Adds a field per `(name, shape)` to `message` (fully qualified `qualified`), or
    /// says which field does not map ("`name`: why").
    fn add_fields_in(
        &mut self,
        message: &mut DescriptorProto,
        qualified: &str,
        fields: &[(&str, &Shape)],
        mapper: &Mapper<'_>,
    ) -> Result<(), String> {
        let mut numbers: BTreeMap<u32, &str> = BTreeMap::new();
        let mut proto_names = BTreeSet::new();
        for (name, shape) in fields {
            let number = field_number(name);
            if let Some(other) = numbers.insert(number, name) {
                return Err(format!(
                    "`{name}`: `{other}` and `{name}` have the same field number {number}; rename one (#[serde(rename)])"
                ));
            }
            if !proto_names.insert(identifier(name)) {
                return Err(format!(
                    "`{name}`: another field has the same protobuf name `{}`",
                    identifier(name)
                ));
            }
            let carrier = mapper
                .carrier(shape)
                .map_err(|e| format!("`{name}`: {e}"))?;
            self.add_field(message, qualified, name, number, carrier, None);
        }
        Ok(())
    }

    /// Adds field `name` (serde's name, also its `json_name`) to `message`.
    fn add_field(
        &mut self,
        message: &mut DescriptorProto,
        qualified: &str,
        name: &str,
        number: u32,
        carrier: Carrier,
        oneof: Option<i32>,
    ) {
        let proto_name = identifier(name);
        let mut field = FieldDescriptorProto {
            name: Some(proto_name.clone()),
            number: Some(number as i32),
            json_name: Some(name.to_string()),
            oneof_index: oneof,
            ..Default::default()
        };
        let (label, kind) = match carrier {
            Carrier::Single { kind, optional } => {
                if optional {
                    field.proto3_optional = Some(true);
                    let index = message.oneof_decl.len() as i32 + i32::from(oneof.is_some());
                    field.oneof_index = Some(index);
                    message.oneof_decl.push(OneofDescriptorProto {
                        name: Some(format!("_{proto_name}")),
                        options: None,
                    });
                }
                (Label::Optional, kind)
            }
            Carrier::Repeated(kind) => (Label::Repeated, kind),
            Carrier::Map { key, value } => {
                let entry_name = format!("{}Entry", pascal(name));
                let mut entry = named(&entry_name);
                entry.options = Some(MessageOptions {
                    map_entry: Some(true),
                    ..Default::default()
                });
                let mut key_field = FieldDescriptorProto {
                    name: Some("key".into()),
                    number: Some(1),
                    json_name: Some("key".into()),
                    label: Some(Label::Optional as i32),
                    ..Default::default()
                };
                key_field.set_type(key);
                let mut value_field = FieldDescriptorProto {
                    name: Some("value".into()),
                    number: Some(2),
                    json_name: Some("value".into()),
                    label: Some(Label::Optional as i32),
                    ..Default::default()
                };
                self.set_kind(&mut value_field, value);
                entry.field = vec![key_field, value_field];
                message.nested_type.push(entry);
                (
                    Label::Repeated,
                    Kind::Message(format!("{qualified}.{entry_name}")),
                )
            }
        };
        field.set_label(label);
        self.set_kind(&mut field, kind);
        message.field.push(field);
    }

    fn set_kind(&mut self, field: &mut FieldDescriptorProto, kind: Kind) {
        match kind {
            Kind::Scalar(t) => field.set_type(t),
            Kind::Message(name) => {
                self.uses_empty |= name == EMPTY;
                self.uses_value |= name == VALUE;
                field.set_type(Type::Message);
                field.type_name = Some(name);
            }
        }
    }
}

/// A message named `name`, empty.
fn named(name: &str) -> DescriptorProto {
    DescriptorProto {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// Map entries of a request or response message were named under its first-choice
/// name; the message got `actual` (a named type had taken the first choice).
fn fix_entry_names(message: &mut DescriptorProto, planned: &str, actual: &str) {
    if planned == actual {
        return;
    }
    let from = format!(".{planned}.");
    let to = format!(".{actual}.");
    for field in &mut message.field {
        if let Some(name) = &mut field.type_name {
            *name = name.replace(&from, &to);
        }
    }
}

/// Adds the named types `shape` refers to, directly or through other types, to `out`.
fn reach(shape: &Shape, types: &BTreeMap<String, TypeShape>, out: &mut BTreeSet<String>) {
    match shape {
        Shape::Option(inner) | Shape::Seq(inner) => reach(inner, types, out),
        Shape::Map(key, value) => {
            reach(key, types, out);
            reach(value, types, out);
        }
        Shape::Tuple(items) => items.iter().for_each(|s| reach(s, types, out)),
        Shape::Named(name) => {
            if !out.insert(name.clone()) {
                return;
            }
            match types.get(name) {
                Some(TypeShape::NewtypeStruct(inner)) => reach(inner, types, out),
                Some(TypeShape::TupleStruct(items)) => {
                    items.iter().for_each(|s| reach(s, types, out))
                }
                Some(TypeShape::Struct { fields, .. }) => {
                    fields.iter().for_each(|f| reach(&f.shape, types, out))
                }
                Some(TypeShape::Enum(variants)) => {
                    for variant in variants {
                        match &variant.shape {
                            VariantShape::Unit => {}
                            VariantShape::Newtype(s) => reach(s, types, out),
                            VariantShape::Tuple(items) => {
                                items.iter().for_each(|s| reach(s, types, out))
                            }
                            VariantShape::Struct(fields) => {
                                fields.iter().for_each(|f| reach(&f.shape, types, out))
                            }
                        }
                    }
                }
                Some(TypeShape::UnitStruct) | None => {}
            }
        }
        _ => {}
    }
}
