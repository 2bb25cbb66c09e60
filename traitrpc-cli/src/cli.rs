//! The command line: the subcommands, their options, and the parsers of the values that
//! clap checks for us (addresses, durations, metadata entries). A value clap refuses is a
//! usage error: clap prints it with the usage line and exits with status 2. `call`'s
//! arguments (JSON, or KEY=VALUE words) are sorted out after clap, by [`call_args`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use crate::target::Target;

/// What `traitrpc --help` says after the list of commands.
const MAIN_AFTER_HELP: &str = "\
ADDR is where the server listens:
  host:port          the native protocol (JSON payloads), e.g. 127.0.0.1:7070
  unix:PATH          the native protocol over a Unix domain socket
  http://host:port   the HTTP gateway (Connect's JSON), e.g. http://127.0.0.1:8080

Exit status:
  0  success (for `health`: the status is Serving; for `schema diff`: clients built
     from OLD keep working against NEW servers)
  1  the call failed: connection, deadline, server or application error; for
     `health`: any status but Serving; for `schema diff`: a breaking change
  2  usage error: unknown command or option, malformed ADDR, --timeout,
     --metadata or arguments (JSON or KEY=VALUE), a snapshot file that cannot be
     read or is not a snapshot

Examples:
  traitrpc list 127.0.0.1:7070
  traitrpc describe 127.0.0.1:7070 Calculator.add
  traitrpc call 127.0.0.1:7070 Calculator.add '{\"a\": 1, \"b\": 2}'
  traitrpc call 127.0.0.1:7070 Calculator.add a=1 b=2
  traitrpc call http://127.0.0.1:8080 Calculator.count '{\"to\": 3, \"every_ms\": 100}'
  echo '[1, 2]' | traitrpc call 127.0.0.1:7070 Calculator.add -
  traitrpc health 127.0.0.1:7070
  traitrpc schema export 127.0.0.1:7070 Calculator > schema/calculator.json
  traitrpc schema diff schema/calculator.json new/calculator.json";

/// Calls the services of a traitrpc server without compiled-in types.
#[derive(Debug, Parser)]
#[command(
    name = "traitrpc",
    version,
    about = "Calls the services of a traitrpc server without compiled-in types",
    long_about = "Calls the services of a traitrpc server without compiled-in types: lists \
        and describes them with the server's reflection service, and calls any method \
        with JSON arguments, over the native protocol (JSON payloads) or the HTTP gateway; \
        exports services' schema snapshots and compares two of them for breaking changes.",
    after_help = MAIN_AFTER_HELP
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the .proto of the server's services, exported from their traits' schemas
    #[command(after_help = "\
The .proto that gRPC and Connect clients are generated from (docs/HTTP.md): one file per
package, with field numbers derived from field names. Without SERVICE, every service the
server hosts except the built-in ones (rpc.*). Methods with no protobuf form are listed
in a comment at the top of the file, with the reason.

With --out DIR, each file is written to DIR/NAME (shop.proto; services.proto for services
without a package) and its path printed; otherwise the files are printed.

Examples:
  traitrpc proto 127.0.0.1:7070 > services.proto
  traitrpc proto http://127.0.0.1:8080 shop.Orders --out proto/")]
    Proto {
        /// The server: host:port, unix:PATH or http://host:port
        #[arg(value_name = "ADDR", value_parser = Target::parse)]
        target: Target,
        /// The services, by wire name (default: every service but rpc.*)
        #[arg(value_name = "SERVICE")]
        services: Vec<String>,
        /// Write the files into this directory instead of printing them
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Connection options.
        #[command(flatten)]
        options: Options,
    },

    /// List the services and their methods, one line per method
    #[command(after_help = "\
Each line is SERVICE.METHOD(PARAMS), its kind (unary, server_stream, client_stream,
bidi_stream) and `idempotent` for methods safe to retry.

Examples:
  traitrpc list 127.0.0.1:7070
  traitrpc list http://127.0.0.1:8080
    Calculator.add(a, b)  unary idempotent")]
    List {
        /// The server: host:port, unix:PATH or http://host:port
        #[arg(value_name = "ADDR", value_parser = Target::parse)]
        target: Target,
        /// Connection options.
        #[command(flatten)]
        options: Options,
    },

    /// Show a service's methods, or one method, with the JSON Schemas of their
    /// arguments, results and errors
    #[command(after_help = "\
