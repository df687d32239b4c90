//! Replays on stable: seeds, regression inputs, and the findings' repros.
//! `cargo test --manifest-path fuzz/Cargo.toml` (no cargo-fuzz needed);
//! `-- --ignored write_seeds` writes the seed corpora under fuzz/corpus/.

use std::path::Path;

use listy_core::codec::{encode_tombstone, Layout, Part, Value};

use crate::check::layouts;

/// Rows that fit layout `idx` of the catalog (pk first, schema order).
fn rows_for(layout: &Layout, n: i64) -> Vec<Vec<Value>> {
    use listy_core::codec::Kind;
    (0..n)
        .rev()
        .map(|pk| {
            let mut row = vec![Value::Int(pk)];
            for (i, f) in layout.schema().fields()[1..].iter().enumerate() {
                if f.nullable && (pk + i as i64) % 3 == 0 {
                    row.push(Value::Null);
                    continue;
                }
                row.push(match f.kind {
                    Kind::Int => Value::Int(pk * 1000 - 7),
                    Kind::Bool => Value::Bool(pk % 2 == 0),
                    Kind::Float => Value::Float(pk as f64 / 3.0),
                    Kind::Str => Value::Str(format!("row {pk} é")),
                    Kind::Bytes => Value::Bytes(vec![pk as u8; 3]),
                    Kind::Datetime => Value::Datetime(1_795_683_600_123_456 + pk),
                    Kind::Date => Value::Date(20_000 + pk as i32),
                    Kind::Time => Value::Time(3_600_000_000 + pk),
                    Kind::Decimal => Value::Decimal(format!("{pk}.50")),
                    Kind::Uuid => Value::Uuid([pk as u8; 16]),
                    Kind::Json => Value::Json(format!("{{\"n\":{pk}}}")),
                });
            }
            row
        })
        .collect()
}

/// Seed inputs of `decode_list`: valid lists of every layout, whole (own
/// trailer), body-only (ctl asks for the trailer), and in parts.
pub fn decode_list_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (idx, layout) in layouts().iter().enumerate() {
        let rows = rows_for(layout, 6);
        let whole = layout.encode_list(&rows).unwrap();
        let mut with_tombs = Vec::new();
        encode_tombstone(2, false, &mut with_tombs);
        encode_tombstone(4, true, &mut with_tombs);
        layout.encode_update(&rows[1], &mut with_tombs).unwrap();
        with_tombs.extend_from_slice(&whole);
        for value in [&whole, &with_tombs] {
            let mut s = vec![idx as u8];
            s.extend_from_slice(value);
            seeds.push(s);
            let mut s = vec![idx as u8 | 0x08];
            s.extend_from_slice(&value[..value.len() - 14]);
            seeds.push(s);
        }
        // Three parts, trailers written by the encoder; then body-only.
        let parts = layout.encode_parts(&rows, 9, 40, 4000).unwrap();
        if parts.len() <= 8 {
            for auto in [false, true] {
                let mut s = vec![idx as u8 | 0x10 | if auto { 0x08 } else { 0 }, (parts.len() - 1) as u8];
                let bodies: Vec<&[u8]> = parts.iter().map(|p| if auto { &p[..p.len() - 14] } else { &p[..] }).collect();
                for b in &bodies[..bodies.len() - 1] {
                    s.extend_from_slice(&(b.len() as u16).to_le_bytes());
                }
                for b in &bodies {
                    s.extend_from_slice(b);
                }
                seeds.push(s);
            }
        }
    }
    seeds
}

pub fn reply_parser_seeds() -> Vec<Vec<u8>> {
    let replies: [&[u8]; 8] = [
        b"VALUE listy:v1:k 0 5 42\r\nhello\r\nVALUE b 1 0\r\n\r\nEND\r\n",
        b"STORED\r\nNOT_STORED\r\nEXISTS\r\nNOT_FOUND\r\nDELETED\r\nOK\r\n",
        b"42\r\n18446744073709551615\r\n7  \r\n",
        b"STAT pid 1\r\nSTAT version 1.6.18\r\nEND\r\n",
        b"ERROR\r\nERROR unknown command\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        b"SERVER_ERROR object too large for cache\r\nSERVER_ERROR out of memory\r\n",
        b"VALUE k 0 3 1\r\nab\r\n",
        b"VALUE k 0 2\r\n\r\n\r\nEND\r\n",
    ];
    let mut seeds = Vec::new();
    for (i, r) in replies.iter().enumerate() {
        // max 512 or 1 MiB; no cuts, then two cuts.
        seeds.push([&[4u8][..], r].concat());
        let mut s = vec![0x20 | (5 + (i as u8 % 3))];
        s.extend_from_slice(&3u16.to_le_bytes());
        s.extend_from_slice(&(r.len() as u16 / 2).to_le_bytes());
        s.extend_from_slice(r);
        seeds.push(s);
    }
    seeds
}

#[test]
fn decode_list_seeds_run() {
    for s in decode_list_seeds() {
        crate::decode_list::run(&s);
    }
}

#[test]
fn decode_list_seeds_are_lists() {
    // Every whole-value seed reads as the 6 rows (or 4: pk 2 soft- and pk 4
    // hard-deleted).
    for s in decode_list_seeds().iter().filter(|s| s[0] & 0x18 == 0) {
        let layout = &layouts()[(s[0] & 7) as usize];
        let view = layout.read(&s[1..]).unwrap();
        assert!(view.len() == 6 || view.len() == 4, "{}", view.len());
    }
}

