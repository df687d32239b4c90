//! `listy-core`: the engine of Listy, with no Python in it.
//!
//! - [`codec`]: record / tombstone / trailer frames and the lazy reader.
//! - [`keys`]: memcached-safe list and counter keys.
//! - [`store`]: the `Store` trait; [`local`] (embedded) and [`pool`] (memcached).
//! - [`client`], [`ketama`]: the memcached text protocol and server selection.
//! - [`engine`]: the list protocol (leases, prepends, tombstones, counters);
//!   [`builder`]'s [`EngineBuilder`] configures one.

pub mod builder;
pub mod calendar;
pub mod client;
pub mod codec;
pub mod engine;
pub mod error;
pub mod ketama;
pub mod keys;
pub mod local;
pub mod pool;
pub mod store;

pub use builder::EngineBuilder;
pub use error::{Error, Result, SourceError, SourceErrorKind};
pub use store::{Item, Op, Reply, Store};
