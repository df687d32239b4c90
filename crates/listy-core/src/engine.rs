//! The list protocol: how a model's lists and counters are read, built and
//! kept in step with the database over a `Store`.
//!
//! - **Meta.** Each model has one meta value: its generation (every key
//!   carries it, so `flush` is one write) and the registry of every client's
//!   indexes (so a write updates lists that only another client reads).
//!   Reads fetch it in the same round trip as the list.
//! - **Leases.** On a miss the builder `add`s a lease marker, reads the
//!   database, and stores the list with `cas`. Any write landing meanwhile
//!   (a prepend onto the marker, a delete) changes the CAS and the stale
//!   build is dropped and redone. Losers wait briefly, then read the
//!   database without storing.
//! - **Writes.** One pipelined batch: the meta, one `prepend` per list (a
//!   record, or a tombstone for deletes), one tagged move per model-wide
//!   counter (see `counters`). A
//!   prepend that is not stored (missing key, or the value would pass the
//!   item size limit) deletes the key so it can never be read without the
//!   write.
//! - **Compaction.** A hit whose dead frames outnumber the live ones is
//!   rewritten with `cas` from its own bytes (no database query).
//! - **Counts.** A list's counts (total, per day/week/month/year) are taken
//!   from the list: a frame that reaches a list twice changes nothing, where
//!   a plain `incr` that reaches a counter already built with its row would
//!   count it twice. They are cached beside the list, tagged with the head's
//!   CAS. The model-wide counters have no list to count: they are built from
//!   the database under a lease and moved by tagged prepends that a counter
//!   built with the write in flight skips (`counters`); an untagged move in
//!   flight is one off until the counters' epoch ends (`Options::counter_epoch`).

use crate::calendar::Period;
use crate::codec::{encode_tombstone, Kind, Layout, Part, Row, Schema, Value, ValueRef};
use crate::error::{Error, Result, SourceError, SourceErrorKind};
use crate::fault::{Fault, FaultKind};
use crate::keys;
use crate::segments::HeadIndex;
use crate::store::{Item, Op, Reply, Store};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod batch;
mod change;
mod counters;
mod merge;
pub use change::{ChangeOptions, Plan, Stored};
use counters::CounterValue;
pub use counters::{with_write_tag, write_tag, ModelCount};

/// Where the engine gets rows and counts on a miss (the Django side).
pub trait Source {
    /// The live rows of one list, newest first, in schema order.
    fn rows(&self, fields: &[String], values: &[Value]) -> Result<Vec<Row>>;
    /// The number of live rows of one list (`fields` empty: the whole
    /// model), optionally only those whose local date is in `[start, end)`.
    fn count(&self, fields: &[String], values: &[Value], days: Option<(i32, i32)>) -> Result<u64>;
    /// The whole model's live rows (optionally those dated in `[start,
    /// end)`), and the tags of the writes committed in the same snapshot
    /// whose cache work may still be in flight (see [`with_write_tag`]).
    /// The default reports none: a counter built while a write's move is in
    /// flight then counts that row twice until its epoch ends.
    fn model_count(&self, days: Option<(i32, i32)>) -> Result<ModelCount> {
        Ok(ModelCount { rows: self.count(&[], &[], days)?, in_flight: Vec::new() })
    }
    /// The row with primary key `pk` as the database holds it now (listed
    /// or not), or None when it is gone: the settle read of
    /// [`Engine::change`].
    fn row(&self, pk: &Value) -> Result<Option<Stored>>;
    /// The rows with these primary keys as the database holds them now
    /// (rows that are gone are left out, in any order): the settle read of
    /// [`Engine::change_many`]. The default asks [`Source::row`] for each;
    /// a database source answers with one query.
    fn rows_by_pk(&self, pks: &[Value]) -> Result<Vec<Stored>> {
        let mut out = Vec::with_capacity(pks.len());
        for pk in pks {
            out.extend(self.row(pk)?);
        }
        Ok(out)
    }
}

/// Points where tests can pause one side of a race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    /// A builder holds the lease and is about to read the database.
    LeaseTaken,
    /// A builder read the database and is about to `cas` the list.
    BeforeStore,
    /// A counter builder read the count and is about to `cas` it.
    BeforeCounterStore,
    /// A compaction is about to `cas` the compacted value.
    BeforeCompact,
}

/// A function called at each [`HookPoint`] with the key concerned.
pub type Hook = Arc<dyn Fn(HookPoint, &str) + Send + Sync>;

/// Something the engine did that an operator may want to see: rare events
/// (not one per read), reported to the [`EventSink`] with the key concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A builder lost its lease (another builder, a write on the marker
    /// four times over, or an expiry): the reader got the source's rows
    /// uncached.
    LeaseLost,
    /// A list was rewritten without its dead frames (`dead` of them).
    Compacted {
        /// Dead frames dropped.
        dead: usize,
    },
    /// A head that prepends had grown was split again into segments.
    SegmentSplit {
        /// Parts stored (the head and its segments).
        parts: usize,
    },
}

/// Receives the engine's [`Event`]s (Django logs them at DEBUG). Called on
/// the thread that did the work, without any engine lock held.
pub type EventSink = Arc<dyn Fn(Event, &str) + Send + Sync>;

/// Tunables of the protocol.
#[derive(Debug, Clone)]
pub struct Options {
    /// A lease older than this belongs to a builder that died.
    pub lease_ttl: Duration,
    /// How long a reader waits for another process's build before reading
    /// the database itself.
    pub lease_wait: Duration,
    /// Compact when dead frames exceed live ones and this many.
    pub compact_min_dead: usize,
    /// Bytes of records a built list keeps in its head: a reader of the
    /// newest records fetches only the head.
    pub head_max: usize,
    /// Re-split a head that prepends have grown past this many bytes.
    pub head_split: usize,
    /// The model-wide counters start afresh from the database this often
    /// (their keys carry the epoch): a counter one off after a race (see
    /// `model_counts`) is right again within one epoch.
    pub counter_epoch: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lease_ttl: Duration::from_secs(3),
            lease_wait: Duration::from_millis(60),
            compact_min_dead: 16,
            head_max: 2048,
            head_split: 16 * 1024,
            counter_epoch: Duration::from_secs(3600),
        }
    }
}

/// One list as a reader receives it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The head's key.
    pub key: String,
    /// The head, then the segments (all of them, or none when the reader
    /// asked for the newest records only and the list has segments).
    pub parts: Vec<Vec<u8>>,
    /// Live records (part, start, end) of `parts`, in list order.
    pub live: Vec<(u16, u32, u32)>,
    /// False when only the head was read and segments remain.
    pub complete: bool,
    /// Frames of `parts` that no longer count.
    pub dead_frames: usize,
    /// True when the bytes came from the cache (a hit).
    pub hit: bool,
    /// Why the cache was bypassed, if it was (server down, list too large).
    pub fault: Option<Fault>,
}

/// What a write could not do: keys that may now be stale and must be
/// repaired (deleted) once the server is back.
#[derive(Debug, Clone, Default)]
pub struct WriteReport {
    /// Keys that may hold a value without this write: delete them.
    pub failed_keys: Vec<String>,
    /// What went wrong, one per fault: decide on its kind, log its message.
    pub faults: Vec<Fault>,
    /// For an insert: whether the row's primary-key list existed already
    /// (another write of the row, or a read, got there first: the insert
    /// settles); None when no primary-key list was written.
    pub pk_list_found: Option<bool>,
}

/// One index of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Entry {
    schema_fp: u32,
    layout_fp: u32,
    fields: Vec<String>,
}

/// The model's meta value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    generation: u64,
    /// Shared: a read clones the meta it last saw, with no allocation.
    entries: Arc<Vec<Entry>>,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut s = format!("listy-meta 1\ng {:x}\n", self.generation);
        for e in self.entries.iter() {
            s.push_str(&format!("i {:08x} {:08x} {}\n", e.schema_fp, e.layout_fp, e.fields.join(",")));
        }
        s.into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Meta> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "listy-meta 1" {
            return None;
        }
        let generation = u64::from_str_radix(lines.next()?.strip_prefix("g ")?, 16).ok()?;
        let mut entries = Vec::new();
        for line in lines {
            let mut parts = line.strip_prefix("i ")?.splitn(3, ' ');
            let schema_fp = u32::from_str_radix(parts.next()?, 16).ok()?;
            let layout_fp = u32::from_str_radix(parts.next()?, 16).ok()?;
            let fields = parts.next()?.split(',').filter(|f| !f.is_empty()).map(str::to_string).collect();
            entries.push(Entry { schema_fp, layout_fp, fields });
        }
        Some(Meta { generation, entries: Arc::new(entries) })
    }
}

/// A list of this client's schema: its fields and its record layout.
#[derive(Debug)]
struct ListSpec {
    fields: Vec<String>,
    layout: Layout,
}

/// A row leaving lists: by a delete (`hard`: for good) or a change.
#[derive(Clone, Copy)]
struct Leaving<'a> {
    row: &'a Row,
    /// Its local day, for the model-wide period counters.
    day: Option<i32>,
    hard: bool,
    /// Whether the model-wide counters counted it.
    counted: bool,
}

/// A row entering lists: a new row, a revival, or the new state of a change.
#[derive(Clone, Copy)]
struct Arriving<'a> {
    row: &'a Row,
    /// Its local day, for the model-wide period counters.
    day: Option<i32>,
    /// Whether the model-wide counters count it now (a settle moves lists
    /// only: counter moves commute, so each change's arrive in any order).
    counted: bool,
}

