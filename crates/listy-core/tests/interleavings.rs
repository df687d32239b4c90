//! Model-based interleavings of several writers of a few rows (issue 16):
//! whatever order their commits and their `Engine::change` calls take, once
//! every change ran every list, every count and every model-wide counter
//! equals the database.
//!
//! The model: a tiny database of four primary keys (`id`, `created`,
//! `owner_id`, `color`, `deleted`: a soft-delete flag; three indexes, `id`,
//! `owner_id` and `(color, owner_id)`). Three writers each run a script of
//! writes as Django would:
//!
//! - `Save`: a plain `instance.save()` of a (maybe stale) instance: every
//!   field written; Django re-creates a row deleted meanwhile under its old
//!   primary key (its UPDATE matched nothing, so it INSERTs);
//! - `Color`: `save(update_fields=["color"])`: a move between lists, only if
//!   the row still exists (Django raises otherwise, nothing is written);
//! - `Flag`: a soft delete or a revival (`add()` reviving, `cache.delete()`),
//!   only if the row exists;
//! - `Delete`: `instance.delete()`, only if the row exists.
//!
//! A writer commits one write, then runs its change (`old`: the row as the
//! database held it at that commit, `new`: as its write left it), then
//! commits the next. A schedule (drawn by proptest) picks which writer steps
//! next, and at every read the engine makes of the database (a build's
//! `rows`, a count, the settle's `row`) it may let other idle writers commit
//! first: so another writer's commit can fall between a change's frames and
//! its settle, and frames reach the cache in any order relative to commits.
//! A second property adds evictions of random list keys at any step.
//!
//! Not modelled: two `change` calls running at the same time in two threads
//! (each call here is atomic except for its database reads), and the cache
//! operations of one change being interleaved with another change's (frames
//! are `append`/`prepend`/`cas` round trips; between them only database
//! reads are exposed to other writers).
//!
//! The interleavings that failed before issue 16's fixes are kept below as
//! named tests with their root cause. A writer whose inserts the engine
//! could not tell were raced settles them in a batch at the end, as Listy's
//! background worker does (`Engine::settle_many`). One `#[ignore]`d case
//! shows the caller's contract (a stale `old`), and `census` prints rates.

mod common;

use listy_core::calendar::Period;
use listy_core::codec::{Field, Kind, Row, Schema, Value};
use listy_core::engine::{Bucket, Engine, Options, Source, Stored};
use listy_core::local::LocalStore;
use listy_core::pool::{MemcachedPool, PoolConfig};
use listy_core::store::Op;
use listy_core::Store;
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

const FIELDS: [&str; 5] = ["id", "created", "owner_id", "color", "deleted"];
const DAY_US: i64 = 86_400_000_000;
const FIRST_DAY: i64 = 20_000;
const PKS: [i64; 4] = [1, 2, 3, 4];
const OWNERS: [i64; 2] = [1, 2];
const COLORS: [i64; 3] = [1, 2, 3];
const DAYS: i64 = 3;
const WRITERS: usize = 3;

/// One write of a writer's script (see the module comment).
#[derive(Debug, Clone, PartialEq)]
enum Write {
    /// A plain `save()` of an instance holding these values.
    Save { pk: i64, day: i64, owner: i64, color: i64, deleted: bool },
    /// `save(update_fields=["color"])`.
    Color { pk: i64, color: i64 },
    /// A soft delete (`true`) or a revival (`false`).
    Flag { pk: i64, deleted: bool },
    /// `instance.delete()`.
    Delete { pk: i64 },
}

/// One event of a schedule once resolved: who did what (the failure report).
#[derive(Debug, Clone)]
enum Event {
    Commit { writer: usize, write: Write, old: Option<Row>, new: Option<Row> },
    Skipped { writer: usize, write: Write },
    ChangeStart { writer: usize },
    ChangeEnd { writer: usize },
    Evict { list: usize },
}

/// A row in a few characters: `#pk dDAY oOWNER cCOLOR live|deleted`.
fn show(row: &Row) -> String {
    let day = day_of(row).map_or(-1, |d| d - FIRST_DAY as i32);
    let state = if listed(row) { "live" } else { "deleted" };
    format!("#{} d{day} o{} c{} {state}", int(&row[0]), int(&row[2]), int(&row[3]))
}

