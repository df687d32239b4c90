//! Typed `Source` errors: what the engine does when its source fails or has
//! no database, on the embedded store. A read fails with the source's own
//! error (kind and cause intact) and stores nothing; an add whose list is
//! missing leaves it missing (a fault in the report) when the source has no
//! database, and the lists that exist still get the record.

use listy_core::codec::{Field, Kind, Row, Schema, Value};
use listy_core::engine::{Engine, Source, Stored};
use listy_core::local::LocalStore;
use listy_core::{Error, SourceError, SourceErrorKind, Store};
use std::sync::Arc;

/// A source that answers nothing, with a fixed kind of error.
struct Failing(SourceErrorKind);

#[derive(Debug, thiserror::Error)]
#[error("connection refused")]
struct Refused;

impl Source for Failing {
    fn rows(&self, _: &[String], _: &[Value]) -> listy_core::Result<Vec<Row>> {
        Err(match self.0 {
            SourceErrorKind::Database => SourceError::caused_by(SourceErrorKind::Database, Refused),
            kind => SourceError::new(kind, "no database here"),
        }
        .into())
    }
    fn count(&self, _: &[String], _: &[Value], _: Option<(i32, i32)>) -> listy_core::Result<u64> {
        Err(SourceError::new(self.0, "no database here").into())
    }
    fn row(&self, _: &Value) -> listy_core::Result<Option<Stored>> {
        Err(SourceError::new(self.0, "no database here").into())
    }
}

/// Answers with the rows it holds, whatever list is asked for.
struct Rows(Vec<Row>);

impl Source for Rows {
    fn rows(&self, _: &[String], _: &[Value]) -> listy_core::Result<Vec<Row>> {
        Ok(self.0.clone())
    }
    fn count(&self, _: &[String], _: &[Value], _: Option<(i32, i32)>) -> listy_core::Result<u64> {
        Ok(self.0.len() as u64)
    }
    fn row(&self, pk: &Value) -> listy_core::Result<Option<Stored>> {
        Ok(self.0.iter().find(|r| &r[0] == pk).map(|r| Stored::listed(r.clone(), None)))
    }
}

fn engine(store: &Arc<LocalStore>) -> Engine {
    let schema = Schema::new(vec![Field::new("id", Kind::Int, false), Field::new("owner_id", Kind::Int, false)]);
    Engine::builder(store.clone(), "app.Thing", schema.unwrap()).prefix("t").index(["owner_id"]).build().unwrap()
}

fn owner(n: i64) -> (Vec<String>, Vec<Value>) {
    (vec!["owner_id".to_string()], vec![Value::Int(n)])
}

#[test]
fn a_read_fails_with_the_sources_error_and_stores_nothing() {
    let store = Arc::new(LocalStore::new("source-errors-read", 1 << 20));
    let engine = engine(&store);
    let (fields, values) = owner(1);
    let err = engine.get(&fields, &values, &Failing(SourceErrorKind::Database)).unwrap_err();
    let Error::Source(source) = err else { panic!("expected a source error, got {err:?}") };
    assert_eq!(source.kind(), SourceErrorKind::Database);
    assert_eq!(source.message(), "connection refused");
    assert!(source.into_cause().unwrap().downcast::<Refused>().is_ok());
    // The lease was released: nothing is stored under the list's key.
    let key = engine.key(&fields, &values).unwrap();
    assert_eq!(store.get(&key).unwrap(), None);
}

#[test]
fn an_add_without_a_database_leaves_missing_lists_missing() {
    let store = Arc::new(LocalStore::new("source-errors-add", 1 << 20));
    let engine = engine(&store);
    let row = |id| vec![Value::Int(id), Value::Int(1)];
    // Owner 1's list is cached with one row; owner 2's is not.
    let (fields, values) = owner(1);
    engine.get(&fields, &values, &Rows(vec![row(1)])).unwrap();
    let report = engine.add(&row(2), None, &Failing(SourceErrorKind::Unsupported)).unwrap();
    assert!(report.failed_keys.is_empty(), "{report:?}");
    assert!(report.faults.is_empty(), "the list was cached: nothing to build ({report:?})");
    let listed = engine.get(&fields, &values, &Failing(SourceErrorKind::Unsupported)).unwrap();
    assert_eq!(listed.live.len(), 2);

    let moved = vec![Value::Int(3), Value::Int(2)];
    let report = engine.add(&moved, None, &Failing(SourceErrorKind::Unsupported)).unwrap();
    assert_eq!(report.faults.len(), 1, "{report:?}");
    assert!(report.failed_keys.is_empty(), "{report:?}");
    let (fields, values) = owner(2);
    let key = engine.key(&fields, &values).unwrap();
    assert_eq!(store.get(&key).unwrap(), None, "a list holding only the new row would be wrong");
}

#[test]
fn an_add_whose_source_fails_reports_the_failure() {
    let store = Arc::new(LocalStore::new("source-errors-fail", 1 << 20));
    let engine = engine(&store);
    let err = engine.add(&vec![Value::Int(1), Value::Int(1)], None, &Failing(SourceErrorKind::Other)).unwrap_err();
    assert!(matches!(err, Error::Source(ref e) if e.kind() == SourceErrorKind::Other), "{err:?}");
}
