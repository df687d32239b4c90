//! Invariants of the list reader that must hold for ANY input, shared by the
//! codec targets, and the layouts they read with.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use listy_core::codec::{self, Field, Kind, Layout, ListView, Schema, Value, ValueRef, TAG_RECORD, TAG_UPDATE};
use listy_core::Error;

pub const KINDS: [Kind; 11] = [
    Kind::Int,
    Kind::Bool,
    Kind::Float,
    Kind::Str,
    Kind::Bytes,
    Kind::Datetime,
    Kind::Date,
    Kind::Time,
    Kind::Decimal,
    Kind::Uuid,
    Kind::Json,
];

/// A field value compared exactly (floats by their bits, so NaN == NaN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canon {
    Null,
    Int(i64),
    Bool(bool),
    Float(u64),
    Str(String),
    Bytes(Vec<u8>),
    Datetime(i64),
    Date(i32),
    Time(i64),
    Decimal(String),
    Uuid([u8; 16]),
    Json(String),
}

impl From<&Value> for Canon {
    fn from(v: &Value) -> Canon {
        match v {
            Value::Null => Canon::Null,
            Value::Int(v) => Canon::Int(*v),
            Value::Bool(v) => Canon::Bool(*v),
            Value::Float(v) => Canon::Float(v.to_bits()),
            Value::Str(v) => Canon::Str(v.clone()),
            Value::Bytes(v) => Canon::Bytes(v.clone()),
            Value::Datetime(v) => Canon::Datetime(*v),
            Value::Date(v) => Canon::Date(*v),
            Value::Time(v) => Canon::Time(*v),
            Value::Decimal(v) => Canon::Decimal(v.clone()),
            Value::Uuid(v) => Canon::Uuid(*v),
            Value::Json(v) => Canon::Json(v.clone()),
        }
    }
}

impl From<ValueRef<'_>> for Canon {
    fn from(v: ValueRef<'_>) -> Canon {
        Canon::from(&v.to_owned())
    }
}

/// A decoded list: (pk, stored values) of each live record, in list order.
pub type Decoded = Vec<(i64, Vec<Canon>)>;

/// Builds a schema `id` + `fields`, or panics (the catalog is fixed).
pub fn schema(fields: &[(&str, Kind, bool)]) -> Arc<Schema> {
    let mut all = vec![Field::new("id", Kind::Int, false)];
    all.extend(fields.iter().map(|(n, k, null)| Field::new(n, *k, *null)));
    Arc::new(Schema::new(all).expect("catalog schema"))
}

/// The layouts the byte-level target reads with (selected by its first
/// byte): real-looking ones, every kind, every nullability, no stored field,
/// and the widest null bitmap the codec can carry (64 nullable fields).
pub fn layouts() -> &'static [Layout] {
    static LAYOUTS: OnceLock<Vec<Layout>> = OnceLock::new();
    LAYOUTS.get_or_init(|| {
        let names: Vec<String> = (0..KINDS.len()).map(|i| format!("f{i}")).collect();
        let all_kinds = |nullable: &dyn Fn(usize) -> bool| {
            let fields: Vec<(&str, Kind, bool)> =
                KINDS.iter().enumerate().map(|(i, k)| (names[i].as_str(), *k, nullable(i))).collect();
            schema(&fields)
        };
        let wide_names: Vec<String> = (0..64).map(|i| format!("n{i}")).collect();
        let wide: Vec<(&str, Kind, bool)> = wide_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), if i % 5 == 4 { Kind::Str } else { Kind::Int }, true))
            .collect();
        vec![
            // The follow list of the tests: follower_id fixed by the key.
            Layout::new(
                schema(&[
                    ("created", Kind::Datetime, false),
                    ("follower_id", Kind::Int, false),
                    ("followee_id", Kind::Int, false),
                ]),
                &[2],
            ),
            Layout::new(all_kinds(&|_| false), &[]),
            Layout::new(all_kinds(&|_| true), &[]),
            Layout::new(all_kinds(&|i| i % 2 == 0), &[1, 6]),
            Layout::new(schema(&[]), &[]),
            Layout::new(
                schema(&[
                    ("ts", Kind::Datetime, false),
                    ("s", Kind::Str, true),
                    ("f", Kind::Float, false),
                    ("b", Kind::Bool, false),
                ]),
                &[],
            ),
            Layout::new(schema(&wide), &[]),
            Layout::new(schema(&[("title", Kind::Str, false), ("owner", Kind::Int, false)]), &[2]),
        ]
    })
}

