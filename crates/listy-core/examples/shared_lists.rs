//! A Rust service sharing lists with a Django project that uses Listy.
//!
//! It reads a list that Django cached and prints its rows as JSON lines, and
//! adds a row (one the service wrote to the database itself) to every list
//! it belongs to, as `Model.cache.add` does after commit, so that Django's
//! `Model.cache.get(...)` shows it with no query. The schema contract comes
//! from the Django project: `python manage.py listy_schema --json`.
//!
//! ```text
//! shared_lists [--server HOST:PORT[,...]] [--prefix P] [--schema FILE|-] [--model app.Model] get FIELD=VALUE...
//! shared_lists [--server HOST:PORT[,...]] [--prefix P] [--schema FILE|-] [--model app.Model] add ROW_JSON
//! ```
//!
//! `FIELD` is an attname (`follower_id`); values and rows use the canonical
//! JSON forms of docs/rust.md (datetimes as integer microseconds since the
//! Unix epoch in UTC, dates as days since 1970-01-01, ...). The service has
//! no database: a list that is not cached is an error (read it once in
//! Django, or `manage.py listy_warm`), never a list built from nothing; an
//! add leaves a list that is not cached uncached.

use listy_core::calendar::days_from_civil;
use listy_core::codec::{Field, Kind, Row, Schema, Value, ValueRef};
use listy_core::engine::{Engine, Source, Stored};
use listy_core::pool::{MemcachedPool, PoolConfig};
use listy_core::{Error, SourceError};
use serde_json::Value as Json;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const DAY_US: i64 = 86_400_000_000;

/// The source of a service without a database: every miss is an error.
struct NoDatabase;

impl NoDatabase {
    fn error() -> Error {
        SourceError::unsupported(
            "this service has no database to build a list that is not cached (Django builds it on its next \
             read, or `manage.py listy_warm`)",
        )
        .into()
    }
}

impl Source for NoDatabase {
    fn rows(&self, _: &[String], _: &[Value]) -> listy_core::Result<Vec<Row>> {
        Err(NoDatabase::error())
    }
    fn count(&self, _: &[String], _: &[Value], _: Option<(i32, i32)>) -> listy_core::Result<u64> {
        Err(NoDatabase::error())
    }
    fn row(&self, _: &Value) -> listy_core::Result<Option<Stored>> {
        Err(NoDatabase::error())
    }
}

/// One engine of the `listy_schema --json` document.
struct Contract {
    model: String,
    engine: Engine,
    timestamp: Option<String>,
    /// `None`: naive datetimes (Django's `USE_TZ = False`).
    time_zone: Option<String>,
    /// (field, value that keeps a row in the lists).
    listed_when: Vec<(String, bool)>,
}

struct Args {
    servers: Vec<String>,
    prefix: Option<String>,
    schema: String,
    model: Option<String>,
    command: String,
    rest: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        servers: vec!["127.0.0.1:11211".into()],
        prefix: None,
        schema: "-".into(),
        model: None,
        command: String::new(),
        rest: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--server" => args.servers = value("--server")?.split(',').map(str::to_string).collect(),
            "--prefix" => args.prefix = Some(value("--prefix")?),
            "--schema" => args.schema = value("--schema")?,
            "--model" => args.model = Some(value("--model")?),
            "get" | "add" => {
                args.command = arg;
                args.rest = it.collect();
                break;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.command.is_empty() {
        return Err("give a command: get FIELD=VALUE... or add ROW_JSON".into());
    }
    Ok(args)
}

fn read_document(path: &str) -> Result<Json, String> {
    let mut text = String::new();
    if path == "-" {
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("stdin: {e}"))?;
    } else {
        text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    }
    let document: Json = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    if document["format"] != 1 {
        return Err(format!("{path}: not a `listy_schema --json` document of format 1"));
    }
    Ok(document)
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

fn string_sets(v: &Json) -> Vec<Vec<String>> {
    v.as_array().into_iter().flatten().map(strings).collect()
}

/// The engines of the document for `model` (every one when it has one model).
fn contracts(document: &Json, args: &Args, store: &Arc<MemcachedPool>) -> Result<Vec<Contract>, String> {
    let mut out = Vec::new();
    for entry in document["engines"].as_array().into_iter().flatten() {
        let model = entry["model"].as_str().unwrap_or_default().to_string();
        if args.model.as_ref().is_some_and(|m| *m != model) {
            continue;
        }
        let mut fields = Vec::new();
        for f in entry["fields"].as_array().into_iter().flatten() {
            let kind = Kind::parse(f["kind"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
            fields.push(Field::new(f["name"].as_str().unwrap_or_default(), kind, f["nullable"] == true));
        }
        let schema = Schema::new(fields).map_err(|e| format!("{model}: {e}"))?;
        if entry["schema_fingerprint"].as_u64() != Some(schema.fingerprint() as u64) {
            return Err(format!("{model}: the fields do not give the schema fingerprint the document names"));
        }
        let prefix = args.prefix.clone().or_else(|| entry["key_prefix"].as_str().map(str::to_string));
        let epoch = entry["counter_epoch"].as_f64().map(Duration::from_secs_f64);
        let label = entry["engine_label"].as_str().unwrap_or_default();
        let engine = Engine::builder(store.clone(), label, schema)
            .prefix(&prefix.unwrap_or_default())
            .indexes(string_sets(&entry["indexes"]))
            .unique_sets(string_sets(&entry["unique"]))
            .counter_epoch(epoch)
            .build()
            .map_err(|e| format!("{model}: {e}"))?;
        let mut listed_when = Vec::new();
        if let (Some(f), false) = (entry["soft_delete_field"].as_str(), entry["keeps_soft_deleted"] == true) {
            listed_when.push((f.to_string(), false));
        }
        if let Some(f) = entry["enabled_field"].as_str() {
            listed_when.push((f.to_string(), true));
        }
        out.push(Contract {
            model,
            engine,
            timestamp: entry["timestamp_field"].as_str().map(str::to_string),
            time_zone: entry["time_zone"].as_str().map(str::to_string),
            listed_when,
        });
    }
    match out.iter().map(|c| &c.model).collect::<std::collections::BTreeSet<_>>().len() {
        0 => Err("the document has no engine for this model".into()),
        1 => Ok(out),
        _ => Err("the document has several models: choose one with --model".into()),
    }
}

// ------------------------------------------------------------ canonical values

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|c| *c != b'-').collect();
    digits
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => u8::from_str_radix(std::str::from_utf8(&[*hi, *lo]).ok()?, 16).ok(),
            _ => None,
        })
        .collect()
}

