//! The engine's event sink (`EngineBuilder::events`): compactions and
//! segment splits reach it once each, with the list's key, on the embedded
//! store (the Django side logs them at DEBUG through `listy._native`).

use listy_core::codec::{Field, Kind, Row, Schema, Value};
use listy_core::engine::{Engine, Event, HookPoint, Source, Stored};
use listy_core::local::LocalStore;
use listy_core::{Op, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Db(Mutex<BTreeMap<i64, Row>>);

impl Source for Db {
    fn rows(&self, fields: &[String], values: &[Value]) -> listy_core::Result<Vec<Row>> {
        assert_eq!(fields, ["follower_id"]);
        let rows = self.0.lock().unwrap();
        Ok(rows.values().rev().filter(|r| r[1] == values[0]).cloned().collect())
    }

    fn count(&self, _: &[String], _: &[Value], _: Option<(i32, i32)>) -> listy_core::Result<u64> {
        Ok(self.0.lock().unwrap().len() as u64)
    }

    fn row(&self, pk: &Value) -> listy_core::Result<Option<Stored>> {
        let Value::Int(pk) = pk else { unreachable!() };
        Ok(self.0.lock().unwrap().get(pk).map(|r| Stored::listed(r.clone(), None)))
    }
}

fn row(id: i64) -> Row {
    vec![Value::Int(id), Value::Int(1), Value::Int(100 + id)]
}

/// The events an engine reported, with their keys.
type Seen = Arc<Mutex<Vec<(Event, String)>>>;

/// An engine over a fresh embedded store whose events land in the returned list.
fn engine(name: &str, head_max: usize, head_split: usize) -> (Engine, Seen) {
    let schema = Schema::new(vec![
        Field::new("id", Kind::Int, false),
        Field::new("follower_id", Kind::Int, false),
        Field::new("followee_id", Kind::Int, false),
    ])
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let store: Arc<dyn Store> = LocalStore::named(name, 1 << 20);
    store.flush_all().unwrap();
    let engine = Engine::builder(store, "app.Follow", schema)
        .index(["follower_id"])
        .head_sizes(head_max, head_split)
        .events(Arc::new(move |event, key: &str| sink.lock().unwrap().push((event, key.to_string()))))
        .build()
        .unwrap();
    (engine, seen)
}

fn follower_list(engine: &Engine, db: &Db) -> usize {
    engine.get(&["follower_id".to_string()], &[Value::Int(1)], db).unwrap().live.len()
}

#[test]
fn a_compaction_is_reported_once_with_its_dead_frames() {
    let (engine, seen) = engine("events-compaction", 1 << 16, 1 << 20);
    let db = Db::default();
    for id in 1..=40 {
        db.0.lock().unwrap().insert(id, row(id));
    }
    assert_eq!(follower_list(&engine, &db), 40);
    for id in 1..=30 {
        let gone = db.0.lock().unwrap().remove(&id).unwrap();
        engine.change(Some(&Stored::listed(gone, None)), None, &db).unwrap();
    }
    assert!(seen.lock().unwrap().is_empty(), "no event before the read that compacts");
    assert_eq!(follower_list(&engine, &db), 10); // this read compacts
    assert_eq!(follower_list(&engine, &db), 10);
    assert_eq!(follower_list(&engine, &db), 10);
    assert_eq!(follower_list(&engine, &db), 10);
    let key = engine.key(&["follower_id".to_string()], &[Value::Int(1)]).unwrap();
    let events = seen.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(events[0].0, Event::Compacted { dead } if dead >= 30), "{events:?}");
    assert_eq!(events[0].1, key);
}

#[test]
fn a_grown_head_split_again_is_reported() {
    let (engine, seen) = engine("events-split", 40, 120);
    let db = Db::default();
    for id in 1..=20 {
        db.0.lock().unwrap().insert(id, row(id));
    }
    assert_eq!(follower_list(&engine, &db), 20);
    for id in 21..=60 {
        db.0.lock().unwrap().insert(id, row(id));
        engine.change(None, Some(&Stored::listed(row(id), None)), &db).unwrap();
    }
    assert_eq!(follower_list(&engine, &db), 60);
    let events = seen.lock().unwrap().clone();
    assert!(events.iter().any(|(e, _)| matches!(e, Event::SegmentSplit { parts } if *parts > 1)), "{events:?}");
}

#[test]
fn a_lost_lease_is_reported() {
    let schema = Schema::new(vec![
        Field::new("id", Kind::Int, false),
        Field::new("follower_id", Kind::Int, false),
        Field::new("followee_id", Kind::Int, false),
    ])
    .unwrap();
    let store: Arc<dyn Store> = LocalStore::named("events-lease", 1 << 20);
    store.flush_all().unwrap();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let thief = store.clone();
    let engine = Engine::builder(store, "app.Follow", schema)
        .index(["follower_id"])
        // another client deletes the list while the builder reads the database
        .hook(Arc::new(move |point, key: &str| {
            if point == HookPoint::BeforeStore {
                thief.one(Op::Delete { key: key.to_string() }).unwrap();
            }
        }))
        .events(Arc::new(move |event, key: &str| sink.lock().unwrap().push((event, key.to_string()))))
        .build()
        .unwrap();
    let db = Db::default();
    db.0.lock().unwrap().insert(1, row(1));
    assert_eq!(follower_list(&engine, &db), 1); // served from the database, uncached
    let events = seen.lock().unwrap().clone();
    assert_eq!(events.iter().filter(|(e, _)| *e == Event::LeaseLost).count(), 1, "{events:?}");
}