/// Checks a view that `read_parts` accepted and decodes it: every live
/// record is a record/update frame that decodes (the walk already skipped
/// it), with the layout's number of values, and no pk is listed twice.
pub fn check_view(layout: &Layout, view: &ListView<'_>) -> Decoded {
    assert_eq!(view.ranges().len(), view.len());
    assert_eq!(view.is_empty(), view.ranges().is_empty());
    let _ = view.dead_frames(); // frames - live: must not underflow
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(view.len());
    for i in 0..view.len() {
        let frame = view.record(i);
        assert!(matches!(frame.first(), Some(&TAG_RECORD) | Some(&TAG_UPDATE)), "live frame {i} is not a record");
        let mut values = Vec::new();
        let pk = match layout.decode_record(frame, &mut values) {
            Ok(pk) => pk,
            Err(e) => panic!("live record {i} ({frame:02x?}) does not decode: {e}"),
        };
        assert_eq!(values.len(), layout.stored().len(), "record {i}: wrong number of values");
        assert!(seen.insert(pk), "pk {pk} is listed twice");
        out.push((pk, values.into_iter().map(Canon::from).collect()));
    }
    out
}

/// `describe` on one part: contiguous frames from offset 0, each non-empty,
/// none past the end of the value; where it reports no error on a head and
/// says its live frames, they are the ones `read_parts(&[bytes])` lists in it.
pub fn check_describe(layout: &Layout, bytes: &[u8]) {
    let (frames, error) = codec::describe(layout, bytes);
    let trailer = layout.part_of(bytes).is_ok();
    let body_len = if trailer { bytes.len() - codec::TRAILER_LEN } else { bytes.len() };
    let mut pos = 0;
    for f in &frames {
        assert_eq!(f.offset, pos, "describe: frames not contiguous");
        assert!(f.len > 0, "describe: empty frame");
        pos += f.len;
        assert!(pos <= bytes.len(), "describe: frame past the end of the value");
    }
    if error.is_none() {
        assert!(pos >= body_len, "describe: stopped early without an error");
    }
    // Finding F2 (fixed): describe must stop at the trailer.
    {
        assert!(pos <= body_len, "describe: a frame runs into the trailer (ends at {pos}, body is {body_len})");
        if trailer && error.is_none() {
            if let Ok(view) = layout.read_parts(&[bytes]) {
                let live_here = view.ranges().iter().filter(|r| r.0 == 0).count();
                assert_eq!(frames.iter().filter(|f| f.live).count(), live_here, "describe: live frames");
            } else if matches!(layout.part_of(bytes), Ok((codec::Part::Head { .. }, _))) {
                panic!("describe says the head decodes, read_parts refuses it");
            }
        }
    }
}

/// Runs everything the reader offers on `parts` (a head, then segments) and
/// cross-checks: the head-only view is a prefix of the full one, and a
/// complete list compacts (with the given part limits) to parts that read
/// back as the same list.
pub fn exercise(layout: &Layout, parts: &[&[u8]], head_max: usize, segment_max: usize) -> Option<Decoded> {
    for p in parts {
        check_describe(layout, p);
        let _ = layout.part_id(p);
    }
    let head = parts.first().map(|h| layout.read_parts(&[h]));
    if let Some(h) = parts.first() {
        let _ = layout.read(h);
    }
    let full = layout.read_parts(parts).ok()?;
    let decoded = check_view(layout, &full);
    match head {
        Some(Ok(head)) => {
            let head = check_view(layout, &head);
            assert!(decoded.starts_with(&head), "the head-only view is not a prefix of the list");
        }
        Some(Err(e)) => panic!("read_parts accepts the parts but not the head alone: {e}"),
        None => panic!("read_parts accepted no parts"),
    }
    if full.complete() {
        check_compaction(layout, &full, &decoded, head_max, segment_max);
    }
    Some(decoded)
}

/// A complete view compacts to parts that read back as the same list.
pub fn check_compaction(layout: &Layout, view: &ListView<'_>, decoded: &Decoded, head_max: usize, segment_max: usize) {
    match view.compacted(layout, 0x5EED, head_max, segment_max) {
        Ok(parts) => {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let again = match layout.read_parts(&refs) {
                Ok(v) => v,
                Err(e) => panic!("compacted parts do not read back: {e}"),
            };
            assert!(again.complete());
            assert_eq!(again.dead_frames(), again_hard(&parts[0], layout), "compaction left dead records");
            assert_eq!(&check_view(layout, &again), decoded, "compaction changed the list");
            for (i, p) in parts.iter().enumerate().skip(1) {
                assert!(p.len() <= segment_max, "segment {i} has {} bytes, limit {segment_max}", p.len());
            }
        }
        Err(Error::TooLarge { size, limit }) => {
            assert_eq!(limit, segment_max);
            assert!(size + codec::TRAILER_LEN > segment_max, "TooLarge for a {size}-byte frame under {limit}");
        }
        Err(e) => panic!("compaction failed: {e}"),
    }
}

/// Frames of a compacted head that are hard tombstones (its only dead ones).
fn again_hard(head: &[u8], layout: &Layout) -> usize {
    codec::describe(layout, head).0.iter().filter(|f| f.tag == codec::TAG_FINAL_TOMBSTONE).count()
}