fn show_opt(row: &Option<Row>) -> String {
    row.as_ref().map_or_else(|| "absent".to_string(), show)
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Commit { writer, write, old, new } => {
                write!(f, "w{writer} commits {write:?}: {} -> {}", show_opt(old), show_opt(new))
            }
            Event::Skipped { writer, write } => write!(f, "w{writer} {write:?}: no row, nothing committed"),
            Event::ChangeStart { writer } => write!(f, "w{writer} change starts"),
            Event::ChangeEnd { writer } => write!(f, "w{writer} change ends"),
            Event::Evict { list } => write!(f, "evict {:?}", lists()[*list]),
        }
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("not an int: {other:?}"),
    }
}

fn listed(row: &Row) -> bool {
    row[4] == Value::Bool(false)
}

fn day_of(row: &Row) -> Option<i32> {
    match row[1] {
        Value::Datetime(us) => Some(us.div_euclid(DAY_US) as i32),
        _ => None,
    }
}

fn stored(row: &Row) -> Stored {
    Stored { row: row.clone(), listed: listed(row), day: day_of(row) }
}

fn thing(pk: i64, day: i64, owner: i64, color: i64, deleted: bool) -> Row {
    vec![
        Value::Int(pk),
        Value::Datetime((FIRST_DAY + day) * DAY_US + pk),
        Value::Int(owner),
        Value::Int(color),
        Value::Bool(deleted),
    ]
}

fn idx(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Every list the three indexes make over the key space.
fn lists() -> Vec<(Vec<String>, Vec<Value>)> {
    let mut out = Vec::new();
    for pk in PKS {
        out.push((idx(&["id"]), vec![Value::Int(pk)]));
    }
    for owner in OWNERS {
        out.push((idx(&["owner_id"]), vec![Value::Int(owner)]));
        for color in COLORS {
            out.push((idx(&["color", "owner_id"]), vec![Value::Int(color), Value::Int(owner)]));
        }
    }
    out
}

/// What a writer is doing.
#[derive(Default)]
struct Writer {
    script: VecDeque<Write>,
    /// A committed write whose change has not run yet, and whether it
    /// inserted a primary key used before (the caller then asks for
    /// `Engine::recreate`, as Django's side does for an explicit pk).
    pending: Option<(Option<Stored>, Option<Stored>, bool)>,
    /// Running its change now (it cannot commit meanwhile).
    busy: bool,
}

/// The database, the writers and the schedule's choices.
struct World {
    db: BTreeMap<i64, Row>,
    /// A `Save` of a row that is gone commits nothing (the instance was
    /// fetched before the delete; with this false Django's re-creation is
    /// left out of the mix).
    recreate: bool,
    /// Primary keys that existed at some point.
    seen: std::collections::BTreeSet<i64>,
    writers: Vec<Writer>,
    choices: VecDeque<u8>,
    events: Vec<Event>,
}

impl World {
    fn choose(&mut self, n: usize) -> usize {
        // An exhausted schedule picks the first option: the run still ends.
        self.choices.pop_front().map_or(0, |c| c as usize % n)
    }

    /// Commits the next write of `w` (a write that finds no row to change
    /// commits nothing: Django raised, or deleted nothing).
    fn commit(&mut self, w: usize) {
        let write = self.writers[w].script.pop_front().expect("a write to commit");
        let old = self.db.get(&pk_of(&write)).cloned();
        if old.is_none() && !self.recreate && self.seen.contains(&pk_of(&write)) {
            self.events.push(Event::Skipped { writer: w, write });
            return;
        }
        let recreated = old.is_none() && self.seen.contains(&pk_of(&write));
        self.seen.insert(pk_of(&write));
        let new = match (&write, &old) {
            (Write::Save { pk, day, owner, color, deleted }, _) => Some(thing(*pk, *day, *owner, *color, *deleted)),
            (Write::Color { color, .. }, Some(o)) => {
                let mut r = o.clone();
                r[3] = Value::Int(*color);
                Some(r)
            }
            (Write::Flag { deleted, .. }, Some(o)) => {
                let mut r = o.clone();
                r[4] = Value::Bool(*deleted);
                Some(r)
            }
            (Write::Delete { .. }, Some(_)) => None,
            (_, None) => {
                self.events.push(Event::Skipped { writer: w, write });
                return;
            }
        };
        match &new {
            Some(r) => self.db.insert(pk_of(&write), r.clone()),
            None => self.db.remove(&pk_of(&write)),
        };
        self.writers[w].pending = Some((old.as_ref().map(stored), new.as_ref().map(stored), recreated));
        self.events.push(Event::Commit { writer: w, write, old, new });
    }

    /// At a database read of a running change: maybe let idle writers
    /// commit first (each pick: one more commit, or go on).
    fn interleave(&mut self) {
        loop {
            let idle: Vec<usize> = (0..self.writers.len())
                .filter(|&w| {
                    let wr = &self.writers[w];
                    !wr.busy && wr.pending.is_none() && !wr.script.is_empty()
                })
                .collect();
            if idle.is_empty() {
                return;
            }
            let pick = self.choose(idle.len() + 1);
            if pick == idle.len() {
                return;
            }
            self.commit(idle[pick]);
        }
    }

    fn live(&self, fields: &[String], values: &[Value]) -> Vec<Row> {
        self.db
            .values()
            .rev()
            .filter(|r| {
                listed(r)
                    && fields.iter().zip(values).all(|(f, v)| &r[FIELDS.iter().position(|x| x == f).unwrap()] == v)
            })
            .cloned()
            .collect()
    }
}

fn pk_of(w: &Write) -> i64 {
    match *w {
        Write::Save { pk, .. } | Write::Color { pk, .. } | Write::Flag { pk, .. } | Write::Delete { pk } => pk,
    }
}

/// The engine's view of the database: every read may let other writers
/// commit first.
struct Sim(Mutex<World>);

impl Sim {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }
}

