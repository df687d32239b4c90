//! `Engine`: the list protocol of `listy-core` for one Django model. Store
//! I/O runs with the GIL released; the Python loaders are called back with
//! it re-acquired.

use crate::convert::{row_from_py, to_value, PySchema};
use crate::errors::{CoreError, Raised};
use crate::records::{Builder, Records, Related};
use crate::store::PyStore;
use listy_core::calendar::Period;
use listy_core::codec::{describe, Row, Value};
use listy_core::engine::{
    Bucket, ChangeOptions, Engine, Event, EventSink, Fetched, ModelCount, Source, Stored, WriteReport,
};
use listy_core::error::{SourceError, SourceErrorKind};
use listy_core::reader::{Completion, List};
use listy_core::Error;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple, PyType};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Calls the Python loaders; a Python exception raised by a loader travels
/// inside the core error (`SourceError`'s cause) and is re-raised unchanged
/// once the engine returns (see `errors.rs`).
struct PySource<'a> {
    /// `rows(fields, values)`.
    loader: Option<&'a Py<PyAny>>,
    /// `count(fields, values, start_day, end_day)`.
    counter: Option<&'a Py<PyAny>>,
    /// `model_count(start_day, end_day)`: `(rows, tags of the writes in
    /// flight)` (the model-wide counters; None: `counter`, no tags).
    model_counter: Option<&'a Py<PyAny>>,
    /// `row(pk)`: `(row, listed, day)` as stored now, or None.
    row_loader: Option<&'a Py<PyAny>>,
    /// `rows(pks)`: the `(row, listed, day)` of those still stored.
    rows_loader: Option<&'a Py<PyAny>>,
    schema: &'a PySchema,
}

impl<'a> PySource<'a> {
    fn new(loader: Option<&'a Py<PyAny>>, schema: &'a PySchema) -> Self {
        PySource { loader, counter: None, model_counter: None, row_loader: None, rows_loader: None, schema }
    }

    fn counting(
        loader: &'a Py<PyAny>,
        counter: &'a Py<PyAny>,
        model_counter: Option<&'a Py<PyAny>>,
        schema: &'a PySchema,
    ) -> Self {
        PySource { counter: Some(counter), model_counter, ..PySource::new(Some(loader), schema) }
    }

    fn settling(loader: &'a Py<PyAny>, row_loader: &'a Py<PyAny>, schema: &'a PySchema) -> Self {
        PySource { row_loader: Some(row_loader), ..PySource::new(Some(loader), schema) }
    }

    fn settling_many(loader: &'a Py<PyAny>, rows_loader: &'a Py<PyAny>, schema: &'a PySchema) -> Self {
        PySource { rows_loader: Some(rows_loader), ..PySource::new(Some(loader), schema) }
    }

    fn call<T>(&self, f: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> PyResult<T>) -> listy_core::Result<T> {
        self.call_with(self.loader, f)
    }

    fn call_with<T>(
        &self,
        loader: Option<&Py<PyAny>>,
        f: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> PyResult<T>,
    ) -> listy_core::Result<T> {
        let Some(loader) = loader else {
            return Err(SourceError::unsupported("no loader given").into());
        };
        Python::attach(|py| {
            f(py, loader.bind(py)).map_err(|e| SourceError::caused_by(source_error_kind(py, &e), e).into())
        })
    }

    /// Turns a core error into the Python exception to raise.
    fn error(&self, e: Error) -> PyErr {
        CoreError(e).into()
    }
}

/// `Database` for Django's `DatabaseError` (and its subclasses), else `Other`.
fn source_error_kind(py: Python<'_>, e: &PyErr) -> SourceErrorKind {
    let database = py.import("django.db").and_then(|m| m.getattr("DatabaseError"));
    match database {
        Ok(class) if e.get_type(py).is_subclass(&class).unwrap_or(false) => SourceErrorKind::Database,
        _ => SourceErrorKind::Other,
    }
}

