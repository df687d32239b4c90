//! [`EngineBuilder`]: an [`Engine`] from named settings instead of a long
//! positional list. It owns the defaults a Django client applies too (an
//! empty key prefix, the default [`Options`], no unique sets, no hook) and
//! what "a counter epoch that never ends" means.

use crate::codec::Schema;
use crate::engine::{Engine, EventSink, Hook, Options};
use crate::error::Result;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// The epoch length that stands for "never": every key then carries epoch 0,
/// as Django's `LISTY["COUNTER_EPOCH"] = None` does.
const NEVER: Duration = Duration::from_secs(u64::MAX / 4);

impl Options {
    /// The counter epoch's length, `None` when it never ends (see
    /// [`EngineBuilder::counter_epoch`]).
    pub fn counter_epoch_length(&self) -> Option<Duration> {
        (self.counter_epoch < NEVER).then_some(self.counter_epoch)
    }
}

/// Builds the [`Engine`] of one model.
///
/// The engine must be configured exactly as every other client of the same
/// lists (a Django project's `manage.py listy_schema --json` prints these
/// values): the same key prefix, model label, schema (field order, kinds,
/// nullability), indexes, unique sets and counter epoch. A client whose
/// schema differs cannot corrupt the others' lists (keys carry the
/// schema's fingerprint), it only never shares them.
///
/// ```
/// use listy_core::codec::{Field, Kind, Schema};
/// use listy_core::engine::Engine;
/// use listy_core::local::LocalStore;
/// use std::time::Duration;
///
/// let schema = Schema::new(vec![
///     Field::new("id", Kind::Int, false),
///     Field::new("created", Kind::Datetime, false),
///     Field::new("follower_id", Kind::Int, false),
///     Field::new("followee_id", Kind::Int, false),
/// ])?;
/// let engine = Engine::builder(LocalStore::named("doc", 1 << 20), "testapp.Follow", schema)
///     .prefix("t")
///     .index(["id"])
///     .index(["follower_id"])
///     .index(["followee_id", "follower_id"])
///     .unique(["id"])
///     .counter_epoch(None)
///     .lease_ttl(Duration::from_secs(3))
///     .build()?;
/// assert_eq!(engine.indexes().len(), 3);
/// # Ok::<(), listy_core::Error>(())
/// ```
#[must_use = "an EngineBuilder does nothing until `build()`"]
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    model: String,
    schema: Schema,
    prefix: String,
    indexes: Vec<Vec<String>>,
    unique: Vec<Vec<String>>,
    options: Options,
    hook: Option<Hook>,
    events: Option<EventSink>,
}

impl Engine {
    /// A builder for the engine of `model` (its label in keys, Django's
    /// `ListCache.engine_label`) over `store` with record `schema`.
    pub fn builder(store: Arc<dyn Store>, model: &str, schema: Schema) -> EngineBuilder {
        EngineBuilder::new(store, model, schema)
    }
}

impl EngineBuilder {
    /// See [`Engine::builder`].
    pub fn new(store: Arc<dyn Store>, model: &str, schema: Schema) -> EngineBuilder {
        EngineBuilder {
            store,
            model: model.to_string(),
            schema,
            prefix: String::new(),
            indexes: Vec::new(),
            unique: Vec::new(),
            options: Options::default(),
            hook: None,
            events: None,
        }
    }