impl Source for Sim {
    fn rows(&self, fields: &[String], values: &[Value]) -> listy_core::Result<Vec<Row>> {
        let mut w = self.world();
        w.interleave();
        Ok(w.live(fields, values))
    }

    fn count(&self, fields: &[String], values: &[Value], days: Option<(i32, i32)>) -> listy_core::Result<u64> {
        let mut w = self.world();
        w.interleave();
        let in_days = |r: &Row| days.is_none_or(|(s, e)| day_of(r).is_some_and(|d| s <= d && d < e));
        Ok(w.live(fields, values).iter().filter(|r| in_days(r)).count() as u64)
    }

    fn row(&self, pk: &Value) -> listy_core::Result<Option<Stored>> {
        let mut w = self.world();
        w.interleave();
        Ok(w.db.get(&int(pk)).map(stored))
    }
}

/// The database as it is, without interleaving (the final check's source).
struct Frozen<'a>(&'a World);

impl Source for Frozen<'_> {
    fn rows(&self, fields: &[String], values: &[Value]) -> listy_core::Result<Vec<Row>> {
        Ok(self.0.live(fields, values))
    }

    fn count(&self, fields: &[String], values: &[Value], days: Option<(i32, i32)>) -> listy_core::Result<u64> {
        let in_days = |r: &Row| days.is_none_or(|(s, e)| day_of(r).is_some_and(|d| s <= d && d < e));
        Ok(self.0.live(fields, values).iter().filter(|r| in_days(r)).count() as u64)
    }

    fn row(&self, pk: &Value) -> listy_core::Result<Option<Stored>> {
        Ok(self.0.db.get(&int(pk)).map(stored))
    }
}

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("id", Kind::Int, false),
        Field::new("created", Kind::Datetime, false),
        Field::new("owner_id", Kind::Int, false),
        Field::new("color", Kind::Int, false),
        Field::new("deleted", Kind::Bool, false),
    ])
    .unwrap()
}

fn engine(store: &Arc<dyn Store>) -> Engine {
    let indexes = vec![idx(&["id"]), idx(&["owner_id"]), idx(&["color", "owner_id"])];
    Engine::new(store.clone(), "i:", "app.Thing", schema(), indexes, Options::default()).unwrap()
}

fn day_buckets() -> Vec<Bucket> {
    (0..DAYS + 1)
        .map(|d| {
            let day = (FIRST_DAY + d) as i32;
            Bucket { days: (day, day + 1), micros: ((FIRST_DAY + d) * DAY_US, (FIRST_DAY + d + 1) * DAY_US) }
        })
        .collect()
}

