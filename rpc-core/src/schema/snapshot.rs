//! Schema snapshots in a test: the first run writes the service's schema to a file
//! (commit it); later runs compare the service with it and fail, with a readable diff,
//! when a change would break the clients already deployed. Like `insta` or
//! `buf breaking`, for a trait.
//!
//! ```no_run
//! # #[traitrpc_core::service] pub trait Orders { async fn total(&self, a: u64) -> u64; }
//! #[test]
//! fn orders_stay_compatible() {
//!     traitrpc_core::schema::assert_compatible(OrdersClient::service_schema(), "schema/orders.json");
//! }
//! ```
//!
//! Under CI (the `CI` variable set) a missing snapshot fails instead of being written.
//!
//! The snapshot stands for what is deployed: changes that keep every call working
//! (identical on the wire, or translated by name) pass and are listed, but the file is
//! only rewritten when asked, with `TRAITRPC_UPDATE_SCHEMA=1`, once the new version is
//! released.

use std::fmt;
use std::path::{Path, PathBuf};

use super::compat::{diff, SchemaDiff};
use super::model::ServiceSchema;

/// The variable that rewrites snapshots (`TRAITRPC_UPDATE_SCHEMA=1 cargo test`).
pub const UPDATE_VARIABLE: &str = "TRAITRPC_UPDATE_SCHEMA";

/// What [`check_snapshot`] found.
#[derive(Debug)]
pub enum SnapshotOutcome {
    /// There was no snapshot, or an update was asked for: it was written.
    Written(PathBuf),
    /// The schema is the snapshot's.
    Unchanged,
    /// It changed, and no deployed client breaks: the changes (the snapshot is kept).
    Compatible(SchemaDiff),
}

/// Why [`check_snapshot`] failed.
#[derive(Debug)]
pub enum SnapshotError {
    /// Clients built from the snapshot's schema would break against this one.
    Breaking {
        /// The snapshot.
        path: PathBuf,
        /// Every difference.
        diff: SchemaDiff,
    },
    /// The snapshot could not be read, parsed or written.
    Io {
        /// The snapshot.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Breaking { path, diff } => write!(
                f,
                "the service's schema breaks clients built from {}:\n{diff}\n\
                 If this is intended (no such client is deployed any more), rewrite the \
                 snapshot with {UPDATE_VARIABLE}=1.",
                path.display()
            ),
            SnapshotError::Io { path, message } => {
                write!(f, "schema snapshot {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

/// Compares `schema` with the snapshot at `path` (relative paths are from the current
/// directory: the package's, under `cargo test`); writes it if there is none or
/// [`UPDATE_VARIABLE`] is set.
pub fn check_snapshot(
    schema: &ServiceSchema,
    path: impl AsRef<Path>,
) -> Result<SnapshotOutcome, SnapshotError> {
    let path = path.as_ref().to_path_buf();
    let io = |e: &dyn fmt::Display| SnapshotError::Io {
        path: path.clone(),
        message: e.to_string(),
    };
    let update = std::env::var_os(UPDATE_VARIABLE).is_some_and(|v| v != "0" && !v.is_empty());
    // Under CI (`CI` set, as CI services do) a missing snapshot is an error: written
    // there, it would pass and compare nothing.
    let ci = std::env::var_os("CI").is_some_and(|v| v != "0" && v != "false" && !v.is_empty());
    if !path.exists() && ci && !update {
        return Err(io(&format!(
            "there is no snapshot, and CI is set: run the test locally (it writes the \
             snapshot) and commit the file, or set {UPDATE_VARIABLE}=1"
        )));
    }
    if update || !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        }
        std::fs::write(&path, schema.to_snapshot()).map_err(|e| io(&e))?;
        return Ok(SnapshotOutcome::Written(path));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| io(&e))?;
    let deployed = ServiceSchema::from_snapshot(&text).map_err(|e| io(&e))?;
    if &deployed == schema {
        return Ok(SnapshotOutcome::Unchanged);
    }
    let changes = diff(&deployed, schema);
    if changes.breaks_old_clients() {
        return Err(SnapshotError::Breaking {
            path,
            diff: changes,
        });
    }
    Ok(SnapshotOutcome::Compatible(changes))
}

/// [`check_snapshot`] for a test: panics with the readable diff when the change breaks
/// deployed clients, prints what changed otherwise.
#[track_caller]
pub fn assert_compatible(schema: &ServiceSchema, path: impl AsRef<Path>) {
    match check_snapshot(schema, path) {
        Ok(SnapshotOutcome::Written(path)) => {
            eprintln!("wrote the schema snapshot {}", path.display())
        }
        Ok(SnapshotOutcome::Unchanged) => {}
        Ok(SnapshotOutcome::Compatible(changes)) => eprintln!(
            "the schema changed compatibly (the snapshot is kept until {UPDATE_VARIABLE}=1):\n{changes}"
        ),
        Err(error) => panic!("{error}"),
    }
}
