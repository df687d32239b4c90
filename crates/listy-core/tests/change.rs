//! `Engine::change` on both stores: every kind of row change (insert,
//! delete, soft delete, revival, a move between lists, a timestamp moving
//! between counter buckets) leaves every list and counter equal to the
//! database, and two writers of one row whose frames arrive in the other
//! order than their commits are settled.
#![cfg(unix)] // the memcached these tests start, stop and kill is a Unix process

mod common;

use listy_core::calendar::Period;
use listy_core::codec::{Field, Kind, Row, Schema, Value};
use listy_core::engine::{Bucket, Engine, Options, Source, Stored};
use listy_core::local::LocalStore;
use listy_core::pool::{MemcachedPool, PoolConfig};
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
    test(Arc::new(LocalStore::new("change-test", 1 << 20)));
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

/// One row change, written to the database, then handed to the engine.
fn change(e: &Engine, db: &Db, id: i64, row: Option<Row>) {
    let (old, new) = db.write(id, row);
    let report = e.change(old.as_ref(), new.as_ref(), db).unwrap();
    assert!(report.faults.is_empty(), "{:?}", report.faults);
}

fn seeded(store: &Arc<dyn Store>) -> (Engine, Db) {
    store.flush_all().unwrap();
    let (e, db) = (engine(store), Db::default());
    db.write(1, Some(thing(1, 0, 1, 1, false)));
    db.write(2, Some(thing(2, 1, 1, 2, false)));
    db.write(3, Some(thing(3, 1, 2, 1, false)));
    warm(&e, &db, &[1, 2, 3, 4]);
    (e, db)
}

#[test]
fn an_insert_reaches_every_list_and_counter() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        change(&e, &db, 4, Some(thing(4, 2, 1, 1, false)));
        // its pk list was cached empty by a read (warm): it settles once
        assert_eq!(db.row_reads.load(Ordering::SeqCst), 1);
        assert_converged(&e, &db, &[1, 2, 3, 4]);
    });
}

#[test]
fn a_delete_leaves_every_list_and_counter() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        change(&e, &db, 2, None);
        assert_converged(&e, &db, &[1, 2, 3]);
        // one read: was the row inserted again meanwhile (then re-created)?
        assert_eq!(db.row_reads.load(Ordering::SeqCst), 1, "a hard delete reads the row once");
    });
}

#[test]
fn a_soft_delete_and_a_revival() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        change(&e, &db, 1, Some(thing(1, 0, 1, 1, true)));
        assert_converged(&e, &db, &[1, 2, 3]);
        change(&e, &db, 1, Some(thing(1, 0, 1, 1, false)));
        assert_converged(&e, &db, &[1, 2, 3]);
        assert_eq!(db.row_reads.load(Ordering::SeqCst), 2, "each change of an existing row settles once");
    });
}

#[test]
fn a_row_moving_between_lists() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        change(&e, &db, 1, Some(thing(1, 0, 1, 3, false))); // color 1 -> 3
        assert_converged(&e, &db, &[1, 2, 3]);
        change(&e, &db, 1, Some(thing(1, 0, 2, 3, false))); // owner 1 -> 2
        assert_converged(&e, &db, &[1, 2, 3]);
    });
}

#[test]
fn a_timestamp_moving_between_counter_buckets() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        change(&e, &db, 2, Some(thing(2, 3, 1, 2, false))); // day 1 -> day 3
        assert_converged(&e, &db, &[1, 2, 3]);
    });
}

/// A row deleted while no list held it gets final tombstones: an earlier
/// revival whose frames land after the delete stays hidden.
#[test]
fn a_row_deleted_while_soft_deleted_is_buried() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        change(&e, &db, 3, Some(thing(3, 1, 2, 1, true))); // soft-deleted
        let (hidden, revived) = db.write(3, Some(thing(3, 1, 2, 1, false))); // a revival, frames in flight
        change(&e, &db, 3, Some(thing(3, 1, 2, 1, true))); // soft-deleted again
        change(&e, &db, 3, None); // and deleted for good: buried
        e.change(hidden.as_ref(), revived.as_ref(), &db).unwrap(); // the revival lands last
        assert_converged(&e, &db, &[1, 2, 3]);
    });
}

/// Two writers of one row: a soft delete commits first, a revival second,
/// but the revival's frames reach the cache first. Without the settle the
/// soft delete's tombstone, landing last, would hide a live row.
#[test]
fn frames_arriving_in_the_other_order_than_their_commits_are_settled() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let (live, soft_deleted) = db.write(2, Some(thing(2, 1, 1, 2, true)));
        let (_, revived) = db.write(2, Some(thing(2, 1, 1, 2, false)));
        e.change(soft_deleted.as_ref(), revived.as_ref(), &db).unwrap(); // the second commit lands first
        e.change(live.as_ref(), soft_deleted.as_ref(), &db).unwrap(); // the first lands last, then settles
        assert_converged(&e, &db, &[1, 2, 3]);
    });
}