/// The rows a cached list holds (pk, then every field in schema order; the
/// list's own values fill the fields its records leave out), and whether
/// it was a hit.
fn cached_rows(e: &Engine, src: &dyn Source, fields: &[String], values: &[Value]) -> (Vec<Row>, bool) {
    let fetched = e.get(fields, values, src).unwrap();
    let layout = e.layout(fields).unwrap();
    let parts: Vec<&[u8]> = fetched.parts.iter().map(Vec::as_slice).collect();
    let view = layout.read_parts(&parts).unwrap();
    let mut out = Vec::new();
    for i in 0..view.len() {
        let mut vals = Vec::new();
        let pk = layout.decode_record(view.record(i), &mut vals).unwrap();
        let mut row = vec![Value::Null; FIELDS.len()];
        row[0] = Value::Int(pk);
        for (pos, v) in layout.stored().iter().zip(vals) {
            row[*pos] = v.to_owned();
        }
        for (f, v) in fields.iter().zip(values) {
            row[FIELDS.iter().position(|x| x == f).unwrap()] = v.clone();
        }
        out.push(row);
    }
    out.sort_by_key(|r| int(&r[0]));
    (out, fetched.hit)
}

/// The seed: 1 and 2 live, 3 soft-deleted, 4 absent.
fn seed() -> BTreeMap<i64, Row> {
    let mut db = BTreeMap::new();
    db.insert(1, thing(1, 0, 1, 1, false));
    db.insert(2, thing(2, 1, 1, 2, false));
    db.insert(3, thing(3, 1, 2, 1, true));
    db
}

/// What the writers may do besides the writes of their scripts.
#[derive(Debug, Clone, Copy)]
struct Mix {
    /// List keys are evicted at random steps.
    evict: bool,
    /// A plain `save()` re-creates a deleted row under its old primary key.
    recreate: bool,
}

/// Every kind of write, no eviction.
const ALL: Mix = Mix { evict: false, recreate: true };
/// Every kind of write and evictions.
const ALL_EVICTING: Mix = Mix { evict: true, recreate: true };
/// No re-created row (a stale instance's `save()` of a deleted row commits nothing).
const NO_RECREATE: Mix = Mix { evict: false, recreate: false };
/// No re-created row, and evictions.
const NO_RECREATE_EVICTING: Mix = Mix { evict: true, recreate: false };

