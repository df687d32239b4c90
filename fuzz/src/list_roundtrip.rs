//! Target `list_roundtrip`: a valid list built from arbitrary rows.
//!
//! The input (through `arbitrary::Unstructured`) picks a schema (0..=16
//! fields of any kind and nullability, now and then up to 72), the fields
//! the list key fixes, rows (pks often drawn from a small range, so that
//! some repeat), a build id and part limits. Then:
//!
//! 1. `encode_list` reads back exactly: the pks in order, newest occurrence
//!    of a pk first, with the same stored values (floats bit for bit), and
//!    `describe` sees every frame and no error;
//! 2. `encode_parts` reads back as the same list, every segment is within
//!    its limit, the head alone is a prefix of it, compaction keeps it;
//! 3. copies with bytes flipped, set, removed, inserted, truncated, appended,
//!    with valid update / tombstone / record frames prepended, or with parts
//!    dropped, swapped or repeated, are read with every cross-check of
//!    [`check::exercise`], and nothing panics.

use arbitrary::{Result, Unstructured};
use listy_core::codec::{encode_tombstone, Field, Kind, Layout, Row, Schema, Value};
use std::collections::HashSet;
use std::sync::Arc;

use crate::check::{self, Canon, Decoded, KINDS};

pub fn run(data: &[u8]) {
    let _ = run_inner(&mut Unstructured::new(data));
}