    /// The key prefix (Django's `LISTY["KEY_PREFIX"]`; default empty).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// Adds one index: the schema fields a list is keyed by, in any order.
    pub fn index<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.indexes.push(fields.into_iter().map(Into::into).collect());
        self
    }

    /// Adds several indexes (see [`index`](Self::index)).
    pub fn indexes(mut self, indexes: impl IntoIterator<Item = Vec<String>>) -> Self {
        self.indexes.extend(indexes);
        self
    }

    /// Adds one field set no two rows share (a unique constraint of the
    /// database; see [`Engine::set_unique`]).
    pub fn unique<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.unique.push(fields.into_iter().map(Into::into).collect());
        self
    }

    /// Adds several unique field sets (see [`unique`](Self::unique)).
    pub fn unique_sets(mut self, sets: impl IntoIterator<Item = Vec<String>>) -> Self {
        self.unique.extend(sets);
        self
    }

    /// Replaces every tunable at once.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// How long the model-wide counters live before they are counted again
    /// (Django's `LISTY["COUNTER_EPOCH"]`); `None`: never. Writers of one
    /// model must agree on it, since the counters' keys carry the epoch.
    pub fn counter_epoch(mut self, epoch: Option<Duration>) -> Self {
        self.options.counter_epoch = epoch.filter(|e| !e.is_zero()).unwrap_or(NEVER);
        self
    }

    /// See [`Options::lease_ttl`].
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.options.lease_ttl = ttl;
        self
    }

    /// See [`Options::lease_wait`].
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.options.lease_wait = wait;
        self
    }

    /// See [`Options::head_max`] and [`Options::head_split`].
    pub fn head_sizes(mut self, head_max: usize, head_split: usize) -> Self {
        self.options.head_max = head_max;
        self.options.head_split = head_split;
        self
    }

    /// See [`Options::compact_min_dead`].
    pub fn compact_min_dead(mut self, dead: usize) -> Self {
        self.options.compact_min_dead = dead;
        self
    }

    /// A hook called at the protocol's race points (tests).
    pub fn hook(mut self, hook: Hook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The receiver of the engine's events (lease lost, compaction, segment
    /// split): rare, worth a DEBUG line each.
    pub fn events(mut self, sink: EventSink) -> Self {
        self.events = Some(sink);
        self
    }

    /// The engine; a configuration error names the bad index or unique set.
    pub fn build(self) -> Result<Engine> {
        let mut engine = Engine::new(self.store, &self.prefix, &self.model, self.schema, self.indexes, self.options)?;
        engine.set_unique(self.unique)?;
        if let Some(hook) = self.hook {
            engine.set_hook(hook);
        }
        if let Some(sink) = self.events {
            engine.set_event_sink(sink);
        }
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Field, Kind};
    use crate::error::Error;
    use crate::local::LocalStore;

    fn schema() -> Schema {
        Schema::new(vec![Field::new("id", Kind::Int, false), Field::new("owner_id", Kind::Int, true)]).unwrap()
    }

    #[test]
    fn a_bad_index_or_unique_set_is_a_config_error() {
        let store = LocalStore::named("builder-bad", 1 << 20);
        let bad_index = Engine::builder(store.clone(), "m", schema()).index(["nope"]).build();
        assert!(matches!(bad_index, Err(Error::Config(m)) if m.contains("nope")));
        let bad_unique = Engine::builder(store, "m", schema()).index(["id"]).unique(["nope"]).build();
        assert!(matches!(bad_unique, Err(Error::Config(m)) if m.contains("nope")));
    }

    #[test]
    fn a_counter_epoch_of_none_or_zero_never_ends() {
        let store = LocalStore::named("builder-epoch", 1 << 20);
        let epoch = |e| Engine::builder(store.clone(), "m", schema()).counter_epoch(e).build().unwrap();
        assert_eq!(epoch(None).options().counter_epoch_length(), None);
        assert_eq!(epoch(Some(Duration::ZERO)).options().counter_epoch_length(), None);
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(epoch(hour).options().counter_epoch_length(), hour);
        let default = Engine::builder(store.clone(), "m", schema()).build().unwrap();
        assert_eq!(default.options().counter_epoch_length(), hour);
    }

    #[test]
    fn kind_names_read_back() {
        for name in ["int", "bool", "float", "str", "bytes", "datetime", "date", "time", "decimal", "uuid", "json"] {
            assert_eq!(Kind::parse(name).unwrap().name(), name);
        }
    }

    #[test]
    fn indexes_are_kept_sorted() {
        let engine = Engine::builder(LocalStore::named("builder-sorted", 1 << 20), "m", schema())
            .index(["owner_id", "id"])
            .build()
            .unwrap();
        assert_eq!(engine.indexes(), &[vec!["id".to_string(), "owner_id".to_string()]]);
    }
}
