//! Compile-time behaviour of `#[service]`: every unsupported trait shape is rejected with an
//! error pointing at the offending tokens (`tests/ui/fail`, each with its expected
//! `.stderr`), and every supported shape compiles (`tests/ui/pass`).
//!
//! Regenerate the expected output after an intended change with
//! `TRYBUILD=overwrite cargo test -p traitrpc-macro-ui`, then review the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("fail/*.rs");
    cases.pass("pass/*.rs");
}
