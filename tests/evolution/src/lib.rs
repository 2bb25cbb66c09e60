//! Two versions of the service `shop.Orders`, one method per ordinary change of
//! docs/EVOLUTION.md (the method's name says which), and an implementation of each that
//! answers with what it received, so a test can see whether a value kept its meaning.
//!
//! A method named `unchanged` and the types whose only change is their Rust name keep
//! their fingerprints; every other method's differs between [`v1`] and [`v2`].

pub mod v1;
pub mod v2;