NAME is a service (Calculator, rpc.health.v1.Health) or one of its methods
(Calculator.add, or Calculator/add as in the HTTP path).

Examples:
  traitrpc describe 127.0.0.1:7070 Calculator
  traitrpc describe 127.0.0.1:7070 Calculator.add
  traitrpc describe --json http://127.0.0.1:8080 Calculator.add")]
    Describe {
        /// The server: host:port, unix:PATH or http://host:port
        #[arg(value_name = "ADDR", value_parser = Target::parse)]
        target: Target,
        /// A service, or Service.method
        #[arg(value_name = "NAME")]
        name: String,
        /// Print the server's description as one JSON document instead
        #[arg(long)]
        json: bool,
        /// Connection options.
        #[command(flatten)]
        options: Options,
    },

    /// Call a method with JSON or KEY=VALUE arguments and print its result as JSON
    #[command(after_help = "\
The arguments are one of:
  a JSON object by parameter name ({\"a\": 1, \"b\": 2}) or an array in parameter order
  ([1, 2]), as one word; `-` reads it from stdin;
  KEY=VALUE words, one per parameter (a=1 b=2): a VALUE that parses as JSON is that
  JSON (a=1 is the number 1, on=true, xs=[1,2], s='\"x\"'), any other is a string
  (name=alice); KEY:=JSON takes the VALUE as JSON only (xs:='[1, 2]').
Without them, {} (no arguments).

The result is printed as JSON on stdout. A server stream prints one JSON line per item
as the items arrive. The method's kind comes from the server's reflection (unary if
that fails); --stream takes the stream path without asking.

An error is printed on stderr and the exit status is 1; the method's own error reads
`error: the method returned an error: <its JSON>`.

Examples:
  traitrpc call 127.0.0.1:7070 Calculator.add '{\"a\": 1, \"b\": 2}'
  traitrpc call 127.0.0.1:7070 Calculator.add '[1, 2]'
  traitrpc call 127.0.0.1:7070 Calculator.add a=1 b=2
  traitrpc call http://127.0.0.1:8080 Calculator.divide '{\"a\": 1, \"b\": 0}'
  traitrpc call 127.0.0.1:7070 Calculator.count to=5 every_ms=200
  traitrpc call --timeout 500ms 127.0.0.1:7070 Calculator.sleep '{\"ms\": 2000}'
  traitrpc call -H authorization='Bearer t0k3n' 127.0.0.1:7070 Account.balance
  cat args.json | traitrpc call 127.0.0.1:7070 Calculator.add -")]
    Call {
        /// The server: host:port, unix:PATH or http://host:port
        #[arg(value_name = "ADDR", value_parser = Target::parse)]
        target: Target,
        /// The method: Service.method (or Service/method)
        #[arg(value_name = "METHOD")]
        method: String,
        /// The arguments: JSON as one word (`-` reads it from stdin), or KEY=VALUE words
        /// (KEY:=JSON for a value that must be JSON); default {}
        #[arg(value_name = "JSON | KEY=VALUE")]
        args: Vec<String>,
        /// Call it as a server stream, without asking reflection for its kind
        #[arg(long)]
        stream: bool,
        /// Print a unary result on one line instead of indented
        #[arg(long)]
        compact: bool,
        /// Connection options.
        #[command(flatten)]
        options: Options,
    },

    /// Ask the health service for a status; exit status 0 only when Serving
    #[command(after_help = "\
Prints Serving, NotServing, Unknown or ServiceUnknown. Without SERVICE, the status of
the whole server. Over HTTP, a gateway without a health service is Serving when it
answers and lists SERVICE (a note on stderr says so).

Examples:
  traitrpc health 127.0.0.1:7070
  traitrpc health 127.0.0.1:7070 Calculator && echo up")]
    Health {
        /// The server: host:port, unix:PATH or http://host:port
        #[arg(value_name = "ADDR", value_parser = Target::parse)]
        target: Target,
        /// The service to check (default: the whole server)
        #[arg(value_name = "SERVICE", default_value = "")]
        service: String,
        /// Connection options.
        #[command(flatten)]
        options: Options,
    },

    /// Export a service's schema snapshot from a server, or compare two snapshots for
    /// breaking changes
    #[command(after_help = "\
A schema snapshot is the file traitrpc::schema::assert_compatible writes (the shapes of
a service's arguments, results, errors and stream items, with their fingerprints).

Examples:
  traitrpc schema export 127.0.0.1:7070 Calculator > schema/calculator.json
  traitrpc schema diff schema/calculator.json new/calculator.json
  traitrpc schema export 127.0.0.1:7070 Calculator | traitrpc schema diff schema/calculator.json -")]
    Schema {
        /// What to do with snapshots.
        #[command(subcommand)]
        command: SchemaCommand,
    },
}

/// `traitrpc schema`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Print a hosted service's schema snapshot, byte for byte as assert_compatible
    /// writes it
    #[command(after_help = "\
Asks the server's reflection service (rpc.reflection.v1.Reflection, method `schema`).
Over HTTP, the gateway must serve the native server's router (Server::router()), which
has the reflection service. A service the server does not host is an error (exit 1).

Examples:
  traitrpc schema export 127.0.0.1:7070 Calculator > schema/calculator.json
  traitrpc schema export http://127.0.0.1:8080 Calculator")]
    Export {
        /// The server: host:port, unix:PATH or http://host:port
        #[arg(value_name = "ADDR", value_parser = Target::parse)]
        target: Target,
        /// The service, by its wire name (Calculator, rpc.health.v1.Health)
        #[arg(value_name = "SERVICE")]
        service: String,
        /// Connection options.
        #[command(flatten)]
        options: Options,
    },

    /// Compare two schema snapshots of a service: which calls keep working across the
    /// two versions
    #[command(after_help = "\
For every method that changed, in each direction (old client -> new server, new client
-> old server): `translated by name` (the call keeps working, in JSON while the
versions differ) or BREAKING with the reasons; then one line with the verdict.

Exit status: 0 when clients built from OLD keep working against servers built from NEW
(upgrade the servers first); 1 when they break, and with --strict also when clients
built from NEW break against OLD servers; 2 when a file cannot be read or is not a
snapshot.

Examples:
  traitrpc schema diff schema/calculator.json new/calculator.json
  traitrpc schema diff --strict --json schema/calculator.json new/calculator.json
  traitrpc schema export 127.0.0.1:7070 Calculator | traitrpc schema diff schema/calculator.json -")]
    Diff {
        /// The snapshot of the version deployed now (`-`: standard input)
        #[arg(value_name = "OLD")]
        old: PathBuf,
        /// The snapshot of the version to deploy (`-`: standard input)
        #[arg(value_name = "NEW")]
        new: PathBuf,
        /// Also fail when clients built from NEW break against servers built from OLD
        #[arg(long)]
        strict: bool,
        /// Print the comparison as one JSON document instead
        #[arg(long)]
        json: bool,
    },
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Call metadata KEY=VALUE (also `KEY: VALUE`), repeatable; over HTTP, a request
    /// header (names arrive lowercase)
    #[arg(
        long = "metadata",
        short = 'H',
        visible_alias = "header",
        value_name = "KEY=VALUE",
        value_parser = parse_metadata
    )]
    pub metadata: Vec<(String, String)>,
    /// Deadline of each call, and of connecting: 500ms, 5s, 1.5s, 2m, 1h (a bare number
    /// is seconds)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// A duration as `500ms`, `5s`, `1.5s`, `2m`, `1h` or a bare number of seconds: more than
