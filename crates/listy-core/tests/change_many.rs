//! `Engine::change_many` on both stores: a batch of changes of every kind
//! (inserts, deletes, soft deletes, revivals, moves between lists and
//! counter buckets) leaves every list and counter equal to the database, in
//! one pipelined round trip, settled with one batched read.

mod common;

use listy_core::calendar::Period;
use listy_core::codec::{Field, Kind, Row, Schema, Value};
use listy_core::engine::{Bucket, Engine, Options, Source, Stored};
use listy_core::local::LocalStore;
use listy_core::pool::{MemcachedPool, PoolConfig};
use listy_core::store::{Op, Reply};
use listy_core::Store;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const FIELDS: [&str; 5] = ["id", "created", "owner_id", "color", "deleted"];
const DAY_US: i64 = 86_400_000_000;
const FIRST_DAY: i64 = 20_000;
const OWNERS: [i64; 2] = [1, 2];
const COLORS: [i64; 3] = [1, 2, 3];

/// A tiny database with a soft-delete flag: the truth the cache must
/// converge to. Soft-deleted rows are stored but not listed.
#[derive(Default)]
struct Db {
    rows: Mutex<BTreeMap<i64, Row>>,
    row_reads: AtomicUsize,
    batch_reads: AtomicUsize,
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

fn thing(id: i64, day: i64, owner: i64, color: i64, deleted: bool) -> Row {
    vec![
        Value::Int(id),
        Value::Datetime((FIRST_DAY + day) * DAY_US + id),
        Value::Int(owner),
        Value::Int(color),
        Value::Bool(deleted),
    ]
}

impl Db {
    fn matches(row: &Row, fields: &[String], values: &[Value]) -> bool {
        fields.iter().zip(values).all(|(f, v)| &row[FIELDS.iter().position(|x| x == f).unwrap()] == v)
    }

    fn live(&self, fields: &[String], values: &[Value]) -> Vec<Row> {
        let rows = self.rows.lock().unwrap();
        rows.values().rev().filter(|r| listed(r) && Self::matches(r, fields, values)).cloned().collect()
    }

    /// Writes `row` (None: deletes `id`) and returns the change as a writer
    /// would hand it to the engine: the row before and after.
    fn write(&self, id: i64, row: Option<Row>) -> (Option<Stored>, Option<Stored>) {
        let mut rows = self.rows.lock().unwrap();
        let old = match row.clone() {
            Some(r) => rows.insert(id, r),
            None => rows.remove(&id),
        };
        (old.as_ref().map(stored), row.as_ref().map(stored))
    }
}

impl Source for Db {
    fn rows(&self, fields: &[String], values: &[Value]) -> listy_core::Result<Vec<Row>> {
        Ok(self.live(fields, values))
    }

    fn count(&self, fields: &[String], values: &[Value], days: Option<(i32, i32)>) -> listy_core::Result<u64> {
        let in_days = |r: &Row| days.is_none_or(|(s, e)| day_of(r).is_some_and(|d| s <= d && d < e));
        Ok(self.live(fields, values).iter().filter(|r| in_days(r)).count() as u64)
    }

    fn row(&self, pk: &Value) -> listy_core::Result<Option<Stored>> {
        self.row_reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.rows.lock().unwrap().get(&int(pk)).map(stored))
    }