fn run_inner(u: &mut Unstructured<'_>) -> Result<()> {
    let layout = gen_layout(u)?;
    let schema = layout.schema().clone();
    let n_rows = u.int_in_range(0..=48)?;
    let small_pks = u.ratio(1, 2)?;
    let mut rows: Vec<Row> = Vec::with_capacity(n_rows);
    for _ in 0..n_rows {
        rows.push(gen_row(u, &schema, small_pks)?);
    }
    let expected = expected(&layout, &rows);

    // 1. One value.
    let bytes = layout.encode_list(&rows).expect("rows built for the schema encode");
    let view = layout.read(&bytes).expect("an encoded list reads");
    assert!(view.complete());
    assert_eq!(check::check_view(&layout, &view), expected, "encode_list does not round-trip");
    assert_eq!(view.dead_frames(), rows.len() - expected.len());
    let (frames, error) = listy_core::codec::describe(&layout, &bytes);
    assert_eq!(error, None, "describe fails on a valid list");
    assert_eq!(frames.len(), rows.len());
    assert_eq!(frames.iter().filter(|f| f.live).count(), expected.len());
    assert_eq!(
        check::exercise(&layout, &[&bytes], 1 << 20, 1 << 20).as_ref(),
        Some(&expected),
        "exercise disagrees on a valid list"
    );

    // 2. In parts.
    let id: u32 = u.arbitrary()?;
    let head_max = u.int_in_range(0..=600)?;
    let segment_max = u.int_in_range(0..=2000)?;
    let mut parts = match layout.encode_parts(&rows, id, head_max, segment_max) {
        Ok(parts) => {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            for (i, p) in parts.iter().enumerate().skip(1) {
                assert!(p.len() <= segment_max, "segment {i}: {} bytes > {segment_max}", p.len());
            }
            let got = check::exercise(&layout, &refs, head_max, segment_max.max(1));
            assert_eq!(got.as_ref(), Some(&expected), "encode_parts does not round-trip");
            parts
        }
        Err(listy_core::Error::TooLarge { .. }) => vec![bytes.clone()],
        Err(e) => panic!("encode_parts: {e}"),
    };

    // 3. Damaged copies.
    let n_mutations = u.int_in_range(1..=8)?;
    for _ in 0..n_mutations {
        mutate(u, &layout, &schema, &mut parts)?;
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    check::exercise(&layout, &refs, head_max, segment_max);
    check::exercise(&layout, &refs[..1.min(refs.len())], head_max, segment_max);
    Ok(())
}

fn gen_layout(u: &mut Unstructured<'_>) -> Result<Layout> {
    // Now and then a wide schema, mostly nullable: the null bitmap's edge.
    let wide = u.ratio(1, 16)?;
    let n = u.int_in_range(0..=if wide { 72 } else { 16 })?;
    let mut fields = vec![Field::new("id", Kind::Int, false)];
    let mut nullable = 0;
    for i in 0..n {
        let kind = *u.choose(&KINDS)?;
        let mut null = if wide { u.ratio(15, 16)? } else { u.arbitrary::<bool>()? };
        // Finding F1 (fixed): the codec refuses more than 64 nullable fields
        // (its null bitmap is one u64), so generated schemas stay within it.
        if null && nullable == 64 {
            null = false;
        }
        nullable += null as usize;
        fields.push(Field::new(&format!("f{i}"), kind, null));
    }
    let schema = Arc::new(Schema::new(fields).expect("distinct names, int pk"));
    let mut fixed = Vec::new();
    for i in 1..=n {
        if u.ratio(1, 5)? {
            fixed.push(i);
        }
    }
    Ok(Layout::new(schema, &fixed))
}

fn gen_row(u: &mut Unstructured<'_>, schema: &Schema, small_pks: bool) -> Result<Row> {
    let pk = if small_pks { u.int_in_range(-3i64..=12)? } else { u.arbitrary()? };
    let mut row = vec![Value::Int(pk)];
    for f in &schema.fields()[1..] {
        if f.nullable && u.ratio(1, 3)? {
            row.push(Value::Null);
            continue;
        }
        row.push(match f.kind {
            Kind::Int => Value::Int(u.arbitrary()?),
            Kind::Bool => Value::Bool(u.arbitrary()?),
            Kind::Float => Value::Float(f64::from_bits(u.arbitrary()?)),
            Kind::Str => Value::Str(u.arbitrary()?),
            Kind::Bytes => Value::Bytes(u.arbitrary()?),
            Kind::Datetime => Value::Datetime(u.arbitrary()?),
            Kind::Date => Value::Date(u.arbitrary()?),
            Kind::Time => Value::Time(u.arbitrary()?),
            Kind::Decimal => Value::Decimal(u.arbitrary()?),
            Kind::Uuid => Value::Uuid(u.arbitrary()?),
            Kind::Json => Value::Json(u.arbitrary()?),
        });
    }
    Ok(row)
}

/// What a list of `rows` (newest first) must read as: the first occurrence
/// of each pk, its stored fields only.
fn expected(layout: &Layout, rows: &[Row]) -> Decoded {
    let mut seen = HashSet::new();
    rows.iter()
        .filter_map(|r| {
            let Value::Int(pk) = r[0] else { unreachable!("pk is an int") };
            seen.insert(pk).then(|| (pk, layout.stored().iter().map(|&i| Canon::from(&r[i])).collect()))
        })
        .collect()
}

fn mutate(u: &mut Unstructured<'_>, layout: &Layout, schema: &Schema, parts: &mut Vec<Vec<u8>>) -> Result<()> {
    if parts.is_empty() {
        parts.push(Vec::new());
    }
    let p = u.choose_index(parts.len())?;
    let len = parts[p].len();
    let at = if len == 0 { 0 } else { u.choose_index(len)? };
    match u.int_in_range(0..=10u8)? {
        0 => {
            if len > 0 {
                parts[p][at] ^= 1 << u.int_in_range(0..=7u8)?;
            }
        }
        1 => {
            if len > 0 {
                parts[p][at] = u.arbitrary()?;
            }
        }
        2 => {
            let keep = u.int_in_range(0..=len)?;
            parts[p].truncate(keep);
        }
        3 => {
            let extra: Vec<u8> = u.arbitrary()?;
            parts[p].extend_from_slice(&extra);
        }
        4 => {
            let extra: Vec<u8> = u.arbitrary()?;
            parts[p].splice(at..at, extra);
        }
        5 => {
            if len > 0 {
                let n = u.int_in_range(1..=(len - at).min(16))?;
                parts[p].drain(at..at + n);
            }
        }
        6 => {
            // A valid frame prepended, as the engine does (record, update,
            // soft or hard tombstone); pks often hit listed rows.
            let small: bool = u.arbitrary()?;
            let row = gen_row(u, schema, small)?;
            let mut frame = Vec::new();
            match u.int_in_range(0..=3u8)? {
                0 => layout.encode_record(&row, &mut frame).expect("row fits"),
                1 => layout.encode_update(&row, &mut frame).expect("row fits"),
                n => {
                    let Value::Int(pk) = row[0] else { unreachable!() };
                    encode_tombstone(pk, n == 3, &mut frame);
                }
            }
            frame.extend_from_slice(&parts[p]);
            parts[p] = frame;
        }
        7 => {
            if parts.len() > 1 {
                parts.remove(p);
            }
        }
        8 => {
            let q = u.choose_index(parts.len())?;
            parts.swap(p, q);
        }
        9 => {
            let copy = parts[p].clone();
            parts.push(copy);
        }
        _ => {
            // Another build's trailer (or another part's) on this part.
            let t = parts[u.choose_index(parts.len())?].clone();
            if t.len() >= 14 && len >= 14 {
                let n = parts[p].len();
                parts[p][n - 14..].copy_from_slice(&t[t.len() - 14..]);
            }
        }
    }
    Ok(())
}