/// zero, at most a year.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 5s, 2m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use ms, s, m or h"
            ))
        }
    };
    if seconds <= 0.0 {
        return Err("the duration must be more than zero".into());
    }
    if seconds > 365.0 * 24.0 * 3600.0 {
        return Err("the duration must be at most a year".into());
    }
    Ok(Duration::from_secs_f64(seconds).max(Duration::from_millis(1)))
}

/// A metadata entry `key=value` or `key: value` (split at whichever of `=` and `:` comes
/// first); the key is 1 to 255 bytes, the value at most 65,535.
pub fn parse_metadata(text: &str) -> Result<(String, String), String> {
    let Some(at) = text.find(['=', ':']) else {
        return Err(format!("`{text}` is not KEY=VALUE"));
    };
    let key = text[..at].trim();
    let mut value = &text[at + 1..];
    if text.as_bytes()[at] == b':' {
        value = value.trim_start();
    }
    if key.is_empty() {
        return Err(format!("`{text}` has no key before the `=`"));
    }
    if key.len() > 255 {
        return Err(format!("the key is {} bytes; at most 255", key.len()));
    }
    if value.len() > 65_535 {
        return Err(format!("the value is {} bytes; at most 65535", value.len()));
    }
    Ok((key.to_string(), value.to_string()))
}