    fn rows_by_pk(&self, pks: &[Value]) -> listy_core::Result<Vec<Stored>> {
        self.batch_reads.fetch_add(1, Ordering::SeqCst);
        let rows = self.rows.lock().unwrap();
        Ok(pks.iter().filter_map(|pk| rows.get(&int(pk)).map(stored)).collect())
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

fn idx(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn engine(store: &Arc<dyn Store>) -> Engine {
    let indexes = vec![idx(&["id"]), idx(&["owner_id"]), idx(&["color", "owner_id"])];
    Engine::new(store.clone(), "c:", "app.Thing", schema(), indexes, Options::default()).unwrap()
}

fn on_every_store(test: impl Fn(Arc<dyn Store>)) {
    test(Arc::new(LocalStore::new("change-many-test", 1 << 20)));
    let server = common::Memcached::start();
    let pool = MemcachedPool::new(PoolConfig::new(vec![server.addr()])).unwrap();
    test(Arc::new(pool));
}

fn cached_pks(e: &Engine, db: &Db, fields: &[String], values: &[Value]) -> Vec<i64> {
    let fetched = e.get(fields, values, db).unwrap();
    let layout = e.layout(fields).unwrap();
    let parts: Vec<&[u8]> = fetched.parts.iter().map(Vec::as_slice).collect();
    let view = layout.read_parts(&parts).unwrap();
    (0..view.len()).map(|i| layout.decode_record(view.record(i), &mut Vec::new()).unwrap()).collect()
}

/// Reads every list (and so caches it) before the changes under test, so
/// that they are applied in place, not rebuilt.
fn warm(e: &Engine, db: &Db, ids: &[i64]) {
    for (fields, values) in lists(ids) {
        cached_pks(e, db, &fields, &values);
    }
    e.count(&[], &[], db).unwrap();
    e.period_counts(&[], &[], Period::Day, "created", &day_buckets(), db).unwrap();
}

fn lists(ids: &[i64]) -> Vec<(Vec<String>, Vec<Value>)> {
    let mut out = Vec::new();
    for &id in ids {
        out.push((idx(&["id"]), vec![Value::Int(id)]));
    }
    for owner in OWNERS {
        out.push((idx(&["owner_id"]), vec![Value::Int(owner)]));
        for color in COLORS {
            out.push((idx(&["color", "owner_id"]), vec![Value::Int(color), Value::Int(owner)]));
        }
    }
    out
}

fn day_buckets() -> Vec<Bucket> {
    (0..4)
        .map(|d| {
            let day = (FIRST_DAY + d) as i32;
            Bucket { days: (day, day + 1), micros: ((FIRST_DAY + d) * DAY_US, (FIRST_DAY + d + 1) * DAY_US) }
        })
        .collect()
}

/// Every list, every list's count and the model-wide counts equal the
/// database's, and they were served from the cache.
fn assert_converged(e: &Engine, db: &Db, ids: &[i64]) {
    for (fields, values) in lists(ids) {
        // Newest first is loose (a revived or moved row comes first): the
        // same rows is what must hold.
        let mut want: Vec<i64> = db.live(&fields, &values).iter().map(|r| int(&r[0])).collect();
        let mut got = cached_pks(e, db, &fields, &values);
        want.sort();
        got.sort();
        assert_eq!(got, want, "list {fields:?}={values:?}");
        assert_eq!(e.count(&fields, &values, db).unwrap(), want.len() as u64, "count {fields:?}={values:?}");
        let fetched = e.get(&fields, &values, db).unwrap();
        assert!(fetched.hit, "{fields:?}={values:?} was rebuilt, not kept in place");
    }
    assert_eq!(e.count(&[], &[], db).unwrap(), db.count(&[], &[], None).unwrap(), "model-wide count");
    let buckets = day_buckets();
    let want: Vec<u64> = buckets.iter().map(|b| db.count(&[], &[], Some(b.days)).unwrap()).collect();
    assert_eq!(e.period_counts(&[], &[], Period::Day, "created", &buckets, db).unwrap(), want, "daily counts");
}

/// Counts the batches sent to a store.
struct Counting {
    inner: Arc<dyn Store>,
    batches: AtomicUsize,
}

impl Store for Counting {
    fn execute(&self, ops: Vec<Op>) -> Vec<listy_core::Result<Reply>> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.inner.execute(ops)
    }
    fn max_item_size(&self) -> usize {
        self.inner.max_item_size()
    }
    fn flush_all(&self) -> listy_core::Result<()> {
        self.inner.flush_all()
    }
    fn server_for(&self, key: &str) -> String {
        self.inner.server_for(key)
    }
    fn stats(&self) -> listy_core::Result<Vec<(String, String, String)>> {
        self.inner.stats()
    }
}

const N: i64 = 300;

fn ids() -> Vec<i64> {
    (1..=N + 50).collect()
}

/// N rows spread over owners, colors and days, every list warm.
fn seeded(store: &Arc<dyn Store>) -> (Engine, Db) {
    store.flush_all().unwrap();
    let (e, db) = (engine(store), Db::default());
    for id in 1..=N {
        db.write(id, Some(thing(id, id % 3, 1 + id % 2, 1 + id % 3, false)));
    }
    warm(&e, &db, &ids());
    (e, db)
}

/// Writes every change to the database, then hands them to one batch.
fn apply(e: &Engine, db: &Db, writes: Vec<(i64, Option<Row>)>) {
    let changes: Vec<_> = writes.into_iter().map(|(id, row)| db.write(id, row)).collect();
    let report = e.change_many(&changes, db).unwrap();
    assert!(report.faults.is_empty(), "{:?}", report.faults);
}

#[test]
fn a_batch_of_every_kind_of_change_converges() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let mut writes = Vec::new();
        for id in 1..=N {
            let row = match id % 6 {
                0 => None,                                                         // deleted
                1 => Some(thing(id, id % 3, 1 + id % 2, 1 + id % 3, true)),        // soft-deleted
                2 => Some(thing(id, id % 3, 1 + id % 2, 1 + (id + 1) % 3, false)), // color moves
                3 => Some(thing(id, 3, 2 - id % 2, 1 + id % 3, false)),            // owner and day move
                _ => continue,
            };
            writes.push((id, row));
        }
        for id in N + 1..=N + 50 {
            writes.push((id, Some(thing(id, id % 4, 1 + id % 2, 1 + id % 3, false))));
            // inserted
        }
        apply(&e, &db, writes);
        assert_converged(&e, &db, &ids());
        assert_eq!(db.row_reads.load(Ordering::SeqCst), 0, "no per-row settle read");
        // one settle round for the rows written, one look at the rows deleted
        // (inserted again meanwhile: then re-created)
        assert_eq!(db.batch_reads.load(Ordering::SeqCst), 2, "two batched reads");
    });
}