/// Two saves that move one row: the later save's frames land first; the
/// earlier one's land last and would put the row back where it was.
#[test]
fn two_moves_arriving_in_the_other_order_are_settled() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let (at_1, at_2) = db.write(1, Some(thing(1, 0, 1, 2, false)));
        let (_, at_3) = db.write(1, Some(thing(1, 2, 2, 3, false)));
        e.change(at_2.as_ref(), at_3.as_ref(), &db).unwrap();
        e.change(at_1.as_ref(), at_2.as_ref(), &db).unwrap();
        assert_converged(&e, &db, &[1, 2, 3]);
    });
}

#[test]
fn a_change_that_touches_no_list_sends_nothing() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        change(&e, &db, 1, Some(thing(1, 0, 1, 1, true)));
        let reads = db.row_reads.load(Ordering::SeqCst);
        change(&e, &db, 1, Some(thing(1, 0, 2, 3, true))); // moved while soft-deleted
        assert_eq!(db.row_reads.load(Ordering::SeqCst), reads, "no frame sent, nothing to settle");
        assert_converged(&e, &db, &[1, 2, 3]);
        change(&e, &db, 5, Some(thing(5, 0, 1, 1, true))); // created soft-deleted
        assert_converged(&e, &db, &[1, 2, 3, 5]);
    });
}

/// A delete that read an older state of the row (a stale instance) sends
/// its tombstones to that state's lists; a move committed before it lands
/// after it. The move's settle finds the row gone and buries the state it
/// wrote: no list keeps the deleted row.
#[test]
fn a_delete_of_a_stale_row_and_a_late_move_leave_no_list_holding_it() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let stale = stored(&thing(1, 0, 1, 1, false));
        let (moved_from, moved_to) = db.write(1, Some(thing(1, 0, 1, 3, false))); // color 1 -> 3, in flight
        db.write(1, None);
        e.change(Some(&stale), None, &db).unwrap(); // the delete, from the stale state
        e.change(moved_from.as_ref(), moved_to.as_ref(), &db).unwrap(); // the move lands last
        assert_converged(&e, &db, &[1, 2, 3]);
    });
}

/// A row deleted for good, then inserted again under its primary key (a
/// stale instance's save, fixtures): its final tombstones would hide the
/// new row in every list it joins; `recreate` starts the lists afresh.
#[test]
fn a_row_recreated_under_its_old_primary_key_shows_everywhere() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        change(&e, &db, 2, None);
        assert_converged(&e, &db, &[1, 2, 3]);
        let (_, again) = db.write(2, Some(thing(2, 1, 2, 3, false)));
        e.recreate(again.as_ref().unwrap(), &db).unwrap();
        assert!(db.live(&idx(&["id"]), &[Value::Int(2)]).len() == 1);
        for (fields, values) in lists(&[1, 2, 3]) {
            cached_pks(&e, &db, &fields, &values); // rebuilt once
        }
        assert_converged(&e, &db, &[1, 2, 3]);
        change(&e, &db, 2, Some(thing(2, 1, 1, 1, false))); // and it moves like any row
        assert_converged(&e, &db, &[1, 2, 3]);
    });
}

/// An insert committed before a move of its row, whose frames land after
/// the move's: its pk list existed already (the move created it), so the
/// insert settles and the lists end as the database.
#[test]
fn an_insert_landing_after_a_later_move_of_its_row_is_settled() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let (_, inserted) = db.write(4, Some(thing(4, 2, 1, 1, false)));
        let (before_move, moved) = db.write(4, Some(thing(4, 2, 2, 3, false)));
        e.change(before_move.as_ref(), moved.as_ref(), &db).unwrap(); // the move lands first
        let report = e.change(None, inserted.as_ref(), &db).unwrap(); // the insert lands last
        assert_eq!(report.pk_list_found, Some(true));
        assert_converged(&e, &db, &[1, 2, 3, 4]);
    });
}

/// A lone insert of a pk nobody read finds no pk list and sends nothing
/// more (no settle read).
#[test]
fn an_insert_nobody_raced_does_not_settle() {
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let (_, inserted) = db.write(5, Some(thing(5, 2, 1, 1, false)));
        let report = e.change(None, inserted.as_ref(), &db).unwrap();
        assert_eq!(report.pk_list_found, Some(false));
        assert_eq!(db.row_reads.load(Ordering::SeqCst), 0);
        assert_converged(&e, &db, &[1, 2, 3, 5]);
    });
}

/// A delete whose counter move reaches a model-wide counter before the
/// insert's it follows: at zero `decr` would be lost; counters commute.
#[test]
fn counter_moves_commute_even_at_zero() {
    on_every_store(|store| {
        store.flush_all().unwrap();
        let (e, db) = (engine(&store), Db::default());
        warm(&e, &db, &[1]);
        assert_eq!(e.count(&[], &[], &db).unwrap(), 0);
        let (_, inserted) = db.write(1, Some(thing(1, 0, 1, 1, false)));
        let (before, _) = db.write(1, None);
        e.change(before.as_ref(), None, &db).unwrap(); // the delete lands first
        e.change(None, inserted.as_ref(), &db).unwrap();
        assert_converged(&e, &db, &[1]);
    });
}

