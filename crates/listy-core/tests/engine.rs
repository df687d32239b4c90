//! The list protocol against real stores: the embedded store and a real
//! memcached started on a free port. Each race of the protocol has a
//! deterministic interleaving test (a hook pauses the builder and lets a
//! second client write at the worst moment), and a model-based property test
//! checks convergence under random writes, reads and evictions.
#![cfg(unix)] // the memcached these tests start, stop and kill is a Unix process

mod common;

use listy_core::calendar::Period;
use listy_core::codec::{Field, Kind, Row, Schema, Value};
use listy_core::engine::{with_write_tag, Bucket, Engine, HookPoint, ModelCount, Options, Source, Stored};
use listy_core::local::LocalStore;
use listy_core::pool::{MemcachedPool, PoolConfig};
use listy_core::{Op, Store};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const FIELDS: [&str; 4] = ["id", "created", "follower_id", "followee_id"];
const DAY_US: i64 = 86_400_000_000;

/// A tiny database: the truth the cache must converge to.
#[derive(Default)]
struct Db {
    rows: Mutex<BTreeMap<i64, Row>>,
    queries: AtomicUsize,
}

impl Db {
    fn matches(row: &Row, fields: &[String], values: &[Value]) -> bool {
        fields.iter().zip(values).all(|(f, v)| &row[FIELDS.iter().position(|x| x == f).unwrap()] == v)
    }

    fn pks(&self, fields: &[String], values: &[Value]) -> Vec<i64> {
        self.rows(fields, values).unwrap().iter().map(pk).collect()
    }

    fn insert(&self, row: Row) {
        self.rows.lock().unwrap().insert(pk(&row), row);
    }

    fn remove(&self, id: i64) -> Option<Row> {
        self.rows.lock().unwrap().remove(&id)
    }
}

impl Source for Db {
    fn rows(&self, fields: &[String], values: &[Value]) -> listy_core::Result<Vec<Row>> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let rows = self.rows.lock().unwrap();
        Ok(rows.values().rev().filter(|r| Self::matches(r, fields, values)).cloned().collect())
    }

    fn count(&self, fields: &[String], values: &[Value], days: Option<(i32, i32)>) -> listy_core::Result<u64> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let rows = self.rows.lock().unwrap();
        Ok(rows
            .values()
            .filter(|r| Self::matches(r, fields, values))
            .filter(|r| match (days, &r[1]) {
                (Some((s, e)), Value::Datetime(us)) => {
                    let d = us.div_euclid(DAY_US) as i32;
                    s <= d && d < e
                }
                _ => true,
            })
            .count() as u64)
    }

    fn row(&self, id: &Value) -> listy_core::Result<Option<Stored>> {
        let Value::Int(id) = id else { unreachable!() };
        Ok(self.rows.lock().unwrap().get(id).map(|r| Stored::listed(r.clone(), day_of(r))))
    }
}

fn pk(row: &Row) -> i64 {
    match row[0] {
        Value::Int(p) => p,
        _ => unreachable!(),
    }
}

fn follow(id: i64, follower: i64, followee: i64) -> Row {
    // Rows a day apart so the period counters see different buckets.
    vec![
        Value::Int(id),
        Value::Datetime(1_790_000_000_000_000 + id * DAY_US / 3),
        Value::Int(follower),
        Value::Int(followee),
    ]
}

fn day_of(row: &Row) -> Option<i32> {
    match row[1] {
        Value::Datetime(us) => Some(us.div_euclid(DAY_US) as i32),
        _ => None,
    }
}

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("id", Kind::Int, false),
        Field::new("created", Kind::Datetime, false),
        Field::new("follower_id", Kind::Int, false),
        Field::new("followee_id", Kind::Int, false),
    ])
    .unwrap()
}

