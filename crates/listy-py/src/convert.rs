//! Python values ⇄ codec values, and `Schema` as a Python object.

use crate::errors::{ConfigError, CoreError};
use listy_core::calendar::{civil_from_days, days_from_civil};
use listy_core::codec::{Field, Kind, Schema, Value, ValueRef};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyDate, PyDateAccess, PyDateTime, PyDelta, PyDeltaAccess, PyFloat, PyInt, PyString, PyTime,
    PyTimeAccess, PyTuple, PyTzInfoAccess,
};
use std::sync::Arc;

const MICROS_PER_DAY: i64 = 86_400_000_000;

#[pyclass(name = "Schema", frozen, module = "listy._native")]
pub struct PySchema {
    pub inner: Arc<Schema>,
    pub aware: bool,
}

#[pymethods]
impl PySchema {
    #[new]
    #[pyo3(signature = (fields, aware = true))]
    fn new(fields: Vec<(String, String, bool)>, aware: bool) -> PyResult<PySchema> {
        let fields = fields
            .iter()
            .map(|(name, kind, nullable)| Ok(Field::new(name, Kind::parse(kind)?, *nullable)))
            .collect::<Result<Vec<_>, listy_core::Error>>()
            .map_err(CoreError)?;
        Ok(PySchema { inner: Arc::new(Schema::new(fields).map_err(CoreError)?), aware })
    }

    #[getter]
    fn fingerprint(&self) -> u32 {
        self.inner.fingerprint()
    }

    #[getter]
    fn attnames(&self) -> Vec<String> {
        self.inner.fields().iter().map(|f| f.name.clone()).collect()
    }

    /// One record frame for `row`, leaving out the fields named in `omit`.
    #[pyo3(signature = (row, omit = Vec::new()))]
    fn pack<'py>(&self, py: Python<'py>, row: &Bound<'py, PyAny>, omit: Vec<String>) -> PyResult<Bound<'py, PyBytes>> {
        let row = row_from_py(&self.inner, row)?;
        let fixed: Vec<usize> = omit.iter().filter_map(|n| self.inner.position(n)).collect();
        let layout = listy_core::codec::Layout::new(self.inner.clone(), &fixed);
        let mut out = Vec::new();
        layout.encode_record(&row, &mut out).map_err(CoreError)?;
        Ok(PyBytes::new(py, &out))
    }
}

/// A row tuple (schema order) as codec values.
pub fn row_from_py(schema: &Schema, row: &Bound<'_, PyAny>) -> PyResult<Vec<Value>> {
    let row = row.cast::<PyTuple>().map_err(|_| ConfigError::new_err("a row must be a tuple in schema order"))?;
    if row.len() != schema.fields().len() {
        return Err(ConfigError::new_err(format!(
            "row has {} values, the schema has {} fields ({})",
            row.len(),
            schema.fields().len(),
            schema.fields().iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    row.iter().zip(schema.fields()).map(|(v, f)| to_value(&v, f)).collect()
}

/// Converts one Python value for `field`.
pub fn to_value(obj: &Bound<'_, PyAny>, field: &Field) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    let bad =
        |e: PyErr| ConfigError::new_err(format!("field {:?} ({:?}) cannot hold {obj}: {e}", field.name, field.kind));
    Ok(match field.kind {
        Kind::Int => Value::Int(obj.extract::<i64>().map_err(bad)?),
        Kind::Bool => Value::Bool(obj.extract::<bool>().map_err(bad)?),
        Kind::Float => Value::Float(obj.extract::<f64>().map_err(bad)?),
        Kind::Str => Value::Str(obj.extract::<String>().map_err(bad)?),
        Kind::Bytes => Value::Bytes(
            obj.call_method0("__bytes__").unwrap_or_else(|_| obj.clone()).extract::<Vec<u8>>().map_err(bad)?,
        ),
        Kind::Decimal => Value::Decimal(obj.str()?.to_string()),
        Kind::Json => Value::Json(json_dumps(obj)?),
        Kind::Uuid => {
            let b: Vec<u8> = obj.getattr("bytes").map_err(bad)?.extract().map_err(bad)?;
            Value::Uuid(b.try_into().map_err(|_| ConfigError::new_err("a UUID has 16 bytes"))?)
        }
        Kind::Datetime => match crate::datetime_capi::utc_or_naive_fields(obj) {
            Some((y, m, d, h, mi, s, us)) => {
                Value::Datetime(days_from_civil(y, m, d) as i64 * MICROS_PER_DAY + time_micros(h, mi, s, us))
            }
            None => Value::Datetime(datetime_micros(obj.cast::<PyDateTime>().map_err(|e| bad(e.into()))?)?),
        },
        Kind::Date => {
            let d = obj.cast::<PyDate>().map_err(|e| bad(e.into()))?;
            Value::Date(days_from_civil(d.get_year(), d.get_month() as u32, d.get_day() as u32))
        }
        Kind::Time => {
            let t = obj.cast::<PyTime>().map_err(|e| bad(e.into()))?;
            Value::Time(time_micros(t.get_hour(), t.get_minute(), t.get_second(), t.get_microsecond()))
        }
    })
}

fn time_micros(h: u8, m: u8, s: u8, us: u32) -> i64 {
    ((h as i64 * 60 + m as i64) * 60 + s as i64) * 1_000_000 + us as i64
}

/// Microseconds since the epoch; aware datetimes are taken to UTC, naive
/// ones are kept as wall time (Django with USE_TZ=False).
fn datetime_micros(dt: &Bound<'_, PyDateTime>) -> PyResult<i64> {
    let days = days_from_civil(dt.get_year(), dt.get_month() as u32, dt.get_day() as u32) as i64;
    let mut us =
        days * MICROS_PER_DAY + time_micros(dt.get_hour(), dt.get_minute(), dt.get_second(), dt.get_microsecond());
    if dt.get_tzinfo().is_some() {
        let offset = dt.call_method0("utcoffset")?;
        if !offset.is_none() {
            let delta = offset.cast::<PyDelta>()?;
            us -= delta.get_days() as i64 * MICROS_PER_DAY
                + delta.get_seconds() as i64 * 1_000_000
                + delta.get_microseconds() as i64;
        }
    }
    Ok(us)
}

static JSON_DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static DECIMAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static UUID: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn import_attr(py: Python<'_>, cell: &'static PyOnceLock<Py<PyAny>>, module: &str, name: &str) -> PyResult<Py<PyAny>> {
    cell.get_or_try_init(py, || Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())).map(|o| o.clone_ref(py))
}

fn json_dumps(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let dumps = import_attr(obj.py(), &JSON_DUMPS, "json", "dumps")?;
    dumps.bind(obj.py()).call1((obj,))?.extract()
}

/// Converts one decoded value to Python.
pub fn to_py<'py>(py: Python<'py>, v: ValueRef<'_>, aware: bool) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        ValueRef::Null => py.None().into_bound(py),
        ValueRef::Int(i) => PyInt::new(py, i).into_any(),
        ValueRef::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        ValueRef::Float(f) => PyFloat::new(py, f).into_any(),
        ValueRef::Str(s) => PyString::new(py, s).into_any(),
        ValueRef::Bytes(b) => PyBytes::new(py, b).into_any(),
        ValueRef::Datetime(us) => datetime_from_micros(py, us, aware)?,
        ValueRef::Date(d) => {
            let (y, m, dd) = civil_from_days(d);
            crate::datetime_capi::date(py, y, m as u8, dd as u8)?
        }
        ValueRef::Time(us) => {
            let (h, mi, s, micro) = split_time(us);
            PyTime::new(py, h, mi, s, micro, None)?.into_any()
        }
        ValueRef::Decimal(s) => import_attr(py, &DECIMAL, "decimal", "Decimal")?.bind(py).call1((s,))?,
        ValueRef::Json(s) => import_attr(py, &JSON_LOADS, "json", "loads")?.bind(py).call1((s,))?,
        ValueRef::Uuid(b) => {
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("bytes", PyBytes::new(py, b))?;
            import_attr(py, &UUID, "uuid", "UUID")?.bind(py).call((), Some(&kwargs))?
        }
    })
}