/// One row change of a write: the states it leaves and the one it arrives
/// in, and whether lists it arrives in that are not cached get built.
struct Step<'a> {
    removed: Vec<Leaving<'a>>,
    added: Option<Arriving<'a>>,
    build: bool,
    /// Days whose model-wide counters are deleted (recounted on the next
    /// read) instead of moved.
    recount: Vec<Option<i32>>,
}

/// What a write does when its frame finds no list to prepend to.
enum Missing {
    /// A model-wide counter's move: a counter that is missing is counted
    /// afresh when read, so nothing is to be done.
    Counter,
    /// Build the list from the source (when the write builds missing lists).
    Build(Arc<ListSpec>, Vec<Value>),
    /// Store it whole: a primary-key list holds only this row (a row
    /// re-created under its pk starts a new generation), so the frame and a
    /// trailer are all of it.
    Create(Vec<u8>),
}

/// One bucket of a period count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Local days `[start, end)`: what the database counts and the
    /// model-wide counters are keyed by.
    pub days: (i32, i32),
    /// The same span as stored datetimes, microseconds since the epoch
    /// `[start, end)` (the caller turns local midnights into instants).
    pub micros: (i64, i64),
}

/// Counts the records of a list, all of them or by bucket of a timestamp.
struct Tally<'s> {
    layout: &'s Layout,
    timestamp: Stamp,
}