fn idx(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn all_indexes() -> Vec<Vec<String>> {
    vec![idx(&["id"]), idx(&["follower_id"]), idx(&["followee_id", "follower_id"])]
}

fn engine(store: &Arc<dyn Store>, indexes: Vec<Vec<String>>) -> Engine {
    Engine::new(store.clone(), "t:", "app.Follow", schema(), indexes, Options::default()).unwrap()
}

/// An engine whose lists split into parts after a few records.
fn small_parts_engine(store: &Arc<dyn Store>) -> Engine {
    let options = Options { head_max: 40, head_split: 120, ..Options::default() };
    Engine::new(store.clone(), "t:", "app.Follow", schema(), all_indexes(), options).unwrap()
}

/// Runs `test` on the embedded store and on a real memcached.
fn on_every_store(test: impl Fn(Arc<dyn Store>)) {
    test(Arc::new(LocalStore::new("engine-test", 1 << 20)));
    let server = common::Memcached::start();
    let pool = MemcachedPool::new(PoolConfig::new(vec![server.addr()])).unwrap();
    test(Arc::new(pool));
}

fn list(e: &Engine, db: &Db, fields: &[&str], values: &[i64]) -> (Vec<i64>, bool) {
    let fields = idx(fields);
    let values: Vec<Value> = values.iter().map(|v| Value::Int(*v)).collect();
    let fetched = e.get(&fields, &values, db).unwrap();
    assert!(fetched.complete);
    (pks_of(e, &fields, &fetched), fetched.hit)
}

fn pks_of(e: &Engine, fields: &[String], fetched: &listy_core::engine::Fetched) -> Vec<i64> {
    let layout = e.layout(fields).unwrap();
    let parts: Vec<&[u8]> = fetched.parts.iter().map(Vec::as_slice).collect();
    let view = layout.read_parts(&parts).unwrap();
    assert_eq!(view.ranges(), &fetched.live[..]);
    (0..view.len())
        .map(|i| {
            let mut vals = Vec::new();
            layout.decode_record(view.record(i), &mut vals).unwrap()
        })
        .collect()
}

fn assert_list(e: &Engine, db: &Db, fields: &[&str], values: &[i64]) {
    let expected = db.pks(&idx(fields), &values.iter().map(|v| Value::Int(*v)).collect::<Vec<_>>());
    assert_eq!(list(e, db, fields, values).0, expected, "list {fields:?}={values:?}");
}

#[test]
fn reads_hit_after_a_build_and_see_every_write_at_once() {
    on_every_store(|store| {
        let db = Db::default();
        let a = engine(&store, all_indexes());
        let b = engine(&store, all_indexes());
        for i in 1..=5 {
            db.insert(follow(i, 1, 10 + i));
        }
        assert_eq!(list(&a, &db, &["follower_id"], &[1]), (vec![5, 4, 3, 2, 1], false));
        assert_eq!(list(&b, &db, &["follower_id"], &[1]), (vec![5, 4, 3, 2, 1], true));
        let row = follow(6, 1, 99);
        db.insert(row.clone());
        a.add(&row, day_of(&row), &db).unwrap();
        // The add built its lists nobody had read yet: every read is a hit.
        let queries = db.queries.load(Ordering::SeqCst);
        assert_eq!(list(&b, &db, &["follower_id"], &[1]), (vec![6, 5, 4, 3, 2, 1], true));
        assert_eq!(list(&b, &db, &["id"], &[6]), (vec![6], true));
        assert_eq!(list(&b, &db, &["followee_id", "follower_id"], &[99, 1]), (vec![6], true));
        let gone = db.remove(3).unwrap();
        b.delete(&gone, day_of(&gone), true).unwrap();
        assert_eq!(list(&a, &db, &["follower_id"], &[1]), (vec![6, 5, 4, 2, 1], true));
        assert_eq!(db.queries.load(Ordering::SeqCst), queries, "no database query after the build");
        store.flush_all().unwrap();
    });
}

/// The bucket of `period` that holds `day` (days in UTC, as `Db` counts them).
fn bucket(period: Period, day: i32) -> Bucket {
    let (s, e) = (period.start(day), period.end(day));
    Bucket { days: (s, e), micros: (s as i64 * DAY_US, e as i64 * DAY_US) }
}

#[test]
fn counts_are_built_once_and_follow_writes() {
    on_every_store(|store| {
        let db = Db::default();
        let e = engine(&store, all_indexes());
        for i in 1..=9 {
            db.insert(follow(i, 1 + i % 2, 50));
        }
        let f = idx(&["follower_id"]);
        assert_eq!(e.count(&f, &[Value::Int(1)], &db).unwrap(), 4);
        assert_eq!(e.count(&[], &[], &db).unwrap(), 9);
        let row = follow(10, 1, 51);
        db.insert(row.clone());
        e.add(&row, day_of(&row), &db).unwrap();
        let q = db.queries.load(Ordering::SeqCst);
        assert_eq!(e.count(&f, &[Value::Int(1)], &db).unwrap(), 5);
        assert_eq!(e.count(&[], &[], &db).unwrap(), 10);
        let day = day_of(&row).unwrap();
        for period in Period::ALL {
            for (fields, values) in [(f.clone(), vec![Value::Int(1)]), (vec![], vec![])] {
                let want = db.count(&fields, &values, Some((period.start(day), period.end(day)))).unwrap();
                let got = e.period_counts(&fields, &values, period, "created", &[bucket(period, day)], &db).unwrap();
                assert_eq!(got, vec![want], "{period:?} {fields:?}");
            }
        }
        let q_periods = db.queries.load(Ordering::SeqCst);
        // 8 of the test's own, one per new model-wide bucket, none for the list's
        assert_eq!(q_periods - q, 8 + 4);
        let gone = db.remove(10).unwrap();
        e.delete(&gone, day_of(&gone), true).unwrap();
        let week = bucket(Period::Week, day);
        let want = db.count(&f, &[Value::Int(1)], Some(week.days)).unwrap();
        let q = db.queries.load(Ordering::SeqCst);
        let after = e.period_counts(&f, &[Value::Int(1)], Period::Week, "created", &[week], &db).unwrap();
        assert_eq!(after, vec![want]);
        assert_eq!(e.count(&f, &[Value::Int(1)], &db).unwrap(), 4);
        assert_eq!(db.queries.load(Ordering::SeqCst), q);
        store.flush_all().unwrap();
    });
}

/// A list in segments is counted from its head's index (and the segments
/// its prepends may shadow): right after every kind of write, with no
/// database query and no cached count to trust.
#[test]
fn counts_of_a_list_in_segments_come_from_the_head_index() {
    on_every_store(|store| {
        let db = Db::default();
        let e = small_parts_engine(&store);
        for i in 1..=40 {
            db.insert(follow(i, 1, 100 + i));
        }
        let f = idx(&["follower_id"]);
        assert_eq!(e.count(&f, &[Value::Int(1)], &db).unwrap(), 40); // built
        assert_eq!(e.count(&f, &[Value::Int(1)], &db).unwrap(), 40);
        let (key, _) = e.raw(&f, &[Value::Int(1)]).unwrap();
        assert!(store.get(&format!("{key}#n")).unwrap().is_none(), "no count is kept beside it");
        let row = follow(41, 1, 141);
        db.insert(row.clone());
        e.add(&row, day_of(&row), &db).unwrap();
        assert_eq!(e.count(&f, &[Value::Int(1)], &db).unwrap(), 41);
        // Deletes of a row in the head, of one in a segment, twice; an
        // update of a row in a segment.
        for pk in [41, 3, 3, 20] {
            if let Some(gone) = db.remove(pk) {
                e.delete(&gone, day_of(&gone), true).unwrap();
            } else {
                e.delete(&follow(pk, 1, 100 + pk), None, true).unwrap();
            }
        }
        let moved = follow(7, 1, 999);
        let old = db.remove(7).unwrap();
        db.insert(moved.clone());
        e.update(&old, day_of(&old), &moved, day_of(&moved), &db).unwrap();
        let q = db.queries.load(Ordering::SeqCst);
        assert_eq!(e.count(&f, &[Value::Int(1)], &db).unwrap(), 38);
        assert_eq!(db.queries.load(Ordering::SeqCst), q, "counted from the cache alone");
        assert_eq!(db.count(&f, &[Value::Int(1)], None).unwrap(), 38);
        store.flush_all().unwrap();
    });
}

/// Build vs add: a row committed and prepended while the builder holds a
/// database snapshot without it. The stale build must not be stored.
#[test]
fn race_build_vs_add_never_stores_the_stale_snapshot() {
    on_every_store(|store| {
        let db = Arc::new(Db::default());
        db.insert(follow(1, 1, 2));
        let writer = Arc::new(engine(&store, all_indexes()));
        // The writer must know the list is registered: a first reader builds it.
        list(&writer, &db, &["follower_id"], &[1]);
        store.flush_all().unwrap();
        let mut builder = engine(&store, all_indexes());
        let fired = Arc::new(AtomicUsize::new(0));
        let (db2, w2, f2) = (db.clone(), writer.clone(), fired.clone());
        builder.set_hook(Arc::new(move |point, _key| {
            if point == HookPoint::BeforeStore && f2.fetch_add(1, Ordering::SeqCst) == 0 {
                let row = follow(2, 1, 3);
                db2.insert(row.clone());
                w2.add(&row, day_of(&row), &*db2).unwrap();
            }
        }));
        let (pks, _) = list(&builder, &db, &["follower_id"], &[1]);
        assert_eq!(pks, vec![2, 1]);
        assert_eq!(list(&writer, &db, &["follower_id"], &[1]), (vec![2, 1], true));
        assert!(fired.load(Ordering::SeqCst) >= 2, "the builder retried after losing the CAS");
        store.flush_all().unwrap();
    });
}

/// Build vs delete: the row leaves the database after the builder's read.
#[test]
fn race_build_vs_delete_never_resurrects_the_row() {
    on_every_store(|store| {
        let db = Arc::new(Db::default());
        db.insert(follow(1, 1, 2));
        db.insert(follow(2, 1, 3));
        let writer = Arc::new(engine(&store, all_indexes()));
        list(&writer, &db, &["follower_id"], &[1]);
        store.flush_all().unwrap();
        let mut builder = engine(&store, all_indexes());
        let (db2, w2, fired) = (db.clone(), writer.clone(), Arc::new(AtomicUsize::new(0)));
        let f2 = fired.clone();
        builder.set_hook(Arc::new(move |point, _| {
            if point == HookPoint::BeforeStore && f2.fetch_add(1, Ordering::SeqCst) == 0 {
                let gone = db2.remove(2).unwrap();
                w2.delete(&gone, day_of(&gone), true).unwrap();
            }
        }));
        assert_eq!(list(&builder, &db, &["follower_id"], &[1]).0, vec![1]);
        assert_eq!(list(&writer, &db, &["follower_id"], &[1]), (vec![1], true));
        store.flush_all().unwrap();
    });
}

/// Add vs delete of one row whose cache updates arrive in the opposite order
/// of the database's: the hard tombstone wins wherever it is.
#[test]
fn race_add_vs_delete_of_one_row_ends_as_the_database_did() {
    on_every_store(|store| {
        let db = Db::default();
        db.insert(follow(1, 1, 2));
        let a = engine(&store, all_indexes());
        let b = engine(&store, all_indexes());
        list(&a, &db, &["follower_id"], &[1]);
        // Database: insert 2, then delete 2. Cache: the delete arrives first.
        let row = follow(2, 1, 3);
        b.delete(&row, day_of(&row), true).unwrap();
        a.add(&row, day_of(&row), &db).unwrap();
        assert_eq!(list(&a, &db, &["follower_id"], &[1]), (vec![1], true));
        store.flush_all().unwrap();
    });
}

/// Compaction vs add: an add landing between the compactor's read and its
/// `cas` must survive.
#[test]
fn race_compaction_vs_add_keeps_the_add() {
    on_every_store(|store| {
        let db = Arc::new(Db::default());
        let writer = Arc::new(engine(&store, all_indexes()));
        for i in 1..=40 {
            db.insert(follow(i, 1, i));
        }
        list(&writer, &db, &["follower_id"], &[1]);
        for i in 1..=30 {
            let gone = db.remove(i).unwrap();
            writer.delete(&gone, None, true).unwrap();
        }
        let mut reader = engine(&store, all_indexes());
        let (db2, w2) = (db.clone(), writer.clone());
        let fired = Arc::new(AtomicUsize::new(0));
        let f2 = fired.clone();
        reader.set_hook(Arc::new(move |point, _| {
            if point == HookPoint::BeforeCompact && f2.fetch_add(1, Ordering::SeqCst) == 0 {
                let row = follow(41, 1, 41);
                db2.insert(row.clone());
                w2.add(&row, None, &*db2).unwrap();
            }
        }));
        list(&reader, &db, &["follower_id"], &[1]);
        assert_eq!(fired.load(Ordering::SeqCst), 1, "compaction was attempted");
        // The next read compacts for real: the value shrinks, the list stays.
        let key = writer.key(&idx(&["follower_id"]), &[Value::Int(1)]).unwrap();
        let before = store.get(&key).unwrap().unwrap().value.len();
        assert_list(&writer, &db, &["follower_id"], &[1]);
        let after = store.get(&key).unwrap().unwrap().value.len();
        assert!(after < before, "compacted {before} -> {after}");
        assert_list(&writer, &db, &["follower_id"], &[1]);
        store.flush_all().unwrap();
    });
}

/// Counter build vs incr, both orders: a row committed before the count is
/// taken whose write reaches the cache after it was stored, and a row
/// committed and written while the count is being built. Neither may count
/// it twice or miss it.
#[test]
fn race_count_build_vs_write_in_flight_is_never_off_by_one() {
    on_every_store(|store| {
        let db = Arc::new(Db::default());
        db.insert(follow(1, 1, 2));
        let writer = Arc::new(engine(&store, all_indexes()));
        let mut builder = engine(&store, all_indexes());
        let in_flight: Arc<Mutex<Vec<Row>>> = Arc::default();
        let (db2, w2, pending) = (db.clone(), writer.clone(), in_flight.clone());
        let fired = Arc::new(AtomicUsize::new(0));
        let f2 = fired.clone();
        builder.set_hook(Arc::new(move |point, _| {
            if point != HookPoint::LeaseTaken {
                return;
            }
            if f2.fetch_add(1, Ordering::SeqCst) > 0 {
                return;
            }
            // committed before the builder reads; its cache write comes later
            let late = follow(2, 1, 3);
            db2.insert(late.clone());
            pending.lock().unwrap().push(late);
            // committed and written while the builder holds the lease
            let row = follow(3, 1, 4);
            db2.insert(row.clone());
            w2.add(&row, day_of(&row), &*db2).unwrap();
        }));
        let f = idx(&["follower_id"]);
        let first = builder.count(&f, &[Value::Int(1)], &*db).unwrap();
        assert!(fired.load(Ordering::SeqCst) >= 1);
        assert_eq!(first, 3);
        for row in in_flight.lock().unwrap().drain(..) {
            writer.add(&row, day_of(&row), &*db).unwrap();
        }
        assert_eq!(writer.count(&f, &[Value::Int(1)], &*db).unwrap(), 3);
        assert_eq!(builder.count(&f, &[Value::Int(1)], &*db).unwrap(), 3);
        store.flush_all().unwrap();
    });
}

/// A value without a valid trailer (garbage, truncated, a marker that
/// received prepends) is a miss, rebuilt from the database.
#[test]
fn incomplete_or_garbage_values_are_misses() {
    on_every_store(|store| {
        let db = Db::default();
        db.insert(follow(1, 1, 2));
        db.insert(follow(2, 1, 3));
        let e = engine(&store, all_indexes());
        list(&e, &db, &["follower_id"], &[1]);
        let key = e.key(&idx(&["follower_id"]), &[Value::Int(1)]).unwrap();
        let good = store.get(&key).unwrap().unwrap().value;
        for bad in [b"garbage".to_vec(), good[..good.len() - 3].to_vec(), good[3..].to_vec(), vec![]] {
            store.one(Op::Set { key: key.clone(), value: bad }).unwrap();
            assert_eq!(list(&e, &db, &["follower_id"], &[1]), (vec![2, 1], false));
            assert_eq!(list(&e, &db, &["follower_id"], &[1]), (vec![2, 1], true));
        }
        store.flush_all().unwrap();
    });
}

/// A prepend that would pass the item size limit must not leave the old
/// value (without the new record) behind.
#[test]
fn a_list_that_outgrows_the_item_limit_is_never_served_without_the_write() {
    let store: Arc<dyn Store> = Arc::new(LocalStore::new("tiny", 300));
    let db = Db::default();
    let e = engine(&store, all_indexes());
    for i in 1..=25 {
        db.insert(follow(i, 1, i));
    }
    list(&e, &db, &["follower_id"], &[1]);
    for i in 26..=40 {
        let row = follow(i, 1, i);
        db.insert(row.clone());
        let report = e.add(&row, None, &db).unwrap();
        assert!(report.failed_keys.is_empty(), "{report:?}");
        assert_list(&e, &db, &["follower_id"], &[1]);
    }
}

/// Clients declaring different indexes keep each other's lists right.
#[test]
fn clients_with_different_indexes_update_each_others_lists() {
    on_every_store(|store| {
        let db = Db::default();
        db.insert(follow(1, 1, 2));
        let by_followee = engine(&store, vec![idx(&["followee_id"])]);
        let by_follower = engine(&store, vec![idx(&["follower_id"])]);
        assert_eq!(list(&by_followee, &db, &["followee_id"], &[2]).0, vec![1]);
        let row = follow(2, 7, 2);
        db.insert(row.clone());
        by_follower.add(&row, None, &db).unwrap();
        assert_eq!(list(&by_followee, &db, &["followee_id"], &[2]), (vec![2, 1], true));
        let mut reg = by_follower.registered_indexes().unwrap();
        reg.sort();
        assert_eq!(reg, vec![idx(&["followee_id"]), idx(&["follower_id"])]);
        store.flush_all().unwrap();
    });
}

/// `flush` drops every list at once; an evicted meta never revives an old
/// generation's lists.
#[test]
fn flush_and_meta_eviction_never_serve_old_lists() {
    on_every_store(|store| {
        let db = Db::default();
        db.insert(follow(1, 1, 2));
        let a = engine(&store, all_indexes());
        let b = engine(&store, all_indexes());
        list(&a, &db, &["follower_id"], &[1]);
        list(&b, &db, &["follower_id"], &[1]);
        // Change the database behind Listy's back, then flush.
        db.insert(follow(2, 1, 3));
        a.flush().unwrap();
        assert_eq!(list(&b, &db, &["follower_id"], &[1]), (vec![2, 1], false));
        // Evict the meta: b's remembered generation must not be trusted.
        db.insert(follow(3, 1, 4));
        store.one(Op::Delete { key: listy_core::keys::meta_key("t:", "app.Follow") }).unwrap();
        assert_eq!(list(&b, &db, &["follower_id"], &[1]).0, vec![3, 2, 1]);
        store.flush_all().unwrap();
    });
}

/// A list of 20 MB on a memcached with the default 1 MB item limit: stored
/// in segments, read in one batch, updated by prepends to its head, and a
/// reader of the newest records fetches the head only.
#[test]
fn a_20_mb_list_is_stored_in_segments_and_stays_right() {
    let server = common::Memcached::with_args(&["-m", "256"]);
    let store: Arc<dyn Store> = Arc::new(MemcachedPool::new(PoolConfig::new(vec![server.addr()])).unwrap());
    let db = Db::default();
    {
        let mut rows = db.rows.lock().unwrap();
        for i in 1..=1_700_000 {
            rows.insert(i, follow(i, 1, i % 1000));
        }
    }
    let e = engine(&store, all_indexes());
    let f = idx(&["follower_id"]);
    let built = e.get(&f, &[Value::Int(1)], &db).unwrap();
    let bytes: usize = built.parts.iter().map(Vec::len).sum();
    assert!(bytes > 20_000_000, "{bytes} bytes");
    assert!(built.parts.len() > 20, "{} parts", built.parts.len());
    let hit = e.get(&f, &[Value::Int(1)], &db).unwrap();
    assert!(hit.hit && hit.complete);
    assert_eq!(hit.live.len(), 1_700_000);
    let row = follow(1_700_001, 1, 5);
    db.insert(row.clone());
    e.add(&row, None, &db).unwrap();
    let head = e.get_multi(&[(f.clone(), vec![Value::Int(1)])], &db, false).unwrap().pop().unwrap();
    assert!(!head.complete && head.hit);
    assert_eq!(head.parts.len(), 1);
    assert_eq!(pks_of(&e, &f, &head)[..3], [1_700_001, 1_700_000, 1_699_999]);
    let full = e.complete_list(&f, &[Value::Int(1)], &head, &db).unwrap();
    assert_eq!(full.live.len(), 1_700_001);
    // A segment evicted: the list is a miss and is rebuilt, never served short.
    store
        .one(Op::Delete {
            key: listy_core::keys::segment_key(&full.key, e.layout(&f).unwrap().part_id(&full.parts[0]), 3),
        })
        .unwrap();
    let rebuilt = e.get(&f, &[Value::Int(1)], &db).unwrap();
    assert!(!rebuilt.hit);
    assert_eq!(rebuilt.live.len(), 1_700_001);
}

mod model {
    //! Random operations from several clients with random evictions; at
    //! quiescence every list and counter equals the database.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Add { client: usize, follower: i64, followee: i64 },
        Delete { client: usize, pick: usize },
        Move { client: usize, pick: usize, followee: i64 },
        Read { client: usize, follower: i64 },
        Count { client: usize, follower: i64 },
        Evict { follower: i64 },
        EvictPair { follower: i64, followee: i64 },
        EvictMeta,
        Flush { client: usize },
    }

    fn pk_value(v: &Value) -> i64 {
        match v {
            Value::Int(i) => *i,
            _ => unreachable!(),
        }
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3usize, 1..4i64, 1..5i64).prop_map(|(client, follower, followee)| Step::Add { client, follower, followee }),
            2 => (0..3usize, any::<usize>()).prop_map(|(client, pick)| Step::Delete { client, pick }),
            1 => (0..3usize, any::<usize>(), 1..5i64).prop_map(|(client, pick, followee)| Step::Move { client, pick, followee }),
            3 => (0..3usize, 1..4i64).prop_map(|(client, follower)| Step::Read { client, follower }),
            2 => (0..3usize, 1..4i64).prop_map(|(client, follower)| Step::Count { client, follower }),
            1 => (1..4i64).prop_map(|follower| Step::Evict { follower }),
            1 => (1..4i64, 1..5i64).prop_map(|(follower, followee)| Step::EvictPair { follower, followee }),
            1 => Just(Step::EvictMeta),
            1 => (0..3usize).prop_map(|client| Step::Flush { client }),
        ]
    }

    fn run(store: Arc<dyn Store>, steps: &[Step]) -> std::result::Result<(), TestCaseError> {
        run_with(store, steps, |s| engine(s, all_indexes()), false)
    }

    /// The database holds each (follower, followee) pair once, and the
    /// clients know it: the pair lists hold one row at most.
    fn run_unique(store: Arc<dyn Store>, steps: &[Step]) -> std::result::Result<(), TestCaseError> {
        let make = |s: &Arc<dyn Store>| {
            let mut e = engine(s, all_indexes());
            e.set_unique(vec![idx(&["followee_id", "follower_id"])]).unwrap();
            e
        };
        run_with(store, steps, make, true)
    }

    fn run_with(
        store: Arc<dyn Store>,
        steps: &[Step],
        make: impl Fn(&Arc<dyn Store>) -> Engine,
        unique_pairs: bool,
    ) -> std::result::Result<(), TestCaseError> {
        let taken = |db: &Db, follower: i64, followee: i64| {
            unique_pairs
                && !db
                    .pks(&idx(&["followee_id", "follower_id"]), &[Value::Int(followee), Value::Int(follower)])
                    .is_empty()
        };
        store.flush_all().unwrap();
        let db = Db::default();
        let clients: Vec<Engine> = (0..3).map(|_| make(&store)).collect();
        let mut next_id = 1;
        let f = idx(&["follower_id"]);
        for s in steps {
            match *s {
                Step::Add { client, follower, followee } => {
                    if taken(&db, follower, followee) {
                        continue;
                    }
                    let row = follow(next_id, follower, followee);
                    next_id += 1;
                    db.insert(row.clone());
                    clients[client].add(&row, day_of(&row), &db).unwrap();
                }
                Step::Delete { client, pick } => {
                    let id = { db.rows.lock().unwrap().keys().copied().nth(pick % (next_id as usize)) };
                    if let Some(row) = id.and_then(|id| db.remove(id)) {
                        clients[client].delete(&row, day_of(&row), true).unwrap();
                    }
                }
                Step::Move { client, pick, followee } => {
                    let old = { db.rows.lock().unwrap().values().nth(pick % (next_id as usize)).cloned() };
                    if let Some(old) = old.filter(|o| !taken(&db, pk_value(&o[2]), followee)) {
                        let mut new = old.clone();
                        new[3] = Value::Int(followee);
                        db.insert(new.clone());
                        clients[client].update(&old, day_of(&old), &new, day_of(&new), &db).unwrap();
                    }
                }
                Step::Read { client, follower } => {
                    let got = list(&clients[client], &db, &["follower_id"], &[follower]).0;
                    prop_assert_eq!(got, db.pks(&f, &[Value::Int(follower)]));
                }
                Step::Count { client, follower } => {
                    let got = clients[client].count(&f, &[Value::Int(follower)], &db).unwrap();
                    prop_assert_eq!(got, db.count(&f, &[Value::Int(follower)], None).unwrap());
                }
                Step::Evict { follower } => {
                    let key = clients[0].key(&f, &[Value::Int(follower)]).unwrap();
                    store.one(Op::Delete { key }).unwrap();
                }
                Step::EvictPair { follower, followee } => {
                    let key = clients[0]
                        .key(&idx(&["followee_id", "follower_id"]), &[Value::Int(followee), Value::Int(follower)])
                        .unwrap();
                    store.one(Op::Delete { key }).unwrap();
                }
                Step::EvictMeta => {
                    store.one(Op::Delete { key: listy_core::keys::meta_key("t:", "app.Follow") }).unwrap();
                }
                Step::Flush { client } => clients[client].flush().unwrap(),
            }
        }
        for c in &clients {
            for follower in 1..4 {
                prop_assert_eq!(list(c, &db, &["follower_id"], &[follower]).0, db.pks(&f, &[Value::Int(follower)]));
                prop_assert_eq!(
                    c.count(&f, &[Value::Int(follower)], &db).unwrap(),
                    db.count(&f, &[Value::Int(follower)], None).unwrap()
                );
                for followee in 1..5 {
                    let ff = idx(&["followee_id", "follower_id"]);
                    let vals = [Value::Int(followee), Value::Int(follower)];
                    // A row moved into a list by an update is listed first, like
                    // an add ("loose" order, SPEC §2): compare as sets here.
                    let fetched = c.get(&ff, &vals, &db).unwrap();
                    let mut got = pks_of(c, &ff, &fetched);
                    got.sort_unstable();
                    let mut want = db.pks(&ff, &vals);
                    want.sort_unstable();
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert_eq!(c.count(&[], &[], &db).unwrap(), db.rows.lock().unwrap().len() as u64);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn random_clients_converge_on_the_embedded_store(steps in proptest::collection::vec(step(), 1..60)) {
            run(Arc::new(LocalStore::new("model", 1 << 20)), &steps)?;
        }

        #[test]
        fn random_clients_converge_on_lists_split_into_segments(steps in proptest::collection::vec(step(), 1..80)) {
            // Items of 1,200 bytes: lists of more than ~100 records are segmented.
            run_with(Arc::new(LocalStore::new("model-parts", 1200)), &steps, super::small_parts_engine, false)?;
        }

        #[test]
        fn random_clients_converge_with_unique_pairs(steps in proptest::collection::vec(step(), 1..60)) {
            run_unique(Arc::new(LocalStore::new("model-unique", 1 << 20)), &steps)?;
        }
    }

    #[test]
    fn random_clients_converge_on_memcached() {
        let server = common::Memcached::start();
        let store: Arc<dyn Store> = Arc::new(MemcachedPool::new(PoolConfig::new(vec![server.addr()])).unwrap());
        let mut runner =
            proptest::test_runner::TestRunner::new(ProptestConfig { cases: 24, ..ProptestConfig::default() });
        runner.run(&proptest::collection::vec(step(), 1..60), |steps| run(store.clone(), &steps)).unwrap();
        runner.run(&proptest::collection::vec(step(), 1..60), |steps| run_unique(store.clone(), &steps)).unwrap();
    }
}

/// A partition (memcached stopped, then resumed with its old memory): reads
/// fall back to the database during it, writes report every key they could
/// not update, and once those are repaired no list misses a write.
#[test]
fn a_partition_never_leaves_a_stale_list_once_failed_keys_are_repaired() {
    let server = common::Memcached::start();
    let mut cfg = PoolConfig::new(vec![server.addr()]);
    cfg.timeout = std::time::Duration::from_millis(150);
    cfg.connect_timeout = std::time::Duration::from_millis(150);
    cfg.retry_dead_after = std::time::Duration::from_millis(50);
    let store: Arc<dyn Store> = Arc::new(MemcachedPool::new(cfg).unwrap());
    let db = Db::default();
    db.insert(follow(1, 1, 2));
    let e = engine(&store, all_indexes());
    let f = idx(&["follower_id"]);
    assert_eq!(list(&e, &db, &["follower_id"], &[1]).0, vec![1]);
    assert_eq!(e.count(&f, &[Value::Int(1)], &db).unwrap(), 1);

    server.pause();
    let row = follow(2, 1, 3);
    db.insert(row.clone());
    let report = e.add(&row, day_of(&row), &db).unwrap();
    let list_key = e.key(&f, &[Value::Int(1)]);
    assert!(list_key.is_err(), "the server is unreachable");
    assert!(!report.failed_keys.is_empty() && !report.faults.is_empty());
    let during = e.get(&f, &[Value::Int(1)], &db).unwrap();
    assert!(during.fault.is_some() && !during.hit);
    assert_eq!(pks_of(&e, &f, &during), vec![2, 1], "reads fall back to the database");
    server.resume();
    std::thread::sleep(std::time::Duration::from_millis(100));

    // The server still holds the list without row 2: it must be repaired first.
    let key = e.key(&f, &[Value::Int(1)]).unwrap();
    assert!(report.failed_keys.contains(&key), "{key} not in {:?}", report.failed_keys);
    assert!(e.repair(&report.failed_keys).is_empty());
    assert_eq!(list(&e, &db, &["follower_id"], &[1]).0, vec![2, 1]);
    assert_eq!(e.count(&f, &[Value::Int(1)], &db).unwrap(), 2);
}

/// After the store lost everything (restart, `flush_all`), an add by a client
/// that remembers the old registry still registers and builds its lists.
#[test]
fn an_add_after_the_store_was_emptied_builds_every_list() {
    on_every_store(|store| {
        let db = Db::default();
        let e = engine(&store, all_indexes());
        db.insert(follow(1, 1, 2));
        e.add(&follow(1, 1, 2), None, &db).unwrap();
        store.flush_all().unwrap();
        let row = follow(2, 1, 3);
        db.insert(row.clone());
        e.add(&row, None, &db).unwrap();
        let queries = db.queries.load(Ordering::SeqCst);
        assert_eq!(list(&e, &db, &["follower_id"], &[1]), (vec![2, 1], true));
        assert_eq!(list(&e, &db, &["id"], &[2]), (vec![2], true));
        assert_eq!(db.queries.load(Ordering::SeqCst), queries);
        store.flush_all().unwrap();
    });
}

/// A new row's primary-key list is stored whole from the row (no database
/// read), and a hard delete leaves it empty for good, whichever of the two
/// cache updates arrives first.
#[test]
fn unique_lists_are_written_whole_and_deletes_win_in_any_order() {
    on_every_store(|store| {
        let db = Db::default();
        db.insert(follow(1, 1, 2));
        let e = engine(&store, all_indexes());
        list(&e, &db, &["follower_id"], &[1]);
        list(&e, &db, &["followee_id", "follower_id"], &[3, 1]);
        let row = follow(2, 1, 3);
        db.insert(row.clone());
        let before = db.queries.load(Ordering::SeqCst);
        e.add(&row, day_of(&row), &db).unwrap();
        assert_eq!(db.queries.load(Ordering::SeqCst), before, "an add on cached lists reads nothing");
        assert_eq!(list(&e, &db, &["id"], &[2]), (vec![2], true));
        // Delete's update first, then the (late) add's.
        let late = follow(3, 1, 4);
        e.delete(&late, day_of(&late), true).unwrap();
        e.add(&late, day_of(&late), &db).unwrap();
        assert_eq!(list(&e, &db, &["id"], &[3]), (vec![], true));
        assert_eq!(list(&e, &db, &["follower_id"], &[1]).0, vec![2, 1]);
        store.flush_all().unwrap();
    });
}

/// Lists whose key fixes a unique pair are written as any list: a write
/// never stores one whole, since by the time it lands another row may hold
/// the pair (its frames in a value this write never sees). A later row with
/// the pair shows whatever order the writes' updates arrive in.
#[test]
fn lists_of_a_unique_pair_are_built_and_a_reused_pair_shows() {
    on_every_store(|store| {
        let db = Db::default();
        let mut e = engine(&store, all_indexes());
        e.set_unique(vec![idx(&["followee_id", "follower_id"])]).unwrap();
        let pair = ["followee_id", "follower_id"];
        let pair_key = || e.key(&idx(&pair), &[Value::Int(2), Value::Int(1)]).unwrap();

        list(&e, &db, &["follower_id"], &[1]); // cached: the pair list is the only one missing
        let first = follow(1, 1, 2);
        db.insert(first.clone());
        e.add(&first, day_of(&first), &db).unwrap();
        assert_eq!(list(&e, &db, &pair, &[2, 1]), (vec![1], true), "built by the add");

        // The pair is deleted and taken again; the new row's update arrives first.
        let second = follow(2, 1, 2);
        db.remove(1);
        db.insert(second.clone());
        e.add(&second, day_of(&second), &db).unwrap();
        e.delete(&first, day_of(&first), true).unwrap();
        assert_eq!(list(&e, &db, &pair, &[2, 1]).0, vec![2]);

        // The other order, on a list not cached: the delete leaves it missing.
        store.one(Op::Delete { key: pair_key() }).unwrap();
        let third = follow(3, 1, 2);
        db.remove(2);
        db.insert(third.clone());
        e.delete(&second, day_of(&second), true).unwrap();
        assert!(store.get(&pair_key()).unwrap().is_none(), "not stored empty");
        e.add(&third, day_of(&third), &db).unwrap();
        assert_eq!(list(&e, &db, &pair, &[2, 1]), (vec![3], true));

        // A soft delete (the row stays, unlisted) on a list not cached.
        store.one(Op::Delete { key: pair_key() }).unwrap();
        db.remove(3);
        e.delete(&third, day_of(&third), false).unwrap();
        assert_eq!(list(&e, &db, &pair, &[2, 1]), (vec![], false));
        // Revived: listed again.
        db.insert(third.clone());
        e.add(&third, day_of(&third), &db).unwrap();
        assert_eq!(list(&e, &db, &pair, &[2, 1]).0, vec![3]);
        assert_list(&e, &db, &["follower_id"], &[1]);
        store.flush_all().unwrap();
    });
}

/// Found by the Friend stress on MariaDB: a row's delete lands late on a
/// unique pair's list that is missing (a new generation, an eviction),
/// after another row took the pair and that row's frames went to the value
/// that is gone. The delete used to store the list whole, holding only its
/// tombstone: the live row stayed hidden for good. Likewise a late insert
/// of a row whose pair another row holds now.
#[test]
fn a_late_write_on_a_missing_unique_list_does_not_hide_the_row_holding_the_pair() {
    on_every_store(|store| {
        let db = Db::default();
        let mut e = engine(&store, all_indexes());
        e.set_unique(vec![idx(&["followee_id", "follower_id"])]).unwrap();
        let pair = ["followee_id", "follower_id"];
        let pair_key = || e.key(&idx(&pair), &[Value::Int(2), Value::Int(1)]).unwrap();
        let gone = follow(1, 1, 2);
        let holder = follow(2, 1, 2);
        db.insert(holder.clone()); // `gone` was deleted, `holder` took the pair
        e.add(&holder, day_of(&holder), &db).unwrap();
        assert_eq!(list(&e, &db, &pair, &[2, 1]).0, vec![2]);
        store.one(Op::Delete { key: pair_key() }).unwrap(); // evicted (or a new generation)
        e.delete(&gone, day_of(&gone), true).unwrap(); // the late delete
        assert_eq!(list(&e, &db, &pair, &[2, 1]).0, vec![2], "the late tombstone hid the holder");

        store.one(Op::Delete { key: pair_key() }).unwrap();
        e.add(&gone, day_of(&gone), &db).unwrap(); // a late insert of the deleted row
        e.delete(&gone, day_of(&gone), true).unwrap(); // and its settle's burial
        assert_eq!(list(&e, &db, &pair, &[2, 1]).0, vec![2], "the late insert's list hid the holder");
        store.flush_all().unwrap();
    });
}

/// The model-wide counters' known gap, bounded: a counter built while a
/// committed write's `incr` is in flight counts that row twice, until its
/// epoch ends and it is counted afresh.
#[test]
fn a_model_wide_counter_off_after_a_race_is_right_again_next_epoch() {
    const EPOCH_MS: u64 = 400;
    on_every_store(|store| {
        let db = Db::default();
        db.insert(follow(1, 1, 2));
        let options = Options { counter_epoch: std::time::Duration::from_millis(EPOCH_MS), ..Options::default() };
        let e = Engine::new(store.clone(), "t:", "app.Follow", schema(), all_indexes(), options).unwrap();
        // Start at the beginning of an epoch, so that the race below fits in it.
        let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        std::thread::sleep(std::time::Duration::from_millis(EPOCH_MS - now() % EPOCH_MS + 5));
        // A write committed before the COUNT whose incr arrives after it.
        struct CommitFirst<'a>(&'a Db, Mutex<Option<Row>>);
        impl Source for CommitFirst<'_> {
            fn rows(&self, f: &[String], v: &[Value]) -> listy_core::Result<Vec<Row>> {
                self.0.rows(f, v)
            }
            fn count(&self, f: &[String], v: &[Value], d: Option<(i32, i32)>) -> listy_core::Result<u64> {
                if let Some(row) = self.1.lock().unwrap().take() {
                    self.0.insert(row);
                }
                self.0.count(f, v, d)
            }
            fn row(&self, pk: &Value) -> listy_core::Result<Option<Stored>> {
                self.0.row(pk)
            }
        }
        let row = follow(2, 1, 3);
        let racing = CommitFirst(&db, Mutex::new(Some(row.clone())));
        assert_eq!(e.count(&[], &[], &racing).unwrap(), 2);
        e.add(&row, day_of(&row), &db).unwrap();
        assert_eq!(e.count(&[], &[], &db).unwrap(), 3, "the known gap: counted twice");
        std::thread::sleep(std::time::Duration::from_millis(EPOCH_MS + 10));
        assert_eq!(e.count(&[], &[], &db).unwrap(), 2, "a new epoch counts afresh");
        store.flush_all().unwrap();
    });
}

