//! Codec micro-benchmark: encode and decode 10,000 Follow records.
//!
//! Proposed as `crates/listy-core/benches/codec.rs`, wired in
//! `crates/listy-core/Cargo.toml` with
//!
//! ```toml
//! [[bench]]
//! name = "codec"
//! harness = false
//! ```
//!
//! and run with `cargo bench -p listy-core --bench codec` (release profile).
//! No criterion: `std::time::Instant`, a warm-up, then the median of N runs
//! of each step. It prints records/s and MB/s (of encoded bytes) for:
//!
//! - `encode_list`: rows → one list value (records + trailer);
//! - `read`: validating the value and finding the live records (frame walk);
//! - `decode`: `decode_record` of every live record (values, no Python);
//! - `read+decode`: both, what a full read of the list costs the engine.
//!
//! The list is the follower list of SPEC §2: `Follow(id, created, follower_id,
//! followee_id)` with `follower_id` fixed by the key, so each record stores
//! pk, created and followee_id.

use listy_core::codec::{Field, Kind, Layout, Schema, Value, ValueRef};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORDS: usize = 10_000;
const RUNS: usize = 31;
/// 2025-01-06T00:00:00Z in microseconds since the Unix epoch.
const BASE_MICROS: i64 = 1_736_121_600_000_000;

fn follow_schema() -> Arc<Schema> {
    Arc::new(
        Schema::new(vec![
            Field::new("id", Kind::Int, false),
            Field::new("created", Kind::Datetime, false),
            Field::new("follower_id", Kind::Int, false),
            Field::new("followee_id", Kind::Int, false),
        ])
        .expect("schema"),
    )
}

/// Newest first, like a list built from the database (reverse pk order).
fn follow_rows() -> Vec<Vec<Value>> {
    (0..RECORDS)
        .rev()
        .map(|i| {
            let pk = 20_000 + 3 * i as i64; // interleaved with other followers' rows
            vec![
                Value::Int(pk),
                Value::Datetime(BASE_MICROS + pk * 1_000_000 + 123_456),
                Value::Int(10_001),
                Value::Int(1 + i as i64),
            ]
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut()>(mut f: F) -> Duration {
    for _ in 0..3 {
        f(); // warm-up
    }
    let runs = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    median(runs)
}

fn report(step: &str, d: Duration, records: usize, bytes: usize) {
    let s = d.as_secs_f64();
    println!(
        "{step:<12} {:>9.1} µs   {:>12.0} records/s   {:>8.1} MB/s",
        s * 1e6,
        records as f64 / s,
        bytes as f64 / s / 1e6,
    );
}

fn main() {
    let schema = follow_schema();
    let follower = schema.position("follower_id").expect("follower_id");
    let layout = Layout::new(schema.clone(), &[follower]);
    let rows = follow_rows();

    let encoded = layout.encode_list(rows.iter()).expect("encode");
    let bytes = encoded.len();
    println!(
        "listy-core codec: {RECORDS} Follow records (follower list), {bytes} bytes = {:.2} bytes/record; median of {RUNS} runs",
        bytes as f64 / RECORDS as f64
    );

    // Sanity: the value reads back to the same rows.
    {
        let view = layout.read(&encoded).expect("read");
        assert_eq!(view.len(), RECORDS);
        let mut vals: Vec<ValueRef> = Vec::with_capacity(4);
        for (i, row) in rows.iter().enumerate() {
            vals.clear();
            let pk = layout.decode_record(view.record(i), &mut vals).expect("decode");
            assert_eq!(Value::Int(pk), row[0]);
            let stored: Vec<Value> = vals.iter().map(|v| ValueRef::to_owned(*v)).collect();
            let want: Vec<Value> = layout.stored().iter().map(|&p| row[p].clone()).collect();
            assert_eq!(stored, want, "record {i}");
        }
    }

    let d = time(|| {
        black_box(layout.encode_list(black_box(&rows).iter()).expect("encode"));
    });
    report("encode_list", d, RECORDS, bytes);

    let d = time(|| {
        let view = layout.read(black_box(&encoded)).expect("read");
        black_box(view.len());
    });
    report("read", d, RECORDS, bytes);

    let view = layout.read(&encoded).expect("read");
    let d = time(|| {
        let mut vals: Vec<ValueRef> = Vec::with_capacity(4);
        let mut sum = 0i64;
        for i in 0..view.len() {
            vals.clear();
            sum = sum.wrapping_add(layout.decode_record(view.record(i), &mut vals).expect("decode"));
        }
        black_box((sum, vals.len()));
    });
    report("decode", d, RECORDS, bytes);

    let d = time(|| {
        let view = layout.read(black_box(&encoded)).expect("read");
        let mut vals: Vec<ValueRef> = Vec::with_capacity(4);
        let mut sum = 0i64;
        for i in 0..view.len() {
            vals.clear();
            sum = sum.wrapping_add(layout.decode_record(view.record(i), &mut vals).expect("decode"));
        }
        black_box(sum);
    });
    report("read+decode", d, RECORDS, bytes);
}