/// A decoded value in its canonical JSON form.
fn to_json(v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::Null => Json::Null,
        ValueRef::Int(i) | ValueRef::Datetime(i) | ValueRef::Time(i) => Json::from(i),
        ValueRef::Date(d) => Json::from(d),
        ValueRef::Bool(b) => Json::from(b),
        ValueRef::Float(f) => Json::from(f),
        ValueRef::Str(s) | ValueRef::Decimal(s) => Json::from(s),
        ValueRef::Bytes(b) => Json::from(hex(b)),
        ValueRef::Uuid(u) => Json::from(hex(u)),
        ValueRef::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| Json::from(s)),
    }
}

/// A canonical JSON value as a value of `field`.
fn from_json(field: &Field, v: &Json) -> Result<Value, String> {
    let bad = || format!("field {:?} ({}) cannot hold {v}", field.name, field.kind.name());
    if v.is_null() {
        return Ok(Value::Null);
    }
    Ok(match field.kind {
        Kind::Int => Value::Int(v.as_i64().ok_or_else(bad)?),
        Kind::Bool => Value::Bool(v.as_bool().ok_or_else(bad)?),
        Kind::Float => Value::Float(v.as_f64().ok_or_else(bad)?),
        Kind::Str => Value::Str(v.as_str().ok_or_else(bad)?.to_string()),
        Kind::Bytes => Value::Bytes(v.as_str().and_then(unhex).ok_or_else(bad)?),
        Kind::Datetime => Value::Datetime(v.as_i64().ok_or_else(bad)?),
        Kind::Date => Value::Date(v.as_i64().and_then(|d| i32::try_from(d).ok()).ok_or_else(bad)?),
        Kind::Time => Value::Time(v.as_i64().ok_or_else(bad)?),
        Kind::Decimal => Value::Decimal(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())),
        Kind::Uuid => Value::Uuid(v.as_str().and_then(unhex).and_then(|b| b.try_into().ok()).ok_or_else(bad)?),
        Kind::Json => Value::Json(v.to_string()),
    })
}

// ------------------------------------------------------------ days

extern "C" {
    fn tzset();
}

/// Makes the C library's local time the zone of day buckets.
fn use_time_zone(zone: &str) -> Result<(), String> {
    let dir = std::env::var("TZDIR").unwrap_or_else(|_| "/usr/share/zoneinfo".into());
    if !std::path::Path::new(&dir).join(zone).is_file() {
        // The C library would silently count days in UTC instead.
        return Err(format!("time zone {zone:?} not found in {dir}"));
    }
    std::env::set_var("TZ", zone);
    // SAFETY: tzset only reads TZ; this program has one thread.
    unsafe { tzset() };
    Ok(())
}

/// The local day of a timestamp, as Django's model-wide counters count it.
fn day_of(value: &Value, aware: bool) -> Option<i32> {
    let us = match value {
        Value::Date(d) => return Some(*d),
        Value::Datetime(us) => *us,
        _ => return None,
    };
    if !aware {
        return Some(us.div_euclid(DAY_US) as i32);
    }
    let secs = us.div_euclid(1_000_000) as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return None;
    }
    Some(days_from_civil(tm.tm_year + 1900, (tm.tm_mon + 1) as u32, tm.tm_mday as u32))
}

// ------------------------------------------------------------ commands