/// Runs the writers' scripts under the schedule `choices` (evictions among
/// the steps when `evict`) and returns every divergence of a list, a count
/// or a model-wide counter from the database once all changes ran.
fn run(store: &Arc<dyn Store>, scripts: &[Vec<Write>], choices: &[u8], mix: Mix) -> Vec<String> {
    let Mix { evict, recreate } = mix;
    store.flush_all().unwrap();
    let e = engine(store);
    let db = seed();
    let world = World {
        seen: db.keys().copied().collect(),
        recreate,
        db,
        writers: scripts.iter().map(|s| Writer { script: s.iter().cloned().collect(), ..Writer::default() }).collect(),
        choices: choices.iter().copied().collect(),
        events: Vec::new(),
    };
    let sim = Sim(Mutex::new(world));
    {
        // every list and counter cached before the writes: they are applied
        // in place, not rebuilt
        let w = sim.world();
        let frozen = Frozen(&w);
        for (fields, values) in lists() {
            cached_rows(&e, &frozen, &fields, &values);
            e.count(&fields, &values, &frozen).unwrap();
        }
        e.count(&[], &[], &frozen).unwrap();
        e.period_counts(&[], &[], Period::Day, "created", &day_buckets(), &frozen).unwrap();
    }
    let all = lists();
    let mut faults = Vec::new();
    let mut recreated_any = false;
    let mut verify_later: Vec<Stored> = Vec::new();
    loop {
        let (step, n_ready) = {
            let mut w = sim.world();
            let ready: Vec<usize> =
                (0..WRITERS).filter(|&i| w.writers[i].pending.is_some() || !w.writers[i].script.is_empty()).collect();
            if ready.is_empty() {
                break;
            }
            let n = ready.len() + usize::from(evict);
            let pick = w.choose(n);
            (if pick < ready.len() { Some(ready[pick]) } else { None }, n)
        };
        let _ = n_ready;
        let Some(wr) = step else {
            let mut w = sim.world();
            let list = w.choose(all.len());
            w.events.push(Event::Evict { list });
            let key = e.key(&all[list].0, &all[list].1).unwrap();
            store.one(Op::Delete { key }).unwrap();
            continue;
        };
        let pending = {
            let mut w = sim.world();
            match w.writers[wr].pending.take() {
                None => {
                    w.commit(wr);
                    continue;
                }
                Some(p) => {
                    w.writers[wr].busy = true;
                    w.events.push(Event::ChangeStart { writer: wr });
                    p
                }
            }
        };
        let applied = match (&pending.1, pending.2) {
            (Some(new), true) => {
                recreated_any = true;
                e.recreate(new, &sim)
            }
            _ => e.change(pending.0.as_ref(), pending.1.as_ref(), &sim),
        };
        match applied {
            Ok(report) => {
                // An insert the engine could not tell was raced is settled
                // later in a batch, as Listy's background worker does.
                if let (None, Some(new), false, Some(false)) = (&pending.0, &pending.1, pending.2, report.pk_list_found)
                {
                    verify_later.push(new.clone());
                }
                faults.extend(report.faults.iter().map(|f| format!("{f:?}")))
            }
            Err(err) => faults.push(format!("change failed: {err}")),
        }
        let mut w = sim.world();
        w.writers[wr].busy = false;
        w.events.push(Event::ChangeEnd { writer: wr });
    }
    // the background worker's next look
    if let Err(err) = e.settle_many(std::mem::take(&mut verify_later), &sim) {
        faults.push(format!("settle_many failed: {err}"));
    }
    let w = sim.world();
    let frozen = Frozen(&w);
    let mut out: Vec<String> = faults.into_iter().map(|f| format!("fault: {f}")).collect();
    for (fields, values) in &all {
        let want: Vec<Row> = {
            let mut rows = w.live(fields, values);
            rows.sort_by_key(|r| int(&r[0]));
            rows
        };
        let (got, hit) = cached_rows(&e, &frozen, fields, values);
        if got != want {
            let pks = |rows: &[Row]| rows.iter().map(|r| int(&r[0])).collect::<Vec<_>>();
            out.push(format!(
                "list {fields:?}={values:?}: cache {:?} != db {:?} (rows {got:?} vs {want:?})",
                pks(&got),
                pks(&want)
            ));
        } else if !hit && !evict && !recreated_any {
            // (a re-created row starts the model's lists afresh: rebuilt)
            out.push(format!("list {fields:?}={values:?} was dropped and rebuilt, not kept in place"));
        }
        let n = e.count(fields, values, &frozen).unwrap();
        if n != want.len() as u64 {
            out.push(format!("count {fields:?}={values:?}: {n} != db {}", want.len()));
        }
    }
    let n = e.count(&[], &[], &frozen).unwrap();
    let live = w.live(&[], &[]).len() as u64;
    if n != live {
        out.push(format!("model-wide count {n} != db {live}"));
    }
    let buckets = day_buckets();
    let want: Vec<u64> = buckets.iter().map(|b| frozen.count(&[], &[], Some(b.days)).unwrap()).collect();
    let got = e.period_counts(&[], &[], Period::Day, "created", &buckets, &frozen).unwrap();
    if got != want {
        out.push(format!("daily counts {got:?} != db {want:?}"));
    }
    if !out.is_empty() {
        out.push(format!("final db: {}", w.db.values().map(show).collect::<Vec<_>>().join(", ")));
        out.push("events:".to_string());
        out.extend(w.events.iter().map(|ev| format!("  {ev}")));
    }
    out
}

fn write() -> impl Strategy<Value = Write> {
    let pk = prop::sample::select(PKS.to_vec());
    prop_oneof![
        3 => (pk.clone(), 0..DAYS, prop::sample::select(OWNERS.to_vec()), prop::sample::select(COLORS.to_vec()), prop::bool::weighted(0.3))
            .prop_map(|(pk, day, owner, color, deleted)| Write::Save { pk, day, owner, color, deleted }),
        3 => (pk.clone(), prop::sample::select(COLORS.to_vec())).prop_map(|(pk, color)| Write::Color { pk, color }),
        3 => (pk.clone(), any::<bool>()).prop_map(|(pk, deleted)| Write::Flag { pk, deleted }),
        2 => pk.prop_map(|pk| Write::Delete { pk }),
    ]
}

fn scripts() -> impl Strategy<Value = Vec<Vec<Write>>> {
    prop::collection::vec(prop::collection::vec(write(), 0..6), WRITERS)
}

fn choices() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..120)
}