/// `call`'s arguments as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum CallArgs {
    /// JSON text (`-`: read it from stdin); `None` without arguments.
    Json(Option<String>),
    /// KEY=VALUE words, as an object by parameter name.
    Named(Map<String, Value>),
}

/// Sorts out `call`'s argument words: none; one word of JSON (or `-`), kept as text for
/// the JSON reader (so malformed JSON is reported as such); or KEY=VALUE / KEY:=JSON
/// words. One word is KEY=VALUE when it is not valid JSON, has an `=` and does not start
/// like JSON (`{`, `[`, `"`); valid JSON cannot have an `=` outside a string, so the two
/// forms never overlap. The error names the word at fault.
pub fn call_args(words: &[String]) -> Result<CallArgs, String> {
    match words {
        [] => return Ok(CallArgs::Json(None)),
        [word] if looks_like_json(word) => return Ok(CallArgs::Json(Some(word.clone()))),
        _ => {}
    }
    let mut named = Map::new();
    for word in words {
        let (key, value) = key_value(word)?;
        if named.contains_key(key) {
            return Err(format!("`{word}`: the parameter `{key}` is given twice"));
        }
        named.insert(key.to_string(), value);
    }
    Ok(CallArgs::Named(named))
}

/// Whether one argument word is (meant as) JSON rather than KEY=VALUE.
fn looks_like_json(word: &str) -> bool {
    word == "-"
        || !word.contains('=')
        || word.trim_start().starts_with(['{', '[', '"'])
        || serde_json::from_str::<Value>(word).is_ok()
}

/// One `KEY=VALUE` word (VALUE as JSON if it parses, else as a string) or `KEY:=JSON`
/// (VALUE as JSON, or an error).
pub fn key_value(word: &str) -> Result<(&str, Value), String> {
    let Some(at) = word.find('=') else {
        return Err(format!(
            "`{word}` is not KEY=VALUE: give the arguments as KEY=VALUE words, or as JSON \
             on its own (one word)"
        ));
    };
    let (key, raw) = match word[..at].strip_suffix(':') {
        Some(key) => (key, true),
        None => (&word[..at], false),
    };
    let text = &word[at + 1..];
    if key.is_empty() {
        return Err(format!("`{word}` has no parameter name before the `=`"));
    }
    if key.trim_start().starts_with(['{', '[', '"']) {
        return Err(format!(
            "`{word}` is not KEY=VALUE: JSON arguments are given on their own, as one word"
        ));
    }
    let value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) if raw => {
            return Err(format!(
                "`{word}`: the value after `:=` is not valid JSON ({e})"
            ))
        }
        Err(_) => Value::String(text.to_string()),
    };
    Ok((key, value))
}