/// A source whose model-wide count commits a row first and reports its
/// write (tag `tag`) as in flight, as Django's intents table does.
struct CommitsFirst<'a> {
    db: &'a Db,
    row: Mutex<Option<Row>>,
    tag: u64,
}

impl Source for CommitsFirst<'_> {
    fn rows(&self, f: &[String], v: &[Value]) -> listy_core::Result<Vec<Row>> {
        self.db.rows(f, v)
    }
    fn count(&self, f: &[String], v: &[Value], d: Option<(i32, i32)>) -> listy_core::Result<u64> {
        self.db.count(f, v, d)
    }
    fn model_count(&self, d: Option<(i32, i32)>) -> listy_core::Result<ModelCount> {
        let in_flight = match self.row.lock().unwrap().take() {
            Some(row) => {
                self.db.insert(row);
                vec![self.tag]
            }
            None => vec![],
        };
        Ok(ModelCount { rows: self.db.count(&[], &[], d)?, in_flight })
    }
    fn row(&self, pk: &Value) -> listy_core::Result<Option<Stored>> {
        self.db.row(pk)
    }
}

/// The race the epoch used to bound, closed: a counter (and its day
/// bucket) built after a write committed but before its tagged move landed
/// counts the row once, and later writes move it as usual.
#[test]
fn a_model_wide_counter_built_while_a_tagged_write_is_in_flight_counts_it_once() {
    on_every_store(|store| {
        let db = Db::default();
        db.insert(follow(1, 1, 2));
        let e = engine(&store, all_indexes());
        let row = follow(2, 1, 3);
        let day = day_of(&row).unwrap();
        let racing = CommitsFirst { db: &db, row: Mutex::new(Some(row.clone())), tag: 7 };
        assert_eq!(e.count(&[], &[], &racing).unwrap(), 2);
        with_write_tag(7, || e.add(&row, Some(day), &db)).unwrap();
        assert_eq!(e.count(&[], &[], &db).unwrap(), 2, "the in-flight move is in the count already");
        let later = follow(3, 1, 4);
        db.insert(later.clone());
        with_write_tag(8, || e.add(&later, day_of(&later), &db)).unwrap();
        db.remove(1);
        with_write_tag(9, || e.delete(&follow(1, 1, 2), day_of(&follow(1, 1, 2)), true)).unwrap();
        assert_eq!(e.count(&[], &[], &db).unwrap(), 2);
        assert_eq!(e.count(&[], &[], &db).unwrap() as usize, db.pks(&[], &[]).len());
        store.flush_all().unwrap();
    });
}

