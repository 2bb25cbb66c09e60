//! `traitrpc`: the command-line client of traitrpc servers. It lists and describes the services a
//! server hosts (its reflection service, or the HTTP gateway's listing) and calls any
//! method with JSON (or KEY=VALUE) arguments, over the native protocol (JSON payloads) or
//! the HTTP gateway, with no compiled-in types. It also exports a service's schema
//! snapshot and compares two snapshots for breaking changes ([`traitrpc::schema`]).
//! `traitrpc --help` and `README.md` show the commands.
//!
//! Exit status: 0 on success, 1 when a call fails (or `health` is not Serving, or
//! `schema diff` finds a breaking change), 2 for a usage error.

mod cli;
mod client;
mod http;
mod model;
mod native;
mod target;

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use futures::StreamExt;
use serde_json::Value;
use traitrpc::schema::{SchemaDiff, ServiceSchema, Verdict};
use traitrpc::RpcError;

use crate::cli::{call_args, show_duration, CallArgs, Cli, Command, Options, SchemaCommand};
use crate::client::{Client, Failure};
use crate::model::{MethodInfo, ServiceInfo, SERVER_STREAM, UNARY};
use crate::target::Target;

/// A usage error found after clap's parsing (malformed JSON or KEY=VALUE arguments, a
/// metadata entry the transport cannot carry): exit status 2, like clap's own.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Standard output was closed under us (`traitrpc call ... | head -1`): stop quietly.
#[derive(Debug)]
struct OutputClosed;

impl fmt::Display for OutputClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for OutputClosed {}

/// Exit status of a failed call.
const FAILED: u8 = 1;
/// Exit status of a usage error (clap's).
const USAGE: u8 = 2;

fn main() -> ExitCode {
    // clap prints its own usage errors (and --help, --version) and exits: 2, or 0.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(FAILED);
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Stream bodies and connection tasks still running are dropped, not waited for.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => code,
        Err(error) if error.is::<OutputClosed>() => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.is::<Usage>() {
                ExitCode::from(USAGE)
            } else {
                ExitCode::from(FAILED)
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::List { target, options } => list(&target, &options).await,
        Command::Proto {
            target,
            services,
            out,
            options,
        } => proto(&target, services, out.as_deref(), &options).await,
        Command::Describe {
            target,
            name,
            json,
            options,
        } => describe(&target, &name, json, &options).await,
        Command::Call {
            target,
            method,
            args,
            stream,
            compact,
            options,
        } => {
            let (service, method) = split_method(&method)?;
            let args = match call_args(&args).map_err(Usage)? {
                CallArgs::Json(text) => read_args(text.as_deref())?,
                CallArgs::Named(args) => Value::Object(args),
            };
            call(&target, service, method, &args, stream, compact, &options).await
        }
        Command::Health {
            target,
            service,
            options,
        } => health(&target, &service, &options).await,
        Command::Schema {
            command:
                SchemaCommand::Export {
                    target,
                    service,
                    options,
                },
        } => schema_export(&target, &service, &options).await,
        Command::Schema {
            command:
                SchemaCommand::Diff {
                    old,
                    new,
                    strict,
                    json,
                },
        } => schema_diff(&old, &new, strict, json),
    }
}

/// One line on standard output, flushed (stream items are shown as they arrive).
fn print_line(line: &str) -> anyhow::Result<()> {
    print_text(&format!("{line}\n"))
}

/// `text` on standard output as it is (no newline added), flushed.
fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|error| match error.kind() {
            io::ErrorKind::BrokenPipe => anyhow::Error::new(OutputClosed),
            _ => anyhow::Error::new(error).context("writing to standard output"),
        })
}

/// A failed call as the error to print: deadlines say which timeout passed.
fn failed(failure: Failure, options: &Options) -> anyhow::Error {
    if failure.is_deadline() {
        return anyhow::anyhow!(
            "deadline exceeded: no answer within {} (--timeout)",
            show_duration(options.timeout)
        );
    }
    anyhow::Error::new(failure)
}