/// Where a list's records keep the timestamp that buckets them.
enum Stamp {
    None,
    /// Fixed by the list's key: every record has this one.
    Fixed(ValueRef<'static>),
    /// The i-th stored field of each record.
    Stored(usize),
}

impl<'s> Tally<'s> {
    fn new(spec: &'s ListSpec, values: &[Value], timestamp: Option<&str>) -> Result<Tally<'s>> {
        let layout = &spec.layout;
        let Some(name) = timestamp else { return Ok(Tally { layout, timestamp: Stamp::None }) };
        let schema = layout.schema();
        let pos = schema.position(name).ok_or_else(|| Error::Config(format!("{name:?} is not a field")))?;
        if !matches!(schema.fields()[pos].kind, Kind::Datetime | Kind::Date) {
            return Err(Error::Config(format!("timestamp field {name:?} must be a datetime or a date")));
        }
        let timestamp = match spec.fields.iter().position(|f| f == name) {
            Some(i) => Stamp::Fixed(match values.get(i) {
                Some(Value::Datetime(us)) => ValueRef::Datetime(*us),
                Some(Value::Date(d)) => ValueRef::Date(*d),
                _ => ValueRef::Null,
            }),
            None => Stamp::Stored(layout.stored().iter().position(|&p| p == pos).expect("unfixed fields are stored")),
        };
        Ok(Tally { layout, timestamp })
    }

    /// One count per bucket (`None`: every live record).
    fn count(&self, list: &Fetched, buckets: &[Option<Bucket>]) -> Result<Vec<u64>> {
        let mut counts = vec![0u64; buckets.len()];
        let total = list.live.len() as u64;
        if matches!(self.timestamp, Stamp::None) || buckets.iter().all(Option::is_none) {
            return Ok(vec![total; buckets.len()]);
        }
        let mut values = Vec::new();
        for &(p, s, e) in &list.live {
            let frame = &list.parts[p as usize][s as usize..e as usize];
            let stamp = match &self.timestamp {
                Stamp::Stored(i) => {
                    values.clear();
                    self.layout.decode_record(frame, &mut values)?;
                    values[*i]
                }
                Stamp::Fixed(v) => *v,
                Stamp::None => ValueRef::Null,
            };
            for (n, bucket) in counts.iter_mut().zip(buckets) {
                let inside = match (bucket, stamp) {
                    (None, _) => true,
                    (Some(b), ValueRef::Datetime(us)) => b.micros.0 <= us && us < b.micros.1,
                    (Some(b), ValueRef::Date(d)) => b.days.0 <= d && d < b.days.1,
                    (Some(_), _) => false,
                };
                *n += inside as u64;
            }
        }
        Ok(counts)
    }
}

/// The list protocol for one model.
pub struct Engine {
    store: Arc<dyn Store>,
    prefix: String,
    model: String,
    schema: Arc<Schema>,
    schema_fp: u32,
    indexes: Vec<Vec<String>>,
    /// Field sets no two rows share (the database's unique constraints).
    unique: Vec<Vec<String>>,
    specs: Mutex<HashMap<Vec<String>, Arc<ListSpec>>>,
    /// The model-wide counter keys of `(generation, epoch, day)`, as
    /// `model_counter_keys` last built them: a batch of 5,000 rows from a
    /// few days builds a few sets of keys, not 5,000 (bounded: cleared past
    /// [`COUNTER_KEYS_MEMO`] entries).
    counter_keys: Mutex<HashMap<CounterDay, Arc<[String]>>>,
    /// The meta last seen, with the bytes it was read from (None: written
    /// by this engine); see `meta_from`.
    meta: Mutex<Option<(Meta, Option<Vec<u8>>)>>,
    /// Lists read lately and what their bytes read as (`read_view`).
    views: Mutex<std::collections::VecDeque<ReadView>>,
    options: Options,
    hook: Option<Hook>,
    events: Option<EventSink>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// `(generation, epoch, day)`: what a row's model-wide counter keys depend on.
type CounterDay = (u64, u64, Option<i32>);

/// How many `(generation, epoch, day)` sets of counter keys an engine keeps built.
const COUNTER_KEYS_MEMO: usize = 4096;

/// Lease markers end the value (prepends go before them): magic, owner
/// token, and the time it was taken.
const LEASE_MAGIC: &[u8; 6] = b"\0LEASE";
const LEASE_LEN: usize = 22;

fn lease_marker(token: u64) -> Vec<u8> {
    let mut m = LEASE_MAGIC.to_vec();
    m.extend_from_slice(&token.to_le_bytes());
    m.extend_from_slice(&now_millis().to_le_bytes());
    m
}

/// (token, age) of the lease a value ends with, if it does.
fn lease_of(value: &[u8]) -> Option<(u64, Duration)> {
    let tail = value.len().checked_sub(LEASE_LEN).map(|s| &value[s..])?;
    if &tail[..6] != LEASE_MAGIC {
        return None;
    }
    let token = u64::from_le_bytes(tail[6..14].try_into().ok()?);
    let taken = u64::from_le_bytes(tail[14..22].try_into().ok()?);
    Some((token, Duration::from_millis(now_millis().saturating_sub(taken))))
}

/// True when `value` ends with a builder's lease marker: a list being
/// built from the database right now (prepends may sit in front of it).
pub fn is_lease(value: &[u8]) -> bool {
    lease_of(value).is_some()
}

fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn new_token() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() as u64;
    (now_micros() ^ (pid << 40) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// The bytes of a list read lately and where its live records are in
/// them: the same bytes read again (a hit on a list no write changed since)
/// are not walked again.
struct ReadView {
    key: String,
    layout_fp: u32,
    parts: Vec<Vec<u8>>,
    live: Vec<(u16, u32, u32)>,
    complete: bool,
    dead_frames: usize,
}

/// How many lists, and how many of their bytes, an engine keeps read views
/// of (a list larger than `READ_VIEW_BYTES / 4` is walked on every read);
/// a copy of their bytes is what a view costs.
const READ_VIEWS: usize = 32;
const READ_VIEW_BYTES: usize = 2 << 20;

/// What a reader found under a list key.
enum Found {
    List(Item),
    Leased,
    Broken(Item),
    Missing,
}

impl Engine {
    /// `indexes`: this client's indexes, each a list of schema field names.
    pub fn new(
        store: Arc<dyn Store>,
        prefix: &str,
        model: &str,
        schema: Schema,
        indexes: Vec<Vec<String>>,
        options: Options,
    ) -> Result<Engine> {
        let schema = Arc::new(schema);
        let mut normalized = Vec::new();
        for index in indexes {
            let fields = keys::canonical_index(&index);
            if fields.is_empty() {
                return Err(Error::Config("an index needs at least one field".into()));
            }
            if let Some(bad) = fields.iter().find(|f| schema.position(f).is_none()) {
                return Err(Error::Config(format!("index {index:?} names {bad:?}, which is not a field of {model}")));
            }
            normalized.push(fields);
        }
        Ok(Engine {
            store,
            prefix: prefix.to_string(),
            model: model.to_string(),
            schema_fp: schema.fingerprint(),
            schema,
            indexes: normalized,
            unique: Vec::new(),
            specs: Mutex::new(HashMap::new()),
            counter_keys: Mutex::new(HashMap::new()),
            meta: Mutex::new(None),
            views: Mutex::new(std::collections::VecDeque::new()),
            options,
            hook: None,
            events: None,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Declares the field sets no two rows share (the database's unique
    /// constraints, besides the primary key): the model's metadata, for a
    /// writer's own "already there?" check (as Django's `add()` leaves it to
    /// the constraint). The write plan does not use it: a list keyed by a
    /// unique set is written as any list, never stored whole from a write
    /// (by the time a write lands, another row may hold the values).
    pub fn set_unique(&mut self, sets: Vec<Vec<String>>) -> Result<()> {
        for set in &sets {
            if let Some(bad) = set.iter().find(|f| self.schema.position(f).is_none()) {
                return Err(Error::Config(format!(
                    "unique fields {set:?} name {bad:?}, not a field of {}",
                    self.model
                )));
            }
        }
        self.unique = sets;
        Ok(())
    }

    /// Installs a hook called at the protocol's race points (tests).
    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = Some(hook);
    }

    /// Installs the receiver of the engine's [`Event`]s.
    pub fn set_event_sink(&mut self, sink: EventSink) {
        self.events = Some(sink);
    }

    fn event(&self, event: Event, key: &str) {
        if let Some(sink) = &self.events {
            sink(event, key);
        }
    }

    /// The record schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The store the lists live in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This client's indexes, each a sorted list of field names.
    pub fn indexes(&self) -> &[Vec<String>] {
        &self.indexes
    }

    /// The model's label in keys.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The field sets no two rows share (see `set_unique`).
    pub fn unique(&self) -> &[Vec<String>] {
        &self.unique
    }

    /// The protocol's tunables.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Lists served from the cache since the last reset.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lists that had to be built or read from the source since the last reset.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Sets `hits` and `misses` back to zero.
    pub fn reset_stats(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
    }

    fn hook(&self, point: HookPoint, key: &str) {
        if let Some(h) = &self.hook {
            h(point, key);
        }
    }

    /// The layout of the list over `fields` (sorted field names).
    pub fn layout(&self, fields: &[String]) -> Result<Layout> {
        Ok(self.spec(fields)?.layout.clone())
    }

    fn spec(&self, fields: &[String]) -> Result<Arc<ListSpec>> {
        let mut specs = self.specs.lock().expect("specs poisoned");
        if let Some(s) = specs.get(fields) {
            return Ok(s.clone());
        }
        let positions = fields
            .iter()
            .map(|f| {
                self.schema.position(f).ok_or_else(|| Error::Config(format!("{f:?} is not a field of {}", self.model)))
            })
            .collect::<Result<Vec<_>>>()?;
        let spec = Arc::new(ListSpec { fields: fields.to_vec(), layout: Layout::new(self.schema.clone(), &positions) });
        specs.insert(fields.to_vec(), spec.clone());
        Ok(spec)
    }

    fn meta_key(&self) -> String {
        keys::meta_key(&self.prefix, &self.model)
    }

    fn list_key(&self, spec_fp: u32, generation: u64, fields: &[String], values: &[Value]) -> String {
        keys::list_key(&self.prefix, &self.model, spec_fp, generation, fields, values)
    }

    /// The key of a model-wide counter in `epoch`. It does not depend on the
    /// record layout: every client of the model, whatever its schema, counts
    /// the same rows.
    fn counter_key(&self, generation: u64, epoch: u64, suffix: &str) -> String {
        keys::counter_key(&self.list_key(0, generation, &[], &[]), &format!("{suffix}@{epoch:x}"))
    }

    /// The current epoch of the model-wide counters.
    fn counter_epoch(&self) -> u64 {
        (now_millis() as u128 / self.options.counter_epoch.as_millis().max(1)) as u64
    }

    fn own_entry(&self, spec: &ListSpec) -> Entry {
        Entry { schema_fp: self.schema_fp, layout_fp: spec.layout.fingerprint(), fields: spec.fields.clone() }
    }

    /// The literal key of a list under the current generation.
    pub fn key(&self, fields: &[String], values: &[Value]) -> Result<String> {
        let spec = self.spec(fields)?;
        let meta = self.current_meta()?;
        Ok(self.list_key(spec.layout.fingerprint(), meta.generation, fields, values))
    }

    // ------------------------------------------------------------ meta

    /// The model's generation as this engine last saw it (no round trip;
    /// None before its first contact): read it before a delete commits and
    /// hand it to [`Engine::change_many_since`].
    pub fn generation_seen(&self) -> Option<u64> {
        self.meta.lock().expect("meta poisoned").as_ref().map(|(m, _)| m.generation)
    }

    fn cached_meta(&self) -> Option<Meta> {
        self.meta.lock().expect("meta poisoned").as_ref().map(|(meta, _)| meta.clone())
    }

    fn remember_meta(&self, meta: &Meta) {
        *self.meta.lock().expect("meta poisoned") = Some((meta.clone(), None));
    }

    /// The meta value as the store has it now, created if missing.
    fn current_meta(&self) -> Result<Meta> {
        let item = self.store.get(&self.meta_key())?;
        self.meta_from(item)
    }

    /// Interprets a fetched meta value; a missing or unreadable one is
    /// replaced by a fresh generation (never an old one: lists of an evicted
    /// generation must stay unreachable).
    fn meta_from(&self, item: Option<Item>) -> Result<Meta> {
        if let Some(item) = &item {
            // The bytes last decoded: the same meta (every read fetches it).
            if let Some((meta, Some(raw))) = self.meta.lock().expect("meta poisoned").as_ref() {
                if *raw == item.value {
                    return Ok(meta.clone());
                }
            }
            if let Some(meta) = Meta::decode(&item.value) {
                *self.meta.lock().expect("meta poisoned") = Some((meta.clone(), Some(item.value.clone())));
                return Ok(meta);
            }
        }
        let floor = self.cached_meta().map(|m| m.generation + 1).unwrap_or(0);
        let fresh = Meta { generation: now_micros().max(floor), entries: Arc::default() };
        let op = match item {
            Some(broken) => Op::Cas { key: self.meta_key(), value: fresh.encode(), cas: broken.cas },
            None => Op::Add { key: self.meta_key(), value: fresh.encode() },
        };
        match self.store.one(op)? {
            Reply::Stored => {
                self.remember_meta(&fresh);
                Ok(fresh)
            }
            // Another process created it first: use theirs.
            _ => {
                let item = self.store.get(&self.meta_key())?;
                match item.as_ref().and_then(|i| Meta::decode(&i.value)) {
                    Some(meta) => {
                        self.remember_meta(&meta);
                        Ok(meta)
                    }
                    None => Err(Error::protocol(&self.store.server_for(&self.meta_key()), "meta value keeps changing")),
                }
            }
        }
    }

    /// Adds `entry` to the registry before a builder reads the database, so
    /// that every write committed after that read updates the new list.
    fn register(&self, entry: &Entry) -> Result<Meta> {
        self.register_all(std::slice::from_ref(entry))
    }

    /// Adds every missing entry of `entries` in one `cas` of the meta.
    fn register_all(&self, entries: &[Entry]) -> Result<Meta> {
        for _ in 0..16 {
            let item = self.store.get(&self.meta_key())?;
            let meta = self.meta_from(item.clone())?;
            let missing: Vec<&Entry> = entries.iter().filter(|e| !meta.entries.contains(e)).collect();
            if missing.is_empty() {
                return Ok(meta);
            }
            let Some(item) = item.filter(|i| Meta::decode(&i.value).is_some()) else {
                continue;
            };
            let mut next = meta.clone();
            Arc::make_mut(&mut next.entries).extend(missing.into_iter().cloned());
            if self.store.one(Op::Cas { key: self.meta_key(), value: next.encode(), cas: item.cas })? == Reply::Stored {
                self.remember_meta(&next);
                return Ok(next);
            }
        }
        Err(Error::protocol(
            &self.store.server_for(&self.meta_key()),
            "could not register the index: meta keeps changing",
        ))
    }

    /// This client's own indexes as registry entries.
    fn own_entries(&self) -> Result<Vec<Entry>> {
        self.indexes.iter().map(|fields| Ok(self.own_entry(&*self.spec(fields)?))).collect()
    }

    /// Runs `ops(meta)` in one batch together with a fetch of the meta,
    /// guessing the meta from the last one seen; when the guess was wrong,
    /// runs `ops` again for the real meta. Returns the meta the ops ran for.
    fn with_meta(&self, ops: impl Fn(&Meta) -> Result<Vec<Op>>) -> Result<(Meta, Vec<Result<Reply>>)> {
        let mut guess = match self.cached_meta() {
            Some(m) => m,
            None => self.current_meta()?,
        };
        for _ in 0..4 {
            let mut batch = vec![Op::Get { key: self.meta_key() }];
            batch.extend(ops(&guess)?);
            let mut replies = self.store.execute(batch);
            let meta_reply = replies.remove(0)?;
            let item = match meta_reply {
                Reply::Value(item) => item,
                other => return Err(Error::protocol(&self.store.server_for(&self.meta_key()), format!("{other:?}"))),
            };
            let meta = self.meta_from(item)?;
            if meta == guess {
                return Ok((meta, replies));
            }
            guess = meta;
        }
        Err(Error::protocol(&self.store.server_for(&self.meta_key()), "meta changed on every attempt"))
    }

    // ------------------------------------------------------------ reads

    /// One list, complete: from the cache, or built under the lease, or
    /// (cache down, lease held too long) straight from the source.
    pub fn get(&self, fields: &[String], values: &[Value], source: &dyn Source) -> Result<Fetched> {
        let request = [(fields.to_vec(), values.to_vec())];
        Ok(self.get_multi(&request, source, true)?.pop().expect("one result"))
    }

    /// Several lists in one batched round trip; misses are built one by
    /// one. With `complete` false, a list stored in segments comes back as
    /// its head only (see `complete_list`).
    pub fn get_multi(
        &self,
        requests: &[(Vec<String>, Vec<Value>)],
        source: &dyn Source,
        complete: bool,
    ) -> Result<Vec<Fetched>> {
        let specs = requests.iter().map(|(f, _)| self.spec(f)).collect::<Result<Vec<_>>>()?;
        let batch = self.with_meta(|meta| {
            Ok(requests
                .iter()
                .zip(&specs)
                .map(|((f, v), s)| Op::Get { key: self.list_key(s.layout.fingerprint(), meta.generation, f, v) })
                .collect())
        });
        let (meta, replies) = match batch {
            Ok(x) => x,
            Err(e) => {
                return requests
                    .iter()
                    .zip(&specs)
                    .map(|((_, v), s)| self.uncached(s, String::new(), v, source, Fault::from(&e)))
                    .collect()
            }
        };
        let mut out = Vec::with_capacity(requests.len());
        for (((fields, values), spec), reply) in requests.iter().zip(&specs).zip(replies) {
            let key = self.list_key(spec.layout.fingerprint(), meta.generation, fields, values);
            let fetched = match reply {
                Ok(Reply::Value(item)) => self.serve(spec, &key, values, item, source, complete)?,
                Ok(other) => self.uncached(
                    spec,
                    key,
                    values,
                    source,
                    Fault::new(FaultKind::Protocol, format!("unexpected reply {other:?}")),
                )?,
                Err(e) => self.uncached(spec, key, values, source, Fault::from(&e))?,
            };
            out.push(fetched);
        }
        Ok(out)
    }

    /// Lists served from the cache only, in one batched round trip: a list
    /// found whole (its segments too when `complete`) is `Some`, and counts
    /// as a hit; one missing, broken, being built elsewhere or with a
    /// segment gone is `None`, and nothing is built, leased or read from a
    /// source (the caller asks `get_multi` for those). The async calls use
    /// it so that a hit never reaches the database.
    pub fn get_cached(&self, requests: &[(Vec<String>, Vec<Value>)], complete: bool) -> Result<Vec<Option<Fetched>>> {
        let specs = requests.iter().map(|(f, _)| self.spec(f)).collect::<Result<Vec<_>>>()?;
        let (meta, replies) = self.with_meta(|meta| {
            Ok(requests
                .iter()
                .zip(&specs)
                .map(|((f, v), s)| Op::Get { key: self.list_key(s.layout.fingerprint(), meta.generation, f, v) })
                .collect())
        })?;
        let mut out = Vec::with_capacity(requests.len());
        for (((fields, values), spec), reply) in requests.iter().zip(&specs).zip(replies) {
            let key = self.list_key(spec.layout.fingerprint(), meta.generation, fields, values);
            let item = match reply? {
                Reply::Value(item) => item,
                other => return Err(Error::protocol(&self.store.server_for(&key), format!("{other:?}"))),
            };
            let found = match self.classify(spec, item) {
                Found::List(item) => self.hit(spec, &key, &item, complete)?,
                _ => None,
            };
            if found.is_some() {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            out.push(found);
        }
        Ok(out)
    }

    /// The rest of a list read head-only: its segments, or (when they are
    /// gone or the head changed) the whole list read again.
    pub fn complete_list(
        &self,
        fields: &[String],
        values: &[Value],
        partial: &Fetched,
        source: &dyn Source,
    ) -> Result<Fetched> {
        let spec = self.spec(fields)?;
        if partial.complete {
            return Ok(partial.clone());
        }
        let head = &partial.parts[0];
        if let Ok(Some(segments)) = self.fetch_segments(&spec, &partial.key, head) {
            let mut parts = vec![head.clone()];
            parts.extend(segments);
            if let Some(fetched) = self.read_view(&spec, partial.key.clone(), parts) {
                return Ok(fetched);
            }
        }
        self.get(fields, values, source)
    }

    /// Some segments of a list read head-only (`partial`), in one batched
    /// round trip, in the order of `indices`; `None` when one is gone (a
    /// compaction or an eviction came first: read the list again) or the
    /// cache failed (the whole read then falls back to the source).
    pub fn segments_of(&self, fields: &[String], partial: &Fetched, indices: &[u16]) -> Result<Option<Vec<Vec<u8>>>> {
        let spec = self.spec(fields)?;
        let id = match spec.layout.part_of(&partial.parts[0])? {
            (Part::Head { .. }, id) => id,
            _ => return Ok(None),
        };
        let ops = indices.iter().map(|&i| Op::Get { key: keys::segment_key(&partial.key, id, i) }).collect();
        let mut out = Vec::with_capacity(indices.len());
        for reply in self.store.execute(ops) {
            match reply {
                Ok(Reply::Value(Some(item))) => out.push(item.value),
                // A segment gone, or the cache failing: the caller reads
                // the list whole, which falls back to the source.
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// `fetched` of parts read from the cache (a hit), reusing what the
    /// same bytes read as last time: identical bytes make an identical
    /// list, so a list no write changed is not walked again.
    fn read_view(&self, spec: &ListSpec, key: String, parts: Vec<Vec<u8>>) -> Option<Fetched> {
        let layout_fp = spec.layout.fingerprint();
        {
            let views = self.views.lock().expect("views poisoned");
            if let Some(v) = views.iter().find(|v| v.key == key && v.layout_fp == layout_fp && v.parts == parts) {
                let (live, complete, dead_frames) = (v.live.clone(), v.complete, v.dead_frames);
                return Some(Fetched { key, parts, live, complete, dead_frames, hit: true, fault: None });
            }
        }
        let fetched = Self::fetched(spec, key, parts, true, None)?;
        let size: usize = fetched.parts.iter().map(Vec::len).sum();
        if size <= READ_VIEW_BYTES / 4 {
            let mut views = self.views.lock().expect("views poisoned");
            // One view per list and kind of read (head only, or whole).
            views.retain(|v| v.key != fetched.key || v.parts.len() != fetched.parts.len());
            let mut total = size + views.iter().map(|v| v.parts.iter().map(Vec::len).sum::<usize>()).sum::<usize>();
            while views.len() >= READ_VIEWS || (total > READ_VIEW_BYTES && !views.is_empty()) {
                let dropped = views.pop_front().expect("not empty");
                total -= dropped.parts.iter().map(Vec::len).sum::<usize>();
            }
            views.push_back(ReadView {
                key: fetched.key.clone(),
                layout_fp,
                parts: fetched.parts.clone(),
                live: fetched.live.clone(),
                complete: fetched.complete,
                dead_frames: fetched.dead_frames,
            });
        }
        Some(fetched)
    }

    /// Wraps parts that read as a list; `None` when they do not.
    fn fetched(spec: &ListSpec, key: String, parts: Vec<Vec<u8>>, hit: bool, fault: Option<Fault>) -> Option<Fetched> {
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let view = spec.layout.read_parts(&refs).ok()?;
        let (live, complete, dead_frames) = (view.ranges().to_vec(), view.complete(), view.dead_frames());
        Some(Fetched { key, parts, live, complete, dead_frames, hit, fault })
    }

    /// The segments a head names, in order; `None` if any is missing.
    fn fetch_segments(&self, spec: &ListSpec, key: &str, head: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        let (segments, id) = match spec.layout.part_of(head)? {
            (Part::Head { segments }, id) => (segments, id),
            _ => return Ok(None),
        };
        let ops = (0..segments).map(|i| Op::Get { key: keys::segment_key(key, id, i) }).collect();
        let mut out = Vec::with_capacity(segments as usize);
        for reply in self.store.execute(ops) {
            match reply? {
                Reply::Value(Some(item)) => out.push(item.value),
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    fn classify(&self, spec: &ListSpec, item: Option<Item>) -> Found {
        match item {
            None => Found::Missing,
            Some(item) if matches!(spec.layout.part_of(&item.value), Ok((Part::Head { .. }, _))) => Found::List(item),
            Some(item) => match lease_of(&item.value) {
                Some((_, age)) if age < self.options.lease_ttl => Found::Leased,
                _ => Found::Broken(item),
            },
        }
    }

    /// Serves a head fetched from the store: a hit, or a build, or the source.
    fn serve(
        &self,
        spec: &ListSpec,
        key: &str,
        values: &[Value],
        item: Option<Item>,
        source: &dyn Source,
        complete: bool,
    ) -> Result<Fetched> {
        let mut found = self.classify(spec, item);
        let deadline = std::time::Instant::now() + self.options.lease_wait;
        loop {
            match found {
                Found::List(item) => match self.hit(spec, key, &item, complete)? {
                    Some(fetched) => {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(fetched);
                    }
                    // Segments missing or frames undecodable: rebuild.
                    None => found = Found::Broken(item),
                },
                Found::Missing | Found::Broken(_) => {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    let current = match found {
                        Found::Broken(item) => Some(item),
                        _ => None,
                    };
                    return match self.build(spec, key, values, current, source) {
                        Ok(Some(parts)) => {
                            Ok(Self::fetched(spec, key.to_string(), parts, false, None).expect("a fresh build reads"))
                        }
                        Ok(None) => {
                            self.event(Event::LeaseLost, key);
                            self.uncached(
                                spec,
                                key.to_string(),
                                values,
                                source,
                                Fault::new(FaultKind::Contended, "lease lost"),
                            )
                        }
                        Err(e @ Error::Source(_)) => Err(e),
                        Err(e) => self.uncached(spec, key.to_string(), values, source, Fault::from(&e)),
                    };
                }
                Found::Leased => {
                    // Another process is building: wait a little for it.
                    if std::time::Instant::now() >= deadline {
                        self.misses.fetch_add(1, Ordering::Relaxed);
                        return self.uncached(
                            spec,
                            key.to_string(),
                            values,
                            source,
                            Fault::new(FaultKind::Contended, "another process holds the lease"),
                        );
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    found = match self.store.get(key) {
                        Ok(item) => self.classify(spec, item),
                        Err(e) => return self.uncached(spec, key.to_string(), values, source, Fault::from(&e)),
                    };
                }
            }
        }
    }

    /// A head that is a list: reads its segments when asked to, and
    /// compacts it when it has grown or gathered dead frames.
    fn hit(&self, spec: &ListSpec, key: &str, item: &Item, complete: bool) -> Result<Option<Fetched>> {
        let mut parts = vec![item.value.clone()];
        let segmented = matches!(spec.layout.part_of(&item.value), Ok((Part::Head { segments }, _)) if segments > 0);
        // A head that prepends have grown past `head_split` is split again
        // now, even by a reader that wanted the head only: the first page of
        // every list stays one small read, whatever its length.
        let complete = complete || (segmented && item.value.len() > self.options.head_split);
        if segmented && complete {
            let Some(segments) = self.fetch_segments(spec, key, &item.value)? else { return Ok(None) };
            parts.extend(segments);
        }
        let fetched = self.read_view(spec, key.to_string(), parts);
        if let Some(f) = &fetched {
            if f.complete {
                self.maybe_compact(spec, key, item, f);
            }
        }
        Ok(fetched)
    }

    /// The list read from the source and encoded, not stored.
    fn uncached(
        &self,
        spec: &ListSpec,
        key: String,
        values: &[Value],
        source: &dyn Source,
        fault: Fault,
    ) -> Result<Fetched> {
        let rows = source.rows(&spec.fields, values)?;
        let bytes = spec.layout.encode_list(&rows)?;
        Ok(Self::fetched(spec, key, vec![bytes], false, Some(fault)).expect("a fresh encoding reads"))
    }

    /// The largest segment: an item, less room for the key and memcached's
    /// item header.
    fn segment_max(&self) -> usize {
        let item = self.store.max_item_size();
        item - (item / 8).min(1024)
    }

    /// The head's share of a built list (never more than a segment).
    fn head_max(&self) -> usize {
        self.options.head_max.min(self.segment_max())
    }

    /// Stores new parts: the segments with `set` (their keys are new), then
    /// the head with `cas` over `cas`. On a lost `cas` the segments are
    /// deleted again. Returns the `cas` reply.
    fn store_parts(&self, key: &str, parts: &[Vec<u8>], id: u32, cas: u64) -> Result<Reply> {
        let segment_keys: Vec<String> = (1..parts.len()).map(|i| keys::segment_key(key, id, (i - 1) as u16)).collect();
        let sets: Vec<Op> =
            segment_keys.iter().zip(&parts[1..]).map(|(k, v)| Op::Set { key: k.clone(), value: v.clone() }).collect();
        for reply in self.store.execute(sets) {
            reply?;
        }
        let reply = self.store.one(Op::Cas { key: key.to_string(), value: parts[0].clone(), cas })?;
        if reply != Reply::Stored && !segment_keys.is_empty() {
            let _ = self.store.execute(segment_keys.into_iter().map(|key| Op::Delete { key }).collect());
        }
        Ok(reply)
    }

    /// Deletes the segments of a head that has been replaced (best effort:
    /// memcached would evict them anyway; the embedded store would not).
    fn drop_segments(&self, spec: &ListSpec, key: &str, old_head: &[u8]) {
        if let Ok((Part::Head { segments }, id)) = spec.layout.part_of(old_head) {
            if segments > 0 {
                let ops = (0..segments).map(|i| Op::Delete { key: keys::segment_key(key, id, i) }).collect();
                let _ = self.store.execute(ops);
            }
        }
    }

    /// Builds a list under the lease. `current` is a broken value found under
    /// the key (taken over by `cas`). Returns the stored parts, or `None`
    /// when another process owns the key now.
    fn build(
        &self,
        spec: &ListSpec,
        key: &str,
        values: &[Value],
        current: Option<Item>,
        source: &dyn Source,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let token = new_token();
        let marker = lease_marker(token);
        let take = match &current {
            None => Op::Add { key: key.to_string(), value: marker.clone() },
            Some(item) => Op::Cas { key: key.to_string(), value: marker.clone(), cas: item.cas },
        };
        if self.store.one(take)? != Reply::Stored {
            return Ok(None);
        }
        if let Some(old) = &current {
            self.drop_segments(spec, key, &old.value);
        }
        let built = self.build_leased(spec, key, values, token, source);
        if built.is_err() {
            // Release the lease so readers go to the database at once
            // instead of waiting for a build that will not come.
            let _ = self.store.one(Op::Delete { key: key.to_string() });
        }
        built
    }

    /// The part of a build that runs under the lease `token`.
    fn build_leased(
        &self,
        spec: &ListSpec,
        key: &str,
        values: &[Value],
        token: u64,
        source: &dyn Source,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        self.register(&self.own_entry(spec))?;
        for _ in 0..4 {
            let Some(item) = self.store.get(key)? else { return Ok(None) };
            if lease_of(&item.value).map(|(t, _)| t) != Some(token) {
                return Ok(None);
            }
            self.hook(HookPoint::LeaseTaken, key);
            let rows = source.rows(&spec.fields, values)?;
            let id = new_token() as u32;
            let parts = spec.layout.encode_parts(&rows, id, self.head_max(), self.segment_max())?;
            self.hook(HookPoint::BeforeStore, key);
            match self.store_parts(key, &parts, id, item.cas)? {
                Reply::Stored => return Ok(Some(parts)),
                // A write landed on the marker while we read: read again.
                Reply::Exists => continue,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Rewrites a complete list without its dead frames, and re-splits a
    /// head that prepends have grown, from its own bytes (no database read).
    fn maybe_compact(&self, spec: &ListSpec, key: &str, item: &Item, list: &Fetched) {
        let dead = list.dead_frames;
        let grown = list.parts.len() > 1 && list.parts[0].len() > self.options.head_split;
        if !(grown || (dead >= self.options.compact_min_dead && dead > list.live.len())) {
            return;
        }
        let refs: Vec<&[u8]> = list.parts.iter().map(Vec::as_slice).collect();
        let Ok(view) = spec.layout.read_parts(&refs) else { return };
        let id = new_token() as u32;
        let Ok(new_parts) = view.compacted(&spec.layout, id, self.head_max(), self.segment_max()) else { return };
        // Frames that must stay (final tombstones) count as dead: a list
        // with more of them than live records would be rewritten, unchanged,
        // by every read. Only a rewrite that drops bytes (or splits) is done.
        let size = |parts: &[Vec<u8>]| parts.iter().map(Vec::len).sum::<usize>();
        if !grown && size(&new_parts) >= size(&list.parts) {
            return;
        }
        self.hook(HookPoint::BeforeCompact, key);
        // A lost cas only means a write came first; the next read compacts.
        if let Ok(Reply::Stored) = self.store_parts(key, &new_parts, id, item.cas) {
            self.drop_segments(spec, key, &item.value);
            self.event(
                if grown { Event::SegmentSplit { parts: new_parts.len() } } else { Event::Compacted { dead } },
                key,
            );
        }
    }

    /// Re-reads one list from the source (after writes Listy did not see).
    pub fn rebuild(&self, fields: &[String], values: &[Value], source: &dyn Source) -> Result<()> {
        let key = self.key(fields, values)?;
        self.store.one(Op::Delete { key: key.clone() })?;
        let spec = self.spec(fields)?;
        self.build(spec.as_ref(), &key, values, None, source)?;
        Ok(())
    }

    /// Deletes keys whose update failed (a write that could not reach the
    /// server): until this succeeds they must not be served. Returns the keys
    /// that still could not be deleted.
    pub fn repair(&self, keys: &[String]) -> Vec<String> {
        let ops = keys.iter().map(|key| Op::Delete { key: key.clone() }).collect();
        keys.iter().zip(self.store.execute(ops)).filter(|(_, r)| r.is_err()).map(|(k, _)| k.clone()).collect()
    }

    /// Drops every list and counter of the model at once.
    pub fn flush(&self) -> Result<()> {
        for _ in 0..16 {
            let item = self.store.get(&self.meta_key())?;
            let meta = self.meta_from(item.clone())?;
            let Some(item) = item else { continue };
            let next = Meta { generation: (meta.generation + 1).max(now_micros()), entries: meta.entries };
            if self.store.one(Op::Cas { key: self.meta_key(), value: next.encode(), cas: item.cas })? == Reply::Stored {
                self.remember_meta(&next);
                return Ok(());
            }
        }
        Err(Error::protocol(&self.store.server_for(&self.meta_key()), "could not flush: meta keeps changing"))
    }

    /// The union of every client's indexes (field names), as registered.
    pub fn registered_indexes(&self) -> Result<Vec<Vec<String>>> {
        let meta = self.current_meta()?;
        let mut out: Vec<Vec<String>> = Vec::new();
        for e in meta.entries.iter().cloned() {
            if !out.contains(&e.fields) {
                out.push(e.fields);
            }
        }
        Ok(out)
    }

    // ------------------------------------------------------------ writes

    /// A new row: its record goes to every list it belongs to; lists not
    /// cached are built from the source so the next read is a hit.
    pub fn add(&self, row: &Row, day: Option<i32>, source: &dyn Source) -> Result<WriteReport> {
        self.write(&[], Some(Arriving { row, day, counted: true }), source, true)
    }

    /// A removed row: tombstones in every list it was in.
    pub fn delete(&self, row: &Row, day: Option<i32>, hard: bool) -> Result<WriteReport> {
        self.write(&[Leaving { row, day, hard, counted: true }], None, &NoSource, false)
    }

    /// A row deleted for good that no list held when it went (soft-deleted
    /// or disabled): final tombstones hide any late frame of it (an earlier
    /// revival landing after the delete); counters stay as they are.
    pub fn bury(&self, row: &Row) -> Result<WriteReport> {
        self.write(&[Leaving { row, day: None, hard: true, counted: false }], None, &NoSource, false)
    }

    /// A changed row: tombstones where it left, the new record where it is.
    pub fn update(
        &self,
        old: &Row,
        old_day: Option<i32>,
        new: &Row,
        new_day: Option<i32>,
        source: &dyn Source,
    ) -> Result<WriteReport> {
        self.write(
            &[Leaving { row: old, day: old_day, hard: false, counted: true }],
            Some(Arriving { row: new, day: new_day, counted: true }),
            source,
            false,
        )
    }

    fn write(
        &self,
        removed: &[Leaving<'_>],
        added: Option<Arriving<'_>>,
        source: &dyn Source,
        build_missing: bool,
    ) -> Result<WriteReport> {
        self.write_steps(&[Step { removed: removed.to_vec(), added, build: build_missing, recount: vec![] }], source)
    }

    /// The frames and counter moves of several row changes, in order, in
    /// one pipelined batch (ops on one key reach its server in batch order).
    fn write_steps(&self, steps: &[Step<'_>], source: &dyn Source) -> Result<WriteReport> {
        let build_missing = steps.iter().any(|s| s.build);
        let mut report = WriteReport::default();
        // Keys already written: a retry for a newer meta must not bump a
        // counter twice.
        let mut done: HashSet<String> = HashSet::new();
        let mut to_build = Vec::new();
        let own = if build_missing { self.own_entries()? } else { Vec::new() };
        let mut guess = match self.cached_meta() {
            Some(m) => m,
            None => match self.current_meta() {
                Ok(m) => m,
                Err(e) => return Ok(self.unreached(report, e, None, steps)),
            },
        };
        for _ in 0..4 {
            if build_missing && own.iter().any(|e| !guess.entries.contains(e)) {
                // An add builds this client's lists even if nobody read them
                // yet, so the next read is a hit: they must be registered first.
                guess = match self.register_all(&own) {
                    Ok(m) => m,
                    Err(e) => return Ok(self.unreached(report, e, Some(&guess), steps)),
                };
            }
            let planned: Vec<_> = counters::tag_moves(self.plan_steps(&guess, steps)?)
                .into_iter()
                .filter(|(op, _)| !done.contains(op.key()))
                .collect();
            let mut batch = vec![Op::Get { key: self.meta_key() }];
            batch.extend(planned.iter().map(|(op, _)| op.clone()));
            let mut replies = self.store.execute(batch);
            let meta_reply = replies.remove(0);
            let mut repairs = Vec::new();
            for ((op, target), reply) in planned.into_iter().zip(replies) {
                let key = op.key().to_string();
                done.insert(key.clone());
                match (&op, reply) {
                    (_, Err(e)) => {
                        report.faults.push(Fault::from(&e));
                        report.failed_keys.push(key);
                    }
                    (Op::Prepend { .. }, Ok(Reply::NotStored)) => match target {
                        // A one-row list missing: the frame and a trailer are all of it.
                        Some(Missing::Create(whole)) => repairs.push(Op::Add { key, value: whole }),
                        // No counter: counted afresh when read. (One past the
                        // item size limit is never read: see `counter_of`.)
                        Some(Missing::Counter) => {}
                        // Missing, or too large for one item (memcached kept the
                        // old value): either way it must not stay without this write.
                        target => {
                            repairs.push(Op::Delete { key: key.clone() });
                            if let (true, Some(Missing::Build(spec, values))) = (build_missing, target) {
                                to_build.push((spec, key, values));
                            }
                        }
                    },
                    // The one-row list exists already (a delete's empty list,
                    // a build, a lease, a later change of the row that landed
                    // first): prepend the frame like any other list.
                    (Op::Add { value, .. }, Ok(Reply::NotStored)) => {
                        report.pk_list_found = Some(true);
                        repairs
                            .push(Op::Prepend { key, value: value[..value.len() - crate::codec::TRAILER_LEN].to_vec() })
                    }
                    (Op::Add { .. }, Ok(_)) => {
                        report.pk_list_found.get_or_insert(false);
                    }
                    _ => {}
                }
            }
            self.follow_up(repairs, &mut report);
            let meta = match meta_reply.and_then(|r| match r {
                Reply::Value(item) => self.meta_from(item),
                other => Err(Error::protocol(&self.store.server_for(&self.meta_key()), format!("{other:?}"))),
            }) {
                Ok(meta) => meta,
                Err(e) => return Ok(self.unreached(report, e, Some(&guess), steps)),
            };
            if meta == guess {
                break;
            }
            guess = meta;
        }
        for (spec, key, values) in to_build {
            match self.build(&spec, &key, &values, None, source) {
                // A source without a database leaves the list missing (the
                // next reader that has one builds it): nothing is stale.
                Err(Error::Source(e)) if e.kind() == SourceErrorKind::Unsupported => {
                    report.faults.push(Fault::new(FaultKind::Other, format!("{key} left uncached: {e}")))
                }
                Err(e @ Error::Source(_)) => return Err(e),
                Err(e) => report.faults.push(Fault::from(&e)),
                Ok(_) => {}
            }
        }
        Ok(report)
    }

    /// Second-step ops of a write: deletes of keys that must not keep a value
    /// missing the write, prepends where a whole-list `add` found the key,
    /// whole one-row lists where a prepend found none. A whole list that
    /// finds the key taken meanwhile deletes it (a third, rare step).
    fn follow_up(&self, repairs: Vec<Op>, report: &mut WriteReport) {
        if repairs.is_empty() {
            return;
        }
        // Keys and kinds only: the ops (record bytes) move into the batch.
        let sent: Vec<(String, bool)> =
            repairs.iter().map(|op| (op.key().to_string(), matches!(op, Op::Add { .. }))).collect();
        let mut lost = Vec::new();
        for ((key, whole), r) in sent.into_iter().zip(self.store.execute(repairs)) {
            match r {
                Err(e) => {
                    report.faults.push(Fault::from(&e));
                    report.failed_keys.push(key);
                }
                Ok(Reply::NotStored) if whole => lost.push(Op::Delete { key }),
                _ => {}
            }
        }
        self.follow_up(lost, report);
    }

    /// The report of a write whose meta could not be read: every key the
    /// write would have touched (for the last meta known) needs repair.
    fn unreached(&self, mut report: WriteReport, e: Error, meta: Option<&Meta>, steps: &[Step<'_>]) -> WriteReport {
        report.faults.push(Fault::from(&e));
        if let Some(meta) = meta.cloned().or_else(|| self.cached_meta()) {
            if let Ok(planned) = self.plan_steps(&meta, steps) {
                report.failed_keys.extend(planned.into_iter().map(|(op, _)| op.key().to_string()));
            }
        }
        report
    }

    /// The ops of several writes, in order: a step that builds no missing
    /// list leaves its prepends without a build target.
    #[allow(clippy::type_complexity)]
    fn plan_steps(&self, meta: &Meta, steps: &[Step<'_>]) -> Result<Vec<(Op, Option<Missing>)>> {
        let mut ops = Vec::new();
        let mut recount: Vec<String> = Vec::new();
        let epoch = self.counter_epoch();
        for step in steps {
            for &day in &step.recount {
                recount.extend(self.model_counter_keys(meta.generation, epoch, day));
            }
            let planned = self.plan(meta, &step.removed, step.added)?;
            if step.build {
                ops.extend(planned);
            } else {
                ops.extend(planned.into_iter().map(|(op, m)| match m {
                    Some(Missing::Build(..)) => (op, None),
                    m => (op, m),
                }));
            }
        }
        if steps.len() > 1 {
            // several changes of one row: their frames on one key land in order
            ops = merge::merge_by_key(ops);
        }
        recount.sort();
        recount.dedup();
        ops.extend(recount.into_iter().map(|key| (Op::Delete { key }, None)));
        Ok(ops)
    }

    /// The ops of one write for the registry in `meta`: each with the list
    /// it targets when it is a record prepend (for building a missing list).
    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        meta: &Meta,
        removed: &[Leaving<'_>],
        added: Option<Arriving<'_>>,
    ) -> Result<Vec<(Op, Option<Missing>)>> {
        self.plan_with(meta, &self.entry_heads(meta), removed, added, true)
    }

    /// The key heads (`keys::list_key_head`) of the lists of each entry of
    /// `meta`, in its generation: [`Engine::plan_with`]'s `heads`.
    fn entry_heads(&self, meta: &Meta) -> Vec<String> {
        meta.entries
            .iter()
            .map(|e| keys::list_key_head(&self.prefix, &self.model, e.layout_fp, meta.generation, &e.fields))
            .collect()
    }

    /// [`Engine::plan`]; without `counters`, the model-wide counter moves
    /// are left out (a batch sums them by day: see `plan_batch`). `heads`
    /// are [`Engine::entry_heads`] of `meta`.
    #[allow(clippy::type_complexity)]
    fn plan_with(
        &self,
        meta: &Meta,
        heads: &[String],
        removed: &[Leaving<'_>],
        added: Option<Arriving<'_>>,
        counters: bool,
    ) -> Result<Vec<(Op, Option<Missing>)>> {
        let gen = meta.generation;
        let epoch = if counters { self.counter_epoch() } else { 0 };
        let mut ops: Vec<(Op, Option<Missing>)> = Vec::new();
        let mut new_lists: HashSet<String> = HashSet::new();
        let mut new_counters: HashSet<String> = HashSet::new();
        // Lists the row was already in get an `update` frame: it keeps its
        // place (only a row that also arrives somewhere needs to know them).
        let mut old_lists: HashSet<String> = HashSet::new();
        if added.is_some() {
            for leaving in removed {
                for (e, head) in meta.entries.iter().zip(heads) {
                    old_lists.insert(keys::list_key_after(head, &self.values_of(leaving.row, &e.fields)?));
                }
            }
        }
        if let Some(Arriving { row, day, counted }) = added {
            for e in meta.entries.iter() {
                let values = self.values_of(row, &e.fields)?;
                if e.schema_fp != self.schema_fp {
                    let key = self.list_key(e.layout_fp, gen, &e.fields, &values);
                    new_lists.insert(key.clone());
                    ops.push((Op::Delete { key }, None));
                    continue;
                }
                let spec = self.spec(&e.fields)?;
                let key = self.list_key(spec.layout.fingerprint(), gen, &e.fields, &values);
                let mut record = Vec::new();
                if old_lists.contains(&key) {
                    spec.layout.encode_update(row, &mut record)?;
                } else {
                    spec.layout.encode_record(row, &mut record)?;
                }
                new_lists.insert(key.clone());
                if removed.is_empty() && self.is_pk_list(&e.fields) {
                    // A new row's pk list holds that row alone and cannot
                    // exist yet: store it whole, no database read needed.
                    // (Another unique list is no such case: the row may be
                    // gone and another hold the values by the time this
                    // lands, in a generation or after an eviction its frames
                    // never reached. It is built, as any list.)
                    let mut whole = record.clone();
                    whole.extend_from_slice(&spec.layout.trailer(Part::Head { segments: 0 }, 0));
                    ops.push((Op::Add { key, value: whole }, None));
                } else if self.is_pk_list(&e.fields) {
                    // A change of an existing row: its pk list holds it alone.
                    // Missing, it is created holding the new state, so that
                    // an older insert of the row landing after this finds it
                    // and settles (`WriteReport::pk_list_found`).
                    let mut whole = Vec::new();
                    spec.layout.encode_record(row, &mut whole)?;
                    whole.extend_from_slice(&spec.layout.trailer(Part::Head { segments: 0 }, 0));
                    ops.push((Op::Prepend { key, value: record }, Some(Missing::Create(whole))));
                } else {
                    ops.push((Op::Prepend { key, value: record }, Some(Missing::Build(spec, values))));
                }
            }
            if counted && counters {
                new_counters.extend(self.model_counter_keys(gen, epoch, day));
            }
        }
        for &Leaving { row, day, hard, counted } in removed {
            for (e, head) in meta.entries.iter().zip(heads) {
                let values = self.values_of(row, &e.fields)?;
                let key = keys::list_key_after(head, &values);
                if !new_lists.is_empty() && new_lists.contains(&key) {
                    continue;
                }
                if e.schema_fp != self.schema_fp {
                    ops.push((Op::Delete { key }, None));
                    continue;
                }
                let mut tomb = Vec::new();
                encode_tombstone(pk_of(row)?, hard, &mut tomb);
                if added.is_none() && self.is_pk_list(&e.fields) {
                    // Only this row ever has this pk (a row re-created under
                    // it starts a new generation): its pk list can be stored
                    // whole, so that a late insert of the row finds it and
                    // settles (its final tombstone also hides a late add).
                    let mut whole = tomb.clone();
                    whole.extend_from_slice(&self.spec(&e.fields)?.layout.trailer(Part::Head { segments: 0 }, 0));
                    if hard {
                        ops.push((Op::Set { key, value: whole }, None));
                    } else {
                        ops.push((Op::Prepend { key, value: tomb }, Some(Missing::Create(whole))));
                    }
                } else {
                    // Any other list, unique ones included: another row may
                    // hold the values by the time this lands (its frames in a
                    // generation or a value this write never sees), so a
                    // missing list is left to the next reader's build.
                    ops.push((Op::Prepend { key, value: tomb }, None));
                }
            }
            if !counted || !counters {
                continue;
            }
            for key in self.model_counter_keys(gen, epoch, day) {
                if !new_counters.remove(&key) {
                    ops.push((Op::Decr { key, delta: 1 }, None));
                }
            }
        }
        let mut incrs: Vec<String> = new_counters.into_iter().collect();
        incrs.sort();
        ops.extend(incrs.into_iter().map(|key| (Op::Incr { key, delta: 1 }, None)));
        Ok(ops)
    }

    fn is_pk_list(&self, fields: &[String]) -> bool {
        fields.iter().any(|f| *f == self.schema.fields()[0].name)
    }

    fn values_of(&self, row: &Row, fields: &[String]) -> Result<Vec<Value>> {
        fields
            .iter()
            .map(|f| {
                let pos = self
                    .schema
                    .position(f)
                    .ok_or_else(|| Error::Config(format!("{f:?} is not a field of {}", self.model)))?;
                row.get(pos).cloned().ok_or_else(|| Error::Schema(format!("row has no value for {f:?}")))
            })
            .collect()
    }

    /// The model-wide counters a row dated `day` counts in. (A list's
    /// counts are taken from the list itself: see `list_counts`.)
    fn model_counter_keys(&self, gen: u64, epoch: u64, day: Option<i32>) -> Vec<String> {
        let mut memo = self.counter_keys.lock().expect("counter keys poisoned");
        if let Some(keys) = memo.get(&(gen, epoch, day)) {
            return keys.to_vec();
        }
        let keys = self.build_counter_keys(gen, epoch, day);
        if memo.len() >= COUNTER_KEYS_MEMO {
            memo.clear();
        }
        memo.insert((gen, epoch, day), keys.clone().into());
        keys
    }

    fn build_counter_keys(&self, gen: u64, epoch: u64, day: Option<i32>) -> Vec<String> {
        let mut keys = vec![self.counter_key(gen, epoch, "c")];
        if let Some(day) = day {
            for p in Period::ALL {
                keys.push(self.counter_key(gen, epoch, &format!("{}{}", p.letter(), p.start(day))));
            }
        }
        keys
    }

    // ------------------------------------------------------------ counts

    /// Live rows of a list (`fields` empty: the whole model).
    pub fn count(&self, fields: &[String], values: &[Value], source: &dyn Source) -> Result<u64> {
        if fields.is_empty() {
            return Ok(self.model_counts(&[("c".to_string(), None)], source)?[0]);
        }
        Ok(self.list_counts(fields, values, None, &[None], source)?[0])
    }

    /// Counts of the rows whose `timestamp` falls in each bucket of `period`
    /// (`fields` empty: of the whole model).
    pub fn period_counts(
        &self,
        fields: &[String],
        values: &[Value],
        period: Period,
        timestamp: &str,
        buckets: &[Bucket],
        source: &dyn Source,
    ) -> Result<Vec<u64>> {
        if fields.is_empty() {
            let keyed: Vec<(String, Option<(i32, i32)>)> =
                buckets.iter().map(|b| (format!("{}{}", period.letter(), b.days.0), Some(b.days))).collect();
            return self.model_counts(&keyed, source);
        }
        let spans: Vec<Option<Bucket>> = buckets.iter().copied().map(Some).collect();
        self.list_counts(fields, values, Some(timestamp), &spans, source)
    }

    /// Counts of one list, taken from the list itself: a record or tombstone
    /// that reaches a list twice (a write in flight while it was built)
    /// changes nothing, so neither does it change the count. A list in
    /// segments keeps its counts beside it, tagged with the head they were
    /// taken from (its CAS, build id and length): any write changes the head,
    /// so a count is served only while the list is exactly as counted.
    fn list_counts(
        &self,
        fields: &[String],
        values: &[Value],
        timestamp: Option<&str>,
        buckets: &[Option<Bucket>],
        source: &dyn Source,
    ) -> Result<Vec<u64>> {
        let mut fields = fields.to_vec();
        fields.sort();
        if !self.indexes.contains(&fields) {
            return Err(Error::Config(format!("{fields:?} is not an index of {}", self.model)));
        }
        let spec = self.spec(&fields)?;
        let measure = Tally::new(&spec, values, timestamp)?;
        let suffixes: Vec<String> = buckets
            .iter()
            .map(|b| match b {
                None => "n".to_string(),
                Some(b) => format!("n{:x}_{:x}", b.micros.0, b.micros.1),
            })
            .collect();
        let fp = spec.layout.fingerprint();
        let fetched = self.with_meta(|meta| {
            let key = self.list_key(fp, meta.generation, &fields, values);
            let mut ops = vec![Op::Get { key: key.clone() }];
            ops.extend(suffixes.iter().map(|s| Op::Get { key: keys::counter_key(&key, s) }));
            Ok(ops)
        });
        let (meta, mut replies) = match fetched {
            Ok(x) => x,
            Err(_) => return buckets.iter().map(|b| source.count(&fields, values, b.map(|b| b.days))).collect(),
        };
        let key = self.list_key(fp, meta.generation, &fields, values);
        let head = match replies.remove(0) {
            Ok(Reply::Value(item)) => item,
            _ => None,
        };
        if buckets.iter().all(Option::is_none) {
            if let Some(n) = head.as_ref().and_then(|item| self.indexed_count(&spec, &key, item)) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(vec![n; buckets.len()]);
            }
        }
        let tag = head.as_ref().and_then(|item| count_tag(&spec, item));
        if let Some(tag) = &tag {
            let cached: Option<Vec<u64>> = replies
                .iter()
                .map(|r| match r {
                    Ok(Reply::Value(Some(item))) => tagged_count(&item.value, tag),
                    _ => None,
                })
                .collect();
            if let Some(counts) = cached {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(counts);
            }
        }
        let list = self.serve(&spec, &key, values, head.clone(), source, true)?;
        let counts = measure.count(&list, buckets)?;
        // Keep the counts only when they were taken from the head the tag names.
        if let (Some(tag), true) = (tag, list.hit && Some(&list.parts[0]) == head.as_ref().map(|h| &h.value)) {
            let ops = suffixes
                .iter()
                .zip(&counts)
                .map(|(s, n)| Op::Set { key: keys::counter_key(&key, s), value: format!("{n} {tag}").into_bytes() })
                .collect();
            // A lost set only costs the next reader a recount.
            let _ = self.store.execute(ops);
        }
        Ok(counts)
    }

    /// The live count of a list in segments from its head's index (see
    /// [`crate::segments`]): the head, plus one batched read of the segments
    /// whose pk range holds a pk the head's prepends shadow. `None` when the
    /// head has no index or a segment is gone (count the whole list).
    fn indexed_count(&self, spec: &ListSpec, key: &str, head: &Item) -> Option<u64> {
        let index = HeadIndex::new(&spec.layout, &head.value).ok()??;
        let needed = index.ambiguous();
        let mut read = Vec::with_capacity(needed.len());
        if !needed.is_empty() {
            let ops = needed.iter().map(|&i| Op::Get { key: keys::segment_key(key, index.id(), i) }).collect();
            for reply in self.store.execute(ops) {
                match reply.ok()? {
                    Reply::Value(Some(item)) => read.push(item.value),
                    _ => return None,
                }
            }
        }
        let given: Vec<(u16, &[u8])> = needed.iter().copied().zip(read.iter().map(Vec::as_slice)).collect();
        Some(index.blocks(&spec.layout, &given).ok()?.total() as u64)
    }

    /// The model-wide counters: built from the database under a lease and
    /// moved by every write with a tagged prepend (see `counters`), so that a
    /// counter built while a committed write's move is in flight counts that
    /// row once. Keys carry an epoch (`Options::counter_epoch`): a counter
    /// off for any other reason (an untagged write's move in flight while it
    /// was built) is counted afresh when the epoch ends.
    fn model_counts(&self, buckets: &[(String, Option<(i32, i32)>)], source: &dyn Source) -> Result<Vec<u64>> {
        let fields: [String; 0] = [];
        let epoch = self.counter_epoch();
        let fetched = self.with_meta(|meta| {
            Ok(buckets
                .iter()
                .map(|(suffix, _)| Op::Get { key: self.counter_key(meta.generation, epoch, suffix) })
                .collect())
        });
        let (meta, replies) = match fetched {
            Ok(x) => x,
            Err(_) => return buckets.iter().map(|(_, range)| source.count(&fields, &[], *range)).collect(),
        };
        let mut out = Vec::with_capacity(buckets.len());
        for ((suffix, range), reply) in buckets.iter().zip(replies) {
            let key = self.counter_key(meta.generation, epoch, suffix);
            let cached = match reply {
                Ok(Reply::Value(Some(item))) => self.counter_of(&key, &item),
                _ => None,
            };
            let n = match cached {
                Some(n) => n,
                None => match self.build_counter(&key, *range, source) {
                    Ok(n) => n,
                    Err(e @ Error::Source(_)) => return Err(e),
                    Err(_) => source.count(&fields, &[], *range)?,
                },
            };
            out.push(n);
        }
        Ok(out)
    }

    /// The count a cached model-wide counter stands for, folding its moves
    /// into the base once it carries many (by `cas`: a move landing
    /// meanwhile keeps the unfolded value). None when it is no counter (a
    /// lease) or too large to trust: a move that would pass the item size
    /// limit is not stored, so a counter is read only while far from it.
    fn counter_of(&self, key: &str, item: &Item) -> Option<u64> {
        if item.value.len() > self.store.max_item_size() / 2 {
            return None;
        }
        let counter = CounterValue::parse(&item.value)?;
        if counter.moves() >= counters::FOLD_AT {
            // A lost cas only leaves the moves for the next reader to fold.
            let _ = self.store.one(Op::Cas { key: key.to_string(), value: counter.fold(), cas: item.cas });
        }
        Some(counter.count())
    }

    /// Builds one model-wide counter under the lease; when the lease cannot
    /// be had, answers from the source without storing. A move that lands
    /// on the lease changes its CAS: the count is taken again.
    fn build_counter(&self, key: &str, range: Option<(i32, i32)>, source: &dyn Source) -> Result<u64> {
        let token = new_token();
        for _ in 0..4 {
            let current = self.store.get(key)?;
            if let Some(n) = current.as_ref().and_then(|i| self.counter_of(key, i)) {
                return Ok(n);
            }
            let take = match &current {
                // another builder's lease, alive (moves may sit in front of it)
                Some(item)
                    if lease_of(&item.value).is_some_and(|(t, age)| t != token && age < self.options.lease_ttl) =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Some(item) => Op::Cas { key: key.to_string(), value: lease_marker(token), cas: item.cas },
                None => Op::Add { key: key.to_string(), value: lease_marker(token) },
            };
            if self.store.one(take)? != Reply::Stored {
                continue;
            }
            let Some(item) = self.store.get(key)? else {
                continue;
            };
            if lease_of(&item.value).map(|(t, _)| t) != Some(token) {
                continue;
            }
            let counted = match source.model_count(range) {
                Ok(c) => c,
                Err(e) => {
                    // Release the lease: readers count in the database at
                    // once instead of waiting for a counter that will not come.
                    let _ = self.store.one(Op::Delete { key: key.to_string() });
                    return Err(e);
                }
            };
            if counted.in_flight.len() > counters::MAX_IN_FLIGHT {
                let _ = self.store.one(Op::Delete { key: key.to_string() });
                return Ok(counted.rows);
            }
            self.hook(HookPoint::BeforeCounterStore, key);
            let value = CounterValue::encode(counted.rows, &counted.in_flight);
            if self.store.one(Op::Cas { key: key.to_string(), value, cas: item.cas })? == Reply::Stored {
                return Ok(counted.rows);
            }
        }
        source.count(&[], &[], range)
    }

    /// The raw value of the model-wide total counter and its key, for
    /// inspection.
    pub fn raw_counter(&self) -> Result<(String, Option<Vec<u8>>)> {
        let key = self.counter_key(self.current_meta()?.generation, self.counter_epoch(), "c");
        let item = self.store.get(&key)?;
        Ok((key, item.map(|i| i.value)))
    }

    /// The raw value of a list and its key, for inspection.
    pub fn raw(&self, fields: &[String], values: &[Value]) -> Result<(String, Option<Vec<u8>>)> {
        let key = self.key(fields, values)?;
        let item = self.store.get(&key)?;
        Ok((key, item.map(|i| i.value)))
    }
}

/// The tag of counts taken from a list in segments whose head is `item`;
/// `None` for a head without segments (counting it is as cheap as reading
/// a cached count) or a value that is not a head.
fn count_tag(spec: &ListSpec, item: &Item) -> Option<String> {
    match spec.layout.part_of(&item.value) {
        Ok((Part::Head { segments }, id)) if segments > 0 => {
            Some(format!("{:x}.{id:x}.{:x}", item.cas, item.value.len()))
        }
        _ => None,
    }
}

/// A cached list count `"{n} {tag}"`, if it was taken from the head `tag` names.
fn tagged_count(value: &[u8], tag: &str) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let (n, t) = text.split_once(' ')?;
    if t != tag {
        return None;
    }
    n.parse().ok()
}

fn pk_of(row: &Row) -> Result<i64> {
    match row.first() {
        Some(Value::Int(pk)) => Ok(*pk),
        other => Err(Error::Schema(format!("primary key must be an integer, got {other:?}"))),
    }
}

/// The source of writes that never build (deletes).
struct NoSource;

impl Source for NoSource {
    fn rows(&self, _: &[String], _: &[Value]) -> Result<Vec<Row>> {
        Err(SourceError::unsupported("no source for this operation").into())
    }
    fn count(&self, _: &[String], _: &[Value], _: Option<(i32, i32)>) -> Result<u64> {
        Err(SourceError::unsupported("no source for this operation").into())
    }
    fn row(&self, _: &Value) -> Result<Option<Stored>> {
        Err(SourceError::unsupported("no source for this operation").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        let m = Meta {
            generation: 0x1234,
            entries: Arc::new(vec![Entry { schema_fp: 1, layout_fp: 2, fields: vec!["a".into(), "b".into()] }]),
        };
        assert_eq!(Meta::decode(&m.encode()), Some(m));
        assert_eq!(Meta::decode(b"garbage"), None);
    }

    #[test]
    fn lease_markers_are_recognised_under_prepends() {
        let mut v = b"frames".to_vec();
        v.extend(lease_marker(42));
        let (token, age) = lease_of(&v).unwrap();
        assert_eq!(token, 42);
        assert!(age < Duration::from_secs(1));
        assert!(lease_of(b"1234").is_none());
    }

    #[test]
    fn is_lease_tells_a_lease_marker_from_a_list() {
        let mut v = b"frames".to_vec();
        v.extend(lease_marker(7));
        assert!(is_lease(&v) && is_lease(&lease_marker(1)));
        v.push(0);
        assert!(!is_lease(&v) && !is_lease(b"") && !is_lease(&[0u8; 22]));
    }
}