/// Seed inputs of `pgoutput`: one message of every type, as PostgreSQL
/// sends them (built by the target's own encoder from decoded values).
pub fn pgoutput_seeds() -> Vec<Vec<u8>> {
    use listy_core::pgoutput::{Column, Datum, Message, OldImage, Relation};
    let row = vec![Datum::Text(b"42"), Datum::Null, Datum::Text(b"2026-12-02 07:01:42.5+00"), Datum::Unchanged];
    let messages = vec![
        Message::Begin { final_lsn: 0x16_B374_D848, commit_time: 818_000_000_000_000, xid: 771 },
        Message::Commit { flags: 0, commit_lsn: 0x16_B374_D848, end_lsn: 0x16_B374_D878, commit_time: 1 },
        Message::Origin { commit_lsn: 5, name: "node1" },
        Message::Relation(Relation {
            oid: 16385,
            namespace: "public",
            name: "testapp_follow",
            replica_identity: b'f',
            columns: vec![
                Column { key: true, name: "id", type_oid: 20, type_modifier: -1 },
                Column { key: false, name: "created", type_oid: 1184, type_modifier: -1 },
            ],
        }),
        Message::Type { oid: 900, namespace: "public", name: "mood" },
        Message::Insert { relation: 16385, new: row.clone() },
        Message::Update { relation: 16385, old: Some((OldImage::Full, row.clone())), new: row.clone() },
        Message::Update { relation: 16385, old: None, new: vec![Datum::Binary(&[0, 1, 2])] },
        Message::Delete { relation: 16385, kind: OldImage::Key, old: row },
        Message::Truncate { options: 1, relations: vec![16385, 16386] },
        Message::Logical { transactional: true, lsn: 99, prefix: "listy", content: b"{}" },
    ];
    messages.iter().map(crate::pgoutput::encode).collect()
}

#[test]
fn pgoutput_seeds_run() {
    for s in pgoutput_seeds() {
        assert!(listy_core::pgoutput::decode(&s).is_ok());
        crate::pgoutput::run(&s);
    }
    // damaged copies: never a panic
    for s in pgoutput_seeds() {
        for i in 0..s.len() {
            let mut d = s.clone();
            d[i] ^= 0xff;
            crate::pgoutput::run(&d);
            crate::pgoutput::run(&s[..i]);
        }
    }
}

#[test]
fn reply_parser_seeds_run() {
    for s in reply_parser_seeds() {
        crate::reply_parser::run(&s);
    }
}

#[test]
fn list_roundtrip_runs_on_fixed_bytes() {
    for n in 0..64u32 {
        let data: Vec<u8> =
            (0..(n * 37) as usize).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(n) as u8).collect();
        crate::list_roundtrip::run(&data);
    }
}

#[test]
fn decode_list_random_bytes_with_trailers() {
    for n in 0..300u32 {
        let mut data: Vec<u8> =
            (0..(n % 97) as usize).map(|i| (i as u32 ^ n).wrapping_mul(0x9E37_79B9) as u8).collect();
        if data.is_empty() {
            continue;
        }
        data[0] = (n as u8) | 0x08;
        crate::decode_list::run(&data);
    }
}

#[test]
fn a_head_trailer_alone_is_an_empty_list() {
    for layout in layouts() {
        let t = layout.trailer(Part::Head { segments: 0 }, 1);
        assert_eq!(layout.read(&t).unwrap().len(), 0);
    }
}

/// Writes the seed corpora to fuzz/corpus/<target>/seed-N.
#[test]
#[ignore]
fn write_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in
        [("decode_list", decode_list_seeds()), ("reply_parser", reply_parser_seeds()), ("pgoutput", pgoutput_seeds())]
    {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), s).unwrap();
        }
    }
}

/// Regression inputs found by the fuzzer (hex in README.md). They pass as
/// long as the findings stay steered around; with `LISTY_FUZZ_KNOWN_BUGS`
/// naming a finding, its input must pass once the bug is fixed.
#[test]
fn regression_inputs() {
    // F2, decode_list: ctl 0xac (layout 4 = pk only, append the trailer),
    // body a4 = an update frame whose pk varint runs into the trailer.
    crate::decode_list::run(&[0xac, 0xa4]);
}

/// F1: more than 64 nullable stored fields. `encode_record` panics with
/// "attempt to shift left with overflow" (codec.rs `bits |= 1 << n`) and so
/// does the reader (`nulls & (1 << (n - 1))`) under overflow checks; in a
/// release build the shift wraps, so field 65 shares field 1's null bit and
/// the list reads back wrong. Fixed when the layout is refused or the row
/// round-trips. Run: `cargo test --manifest-path fuzz/Cargo.toml -- --ignored f1`.
#[test]
fn f1_more_than_64_nullable_fields_are_refused() {
    use listy_core::codec::{Field, Kind, Schema};
    let mut fields = vec![Field::new("id", Kind::Int, false)];
    fields.extend((0..65).map(|i| Field::new(&format!("n{i}"), Kind::Int, true)));
    assert!(Schema::new(fields).is_err(), "a 65-nullable-field schema must be refused (F1, fixed)");
}

/// F2: `describe` walks frames over the whole value, trailer included, so a
/// frame truncated at the end of the body "ends" inside the trailer and no
/// error is reported, while `read` refuses the same bytes.
#[test]
fn f2_describe_reports_a_frame_truncated_by_the_trailer() {
    let layout = &layouts()[4]; // pk only
    let mut bytes = vec![0xA4]; // an update frame, its pk varint missing
    bytes.extend_from_slice(&layout.trailer(Part::Head { segments: 0 }, 0));
    assert!(layout.read(&bytes).is_err());
    let (frames, error) = listy_core::codec::describe(layout, &bytes);
    assert!(frames.iter().all(|f| f.offset + f.len <= 1), "frames run into the trailer: {frames:?}");
    assert!(error.is_some(), "describe reports no error on a value read refuses");
}