fn py_values<'py>(
    py: Python<'py>,
    values: &[Value],
    schema: &PySchema,
    fields: &[String],
) -> PyResult<Bound<'py, PyTuple>> {
    let items = fields
        .iter()
        .zip(values)
        .map(|(f, v)| {
            let field = &schema.inner.fields()[schema.inner.position(f).expect("index field")];
            value_to_py(py, v, field.kind, schema.aware)
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, items)
}

fn value_to_py<'py>(
    py: Python<'py>,
    v: &Value,
    _kind: listy_core::codec::Kind,
    aware: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let r = match v {
        Value::Null => listy_core::codec::ValueRef::Null,
        Value::Int(i) => listy_core::codec::ValueRef::Int(*i),
        Value::Bool(b) => listy_core::codec::ValueRef::Bool(*b),
        Value::Float(f) => listy_core::codec::ValueRef::Float(*f),
        Value::Str(s) => listy_core::codec::ValueRef::Str(s),
        Value::Bytes(b) => listy_core::codec::ValueRef::Bytes(b),
        Value::Datetime(us) => listy_core::codec::ValueRef::Datetime(*us),
        Value::Date(d) => listy_core::codec::ValueRef::Date(*d),
        Value::Time(us) => listy_core::codec::ValueRef::Time(*us),
        Value::Decimal(s) => listy_core::codec::ValueRef::Decimal(s),
        Value::Uuid(u) => listy_core::codec::ValueRef::Uuid(u),
        Value::Json(s) => listy_core::codec::ValueRef::Json(s),
    };
    crate::convert::to_py(py, r, aware)
}

impl Source for PySource<'_> {
    fn rows(&self, fields: &[String], values: &[Value]) -> listy_core::Result<Vec<Row>> {
        self.call(|py, loader| {
            let args = (PyTuple::new(py, fields)?, py_values(py, values, self.schema, fields)?);
            let rows = loader.call1(args)?;
            rows.try_iter()?.map(|row| row_from_py(&self.schema.inner, &row?)).collect()
        })
    }

    fn count(&self, fields: &[String], values: &[Value], days: Option<(i32, i32)>) -> listy_core::Result<u64> {
        self.call_with(self.counter, |py, loader| {
            let (start, end) = days.unzip();
            let args = (PyTuple::new(py, fields)?, py_values(py, values, self.schema, fields)?, start, end);
            loader.call1(args)?.extract::<u64>()
        })
    }

    fn model_count(&self, days: Option<(i32, i32)>) -> listy_core::Result<ModelCount> {
        if self.model_counter.is_none() {
            return Ok(ModelCount { rows: self.count(&[], &[], days)?, in_flight: Vec::new() });
        }
        self.call_with(self.model_counter, |_, loader| {
            let (start, end) = days.unzip();
            let (rows, in_flight) = loader.call1((start, end))?.extract::<(u64, Vec<u64>)>()?;
            Ok(ModelCount { rows, in_flight })
        })
    }

    fn row(&self, pk: &Value) -> listy_core::Result<Option<Stored>> {
        self.call_with(self.row_loader, |py, loader| {
            let pk = value_to_py(py, pk, listy_core::codec::Kind::Int, self.schema.aware)?;
            let found = loader.call1((pk,))?;
            if found.is_none() {
                return Ok(None);
            }
            stored_from_py(&self.schema.inner, &found).map(Some)
        })
    }

    fn rows_by_pk(&self, pks: &[Value]) -> listy_core::Result<Vec<Stored>> {
        self.call_with(self.rows_loader, |py, loader| {
            let pks = pks
                .iter()
                .map(|pk| value_to_py(py, pk, listy_core::codec::Kind::Int, self.schema.aware))
                .collect::<PyResult<Vec<_>>>()?;
            let found = loader.call1((PyList::new(py, pks)?,))?;
            found.try_iter()?.map(|s| stored_from_py(&self.schema.inner, &s?)).collect()
        })
    }
}