fn check(store: &Arc<dyn Store>, scripts: &[Vec<Write>], choices: &[u8], mix: Mix) -> Result<(), TestCaseError> {
    let found = run(store, scripts, choices, mix);
    prop_assert!(found.is_empty(), "diverged:\n{}", found.join("\n"));
    Ok(())
}

fn local() -> Arc<dyn Store> {
    Arc::new(LocalStore::new("interleavings", 1 << 20))
}

fn cases() -> u32 {
    std::env::var("LISTY_INTERLEAVING_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
        fn writers_converge_in_any_order_on_the_embedded_store(scripts in scripts(), choices in choices()) {
        check(&local(), &scripts, &choices, ALL)?;
    }

    #[test]
        fn writers_converge_in_any_order_with_evictions_on_the_embedded_store(scripts in scripts(), choices in choices()) {
        check(&local(), &scripts, &choices, ALL_EVICTING)?;
    }

    #[test]
        fn writers_that_never_recreate_a_row_converge_on_the_embedded_store(scripts in scripts(), choices in choices()) {
        check(&local(), &scripts, &choices, NO_RECREATE)?;
    }

    #[test]
        fn writers_that_never_recreate_a_row_converge_with_evictions_on_the_embedded_store(scripts in scripts(), choices in choices()) {
        check(&local(), &scripts, &choices, NO_RECREATE_EVICTING)?;
    }
}

/// memcached: one server for all the cases (each case flushes it).
fn on_memcached(mix: Mix) {
    let server = common::Memcached::start();
    let store: Arc<dyn Store> = Arc::new(MemcachedPool::new(PoolConfig::new(vec![server.addr()])).unwrap());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: (cases() / 4).max(16),
        ..ProptestConfig::default()
    });
    runner.run(&(scripts(), choices()), |(scripts, choices)| check(&store, &scripts, &choices, mix)).unwrap();
}

#[test]
fn writers_converge_in_any_order_on_memcached() {
    on_memcached(ALL);
}

#[test]
fn writers_converge_in_any_order_with_evictions_on_memcached() {
    on_memcached(ALL_EVICTING);
}

#[test]
fn writers_that_never_recreate_a_row_converge_on_memcached() {
    on_memcached(NO_RECREATE);
}

#[test]
fn writers_that_never_recreate_a_row_converge_with_evictions_on_memcached() {
    on_memcached(NO_RECREATE_EVICTING);
}

/// The kind of a divergence line of [`run`] (for the census).
fn kind_of(line: &str) -> Option<&'static str> {
    if line.starts_with("fault") {
        Some("fault")
    } else if line.starts_with("daily counts") {
        Some("daily counter")
    } else if line.starts_with("model-wide count") {
        Some("model-wide counter")
    } else if line.starts_with("count ") {
        Some("list count")
    } else if line.starts_with("list [\"id\"]") {
        Some("pk list")
    } else if line.starts_with("list ") && line.contains("was dropped") {
        Some("list dropped")
    } else if line.starts_with("list ") {
        Some("other list")
    } else {
        None
    }
}