/// The same for a period bucket: the day counter is built with the write
/// in flight and its move skipped.
#[test]
fn a_model_wide_day_count_built_while_a_tagged_write_is_in_flight_counts_it_once() {
    on_every_store(|store| {
        let db = Db::default();
        db.insert(follow(1, 1, 2));
        let e = engine(&store, all_indexes());
        let row = follow(2, 1, 3);
        let day = day_of(&row).unwrap();
        let bucket = Bucket { days: (day, day + 1), micros: (day as i64 * DAY_US, (day as i64 + 1) * DAY_US) };
        let racing = CommitsFirst { db: &db, row: Mutex::new(Some(row.clone())), tag: 0x2a };
        let first = e.period_counts(&[], &[], Period::Day, "created", &[bucket], &racing).unwrap();
        with_write_tag(0x2a, || e.add(&row, Some(day), &db)).unwrap();
        let after = e.period_counts(&[], &[], Period::Day, "created", &[bucket], &db).unwrap();
        let truth = db.count(&[], &[], Some(bucket.days)).unwrap();
        assert_eq!((first[0], after[0]), (truth, truth));
        store.flush_all().unwrap();
    });
}

/// A counter many writes moved is folded by a reader (its value stays
/// small) and keeps its count; a move past the fold of a write the build
/// saw in flight is still skipped.
#[test]
fn a_counter_with_many_moves_is_folded_by_a_reader() {
    on_every_store(|store| {
        let db = Db::default();
        db.insert(follow(1, 1, 2));
        let e = engine(&store, all_indexes());
        let slow = follow(1000, 1, 3);
        let racing = CommitsFirst { db: &db, row: Mutex::new(Some(slow.clone())), tag: 1 };
        assert_eq!(e.count(&[], &[], &racing).unwrap(), 2);
        for id in 2..80 {
            let row = follow(id, 1, 10 + id);
            db.insert(row.clone());
            with_write_tag(100 + id as u64, || e.add(&row, day_of(&row), &db)).unwrap();
        }
        assert_eq!(e.count(&[], &[], &db).unwrap(), 80);
        let (_, value) = e.raw_counter().unwrap();
        let value = value.expect("the counter is cached");
        assert!(value.len() < 64 * 8, "folded: {} bytes", value.len());
        with_write_tag(1, || e.add(&slow, day_of(&slow), &db)).unwrap();
        assert_eq!(e.count(&[], &[], &db).unwrap(), 80, "the fold kept the write still in flight");
        store.flush_all().unwrap();
    });
}