/// `traitrpc list`.
async fn list(target: &Target, options: &Options) -> anyhow::Result<ExitCode> {
    let client = Client::connect(target, options).await?;
    let services = client
        .list()
        .await
        .map_err(|failure| failed(failure, options))?;
    let width = services
        .iter()
        .flat_map(|s| {
            s.methods
                .iter()
                .map(move |m| s.name.len() + 1 + m.signature().len())
        })
        .max()
        .unwrap_or(0);
    for service in &services {
        if service.methods.is_empty() {
            print_line(&format!("{}  (no methods callable in JSON)", service.name))?;
        }
        for method in &service.methods {
            let signature = format!("{}.{}", service.name, method.signature());
            print_line(&format!("{signature:width$}  {}", method.traits()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `traitrpc describe`.
async fn describe(
    target: &Target,
    name: &str,
    json: bool,
    options: &Options,
) -> anyhow::Result<ExitCode> {
    let client = Client::connect(target, options).await?;
    let lookup = |failure| failed(failure, options);
    // A service name may have dots itself (`rpc.health.v1.Health`): the whole name
    // first, then `Service.method`.
    let (service, method) = match name.split_once('/') {
        Some((service, method)) => {
            let found = client.describe(service).await.map_err(lookup)?;
            (found, Some(method))
        }
        None => match client.describe(name).await.map_err(lookup)? {
            Some(service) => (Some(service), None),
            None => match name.rsplit_once('.') {
                Some((service, method)) => {
                    let found = client.describe(service).await.map_err(lookup)?;
                    (found, Some(method))
                }
                None => (None, None),
            },
        },
    };
    let Some(service) = service else {
        anyhow::bail!(
            "the server hosts no service `{name}` callable in JSON\nhint: `traitrpc list {target}` shows its services"
        );
    };
    let methods: Vec<&MethodInfo> = match method {
        None => service.methods.iter().collect(),
        Some(method) => match service.method(method) {
            Some(found) => vec![found],
            None => anyhow::bail!(
                "`{}` has no method `{method}`\nhint: its methods are {}",
                service.name,
                service.method_names()
            ),
        },
    };
    if json {
        let document = match method {
            None => service.raw.clone(),
            Some(_) => methods[0].raw.clone(),
        };
        print_line(&pretty(&document))?;
        return Ok(ExitCode::SUCCESS);
    }
    if methods.is_empty() {
        print_line(&format!("{}  (no methods callable in JSON)", service.name))?;
    }
    for (i, method) in methods.iter().enumerate() {
        if i > 0 {
            print_line("")?;
        }
        print_line(&describe_method(&service, method))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A method with its schemas, indented.
fn describe_method(service: &ServiceInfo, method: &MethodInfo) -> String {
    let mut text = format!(
        "{}.{}  {}",
        service.name,
        method.signature(),
        method.traits()
    );
    let schema = |label: &str, schema: &Option<Value>, absent: &str| {
        let body = match schema {
            None => format!(" {absent}"),
            Some(Value::Object(o)) if o.is_empty() => " {} (any JSON)".to_string(),
            Some(schema) => format!("\n{}", indent(&pretty(schema), "    ")),
        };
        format!("\n  {label}:{body}")
    };
    let undescribed = "(not described by this server)";
    text += &schema("arguments", &method.arguments, undescribed);
    let result = if method.kind == SERVER_STREAM {
        "result (each item)"
    } else {
        "result"
    };
    text += &schema(result, &method.result, undescribed);
    // An older listing that describes nothing cannot tell "no error" either.
    let no_error = if method.raw.get("error").is_some() {
        "none (the method cannot fail on its own)"
    } else {
        undescribed
    };
    text += &schema("error", &method.error, no_error);
    text
}

/// JSON indented by two spaces.
fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Every line of `text` after `prefix`.
fn indent(text: &str, prefix: &str) -> String {
    let lines: Vec<String> = text.lines().map(|line| format!("{prefix}{line}")).collect();
    lines.join("\n")
}

/// `Service.method` (or `Service/method`): the service is everything before the last
/// separator, since service names may have dots.
fn split_method(text: &str) -> Result<(&str, &str), Usage> {
    let split = text.split_once('/').or_else(|| text.rsplit_once('.'));
    match split {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            Ok((service, method))
        }
        _ => Err(Usage(format!(
            "`{text}` is not Service.method (for example Calculator.add)"
        ))),
    }
}

/// The JSON arguments: the text given, stdin for `-`, `{}` without.
fn read_args(text: Option<&str>) -> Result<Value, Usage> {
    let from_stdin = text == Some("-");
    let text = match text {
        None => return Ok(Value::Object(Default::default())),
        Some("-") => {
            let mut input = String::new();
            io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| Usage(format!("cannot read the arguments from stdin: {e}")))?;
            input
        }
        Some(text) => text.to_string(),
    };
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(&text).map_err(|e| {
        Usage(format!(
            "the arguments are not valid JSON ({e}): give an object by parameter name, as \
             '{{\"a\": 1}}', or an array in parameter order{}",
            if from_stdin {
                ""
            } else {
                " (or KEY=VALUE words: a=1 b=2)"
            }
        ))
    })
}

/// `traitrpc call`.
async fn call(
    target: &Target,
    service: &str,
    method: &str,
    args: &Value,
    force_stream: bool,
    compact: bool,
    options: &Options,
) -> anyhow::Result<ExitCode> {
    let client = Client::connect(target, options).await?;
    let http = matches!(target, Target::Http(_));
    // The kind from reflection; if reflection fails, a unary call. Over HTTP, arguments
    // in parameter order need the parameter names too.
    let described = if !force_stream || (http && args.is_array()) {
        client.describe(service).await.ok().flatten()
    } else {
        None
    };
    let info = described.as_ref().and_then(|s| s.method(method));
    let kind = match (force_stream, info) {
        (true, _) => SERVER_STREAM.to_string(),
        (false, Some(info)) => info.kind.clone(),
        (false, None) => UNARY.to_string(),
    };
    let by_name;
    let args = match (args, info) {
        (Value::Array(values), Some(info)) if http && values.len() <= info.params.len() => {
            by_name = Value::Object(info.params.iter().cloned().zip(values.clone()).collect());
            &by_name
        }
        (args, _) => args,
    };
    let explain = |failure: Failure| {
        let not_found = failure.is_not_found();
        let error = failed(failure, options);
        if !not_found {
            return error;
        }
        let hint = match &described {
            Some(service) => format!(
                "`{}` has the methods {}",
                service.name,
                service.method_names()
            ),
            None => format!("`traitrpc list {target}` shows the services"),
        };
        anyhow::anyhow!("{error:#}\nhint: {hint}")
    };
    match kind.as_str() {
        SERVER_STREAM => {
            let mut items = client
                .stream(service, method, args)
                .await
                .map_err(explain)?;
            while let Some(item) = items.next().await {
                let item = item.map_err(explain)?;
                print_line(&item.to_string())?;
            }
        }
        UNARY => {
            let result = client.call(service, method, args).await.map_err(explain)?;
            print_line(&if compact {
                result.to_string()
            } else {
                pretty(&result)
            })?;
        }
        other => anyhow::bail!(
            "`{service}.{method}` is a {other} method: it takes a stream of arguments, \
             and traitrpc calls unary and server-streaming methods only"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `traitrpc health`.
async fn health(target: &Target, service: &str, options: &Options) -> anyhow::Result<ExitCode> {
    let client = Client::connect(target, options).await?;
    let (status, note) = client
        .health(service)
        .await
        .map_err(|failure| failed(failure, options))?;
    print_line(&status)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    Ok(if status == "Serving" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILED)
    })
}

/// `traitrpc proto`: the `.proto` of `services` (default: all but the built-in `rpc.*`),
/// from their schema snapshots and descriptions, printed or written into `out`.
async fn proto(
    target: &Target,
    services: Vec<String>,
    out: Option<&Path>,
    options: &Options,
) -> anyhow::Result<ExitCode> {
    let client = Client::connect(target, options).await?;
    let hosted = client.list().await.map_err(|f| failed(f, options))?;
    let names: Vec<String> = if services.is_empty() {
        hosted
            .iter()
            .map(|s| s.name.clone())
            .filter(|name| !name.starts_with("rpc."))
            .collect()
    } else {
        services
    };
    let mut inputs = Vec::new();
    for name in &names {
        let Some(info) = hosted.iter().find(|s| &s.name == name) else {
            anyhow::bail!(
                "the server hosts no service `{name}`\nhint: `traitrpc list {target}` shows its services"
            );
        };
        let document = client
            .schema(name)
            .await
            .map_err(|f| failed(f, options))?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "`{name}` has no schema: only services generated by #[traitrpc::service] export a .proto"
                )
            })?;
        let schema: ServiceSchema = serde_json::from_value(document).map_err(|e| {
            anyhow::anyhow!("the server's schema of `{name}` is not one this traitrpc reads ({e})")
        })?;
        let idempotent = info
            .methods
            .iter()
            .filter(|m| m.idempotent)
            .map(|m| m.name.clone())
            .collect();
        inputs.push(traitrpc_proto::ServiceInput { schema, idempotent });
    }
    if inputs.is_empty() {
        anyhow::bail!("the server hosts no services of its own (only rpc.*)");
    }
    let export = traitrpc_proto::export(&inputs);
    for file in &export.files {
        let text = traitrpc_proto::to_proto_text(file, &export.skipped);
        match out {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join(file.name());
                std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                println!("{}", path.display());
            }
            None => {
                if export.files.len() > 1 {
                    println!("// ---- {} ----", file.name());
                }
                print_text(&text)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `traitrpc schema export`: the snapshot exactly as [`ServiceSchema::to_snapshot`] writes
/// it, so that it compares byte for byte with a committed snapshot file.
async fn schema_export(
    target: &Target,
    service: &str,
    options: &Options,
) -> anyhow::Result<ExitCode> {
    let client = Client::connect(target, options).await?;
    let exported = client.schema(service).await.map_err(|failure| {
        let hint = match &failure {
            Failure::Rpc(RpcError::UnknownMethod { .. }) => Some(
                "the server's reflection service has no `schema` method: it was built \
                 with a traitrpc version before schema snapshots",
            ),
            Failure::Rpc(RpcError::UnknownService { .. }) => {
                Some("the server hosts no reflection service")
            }
            failure @ Failure::Http { .. } if failure.is_not_found() => Some(
                "the gateway serves no reflection service with a `schema` method: give \
                 it the native server's router (Server::router()), or export from the \
                 native address",
            ),
            _ => None,
        };
        let error = failed(failure, options);
        match hint {
            Some(hint) => anyhow::anyhow!("{error:#}\nhint: {hint}"),
            None => error,
        }
    })?;
    let Some(document) = exported else {
        // Hosted without a snapshot (not a `#[service]` trait), or not hosted at all.
        if let Ok(Some(_)) = client.describe(service).await {
            anyhow::bail!(
                "`{service}` has no schema snapshot: only services generated by \
                 #[traitrpc::service] have one"
            );
        }
        anyhow::bail!(
            "the server hosts no service `{service}`\nhint: `traitrpc list {target}` shows its services"
        );
    };
    let schema: ServiceSchema = serde_json::from_value(document).map_err(|e| {
        anyhow::anyhow!(
            "the server's snapshot of `{service}` is not one this traitrpc reads ({e})\n\
             hint: is the server built with a newer traitrpc?"
        )
    })?;
    print_text(&schema.to_snapshot())?;
    Ok(ExitCode::SUCCESS)
}

/// `traitrpc schema diff`: the changes, then the verdict; a failure when clients built
/// from OLD break against servers built from NEW (with `strict`, when anything breaks).
fn schema_diff(old: &Path, new: &Path, strict: bool, json: bool) -> anyhow::Result<ExitCode> {
    if is_stdin(old) && is_stdin(new) {
        return Err(Usage("only one of OLD and NEW can be `-` (standard input)".into()).into());
    }
    let before = read_snapshot(old)?;
    let after = read_snapshot(new)?;
    if before.service != after.service {
        anyhow::bail!(
            "{} is a snapshot of `{}`, {} of `{}`: a client of `{}` finds no such service \
             on a server of `{}` (renaming a service breaks every client)",
            shown_path(old),
            before.service,
            shown_path(new),
            after.service,
            before.service,
            after.service
        );
    }
    let changes = traitrpc::schema::diff(&before, &after);
    if json {
        print_line(&serde_json::to_string_pretty(&changes)?)?;
    } else {
        let text = changes.to_string();
        if text.is_empty() {
            print_line("no differences: every method is identical on the wire")?;
        } else {
            print_text(&text)?;
        }
        print_line(&verdict(&changes, strict))?;
    }
    let breaks = changes.breaks_old_clients() || (strict && changes.breaks_anything());
    Ok(if breaks {
        ExitCode::from(FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The last line of `schema diff`: what the changes mean for a rolling upgrade.
fn verdict(changes: &SchemaDiff, strict: bool) -> String {
    let identical = changes.methods.iter().all(|m| {
        m.old_client_new_server == Verdict::Identical
            && m.new_client_old_server == Verdict::Identical
    });
    if identical {
        "verdict: identical: nothing changes on the wire".into()
    } else if changes.breaks_old_clients() {
        "verdict: BREAKING: clients built from OLD break against servers built from NEW".into()
    } else if !changes.breaks_anything() {
        "verdict: compatible: clients and servers of either version keep working together".into()
    } else if strict {
        "verdict: BREAKING (--strict): clients built from NEW break against servers built \
         from OLD"
            .into()
    } else {
        "verdict: compatible: clients built from OLD keep working against servers built \
         from NEW (clients built from NEW break against servers built from OLD: upgrade \
         the servers first)"
            .into()
    }
}

/// Whether a path on the command line is `-`, standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// A path as error messages name it.
fn shown_path(path: &Path) -> String {
    if is_stdin(path) {
        "standard input".into()
    } else {
        path.display().to_string()
    }
}

/// The snapshot in the file at `path` (`-`: standard input). A file that cannot be read
/// or is not a snapshot is a usage error, so that status 1 means a breaking change.
fn read_snapshot(path: &Path) -> Result<ServiceSchema, Usage> {
    let read = if is_stdin(path) {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(path)
    };
    let text = read.map_err(|e| Usage(format!("cannot read {}: {e}", shown_path(path))))?;
    ServiceSchema::from_snapshot(&text).map_err(|e| {
        Usage(format!(
            "{} is not a schema snapshot ({e})\nhint: `traitrpc schema export ADDR SERVICE` \
             or traitrpc::schema::assert_compatible writes one",
            shown_path(path)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_split_at_the_last_dot() {
        assert_eq!(split_method("Calc.add").unwrap(), ("Calc", "add"));
        assert_eq!(split_method("Calc/add").unwrap(), ("Calc", "add"));
        assert_eq!(
            split_method("rpc.health.v1.Health.check").unwrap(),
            ("rpc.health.v1.Health", "check")
        );
        assert_eq!(split_method("pkg.Calc/add").unwrap(), ("pkg.Calc", "add"));
        for bad in ["add", ".add", "Calc.", "Calc/"] {
            assert!(split_method(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn arguments_are_json() {
        assert_eq!(read_args(None).unwrap(), serde_json::json!({}));
        assert_eq!(read_args(Some(" ")).unwrap(), serde_json::json!({}));
        assert_eq!(read_args(Some("[1,2]")).unwrap(), serde_json::json!([1, 2]));
        assert!(read_args(Some("{a: 1}")).is_err());
    }
}
