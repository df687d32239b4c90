//! The lazy head-first reader (`listy_core::reader::List`) against real
//! stores: the embedded store and a real memcached started on a free port.
//! Lists are split into small parts so that a hit reads the head only; each
//! test checks what the reader served against the rows of a small database,
//! and whether it had to fetch the segments to serve it.
#![cfg(unix)] // the memcached these tests start, stop and kill is a Unix process

mod common;

use listy_core::codec::{Field, Kind, Row, Schema, Value};
use listy_core::engine::{Engine, Fetched, Options, Source};
use listy_core::local::LocalStore;
use listy_core::pool::{MemcachedPool, PoolConfig};
use listy_core::reader::{Completion, EngineCompletion, List};
use listy_core::{keys, Op, Store};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const FOLLOWER: i64 = 1;

/// The database the lists are built from.
#[derive(Default)]
struct Db {
    rows: Mutex<BTreeMap<i64, Row>>,
    queries: AtomicUsize,
}

impl Db {
    /// `n` follows of `FOLLOWER`, ids 1..=n.
    fn with_follows(n: i64) -> Db {
        let db = Db::default();
        for id in 1..=n {
            db.rows.lock().unwrap().insert(id, follow(id));
        }
        db
    }

    /// The list of `FOLLOWER` as the database has it, newest first.
    fn list(&self) -> Vec<Row> {
        self.rows.lock().unwrap().values().rev().cloned().collect()
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Source for Db {
    fn rows(&self, fields: &[String], values: &[Value]) -> listy_core::Result<Vec<Row>> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        assert_eq!(fields, ["follower_id"], "the tests read one index");
        Ok(self.list().into_iter().filter(|r| r[2] == values[0]).collect())
    }

    fn count(&self, _: &[String], _: &[Value], _: Option<(i32, i32)>) -> listy_core::Result<u64> {
        unreachable!("the reader never counts")
    }

    fn row(&self, _: &Value) -> listy_core::Result<Option<listy_core::engine::Stored>> {
        unreachable!("the reader never settles")
    }
}

fn follow(id: i64) -> Row {
    vec![
        Value::Int(id),
        Value::Datetime(1_790_000_000_000_000 + id * 1_000_000),
        Value::Int(FOLLOWER),
        Value::Str(format!("followee {id}")),
    ]
}

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("id", Kind::Int, false),
        Field::new("created", Kind::Datetime, false),
        Field::new("follower_id", Kind::Int, false),
        Field::new("note", Kind::Str, false),
    ])
    .unwrap()
}

/// An engine whose lists keep a few records in their head and put the
/// rest in segments.
fn engine(store: &Arc<dyn Store>) -> Arc<Engine> {
    let options = Options { head_max: 120, head_split: 400, ..Options::default() };
    let indexes = vec![vec!["follower_id".to_string()]];
    Arc::new(Engine::new(store.clone(), "r:", "app.Follow", schema(), indexes, options).unwrap())
}

/// Runs `test` on the embedded store and on a real memcached.
fn on_every_store(test: impl Fn(Arc<dyn Store>)) {
    test(Arc::new(LocalStore::new("reader-test", 1 << 20)));
    let server = common::Memcached::start();
    let pool = MemcachedPool::new(PoolConfig::new(vec![server.addr()])).unwrap();
    test(Arc::new(pool));
}

/// The list of `FOLLOWER`, read head first.
fn read<'d>(e: &Arc<Engine>, db: &'d Db) -> List<EngineCompletion<&'d Db>> {
    List::read(e.clone(), &["follower_id"], &[Value::Int(FOLLOWER)], db).unwrap()
}

/// Builds the list (a miss reads the database and stores it in parts),
/// then reads it again: a hit that holds the head only. Returns it and the
/// number of records its head holds.
fn head_only<'d>(e: &Arc<Engine>, db: &'d Db) -> (List<EngineCompletion<&'d Db>>, usize) {
    let built = read(e, db);
    assert!(!built.from_cache() && built.is_complete());
    let list = read(e, db);
    assert!(list.from_cache() && !list.is_complete(), "the list should be in segments");
    let head = list.current().live.len();
    assert!(head > 0 && head < db.list().len(), "{head} records in the head");
    (list, head)
}