/// `(row, listed, day)` → the row as one engine sees it.
fn stored_from_py(schema: &listy_core::codec::Schema, state: &Bound<'_, PyAny>) -> PyResult<Stored> {
    let (row, listed, day): (Bound<'_, PyAny>, bool, Option<i32>) = state.extract()?;
    Ok(Stored { row: row_from_py(schema, &row)?, listed, day })
}

/// `(old, new)`: a row change as Python hands it over (None: absent).
type StatePair<'py> = (Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>);

/// FK attname → (FK field name, related model, attname the FK value fills).
type RelatedSpec = HashMap<String, (String, Py<PyType>, String)>;

#[pyclass(name = "Engine", frozen, module = "listy._native")]
pub struct PyEngine {
    engine: Arc<Engine>,
    schema: Py<PySchema>,
    builder: Arc<Builder>,
}

impl PyEngine {
    fn schema(&self, _py: Python<'_>) -> &PySchema {
        self.schema.get()
    }

    fn index(&self, index: Vec<String>) -> Vec<String> {
        listy_core::keys::canonical_index(&index)
    }

    fn values(
        &self,
        py: Python<'_>,
        fields: &[String],
        values: &Bound<'_, PyAny>,
    ) -> PyResult<(Vec<Value>, Vec<Py<PyAny>>)> {
        let schema = &self.schema(py).inner;
        let items: Vec<Bound<'_, PyAny>> = values.try_iter()?.collect::<PyResult<_>>()?;
        if items.len() != fields.len() {
            return Err(crate::errors::ConfigError::new_err(format!(
                "{} values for the {} fields {fields:?}",
                items.len(),
                fields.len()
            )));
        }
        let mut out = Vec::with_capacity(items.len());
        for (f, v) in fields.iter().zip(&items) {
            let pos = schema
                .position(f)
                .ok_or_else(|| crate::errors::NotCachableException::new_err(format!("{f:?} is not a cached field")))?;
            out.push(to_value(v, &schema.fields()[pos])?);
        }
        Ok((out, items.into_iter().map(|b| b.unbind()).collect()))
    }

    fn records(
        &self,
        py: Python<'_>,
        fields: &[String],
        values: Vec<Value>,
        objs: &[Py<PyAny>],
        loader: &Py<PyAny>,
        fetched: Fetched,
    ) -> PyResult<Records> {
        let layout = self.engine.layout(fields).map_err(CoreError)?;
        let schema = &self.schema.get().inner;
        let positions: Vec<usize> = fields.iter().map(|f| schema.position(f).expect("index field")).collect();
        let fixed = positions.iter().zip(objs).map(|(&pos, o)| (pos, o.clone_ref(py))).collect();
        let fixed_values = positions.into_iter().zip(values.iter().cloned()).collect();
        let completer = ListCompleter {
            engine: self.engine.clone(),
            schema: self.schema.clone_ref(py),
            fields: fields.to_vec(),
            values,
            loader: loader.clone_ref(py),
        };
        Ok(Records::new(List::new(fetched, layout, fixed_values, completer), self.builder.clone(), fixed))
    }
}

/// Fetches the segments of a list that was read head first, with the GIL
/// released; a loader's exception comes back as it was raised.
pub struct ListCompleter {
    engine: Arc<Engine>,
    schema: Py<PySchema>,
    fields: Vec<String>,
    values: Vec<Value>,
    loader: Py<PyAny>,
}

impl Completion for ListCompleter {
    type Error = Raised;

    fn complete(&self, partial: &Fetched) -> Result<Fetched, Raised> {
        Python::attach(|py| {
            let source = PySource::new(Some(&self.loader), self.schema.get());
            py.detach(|| self.engine.complete_list(&self.fields, &self.values, partial, &source))
                .map_err(|e| Raised(source.error(e)))
        })
    }

    fn segments(&self, partial: &Fetched, indices: &[u16]) -> Result<Option<Vec<Vec<u8>>>, Raised> {
        Python::attach(|py| py.detach(|| self.engine.segments_of(&self.fields, partial, indices)).map_err(Raised::from))
    }
}

fn report_to_py(py: Python<'_>, report: WriteReport) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("failed_keys", report.failed_keys)?;
    // Kinds to decide on, messages to log: Python never matches the text.
    let stale = report.faults.iter().any(|f| f.kind.may_leave_stale_keys());
    d.set_item("fault_kinds", report.faults.iter().map(|f| f.kind.name()).collect::<Vec<_>>())?;
    d.set_item("faults", report.faults.into_iter().map(|f| f.message).collect::<Vec<_>>())?;
    d.set_item("may_leave_stale_keys", stale)?;
    d.set_item("pk_list_found", report.pk_list_found)?;
    Ok(d)
}

/// Calls `callback(kind, key, detail)` for each engine event: `("lease_lost",
/// key, 0)`, `("compacted", key, dead frames)`, `("segment_split", key,
/// parts)`. A callback that raises is reported as unraisable, never into
/// the read that compacted.
fn event_sink(callback: Py<PyAny>) -> EventSink {
    Arc::new(move |event: Event, key: &str| {
        let (kind, detail) = match event {
            Event::LeaseLost => ("lease_lost", 0),
            Event::Compacted { dead } => ("compacted", dead),
            Event::SegmentSplit { parts } => ("segment_split", parts),
        };
        Python::attach(|py| {
            if let Err(error) = callback.call1(py, (kind, key, detail)) {
                error.write_unraisable(py, None);
            }
        });
    })
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (store, *, prefix, model, schema, indexes, model_class, state_class, db_alias = "default", related = None, on_build = None, unique = None, counter_epoch = None, on_event = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: &PyStore,
        prefix: &str,
        model: &str,
        schema: Py<PySchema>,
        indexes: Vec<Vec<String>>,
        model_class: Py<PyType>,
        state_class: Py<PyType>,
        db_alias: &str,
        related: Option<RelatedSpec>,
        on_build: Option<Py<PyAny>>,
        unique: Option<Vec<Vec<String>>>,
        counter_epoch: Option<f64>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<PyEngine> {
        let s = schema.get();
        // No epoch: one that never ends.
        let epoch = counter_epoch.filter(|e| e.is_finite() && *e > 0.0 && *e < 1e12).map(Duration::from_secs_f64);
        let mut builder = Engine::builder(store.inner.clone(), model, (*s.inner).clone())
            .prefix(prefix)
            .indexes(indexes)
            .unique_sets(unique.unwrap_or_default())
            .counter_epoch(epoch);
        if let Some(callback) = on_event {
            builder = builder.events(event_sink(callback));
        }
        let engine = builder.build().map_err(CoreError)?;
        let names: Vec<&str> = s.inner.fields().iter().map(|f| f.name.as_str()).collect();
        let attnames =
            names.iter().map(|n| if n.contains('.') { None } else { Some(PyString::intern(py, n).unbind()) }).collect();
        let mut rels = Vec::new();
        for (fk_attname, (field_name, class, pk_attname)) in related.unwrap_or_default() {
            let fk_position = s.inner.position(&fk_attname).ok_or_else(|| {
                crate::errors::ConfigError::new_err(format!("inlined foreign key {fk_attname:?} is not in the schema"))
            })?;
            let prefix = format!("{fk_attname}.");
            let fields = names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.strip_prefix(&prefix).map(|a| (i, PyString::intern(py, a).unbind())))
                .collect();
            rels.push(Related {
                fields,
                fk_position,
                field_name: PyString::new(py, &field_name).unbind(),
                class,
                pk_attname: PyString::intern(py, &pk_attname).unbind(),
            });
        }
        let builder = Builder {
            model_class,
            state_class,
            db_alias: PyString::new(py, db_alias).unbind(),
            attnames,
            related: rels,
            on_build,
            aware: s.aware,
            templates: pyo3::sync::PyOnceLock::new(),
        };
        Ok(PyEngine { engine: Arc::new(engine), schema, builder: Arc::new(builder) })
    }

    #[getter]
    fn hits(&self) -> u64 {
        self.engine.hits()
    }

    #[getter]
    fn misses(&self) -> u64 {
        self.engine.misses()
    }

    fn reset_stats(&self) {
        self.engine.reset_stats()
    }

    /// Model instances from rows in schema order (a loader's rows, used as
    /// they are), built as cached records are: the list served when the
    /// cache is not used.
    fn instances<'py>(&self, py: Python<'py>, rows: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        self.builder.instances(py, rows)
    }

    /// What another client of these lists must match, as this engine holds
    /// it: label, key prefix, fields `(name, kind, nullable)` in record
    /// order, schema fingerprint, indexes and unique sets (sorted field
    /// names), counter epoch in seconds (None: never ends).
    #[getter]
    fn contract<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let e = &self.engine;
        let d = PyDict::new(py);
        d.set_item("engine_label", e.model())?;
        d.set_item("key_prefix", e.prefix())?;
        let fields: Vec<(&str, &str, bool)> =
            e.schema().fields().iter().map(|f| (f.name.as_str(), f.kind.name(), f.nullable)).collect();
        d.set_item("fields", fields)?;
        d.set_item("schema_fingerprint", e.schema().fingerprint())?;
        d.set_item("indexes", e.indexes())?;
        let mut unique: Vec<Vec<String>> = e.unique().iter().map(|u| self.index(u.clone())).collect();
        unique.sort();
        d.set_item("unique", unique)?;
        d.set_item("counter_epoch", e.options().counter_epoch_length().map(|d| d.as_secs_f64()))?;
        Ok(d)
    }

    fn key(&self, py: Python<'_>, index: Vec<String>, values: &Bound<'_, PyAny>) -> PyResult<String> {
        let fields = self.index(index);
        let (vals, _) = self.values(py, &fields, values)?;
        let engine = self.engine.clone();
        Ok(py.detach(move || engine.key(&fields, &vals)).map_err(CoreError)?)
    }

    /// The list; a list stored in segments is read head first unless
    /// `complete` is true.
    #[pyo3(signature = (index, values, loader, complete = false))]
    fn get(
        &self,
        py: Python<'_>,
        index: Vec<String>,
        values: &Bound<'_, PyAny>,
        loader: Py<PyAny>,
        complete: bool,
    ) -> PyResult<Records> {
        let fields = self.index(index);
        let (vals, objs) = self.values(py, &fields, values)?;
        let source = PySource::new(Some(&loader), self.schema(py));
        let engine = self.engine.clone();
        let request = [(fields.clone(), vals.clone())];
        let fetched = py
            .detach(|| engine.get_multi(&request, &source, complete))
            .map_err(|e| source.error(e))?
            .pop()
            .expect("one list");
        self.records(py, &fields, vals, &objs, &loader, fetched)
    }

    fn get_multi(
        &self,
        py: Python<'_>,
        requests: Vec<(Vec<String>, Bound<'_, PyAny>)>,
        loader: Py<PyAny>,
    ) -> PyResult<Vec<Records>> {
        let mut reqs = Vec::with_capacity(requests.len());
        let mut objs = Vec::with_capacity(requests.len());
        for (index, values) in requests {
            let fields = self.index(index);
            let (vals, o) = self.values(py, &fields, &values)?;
            reqs.push((fields, vals));
            objs.push(o);
        }
        let source = PySource::new(Some(&loader), self.schema(py));
        let engine = self.engine.clone();
        let fetched = py.detach(|| engine.get_multi(&reqs, &source, true)).map_err(|e| source.error(e))?;
        fetched
            .into_iter()
            .zip(reqs.into_iter().zip(&objs))
            .map(|(f, ((fields, vals), o))| self.records(py, &fields, vals, o, &loader, f))
            .collect()
    }

    /// A row inserted under a primary key that may have been used before:
    /// the model's lists start afresh (new generation), then it is added.
    fn recreate<'py>(
        &self,
        py: Python<'py>,
        new: Bound<'py, PyAny>,
        loader: Py<PyAny>,
        row_loader: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let new = stored_from_py(&self.schema(py).inner, &new)?;
        let source = PySource::settling(&loader, &row_loader, self.schema(py));
        let engine = self.engine.clone();
        let report = py.detach(|| engine.recreate(&new, &source)).map_err(|e| source.error(e))?;
        report_to_py(py, report)
    }

    /// Lists served from the cache only, never built and never read from a
    /// source: `Records` for a list found whole (segments included), None
    /// for a miss. Store errors raise `CacheUnavailable`. `loader` is kept
    /// by the records for a reader that asks again; a complete list never
    /// calls it. With `budget` (seconds), the I/O may hold this thread only
    /// so long (`listy_core::pool::within_budget`): when it runs out the
    /// whole call returns None, to be made again without a budget.
    #[pyo3(signature = (requests, loader, budget = None))]
    fn get_cached(
        &self,
        py: Python<'_>,
        requests: Vec<(Vec<String>, Bound<'_, PyAny>)>,
        loader: Py<PyAny>,
        budget: Option<f64>,
    ) -> PyResult<Option<Vec<Option<Records>>>> {
        let mut reqs = Vec::with_capacity(requests.len());
        let mut objs = Vec::with_capacity(requests.len());
        for (index, values) in requests {
            let fields = self.index(index);
            let (vals, o) = self.values(py, &fields, &values)?;
            reqs.push((fields, vals));
            objs.push(o);
        }
        let engine = self.engine.clone();
        let budget = budget.filter(|b| b.is_finite() && *b >= 0.0).map(Duration::from_secs_f64);
        let found = py.detach(|| match budget {
            None => (engine.get_cached(&reqs, true), false),
            Some(budget) => listy_core::pool::within_budget(budget, || engine.get_cached(&reqs, true)),
        });
        let found = match found {
            (Ok(found), _) => found,
            (Err(_), true) => return Ok(None),
            (Err(e), false) => return Err(CoreError(e).into()),
        };
        found
            .into_iter()
            .zip(reqs.into_iter().zip(&objs))
            .map(|(f, ((fields, vals), o))| f.map(|f| self.records(py, &fields, vals, o, &loader, f)).transpose())
            .collect::<PyResult<Vec<_>>>()
            .map(Some)
    }

    /// A row change after its commit: `old`/`new` are `(row, listed, day)`
    /// as stored before and after (None: absent). The engine decides every
    /// frame and counter move, then settles through `row_loader(pk)`.
    fn change<'py>(
        &self,
        py: Python<'py>,
        old: Option<Bound<'py, PyAny>>,
        new: Option<Bound<'py, PyAny>>,
        loader: Py<PyAny>,
        row_loader: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let schema = &self.schema(py).inner;
        let old = old.map(|s| stored_from_py(schema, &s)).transpose()?;
        let new = new.map(|s| stored_from_py(schema, &s)).transpose()?;
        let source = PySource::settling(&loader, &row_loader, self.schema(py));
        let engine = self.engine.clone();
        let report = py.detach(|| engine.change(old.as_ref(), new.as_ref(), &source)).map_err(|e| source.error(e))?;
        report_to_py(py, report)
    }

    /// Many row changes after their commit, in one pipelined batch: each
    /// pair is `(old, new)` as for `change`. Settles through one
    /// `rows_loader(pks)` call per round (the states of those still stored).
    /// `recount`: the model-wide counters they touch are deleted instead of
    /// moved (`Engine::change_many_with`). `generation`: `generation_seen()`
    /// read before the changes committed (`Engine::change_many_since`).
    #[pyo3(signature = (pairs, loader, rows_loader, recount = false, generation = None))]
    fn change_many<'py>(
        &self,
        py: Python<'py>,
        pairs: &Bound<'py, PyAny>,
        loader: Py<PyAny>,
        rows_loader: Py<PyAny>,
        recount: bool,
        generation: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let schema = &self.schema(py).inner;
        let mut changes = Vec::new();
        for pair in pairs.try_iter()? {
            let (old, new): (Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>) = pair?.extract()?;
            let old = old.map(|s| stored_from_py(schema, &s)).transpose()?;
            let new = new.map(|s| stored_from_py(schema, &s)).transpose()?;
            changes.push((old, new));
        }
        let source = PySource::settling_many(&loader, &rows_loader, self.schema(py));
        let engine = self.engine.clone();
        let report = py
            .detach(|| engine.change_many_since(&changes, &source, recount, generation))
            .map_err(|e| source.error(e))?;
        report_to_py(py, report)
    }

    /// Settles rows written earlier, in one batch (`Engine::settle_many`):
    /// `states` are `(row, listed, day)` as written; `rows_loader(pks)`
    /// returns the states of those still stored.
    fn settle_many<'py>(
        &self,
        py: Python<'py>,
        states: &Bound<'py, PyAny>,
        loader: Py<PyAny>,
        rows_loader: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let schema = &self.schema(py).inner;
        let written = states.try_iter()?.map(|s| stored_from_py(schema, &s?)).collect::<PyResult<Vec<Stored>>>()?;
        let source = PySource::settling_many(&loader, &rows_loader, self.schema(py));
        let engine = self.engine.clone();
        let report = py.detach(|| engine.settle_many(written, &source)).map_err(|e| source.error(e))?;
        report_to_py(py, report)
    }

    /// Row changes read from the database's change stream, in commit
    /// order: `changes` is a list of `(old, new)` pairs as for `change`.
    /// Applied as a follower of the stream does (`ChangeOptions::follower`):
    /// one pipelined batch, no settle, no build of lists not cached, and
    /// the model-wide counters they touch deleted (recounted on the next
    /// read) rather than moved.
    fn follow_changes<'py>(&self, py: Python<'py>, changes: Vec<StatePair<'py>>) -> PyResult<Bound<'py, PyDict>> {
        let schema = &self.schema(py).inner;
        let stored = |s: Option<Bound<'py, PyAny>>| s.map(|s| stored_from_py(schema, &s)).transpose();
        let changes =
            changes.into_iter().map(|(old, new)| Ok((stored(old)?, stored(new)?))).collect::<PyResult<Vec<_>>>()?;
        let source = PySource::new(None, self.schema(py));
        let engine = self.engine.clone();
        let report = py
            .detach(|| engine.change_sequence(&changes, &source, ChangeOptions::follower()))
            .map_err(|e| source.error(e))?;
        report_to_py(py, report)
    }

    fn rebuild(
        &self,
        py: Python<'_>,
        index: Vec<String>,
        values: &Bound<'_, PyAny>,
        loader: Py<PyAny>,
    ) -> PyResult<()> {
        let fields = self.index(index);
        let (vals, _) = self.values(py, &fields, values)?;
        let source = PySource::new(Some(&loader), self.schema(py));
        let engine = self.engine.clone();
        py.detach(|| engine.rebuild(&fields, &vals, &source)).map_err(|e| source.error(e))
    }

    /// Deletes keys a failed write left stale; returns those still unreachable.
    fn repair(&self, py: Python<'_>, keys: Vec<String>) -> Vec<String> {
        let engine = self.engine.clone();
        py.detach(move || engine.repair(&keys))
    }

    /// The model's generation as this engine last saw it (no round trip;
    /// None before its first contact).
    fn generation_seen(&self) -> Option<u64> {
        self.engine.generation_seen()
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.engine.clone();
        Ok(py.detach(move || engine.flush()).map_err(CoreError)?)
    }

    /// `loader` reads a list's rows (a list is counted from itself),
    /// `counter` counts in the database; `model_counter(start_day,
    /// end_day)` counts the whole model with the tags of the writes in
    /// flight (the model-wide counters are then exact, see
    /// `listy_core::engine::with_write_tag`).
    #[pyo3(signature = (index, values, loader, counter, model_counter = None))]
    fn count(
        &self,
        py: Python<'_>,
        index: Vec<String>,
        values: &Bound<'_, PyAny>,
        loader: Py<PyAny>,
        counter: Py<PyAny>,
        model_counter: Option<Py<PyAny>>,
    ) -> PyResult<u64> {
        let fields = self.index(index);
        let (vals, _) = self.values(py, &fields, values)?;
        let source = PySource::counting(&loader, &counter, model_counter.as_ref(), self.schema(py));
        let engine = self.engine.clone();
        py.detach(|| engine.count(&fields, &vals, &source)).map_err(|e| source.error(e))
    }

    /// `buckets`: `((start_day, end_day), (start_us, end_us))` for each
    /// bucket; the loaders as for `count`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (index, values, period, timestamp, buckets, loader, counter, model_counter = None))]
    fn period_counts(
        &self,
        py: Python<'_>,
        index: Vec<String>,
        values: &Bound<'_, PyAny>,
        period: &str,
        timestamp: &str,
        buckets: Vec<((i32, i32), (i64, i64))>,
        loader: Py<PyAny>,
        counter: Py<PyAny>,
        model_counter: Option<Py<PyAny>>,
    ) -> PyResult<Vec<u64>> {
        let fields = self.index(index);
        let (vals, _) = self.values(py, &fields, values)?;
        let period = Period::parse(period).map_err(CoreError)?;
        let buckets: Vec<Bucket> = buckets.into_iter().map(|(days, micros)| Bucket { days, micros }).collect();
        let source = PySource::counting(&loader, &counter, model_counter.as_ref(), self.schema(py));
        let engine = self.engine.clone();
        py.detach(|| engine.period_counts(&fields, &vals, period, timestamp, &buckets, &source))
            .map_err(|e| source.error(e))
    }

    fn registered_indexes(&self, py: Python<'_>) -> PyResult<Vec<Vec<String>>> {
        let engine = self.engine.clone();
        Ok(py.detach(move || engine.registered_indexes()).map_err(CoreError)?)
    }

    fn inspect<'py>(
        &self,
        py: Python<'py>,
        index: Vec<String>,
        values: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let fields = self.index(index);
        let (vals, _) = self.values(py, &fields, values)?;
        let engine = self.engine.clone();
        let f2 = fields.clone();
        let (key, raw) = py.detach(move || engine.raw(&f2, &vals)).map_err(CoreError)?;
        let layout = self.engine.layout(&fields).map_err(CoreError)?;
        let d = PyDict::new(py);
        d.set_item("server", self.engine.store().server_for(&key))?;
        d.set_item("key", key)?;
        d.set_item("size", raw.as_ref().map(|r| r.len()).unwrap_or(0))?;
        // A valid head (of a whole list, or of one stored in segments).
        let head = raw.as_ref().and_then(|r| layout.read_parts(&[r]).ok().map(|v| v.segments()));
        d.set_item("complete", head.is_some())?;
        d.set_item("segments", head.unwrap_or(0))?;
        let frames = PyList::empty(py);
        let mut error = None;
        if let Some(raw) = &raw {
            let (infos, err) = describe(&layout, raw);
            error = err;
            for f in infos {
                let fd = PyDict::new(py);
                fd.set_item("offset", f.offset)?;
                fd.set_item("len", f.len)?;
                fd.set_item("kind", listy_core::codec::frame_kind(f.tag))?;
                fd.set_item("pk", f.pk)?;
                fd.set_item("live", f.live)?;
                frames.append(fd)?;
            }
        }
        d.set_item("frames", frames)?;
        d.set_item("error", error)?;
        d.set_item("raw", raw.map(|r| PyBytes::new(py, &r)))?;
        Ok(d)
    }
}

/// The first day (days since epoch) of the bucket of `period` containing `day`.
#[pyfunction]
pub fn bucket_start(period: &str, day: i32) -> PyResult<i32> {
    Ok(Period::parse(period).map_err(CoreError)?.start(day))
}

/// What a row change does to lists, from whether they held the row before
/// and after (None: absent): `nothing`, `add`, `remove`, `delete`, `bury`
/// or `move`. Callers skip scheduling cache work for `nothing`.
#[pyfunction]
#[pyo3(signature = (old_listed, new_listed))]
pub fn change_plan(old_listed: Option<bool>, new_listed: Option<bool>) -> &'static str {
    listy_core::engine::Plan::of_listed(old_listed, new_listed).name()
}