/// Prints a duration as it is written on the command line (`500ms`, `30s`, `1.5s`).
pub fn show_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 || ms % 1000 != 0 {
        if ms >= 1000 {
            return format!("{}s", duration.as_secs_f64());
        }
        return format!("{ms}ms");
    }
    let s = duration.as_secs();
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_have_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "0s", "ms", "5 parsecs", "-1s", "1e3s", "99999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(show_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show_duration(Duration::from_secs(30)), "30s");
        assert_eq!(show_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn metadata_is_key_value() {
        let entry = |k: &str, v: &str| Ok((k.to_string(), v.to_string()));
        assert_eq!(parse_metadata("user=alice"), entry("user", "alice"));
        assert_eq!(parse_metadata("a=b=c"), entry("a", "b=c"));
        assert_eq!(parse_metadata("empty="), entry("empty", ""));
        assert_eq!(
            parse_metadata("Authorization: Bearer x=y"),
            entry("Authorization", "Bearer x=y")
        );
        assert_eq!(parse_metadata("url=http://x"), entry("url", "http://x"));
        assert!(parse_metadata("novalue").is_err());
        assert!(parse_metadata("=v").is_err());
        assert!(parse_metadata(&format!("{}=v", "k".repeat(256))).is_err());
    }

    fn words(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn named(value: Value) -> Result<CallArgs, String> {
        match value {
            Value::Object(map) => Ok(CallArgs::Named(map)),
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn call_arguments_are_json_or_key_value_words() {
        assert_eq!(call_args(&[]), Ok(CallArgs::Json(None)));
        // One word of JSON (valid or not), or `-`, is the JSON form, as before.
        for json in [
            r#"{"a": 1, "b": 2}"#,
            "[1, 2]",
            "-",
            "",
            "5",
            r#""a=b""#,
            r#"{"a": "x=y"}"#,
            r#"{"a": 1,"#,
            "{a: 1}",
            r#"{"a"=1}"#,
            " [1=2]",
            "nope",
        ] {
            assert_eq!(
                call_args(&words(&[json])),
                Ok(CallArgs::Json(Some(json.to_string()))),
                "{json:?}"
            );
        }
        assert_eq!(
            call_args(&words(&["a=1", "b=2"])),
            named(json!({"a": 1, "b": 2}))
        );
        assert_eq!(call_args(&words(&["a=1"])), named(json!({"a": 1})));
        assert_eq!(
            call_args(&words(&["name=alice", "xs:=[1, 2]"])),
            named(json!({"name": "alice", "xs": [1, 2]}))
        );
    }

    #[test]
    fn key_value_values_are_json_if_they_parse_else_strings() {
        let value = |word: &str| key_value(word).map(|(_, value)| value);
        assert_eq!(value("a=1"), Ok(json!(1)));
        assert_eq!(value("a=-1.5"), Ok(json!(-1.5)));
        assert_eq!(value("flag=true"), Ok(json!(true)));
        assert_eq!(value("x=null"), Ok(Value::Null));
        assert_eq!(value("xs=[1,2]"), Ok(json!([1, 2])));
        assert_eq!(value(r#"p={"x": 1}"#), Ok(json!({"x": 1})));
        assert_eq!(value(r#"s="x""#), Ok(json!("x")));
        assert_eq!(value("name=alice"), Ok(json!("alice")));
        assert_eq!(value("s=1 2"), Ok(json!("1 2")));
        assert_eq!(value("id=007"), Ok(json!("007")));
        assert_eq!(value("empty="), Ok(json!("")));
        assert_eq!(value("eq=a=b"), Ok(json!("a=b")));
        assert_eq!(value("url=http://x"), Ok(json!("http://x")));
        assert_eq!(key_value("a:b=1"), Ok(("a:b", json!(1))));
        // KEY:=JSON: JSON only.
        assert_eq!(key_value("a:=1"), Ok(("a", json!(1))));
        assert_eq!(value(r#"s:="x""#), Ok(json!("x")));
        assert_eq!(value("xs:=[1, 2]"), Ok(json!([1, 2])));
    }

    #[test]
    fn bad_key_value_words_are_errors_naming_the_word() {
        let error = |list: &[&str]| call_args(&words(list)).unwrap_err();
        let twice = error(&["a=1", "b=2", "a=3"]);
        assert!(
            twice.contains("`a=3`") && twice.contains("twice"),
            "{twice}"
        );
        let twice = error(&["a=1", "a:=1"]);
        assert!(
            twice.contains("`a:=1`") && twice.contains("twice"),
            "{twice}"
        );
        let bare = error(&["a=1", "b"]);
        assert!(bare.starts_with("`b` is not KEY=VALUE"), "{bare}");
        let stdin = error(&["-", "a=1"]);
        assert!(stdin.starts_with("`-` is not KEY=VALUE"), "{stdin}");
        let json = error(&[r#"{"a": 1}"#, "b=2"]);
        assert!(json.starts_with(r#"`{"a": 1}` is not KEY=VALUE"#), "{json}");
        let json = error(&[r#"{"a": "x=y"}"#, "b=2"]);
        assert!(json.contains("on their own"), "{json}");
        let raw = error(&["a:=one"]);
        assert!(
            raw.starts_with("`a:=one`: the value after `:=` is not valid JSON"),
            "{raw}"
        );
        assert!(error(&["a:="]).starts_with("`a:=`"));
        let nameless = error(&["=1"]);
        assert!(
            nameless.starts_with("`=1` has no parameter name"),
            "{nameless}"
        );
        assert!(error(&[":=1"]).starts_with("`:=1` has no parameter name"));
    }
}