fn split_time(us: i64) -> (u8, u8, u8, u32) {
    let us = us.rem_euclid(MICROS_PER_DAY);
    let secs = us / 1_000_000;
    ((secs / 3600) as u8, (secs / 60 % 60) as u8, (secs % 60) as u8, (us % 1_000_000) as u32)
}

fn datetime_from_micros(py: Python<'_>, us: i64, aware: bool) -> PyResult<Bound<'_, PyAny>> {
    let days = us.div_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days as i32);
    let (h, mi, s, micro) = split_time(us);
    crate::datetime_capi::datetime(py, y, m as u8, d as u8, h, mi, s, micro, aware)
}

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// The local day numbers (days since 1970-01-01) of many values, for the
/// model-wide counters (`listy.source.DayCache.many`): an exact datetime in
/// `datetime.timezone.utc` is taken to its day by the zone's UTC offset for
/// its hour, `offset(hour)` (microseconds, or None where the offset changes
/// within that hour), asked once per hour of the batch; None stays None;
/// every other value (a naive datetime, another zone, a date, an hour whose
/// offset changes) goes to `fallback(value)`. The zone stays Python's.
#[pyfunction]
pub fn utc_days<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    offset: &Bound<'py, PyAny>,
    fallback: &Bound<'py, PyAny>,
) -> PyResult<Vec<Option<i64>>> {
    let mut offsets: std::collections::HashMap<i64, Option<i64>> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for value in values.try_iter()? {
        let value = value?;
        if value.is_none() {
            out.push(None);
            continue;
        }
        let micros = match crate::datetime_capi::utc_or_naive_fields(&value) {
            Some((y, m, d, h, mi, s, us)) if crate::datetime_capi::is_utc(py, &value) => {
                days_from_civil(y, m, d) as i64 * MICROS_PER_DAY + time_micros(h, mi, s, us)
            }
            _ => {
                out.push(fallback.call1((value,))?.extract()?);
                continue;
            }
        };
        let hour = micros.div_euclid(MICROS_PER_HOUR);
        let off = match offsets.get(&hour) {
            Some(off) => *off,
            None => {
                let off: Option<i64> = offset.call1((hour,))?.extract()?;
                offsets.insert(hour, off);
                off
            }
        };
        match off {
            Some(off) => out.push(Some((micros + off).div_euclid(MICROS_PER_DAY))),
            None => out.push(fallback.call1((value,))?.extract()?),
        }
    }
    Ok(out)
}
