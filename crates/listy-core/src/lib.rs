//! `listy-core`: the engine of Listy, with no Python in it. It reads and
//! writes the same memcached lists a Django project using Listy does (see
//! the crate's README and `examples/shared_lists.rs`).
//!
//! - [`engine`]: the list protocol (leases, prepends, tombstones, counters)
//!   for one model; [`builder`]'s [`EngineBuilder`] configures one, and an
//!   [`engine::Source`] answers its misses from the database.
//! - [`codec`]: record / tombstone / trailer frames, schemas and layouts.
//! - [`keys`]: memcached-safe list, counter and meta keys.
//! - [`calendar`]: day numbers and the period buckets of counters.
//! - [`store`]: the [`Store`] trait; [`local`] (embedded) and [`pool`] (memcached).
//! - [`client`], [`ketama`]: the memcached text protocol and server selection.
//! - [`reader`]: the lazy head-first [`reader::List`] a program iterates.
//! - [`segments`]: counts and pages of a list in segments from the few parts they need.
//! - [`pgoutput`]: PostgreSQL's logical decoding messages (`listy_sync`).
//! - [`fault`]: why a read bypassed the cache or a write fell short, by kind.
//! - [`error`]: the crate's one [`Error`], with the typed [`SourceError`].

#![deny(missing_docs)]

pub mod builder;
pub mod calendar;
pub mod client;
pub mod codec;
pub mod engine;
pub mod error;
pub mod fault;
pub mod ketama;
pub mod keys;
pub mod local;
pub mod pgoutput;
pub mod pool;
pub mod reader;
pub mod segments;
pub mod store;
#[cfg(feature = "tls")]
pub mod tls;

pub use builder::EngineBuilder;
pub use error::{Error, Result, SourceError, SourceErrorKind};
pub use fault::{Fault, FaultKind};
pub use store::{Item, Op, Reply, Store};

/// The README's example runs as a doctest, so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