/// Prints the list keyed by `filters` (`field=value`), newest first.
fn get(contract: &Contract, filters: &[String]) -> Result<(), String> {
    let schema = contract.engine.schema().clone();
    let mut keyed: Vec<(String, Value)> = Vec::new();
    for filter in filters {
        let (name, text) = filter.split_once('=').ok_or(format!("{filter:?}: expected FIELD=VALUE"))?;
        let pos = schema.position(name).ok_or(format!("{name:?} is not a field of {}", contract.model))?;
        let json = serde_json::from_str(text).unwrap_or_else(|_| Json::from(text));
        keyed.push((name.to_string(), from_json(&schema.fields()[pos], &json)?));
    }
    // The engine names lists by their sorted field names.
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let (fields, values): (Vec<String>, Vec<Value>) = keyed.into_iter().unzip();
    let list = contract.engine.get(&fields, &values, &NoDatabase).map_err(|e| e.to_string())?;
    let layout = contract.engine.layout(&fields).map_err(|e| e.to_string())?;
    let mut decoded = Vec::new();
    for &(part, start, end) in &list.live {
        decoded.clear();
        let frame = &list.parts[part as usize][start as usize..end as usize];
        let pk = layout.decode_record(frame, &mut decoded).map_err(|e| e.to_string())?;
        let mut row: Vec<Json> = vec![Json::Null; schema.fields().len()];
        row[0] = Json::from(pk);
        for (&pos, v) in layout.stored().iter().zip(&decoded) {
            row[pos] = to_json(*v);
        }
        for (name, v) in fields.iter().zip(&values) {
            row[schema.position(name).expect("checked")] = to_json(borrowed(v));
        }
        let cells: Vec<String> =
            schema.fields().iter().zip(&row).map(|(f, v)| format!("{}:{v}", Json::from(f.name.as_str()))).collect();
        println!("{{{}}}", cells.join(","));
    }
    Ok(())
}

fn borrowed(v: &Value) -> ValueRef<'_> {
    match v {
        Value::Null => ValueRef::Null,
        Value::Int(i) => ValueRef::Int(*i),
        Value::Bool(b) => ValueRef::Bool(*b),
        Value::Float(f) => ValueRef::Float(*f),
        Value::Str(s) => ValueRef::Str(s),
        Value::Bytes(b) => ValueRef::Bytes(b),
        Value::Datetime(us) => ValueRef::Datetime(*us),
        Value::Date(d) => ValueRef::Date(*d),
        Value::Time(us) => ValueRef::Time(*us),
        Value::Decimal(s) => ValueRef::Decimal(s),
        Value::Uuid(u) => ValueRef::Uuid(u),
        Value::Json(s) => ValueRef::Json(s),
    }
}

/// Adds a row (already committed to the database) to the lists of one engine.
fn add(contract: &Contract, object: &serde_json::Map<String, Json>) -> Result<(), String> {
    let schema = contract.engine.schema();
    let mut row = Row::with_capacity(schema.fields().len());
    for field in schema.fields() {
        match object.get(&field.name) {
            Some(v) => row.push(from_json(field, v)?),
            None if field.nullable => row.push(Value::Null),
            None => return Err(format!("the row has no value for {:?}", field.name)),
        }
    }
    let listed = contract.listed_when.iter().all(|(f, keep)| object.get(f) == Some(&Json::from(*keep)));
    let day = contract.timestamp.as_ref().and_then(|name| {
        let pos = schema.position(name)?;
        day_of(&row[pos], contract.time_zone.is_some())
    });
    // An insert: no row before, this one after. The engine decides what it
    // does to each list (nothing, when the lists do not hold the row).
    let new = Stored { row, listed, day };
    let report = contract.engine.change(None, Some(&new), &NoDatabase).map_err(|e| e.to_string())?;
    for fault in &report.faults {
        eprintln!("{}: {fault}", contract.engine.model());
    }
    // A key the write could not reach must not keep a value without it.
    let stale = contract.engine.repair(&report.failed_keys);
    if !stale.is_empty() {
        return Err(format!("these keys may miss the row and could not be deleted: {}", stale.join(" ")));
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let document = read_document(&args.schema)?;
    let store = Arc::new(MemcachedPool::new(PoolConfig::new(args.servers.clone())).map_err(|e| e.to_string())?);
    let contracts = contracts(&document, &args, &store)?;
    if let Some(zone) = contracts.iter().find_map(|c| c.time_zone.as_deref()) {
        use_time_zone(zone)?;
    }
    match args.command.as_str() {
        // The first engine is Django's `Model.cache`.
        "get" => get(&contracts[0], &args.rest),
        _ => {
            let [text] = args.rest.as_slice() else { return Err("add takes one row, as a JSON object".into()) };
            let row: Json = serde_json::from_str(text).map_err(|e| format!("the row: {e}"))?;
            let object = row.as_object().ok_or("the row must be a JSON object")?;
            // Every engine of the model, as Django writes to each of its writers.
            contracts.iter().try_for_each(|c| add(c, object))
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shared_lists: {message}");
            ExitCode::FAILURE
        }
    }
}