/// A source that fails every call, as the async calls' cache-only attempt does.
struct Refusing;

impl Source for Refusing {
    fn rows(&self, _: &[String], _: &[Value]) -> listy_core::Result<Vec<Row>> {
        Err(listy_core::error::SourceError::unsupported("cache only").into())
    }

    fn count(&self, _: &[String], _: &[Value], _: Option<(i32, i32)>) -> listy_core::Result<u64> {
        Err(listy_core::error::SourceError::unsupported("cache only").into())
    }

    fn row(&self, _: &Value) -> listy_core::Result<Option<Stored>> {
        Err(listy_core::error::SourceError::unsupported("cache only").into())
    }
}

#[test]
fn get_cached_serves_whole_lists_and_never_builds() {
    on_every_store(|store| {
        let db = Db::default();
        let e = small_parts_engine(&store);
        for i in 1..=40 {
            db.insert(follow(i, 1, 100 + i));
        }
        let follower = idx(&["follower_id"]);
        let request = |v: i64| (follower.clone(), vec![Value::Int(v)]);
        // A miss: None, and nothing stored (no lease, no list).
        let found = e.get_cached(&[request(1), request(2)], true).unwrap();
        assert!(found.iter().all(Option::is_none));
        assert!(e.raw(&follower, &[Value::Int(1)]).unwrap().1.is_none(), "a cache-only read stores nothing");
        assert_eq!(db.queries.load(Ordering::SeqCst), 0);
        // Built by a read: a hit, complete (segments fetched), the same list.
        let (built, _) = list(&e, &db, &["follower_id"], &[1]);
        let hits = e.hits();
        let found = e.get_cached(&[request(1), request(2)], true).unwrap();
        let fetched = found[0].as_ref().expect("a hit");
        assert!(fetched.complete && fetched.hit && fetched.parts.len() > 1, "a list in segments, read whole");
        assert_eq!(pks_of(&e, &follower, fetched), built);
        assert!(found[1].is_none());
        assert_eq!(e.hits(), hits + 1);
        store.flush_all().unwrap();
    });
}