#[test]
fn soft_deleted_rows_revived_in_a_batch() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        apply(&e, &db, (1..=N).map(|id| (id, Some(thing(id, id % 3, 1 + id % 2, 1 + id % 3, true)))).collect());
        assert_converged(&e, &db, &ids());
        apply(
            &e,
            &db,
            (1..=N).step_by(2).map(|id| (id, Some(thing(id, id % 3, 1 + id % 2, 1 + id % 3, false)))).collect(),
        );
        assert_converged(&e, &db, &ids());
    });
}

#[test]
fn a_batch_is_one_round_trip_whatever_its_size() {
    on_every_store(|store| {
        let counting = Arc::new(Counting { inner: store.clone(), batches: AtomicUsize::new(0) });
        let shared: Arc<dyn Store> = counting.clone();
        let (e, db) = seeded(&shared);
        let before = counting.batches.load(Ordering::SeqCst);
        // every row changes color: many frames per list, one prepend each
        apply(&e, &db, (1..=N).map(|id| (id, Some(thing(id, id % 3, 1 + id % 2, 1 + (id + 1) % 3, false)))).collect());
        assert_eq!(counting.batches.load(Ordering::SeqCst) - before, 1, "one pipelined batch");
        for (fields, values) in lists(&ids()) {
            assert!(e.raw(&fields, &values).unwrap().1.is_some(), "{fields:?}={values:?} kept in place");
        }
        assert_converged(&e, &db, &ids());
    });
}

