//! The `Store` trait: the handful of memcached operations the list protocol
//! needs, executed as one pipelined batch. Two implementations: the memcached
//! pool (`crate::pool::MemcachedPool`) and the embedded in-process store
//! (`crate::local::LocalStore`). Both must behave identically, so the engine's
//! tests run on both.

use crate::error::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One cached value with its CAS token (always fetched: `gets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The CAS token `cas` must name to replace this value.
    pub cas: u64,
}

/// One storage command. Keys must already be memcached-safe (see `keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `gets key`: the value and its CAS token, or nothing.
    Get {
        /// The key to read.
        key: String,
    },
    /// `set key 0 0 n`
    Set {
        /// The key to write.
        key: String,
        /// The new value.
        value: Vec<u8>,
    },
    /// `add key 0 0 n`: store only if missing.
    Add {
        /// The key to write.
        key: String,
        /// The new value.
        value: Vec<u8>,
    },
    /// `cas key 0 0 n token`: store only if unchanged since `gets`.
    Cas {
        /// The key to write.
        key: String,
        /// The new value.
        value: Vec<u8>,
        /// The token of the value it replaces (from `Get`).
        cas: u64,
    },
    /// `prepend key 0 0 n`: NOT_STORED when missing *or* when the result
    /// would pass the item size limit (the old value is then kept).
    Prepend {
        /// The key to extend.
        key: String,
        /// The bytes to put in front of its value.
        value: Vec<u8>,
    },
    /// `delete key`
    Delete {
        /// The key to remove.
        key: String,
    },
    /// `incr key n`
    Incr {
        /// The counter's key.
        key: String,
        /// How much to add.
        delta: u64,
    },
    /// `decr key n` (memcached stops at 0).
    Decr {
        /// The counter's key.
        key: String,
        /// How much to take away.
        delta: u64,
    },
}

impl Op {
    /// The key the operation reads or writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Get { key }
            | Op::Set { key, .. }
            | Op::Add { key, .. }
            | Op::Cas { key, .. }
            | Op::Prepend { key, .. }
            | Op::Delete { key }
            | Op::Incr { key, .. }
            | Op::Decr { key, .. } => key,
        }
    }
}

/// The answer to one `Op`, in memcached's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer to `Get`: `None` on a miss.
    Value(Option<Item>),
    /// `STORED`: the write happened.
    Stored,
    /// `NOT_STORED`: an `add` found the key, a `prepend` did not (or the
    /// value would pass the item size limit).
    NotStored,
    /// `cas` lost: the value changed since `gets`.
    Exists,
    /// `NOT_FOUND`: no such key (`cas`, `delete`, `incr`/`decr`).
    NotFound,
    /// `DELETED`: the key was removed.
    Deleted,
    /// New value after `incr`/`decr`.
    Number(u64),
    /// `incr`/`decr` on a value that is not a number (e.g. a lease marker).
    NonNumeric,
}

/// A key-value store with memcached's semantics.
pub trait Store: Send + Sync {
    /// Runs `ops` in order as one pipelined round trip per server and returns
    /// one result per op, in the same order. An op whose server is down gets
    /// `Err(Error::Unavailable)`; the others still run.
    fn execute(&self, ops: Vec<Op>) -> Vec<Result<Reply>>;

    /// The largest value the store accepts (memcached `-I`, default 1 MiB).
    fn max_item_size(&self) -> usize;

    /// Drops every key on every server.
    fn flush_all(&self) -> Result<()>;

    /// A human-readable name of the server a key lives on.
    fn server_for(&self, key: &str) -> String;

    /// Per-server `stats` as (server, name, value) triples.
    fn stats(&self) -> Result<Vec<(String, String, String)>>;

    /// Runs one op.
    fn one(&self, op: Op) -> Result<Reply> {
        self.execute(vec![op]).pop().expect("execute returns one result per op")
    }

    /// `gets` of one key.
    fn get(&self, key: &str) -> Result<Option<Item>> {
        match self.one(Op::Get { key: key.to_string() })? {
            Reply::Value(item) => Ok(item),
            other => Err(crate::Error::protocol(&self.server_for(key), format!("unexpected reply to gets: {other:?}"))),
        }
    }
}

/// A store that counts the batches sent through it: each `execute` is one
/// pipelined round trip (per server it touches). Lets callers check the
/// protocol's cost, e.g. that an `add` is one round trip.
pub struct Counted {
    inner: Arc<dyn Store>,
    batches: AtomicU64,
}

impl Counted {
    /// Counts the batches sent to `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Counted {
        Counted { inner, batches: AtomicU64::new(0) }
    }

    /// Batches executed so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

impl Store for Counted {
    fn execute(&self, ops: Vec<Op>) -> Vec<Result<Reply>> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.inner.execute(ops)
    }

    fn max_item_size(&self) -> usize {
        self.inner.max_item_size()
    }

    fn flush_all(&self) -> Result<()> {
        self.inner.flush_all()
    }

    fn server_for(&self, key: &str) -> String {
        self.inner.server_for(key)
    }

    fn stats(&self) -> Result<Vec<(String, String, String)>> {
        self.inner.stats()
    }
}