fn pks(rows: &[Row]) -> Vec<i64> {
    rows.iter()
        .map(|r| match r[0] {
            Value::Int(pk) => pk,
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn the_head_serves_the_newest_rows_and_the_segments_are_fetched_on_demand() {
    on_every_store(|store| {
        let db = Db::with_follows(40);
        let e = engine(&store);
        let (list, head) = head_only(&e, &db);
        let expected = db.list();
        // Inside the head: no segment is fetched.
        assert_eq!(list.get(0).unwrap().as_ref(), Some(&expected[0]));
        assert_eq!(list.get(head - 1).unwrap().as_ref(), Some(&expected[head - 1]));
        assert!(!list.is_empty().unwrap());
        assert!(!list.is_complete());
        // Past it: only the segment the row is in, never the whole list.
        assert_eq!(list.get(head).unwrap().as_ref(), Some(&expected[head]));
        assert!(!list.is_complete());
        assert_eq!(list.len().unwrap(), 40);
        assert!(!list.is_complete());
        assert_eq!(list.pks().unwrap(), pks(&expected));
        assert!(list.is_complete());
        assert_eq!(list.get(expected.len()).unwrap(), None);
        assert_eq!(list.rows().collect::<Result<Vec<_>, _>>().unwrap(), expected);
        assert_eq!(list.len().unwrap(), 40);
        assert_eq!(list.pks().unwrap(), pks(&expected));
        let stored: usize = list.current().parts.iter().map(Vec::len).sum();
        assert_eq!(list.size().unwrap(), stored);
        assert_eq!(db.queries(), 1, "only the first read built the list");
    });
}

#[test]
fn iterating_reads_the_segments_only_when_it_goes_past_the_head() {
    on_every_store(|store| {
        let db = Db::with_follows(40);
        let e = engine(&store);
        let expected = db.list();
        let (list, head) = head_only(&e, &db);
        let first: Vec<Row> = list.rows().take(head).map(Result::unwrap).collect();
        assert_eq!(first, expected[..head]);
        assert!(!list.is_complete());
        // A window across the head's end and into the segments: a segment
        // at a time, the list is never read whole.
        let window: Vec<Row> = list.rows().skip(head - 2).take(5).map(Result::unwrap).collect();
        assert_eq!(window, expected[head - 2..head + 3]);
        assert_eq!(list.rows().collect::<Result<Vec<_>, _>>().unwrap(), expected);
        assert!(!list.is_complete());
        // The prefix the head holds is the head; one more needs the whole.
        let list = read(&e, &db);
        assert!(!list.prefix(head).unwrap().complete);
        assert!(list.prefix(head + 1).unwrap().complete);
    });
}

#[test]
fn a_list_completes_once_however_often_it_is_read_past_the_head() {
    /// Counts the completions of an engine's list.
    struct Counting<'d>(EngineCompletion<&'d Db>, AtomicUsize);

    impl Completion for Counting<'_> {
        type Error = listy_core::Error;

        fn complete(&self, partial: &Fetched) -> listy_core::Result<Fetched> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.complete(partial)
        }
    }

    on_every_store(|store| {
        let db = Db::with_follows(40);
        let e = engine(&store);
        head_only(&e, &db);
        let fields = vec!["follower_id".to_string()];
        let values = vec![Value::Int(FOLLOWER)];
        let request = [(fields.clone(), values.clone())];
        let fetched = e.get_multi(&request, &db, false).unwrap().pop().unwrap();
        let layout = e.layout(&fields).unwrap();
        let completion = Counting(EngineCompletion::new(e.clone(), fields, values.clone(), &db), AtomicUsize::new(0));
        let list = List::new(fetched, layout, vec![(2, values[0].clone())], completion);
        assert_eq!(list.get(0).unwrap(), Some(db.list()[0].clone()));
        assert_eq!(list.completion().1.load(Ordering::SeqCst), 0);
        assert_eq!(list.len().unwrap(), 40);
        assert_eq!(list.get(39).unwrap(), Some(db.list()[39].clone()));
        assert_eq!(list.rows().count(), 40);
        assert_eq!(list.completion().1.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn len_and_rows_leave_out_deleted_rows_in_the_head_and_in_the_segments() {
    on_every_store(|store| {
        let db = Db::with_follows(40);
        let e = engine(&store);
        read(&e, &db); // built and stored in parts
                       // The newest row (in the head) and an old one (in a segment).
        for id in [40, 3] {
            let row = db.rows.lock().unwrap().remove(&id).unwrap();
            assert!(e.delete(&row, None, true).unwrap().failed_keys.is_empty());
        }
        let list = read(&e, &db);
        assert!(list.from_cache() && !list.is_complete());
        assert_eq!(list.get(0).unwrap().as_ref(), Some(&db.list()[0]));
        assert_eq!(list.len().unwrap(), 38);
        assert_eq!(list.pks().unwrap(), pks(&db.list()));
        assert_eq!(list.rows().collect::<Result<Vec<_>, _>>().unwrap(), db.list());
        assert_eq!(db.queries(), 1);
    });
}

#[test]
fn a_list_with_no_live_row_is_empty() {
    on_every_store(|store| {
        let db = Db::with_follows(2);
        let e = engine(&store);
        read(&e, &db);
        for id in [1, 2] {
            let row = db.rows.lock().unwrap().remove(&id).unwrap();
            e.delete(&row, None, true).unwrap();
        }
        let list = read(&e, &db);
        assert!(list.from_cache());
        assert!(list.is_empty().unwrap());
        assert_eq!(list.len().unwrap(), 0);
        assert_eq!(list.get(0).unwrap(), None);
        assert_eq!(list.rows().count(), 0);
    });
}

#[test]
fn a_head_whose_segments_are_gone_is_completed_from_the_database() {
    on_every_store(|store| {
        let db = Db::with_follows(40);
        let e = engine(&store);
        let (list, _) = head_only(&e, &db);
        let head = &list.current().parts[0];
        let id = list.layout().part_id(head);
        store.one(Op::Delete { key: keys::segment_key(list.key(), id, 0) }).unwrap();
        let queries = db.queries();
        assert_eq!(list.rows().collect::<Result<Vec<_>, _>>().unwrap(), db.list());
        assert!(list.is_complete());
        assert_eq!(db.queries(), queries + 1, "the list is read again, never served short");
    });
}

#[test]
fn an_undecodable_record_is_an_error_naming_the_list() {
    on_every_store(|store| {
        let db = Db::with_follows(3);
        let e = engine(&store);
        let list = read(&e, &db);
        let mut broken = (*list.current()).clone();
        // Cut the first record short: its string runs past its end.
        broken.live[0].2 -= 2;
        let fields = vec!["follower_id".to_string()];
        let values = vec![Value::Int(FOLLOWER)];
        let layout = e.layout(&fields).unwrap();
        let fixed = vec![(2, Value::Int(FOLLOWER))];
        let broken = List::new(broken, layout, fixed, EngineCompletion::new(e.clone(), fields, values, &db));
        let err = broken.get(0).unwrap_err();
        assert!(matches!(err, listy_core::Error::Decode(_)), "{err}");
        assert!(err.to_string().contains(list.key()), "{err}");
        assert_eq!(broken.get(1).unwrap().as_ref(), Some(&db.list()[1]));
    });
}

/// A small deterministic generator (the same cases on every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// What a complete read of the list shows (the reference reader).
fn whole_pks(e: &Arc<Engine>, db: &Db) -> Vec<i64> {
    let list = read(e, db);
    let whole = list.whole().unwrap();
    let mut out = Vec::new();
    for i in 0..whole.live.len() {
        out.push(match list.row_of(&whole, i).unwrap()[0] {
            Value::Int(pk) => pk,
            _ => unreachable!(),
        });
    }
    out
}

/// Counts, slices anywhere, iteration and keyset pages of a list in
/// segments, read without completing it, equal the complete read and the
/// database after random adds, deletes (of rows in the head, in segments,
/// twice), updates and revivals, and after the compactions they cause.
#[test]
fn counts_slices_and_keyset_pages_of_a_list_in_segments_match_the_whole_list_and_the_database() {
    // Items of 1 KiB: a list of 300 rows takes several segments.
    let server = common::Memcached::start();
    let mut config = PoolConfig::new(vec![server.addr()]);
    config.max_item_size = 1024;
    let stores: Vec<Arc<dyn Store>> =
        vec![Arc::new(LocalStore::new("reader-test", 1024)), Arc::new(MemcachedPool::new(config).unwrap())];
    for store in stores {
        let db = Db::with_follows(300);
        let mut options = Options { head_max: 120, head_split: 600, ..Options::default() };
        options.compact_min_dead = 8;
        let mut e =
            Engine::new(store.clone(), "r:", "app.Follow", schema(), vec![vec!["follower_id".to_string()]], options)
                .unwrap();
        let splits = Arc::new(AtomicUsize::new(0));
        let seen = splits.clone();
        e.set_event_sink(Arc::new(move |_, _| {
            seen.fetch_add(1, Ordering::SeqCst);
        }));
        let e = Arc::new(e);
        read(&e, &db);
        let mut rng = Lcg(7);
        let mut next_pk = 301;
        let mut gone: Vec<Row> = Vec::new();
        for round in 0..60 {
            for _ in 0..rng.below(6) {
                let live: Vec<i64> = db.rows.lock().unwrap().keys().copied().collect();
                match rng.below(5) {
                    0 => {
                        let row = follow(next_pk);
                        next_pk += 1;
                        db.rows.lock().unwrap().insert(row_pk(&row), row.clone());
                        e.add(&row, None, &db).unwrap();
                    }
                    1 | 2 if !live.is_empty() => {
                        let pk = live[rng.below(live.len() as u64) as usize];
                        let row = db.rows.lock().unwrap().remove(&pk).unwrap();
                        let hard = rng.below(2) == 0;
                        e.delete(&row, None, hard).unwrap();
                        if !hard {
                            gone.push(row);
                        }
                    }
                    3 if !live.is_empty() => {
                        let pk = live[rng.below(live.len() as u64) as usize];
                        let old = db.rows.lock().unwrap()[&pk].clone();
                        let mut new = old.clone();
                        new[3] = Value::Str(format!("updated {round}"));
                        db.rows.lock().unwrap().insert(pk, new.clone());
                        e.update(&old, None, &new, None, &db).unwrap();
                    }
                    _ if !gone.is_empty() => {
                        // A soft-deleted row comes back (prepended, out of pk order).
                        let row = gone.remove(rng.below(gone.len() as u64) as usize);
                        db.rows.lock().unwrap().insert(row_pk(&row), row.clone());
                        e.add(&row, None, &db).unwrap();
                    }
                    _ => {}
                }
            }
            let queries = db.queries();
            let reference = whole_pks(&e, &db);
            let mut in_db: Vec<i64> = db.rows.lock().unwrap().keys().copied().collect();
            let mut sorted = reference.clone();
            sorted.sort();
            assert_eq!(sorted, in_db, "round {round}: the complete read equals the database");
            let n = reference.len();
            // len and count, without completing the list.
            let list = read(&e, &db);
            assert_eq!(list.len().unwrap(), n, "round {round}");
            let fields = vec!["follower_id".to_string()];
            assert_eq!(e.count(&fields, &[Value::Int(FOLLOWER)], &db).unwrap(), n as u64, "round {round}");
            // Slices anywhere, spanning segment boundaries.
            for _ in 0..6 {
                let a = rng.below(n as u64 + 3) as usize;
                let b = a + rng.below(40) as usize;
                let list = read(&e, &db);
                let span = list.span(a, b).unwrap();
                let got: Vec<i64> = (a..b.min(n))
                    .map(|i| {
                        assert!(span.holds(i), "round {round}: [{a}:{b}] holds {i}");
                        row_pk(&list.row_of(&span.content, i - span.first).unwrap())
                    })
                    .collect();
                assert_eq!(got, reference[a.min(n)..b.min(n)], "round {round}: [{a}:{b}]");
                assert_eq!(list.get(a).unwrap().map(|r| row_pk(&r)), reference.get(a).copied());
            }
            let list = read(&e, &db);
            let iterated: Vec<i64> = list.rows().map(|r| row_pk(&r.unwrap())).collect();
            assert_eq!(iterated, reference, "round {round}: iteration");
            // Keyset pages, both ways, against the database's order.
            in_db.reverse();
            let cursor =
                if n == 0 { None } else { Some(reference[rng.below(n as u64) as usize] + rng.below(2) as i64) };
            let limit = 1 + rng.below(30) as usize;
            let list = read(&e, &db);
            let page = |span: listy_core::reader::Span| -> Vec<i64> {
                (0..span.content.live.len()).map(|i| row_pk(&list.row_of(&span.content, i).unwrap())).collect()
            };
            let after: Vec<i64> = in_db.iter().copied().filter(|p| cursor.is_none_or(|c| *p < c)).take(limit).collect();
            assert_eq!(page(list.keyset(cursor, limit, true).unwrap()), after, "round {round}: after {cursor:?}");
            let mut before: Vec<i64> =
                in_db.iter().rev().copied().filter(|p| cursor.is_none_or(|c| *p > c)).take(limit).collect();
            before.reverse();
            assert_eq!(page(list.keyset(cursor, limit, false).unwrap()), before, "round {round}: before {cursor:?}");
            if round % 10 == 9 {
                // A keyset walk through the whole list, a row added between
                // pages: every row once, in the database's order.
                let mut walked = Vec::new();
                let mut cursor = None;
                loop {
                    let list = read(&e, &db);
                    let span = list.keyset(cursor, 7, true).unwrap();
                    let page: Vec<i64> =
                        (0..span.content.live.len()).map(|i| row_pk(&list.row_of(&span.content, i).unwrap())).collect();
                    let Some(&last) = page.last() else { break };
                    walked.extend(page);
                    cursor = Some(last);
                    let row = follow(next_pk);
                    next_pk += 1;
                    db.rows.lock().unwrap().insert(row_pk(&row), row.clone());
                    e.add(&row, None, &db).unwrap();
                }
                assert_eq!(walked, in_db, "round {round}: a keyset walk with prepends");
            }
            let segments = read(&e, &db).whole().unwrap().parts.len() - 1;
            assert!(segments >= 4, "round {round}: {segments} segments");
            assert_eq!(db.queries(), queries, "round {round}: every read was a hit");
        }
        assert!(splits.load(Ordering::SeqCst) > 0, "the list was compacted or split along the way");
    }
}

fn row_pk(row: &Row) -> i64 {
    match row[0] {
        Value::Int(pk) => pk,
        _ => unreachable!(),
    }
}