/// Not a test: a census of random cases per mix and store, printing how
/// many diverged and in which kinds (`cargo test -p listy-core --test
/// interleavings census -- --ignored --nocapture`; LISTY_INTERLEAVING_CASES
/// cases each).
#[test]
#[ignore = "a measurement, not a test: prints divergence rates"]
fn census() {
    use proptest::strategy::ValueTree;
    let server = common::Memcached::start();
    let memcached: Arc<dyn Store> = Arc::new(MemcachedPool::new(PoolConfig::new(vec![server.addr()])).unwrap());
    let mixes = [
        ("all", ALL),
        ("all+evict", ALL_EVICTING),
        ("no-recreate", NO_RECREATE),
        ("no-recreate+evict", NO_RECREATE_EVICTING),
    ];
    for (store_name, store) in [("embedded", local()), ("memcached", memcached)] {
        for (name, mix) in mixes {
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let mut diverged = 0;
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            let n = cases();
            for _ in 0..n {
                let (scripts, choices) = (scripts(), choices()).new_tree(&mut runner).unwrap().current();
                let found = run(&store, &scripts, &choices, mix);
                if !found.is_empty() {
                    diverged += 1;
                    let mut mine: Vec<&str> = found.iter().filter_map(|l| kind_of(l)).collect();
                    mine.sort();
                    mine.dedup();
                    for k in mine {
                        *kinds.entry(k).or_default() += 1;
                    }
                }
            }
            println!("census {store_name} {name}: {diverged} of {n} cases diverged; cases per kind {kinds:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Failing interleavings, minimal, each with its root cause (issue 16). They
// run on both stores; un-ignore them (and the properties above) once fixed.

/// Runs one named case on both stores and fails with its divergences.
fn replay(scripts: &[Vec<Write>], choices: &[u8], mix: Mix) {
    let server = common::Memcached::start();
    let memcached: Arc<dyn Store> = Arc::new(MemcachedPool::new(PoolConfig::new(vec![server.addr()])).unwrap());
    for (name, store) in [("embedded", local()), ("memcached", memcached)] {
        let found = run(&store, scripts, choices, mix);
        assert!(found.is_empty(), "{name} store diverged:\n{}", found.join("\n"));
    }
}

/// One writer, no race at all: `instance.delete()` of a row, then a stale
/// instance's plain `save()`, which Django turns into an INSERT under the
/// old primary key. Root cause: the delete sent *final* tombstones
/// (`Plan::Remove { hard: true }` / `Plan::Bury`, engine/change.rs
/// `apply`; engine.rs `frames`: the pk list is `set` to a final tombstone
/// alone, "empty forever"), which hide every later record of that pk, and
/// the re-creation is planned as a plain `Add` (old = None). The row is
/// live in the database and missing from every list for good; `get_one(pk)`
/// answers None (issue 16, defect 3; also `loaddata` of the same pks).
#[test]
fn a_row_deleted_then_recreated_under_its_pk_is_listed_again() {
    let scripts = vec![
        vec![Write::Delete { pk: 1 }, Write::Save { pk: 1, day: 0, owner: 1, color: 1, deleted: false }],
        vec![],
        vec![],
    ];
    replay(&scripts, &[], ALL);
}

/// The same with a row deleted while soft-deleted (`Plan::Bury`).
#[test]
fn a_buried_row_recreated_under_its_pk_is_listed_again() {
    let scripts = vec![
        vec![Write::Delete { pk: 3 }, Write::Save { pk: 3, day: 0, owner: 1, color: 1, deleted: false }],
        vec![],
        vec![],
    ];
    replay(&scripts, &[], ALL);
}

/// w0 inserts row 4; w1 soft-deletes it; w1's change runs first (its
/// tombstone lands, its settle reads the row: soft-deleted, as written),
/// then w0's insert lands its record. Root cause: only a change of an
/// existing row settles (`Plan::settles` requires `old.is_some()`,
/// engine/change.rs, and the module comment's "a new row needs nothing
/// (no earlier frame of it can land late)"): an insert's record *can* land
/// after a later writer's soft delete (or move) of the new row, and nothing
/// reads the row again. The soft-deleted row stays listed for good.
#[test]
fn an_insert_landing_after_a_later_soft_delete_is_settled() {
    let scripts = vec![
        vec![Write::Save { pk: 4, day: 0, owner: 1, color: 1, deleted: false }],
        vec![Write::Flag { pk: 4, deleted: true }],
        vec![],
    ];
    // w0 commits, w1 commits, w1's change, w0's change
    replay(&scripts, &[0, 1, 1, 0], NO_RECREATE);
}

/// The same race with a move instead of a soft delete: the insert's record
/// lands in the list the row has left.
#[test]
fn an_insert_landing_after_a_later_move_is_settled() {
    let scripts = vec![
        vec![Write::Save { pk: 4, day: 0, owner: 1, color: 1, deleted: false }],
        vec![Write::Color { pk: 4, color: 3 }],
        vec![],
    ];
    replay(&scripts, &[0, 1, 1, 0], NO_RECREATE);
}

/// w0 revives row 3 into day 2 (+1 in the day-2 counter, empty so far);
/// w1 deletes it for good (-1). w1's change runs first: memcached's `decr`
/// stops at 0 (and the embedded store's `saturating_sub` does the same,
/// local.rs `Op::Decr`), so its decrement is lost; w0's increment then
/// leaves the day-2 counter at 1 for a row that is gone. Root cause:
/// engine/change.rs assumes "incr/decr commute" (module comment, `apply`'s
/// `counted`) and engine.rs sends `Op::Decr` (the `frames` counter moves):
/// they do not commute at zero. The lists are right (the final tombstone
/// hides the late revival); only the counter is off, for good (until the
/// counter epoch rolls over, if one is set).
#[test]
fn a_decrement_arriving_before_its_increment_is_not_lost_at_zero() {
    let scripts = vec![
        vec![Write::Save { pk: 3, day: 2, owner: 1, color: 1, deleted: false }],
        vec![Write::Delete { pk: 3 }],
        vec![],
    ];
    replay(&scripts, &[0, 1, 1, 0], NO_RECREATE);
}

/// w1 revives row 3 (owner 2), w0 moves it to owner 1, w2 deletes it for
/// good; the changes run w0, w2, then w1 last. w2's final tombstones go to
/// the lists of the row as it deleted it (owner 1); w1's late revival then
/// records the row in the owner-2 lists, and its settle reads the row, finds
/// it gone and stops ("gone for good: its delete's final tombstones win",
/// engine/change.rs `settle`). Root cause: a final tombstone only wins in
/// the lists it is sent to; a late frame of an *earlier* state of the row
/// lands in lists the delete never touched. The deleted row stays listed
/// for good (issue 16's failing mix: a move + `instance.delete()` + add).
#[test]
fn a_late_revival_into_lists_the_row_left_before_its_delete_is_removed() {
    let scripts = vec![
        vec![Write::Save { pk: 3, day: 1, owner: 1, color: 1, deleted: false }],
        vec![Write::Flag { pk: 3, deleted: false }],
        vec![Write::Delete { pk: 3 }],
    ];
    // commits w1, w0, w2; changes w0, w2, w1
    replay(&scripts, &[1, 0, 2, 0, 1, 0], NO_RECREATE);
}

/// A writer whose `old` is not what the database held at its commit: the
/// Python side reads it *before* its UPDATE, without a lock
/// (`signals.on_pre_save` reads `stored_state(pk)`; `add()`'s revival
/// takes `snapshot(existing)` from an unlocked SELECT), so another
/// writer's commit can fall between that read and the write. Here B moves
/// row 1 from color 1 to 2 and settles, all between A's read of the row
/// (color 1) and A's UPDATE to color 3. A's change then tombstones the
/// color-1 list and records the row in color 3; nothing ever takes it out
/// of the color-2 list (A's settle compares the database with what A
/// wrote, color 3: equal). Root cause: the engine trusts `old`, and the
/// writers hand it a stale one; the engine's frames cannot repair a list
/// `old` does not name. The model properties above give every writer the
/// exact `old` (as if read under the row lock), so they do not cover this.
#[test]
#[ignore = "the caller's contract, shown: `old` must be read under the write's row lock (Listy's signals and bulk paths do); the engine cannot repair a list `old` does not name"]
fn a_writer_whose_old_state_was_read_before_another_commit_leaves_no_stale_list() {
    let server = common::Memcached::start();
    let memcached: Arc<dyn Store> = Arc::new(MemcachedPool::new(PoolConfig::new(vec![server.addr()])).unwrap());
    for (name, store) in [("embedded", local()), ("memcached", memcached)] {
        store.flush_all().unwrap();
        let e = engine(&store);
        let mut world = World {
            db: seed(),
            recreate: true,
            seen: Default::default(),
            writers: Vec::new(),
            choices: VecDeque::new(),
            events: Vec::new(),
        };
        for (fields, values) in lists() {
            cached_rows(&e, &Frozen(&world), &fields, &values);
        }
        let at_1 = stored(&world.db[&1]); // A reads the row (pre_save)
        let mut at_2 = world.db[&1].clone();
        at_2[3] = Value::Int(2);
        world.db.insert(1, at_2.clone()); // B commits its move, then its change runs and settles
        e.change(Some(&at_1), Some(&stored(&at_2)), &Frozen(&world)).unwrap();
        let mut at_3 = world.db[&1].clone();
        at_3[3] = Value::Int(3);
        world.db.insert(1, at_3.clone()); // A commits, with the old it read
        e.change(Some(&at_1), Some(&stored(&at_3)), &Frozen(&world)).unwrap();
        let fields = idx(&["color", "owner_id"]);
        for color in COLORS {
            let values = vec![Value::Int(color), Value::Int(1)];
            let mut want = world.live(&fields, &values);
            want.sort_by_key(|r| int(&r[0]));
            let (got, _) = cached_rows(&e, &Frozen(&world), &fields, &values);
            assert_eq!(got, want, "{name} store: list color={color}, owner=1");
        }
    }
}