/// Another writer changed rows of the batch after it read them: the
/// batch's frames land last, the settle writes the database's state.
#[test]
fn a_batch_landing_after_a_later_writer_is_settled() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let changes: Vec<_> =
            (1..=20).map(|id| db.write(id, Some(thing(id, id % 3, 1 + id % 2, 1 + id % 3, true)))).collect();
        for id in 1..=20 {
            // a later revival and move, whose frames land first
            let (old, new) = db.write(id, Some(thing(id, id % 3, 2 - id % 2, 1 + id % 3, false)));
            e.change(old.as_ref(), new.as_ref(), &db).unwrap();
        }
        let report = e.change_many(&changes, &db).unwrap();
        assert!(report.faults.is_empty());
        assert_converged(&e, &db, &ids());
    });
}

#[test]
fn an_empty_batch_sends_nothing() {
    on_every_store(|store| {
        let counting = Arc::new(Counting { inner: store.clone(), batches: AtomicUsize::new(0) });
        let shared: Arc<dyn Store> = counting.clone();
        let (e, db) = seeded(&shared);
        let before = counting.batches.load(Ordering::SeqCst);
        e.change_many(&[], &db).unwrap();
        assert_eq!(counting.batches.load(Ordering::SeqCst), before);
        assert_eq!(db.batch_reads.load(Ordering::SeqCst), 0);
    });
}

/// Two writers each hand the engine the same insert (an INSERT that ignored
/// the conflict with a concurrent one, then read the row that one inserted).
/// Moved, the model-wide counters would count the row twice; recounted
/// (`change_many_with(.., recount)`), they are deleted and counted afresh.
#[test]
fn an_insert_handed_twice_is_counted_once_when_recounted() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let id = N + 1;
        let insert = db.write(id, Some(thing(id, 1, 1, 1, false)));
        e.change_many(std::slice::from_ref(&insert), &db).unwrap();
        let report = e.change_many_with(&[insert], &db, true).unwrap();
        assert!(report.faults.is_empty(), "{:?}", report.faults);
        assert_converged(&e, &db, &ids());
        // a recounted move between days: both days' counters recounted
        let moved = db.write(1, Some(thing(1, 3, 2, 2, false))); // row 1 was on day 1
        e.change_many_with(&[moved], &db, true).unwrap();
        assert_converged(&e, &db, &ids());
    });
}

/// A delete whose frames all landed in the generation its engine saw
/// before the delete committed skips the read for rows inserted again
/// under their key: such an insert starts a new generation before its
/// frames, so none can be behind the delete's. One that saw a new
/// generation start reads, and re-creates the row inserted again.
#[test]
fn a_delete_reads_for_rows_inserted_again_only_when_a_generation_started_since() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let reads = || db.batch_reads.load(Ordering::SeqCst);
        let seen = e.generation_seen();
        assert!(seen.is_some(), "the seed's reads saw the meta");
        let gone = db.write(1, None);
        let before = reads();
        e.change_many_since(&[gone], &db, false, seen).unwrap();
        assert_eq!(reads(), before, "no generation started: no read");
        assert_converged(&e, &db, &ids());

        let seen = e.generation_seen();
        let gone = db.write(2, None);
        // inserted again under its key after the delete committed; its
        // frames land first, in a new generation
        let back = db.write(2, Some(thing(2, 2, 1, 3, false)));
        e.recreate(back.1.as_ref().unwrap(), &db).unwrap();
        let before = reads();
        e.change_many_since(&[gone], &db, false, seen).unwrap();
        assert!(reads() > before, "a generation started: read");
        assert_converged(&e, &db, &ids());

        // without the generation seen before the commit: always read
        let gone = db.write(3, None);
        let before = reads();
        e.change_many_since(&[gone], &db, false, None).unwrap();
        assert!(reads() > before);
        assert_converged(&e, &db, &ids());
        store.flush_all().unwrap();
    });
}