/// A change stream's transaction: every kind of change to several rows,
/// one row changed twice, handed over in one `change_sequence` batch without
/// settles or builds, converges like the changes one by one would.
#[test]
fn change_sequence_applies_a_transaction_in_one_batch() {
    use listy_core::engine::ChangeOptions;
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let changes = vec![
            db.write(4, Some(thing(4, 2, 1, 1, false))), // insert
            db.write(1, Some(thing(1, 0, 1, 3, false))), // color 1 -> 3
            db.write(1, Some(thing(1, 3, 2, 3, false))), // owner 1 -> 2, day 0 -> 3
            db.write(2, Some(thing(2, 1, 1, 2, true))),  // soft delete
            db.write(3, None),                           // delete
            db.write(5, Some(thing(5, 0, 2, 2, true))),  // an unlisted insert: nothing
        ];
        let options = ChangeOptions { counted: true, recount: false, build_missing: false, settle: false };
        let report = e.change_sequence(&changes, &db, options).unwrap();
        assert!(report.faults.is_empty(), "{:?}", report.faults);
        assert_eq!(db.row_reads.load(Ordering::SeqCst), 0, "no settle read");
        assert_converged(&e, &db, &[1, 2, 3, 4, 5]);
    });
}

/// Without counter moves the frames still land and the counters stay as
/// they were (another writer owns the moves).
#[test]
fn change_without_counter_moves() {
    use listy_core::engine::ChangeOptions;
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let before = e.count(&[], &[], &db).unwrap();
        let (old, new) = db.write(4, Some(thing(4, 2, 1, 1, false)));
        let options = ChangeOptions { counted: false, ..ChangeOptions::default() };
        e.change_with(old.as_ref(), new.as_ref(), &db, options).unwrap();
        assert_eq!(cached_pks(&e, &db, &idx(&["owner_id"]), &[Value::Int(1)]), vec![4, 2, 1]);
        assert_eq!(e.count(&[], &[], &db).unwrap(), before, "counter not moved");
    });
}

/// A follower's batch (`ChangeOptions::follower`) deletes the counters its
/// changes touch instead of moving them: applying it twice, or after the
/// writer already counted it, leaves every counter right.
#[test]
fn a_follower_batch_recounts_and_is_idempotent() {
    use listy_core::engine::ChangeOptions;
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        // the writer applied its own change (counters moved) ...
        let first = db.write(4, Some(thing(4, 2, 1, 1, false)));
        e.change(first.0.as_ref(), first.1.as_ref(), &db).unwrap();
        let reads = db.row_reads.load(Ordering::SeqCst);
        let second = db.write(2, Some(thing(2, 3, 1, 2, false))); // day 1 -> 3
        let third = db.write(3, None);
        let changes = vec![first, second, third];
        // ... the follower sees it again, with changes nobody counted, twice
        for _ in 0..2 {
            let report = e.change_sequence(&changes, &db, ChangeOptions::follower()).unwrap();
            assert!(report.faults.is_empty(), "{:?}", report.faults);
            assert_converged(&e, &db, &[1, 2, 3, 4]);
        }
        assert_eq!(db.row_reads.load(Ordering::SeqCst), reads, "no settle read");
    });
}

/// A follower that fell behind applies a row's insert and a later move in
/// one batch, onto a `("pk",)` list a reader built between the two commits.
/// The insert's whole-list `add` finds that list: its frame must still land
/// behind the move's (they are merged into one op), or the list would show
/// the row as inserted.
#[test]
fn an_insert_and_a_move_of_one_row_in_one_batch_land_in_order() {
    use listy_core::engine::ChangeOptions;
    on_every_store(|store| {
        let (e, db) = seeded(&store);
        let insert = db.write(4, Some(thing(4, 2, 1, 1, false)));
        warm(&e, &db, &[1, 2, 3, 4]);
        let moved = db.write(4, Some(thing(4, 2, 2, 3, false)));
        let report = e.change_sequence(&[insert, moved], &db, ChangeOptions::follower()).unwrap();
        assert!(report.faults.is_empty(), "{:?}", report.faults);
        assert_converged(&e, &db, &[1, 2, 3, 4]);
        // and the record it holds is the row as moved
        let pk_list = (idx(&["id"]), vec![Value::Int(4)]);
        let fetched = e.get(&pk_list.0, &pk_list.1, &db).unwrap();
        let layout = e.layout(&pk_list.0).unwrap();
        let parts: Vec<&[u8]> = fetched.parts.iter().map(Vec::as_slice).collect();
        let view = layout.read_parts(&parts).unwrap();
        assert_eq!(view.len(), 1);
        let mut values = Vec::new();
        layout.decode_record(view.record(0), &mut values).unwrap();
        let owned: Vec<Value> = values.into_iter().map(|v| v.to_owned()).collect();
        assert!(owned.contains(&Value::Int(3)), "the moved color: {owned:?}");
    });
}