#[test]
fn a_counter_build_that_fails_releases_its_lease() {
    on_every_store(|store| {
        let db = Db::default();
        let e = engine(&store, all_indexes());
        db.insert(follow(1, 1, 2));
        assert!(e.count(&[], &[], &Refusing).is_err());
        // The next reader builds the counter at once (no lease left to wait on).
        assert_eq!(e.count(&[], &[], &db).unwrap(), 1);
        let queries = db.queries.load(Ordering::SeqCst);
        assert_eq!(e.count(&[], &[], &db).unwrap(), 1);
        assert_eq!(db.queries.load(Ordering::SeqCst), queries, "the counter was stored");
        store.flush_all().unwrap();
    });
}

#[test]
fn a_list_read_again_is_what_its_bytes_say_now() {
    // A reader keeps what the bytes it read last made (`read_view`): reads
    // of the head alone and of the whole list, by two engines, between
    // writes that change the list's bytes, must each be the list as stored.
    on_every_store(|store| {
        let db = Db::default();
        let a = small_parts_engine(&store);
        let b = small_parts_engine(&store);
        for i in 1..=30 {
            db.insert(follow(i, 1, 100 + i));
        }
        let fields = idx(&["follower_id"]);
        let values = vec![Value::Int(1)];
        assert_list(&a, &db, &["follower_id"], &[1]); // built
        let read = |e: &Engine, complete: bool| -> bool {
            let request = [(fields.clone(), values.clone())];
            let fetched = e.get_multi(&request, &db, complete).unwrap().pop().unwrap();
            let pks = pks_of(e, &fields, &fetched);
            // A read of the head alone (of a list in segments) is its newest records.
            assert!(complete || fetched.complete || fetched.parts.len() == 1);
            if fetched.complete {
                assert_eq!(pks, db.pks(&fields, &values));
            } else {
                assert_eq!(pks, db.pks(&fields, &values)[..pks.len()].to_vec());
            }
            fetched.complete
        };
        for step in 0..6i64 {
            for _ in 0..2 {
                assert!(!read(&a, false), "the list is stored in segments");
                read(&b, true);
                read(&a, true);
                read(&b, false);
            }
            if step % 2 == 0 {
                let row = follow(100 + step, 1, 7);
                db.insert(row.clone());
                b.add(&row, day_of(&row), &db).unwrap();
            } else {
                let gone = db.remove(30 - step).unwrap();
                a.delete(&gone, day_of(&gone), true).unwrap();
            }
        }
        store.flush_all().unwrap();
    });
}
