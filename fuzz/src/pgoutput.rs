//! Target `pgoutput`: the logical decoding message decoder of
//! `listy_core::pgoutput` (what `listy_sync` reads from PostgreSQL).
//!
//! Input: one message's bytes. Checks: no panic, no allocation sized by a
//! count the bytes cannot hold (a `u16`/`u32` count is checked against what
//! is left); an error's offset lies within the input; a decoded message
//! re-encodes (flag bits the decoder drops aside) to bytes that decode to
//! the same message; every strict prefix of those bytes is an error (a
//! message is never read short, and trailing bytes are refused).

use listy_core::pgoutput::{decode, Datum, Message, OldImage};

pub fn run(data: &[u8]) {
    let msg = match decode(data) {
        Ok(m) => m,
        Err(e) => {
            assert!(e.offset <= data.len(), "error offset {} past {} bytes", e.offset, data.len());
            return;
        }
    };
    let wire = encode(&msg);
    assert_eq!(decode(&wire).as_ref(), Ok(&msg), "re-encoded message decodes differently");
    assert!(wire.len() <= data.len(), "re-encoded message longer than its input");
    let step = (wire.len() / 64).max(1);
    for k in (0..wire.len()).step_by(step) {
        assert!(decode(&wire[..k]).is_err(), "a {k}-byte prefix of a {}-byte message decodes", wire.len());
    }
}

/// The wire form of a message, as pgoutput writes it.
pub fn encode(msg: &Message<'_>) -> Vec<u8> {
    let mut out = vec![msg.tag()];
    let s = |out: &mut Vec<u8>, v: &str| {
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    };
    match msg {
        Message::Begin { final_lsn, commit_time, xid } => {
            out.extend_from_slice(&final_lsn.to_be_bytes());
            out.extend_from_slice(&commit_time.to_be_bytes());
            out.extend_from_slice(&xid.to_be_bytes());
        }
        Message::Commit { flags, commit_lsn, end_lsn, commit_time } => {
            out.push(*flags);
            out.extend_from_slice(&commit_lsn.to_be_bytes());
            out.extend_from_slice(&end_lsn.to_be_bytes());
            out.extend_from_slice(&commit_time.to_be_bytes());
        }
        Message::Origin { commit_lsn, name } => {
            out.extend_from_slice(&commit_lsn.to_be_bytes());
            s(&mut out, name);
        }
        Message::Relation(rel) => {
            out.extend_from_slice(&rel.oid.to_be_bytes());
            s(&mut out, rel.namespace);
            s(&mut out, rel.name);
            out.push(rel.replica_identity);
            out.extend_from_slice(&(rel.columns.len() as u16).to_be_bytes());
            for c in &rel.columns {
                out.push(u8::from(c.key));
                s(&mut out, c.name);
                out.extend_from_slice(&c.type_oid.to_be_bytes());
                out.extend_from_slice(&c.type_modifier.to_be_bytes());
            }
        }
        Message::Type { oid, namespace, name } => {
            out.extend_from_slice(&oid.to_be_bytes());
            s(&mut out, namespace);
            s(&mut out, name);
        }
        Message::Insert { relation, new } => {
            out.extend_from_slice(&relation.to_be_bytes());
            out.push(b'N');
            tuple(&mut out, new);
        }
        Message::Update { relation, old, new } => {
            out.extend_from_slice(&relation.to_be_bytes());
            if let Some((kind, t)) = old {
                out.push(image(*kind));
                tuple(&mut out, t);
            }
            out.push(b'N');
            tuple(&mut out, new);
        }
        Message::Delete { relation, kind, old } => {
            out.extend_from_slice(&relation.to_be_bytes());
            out.push(image(*kind));
            tuple(&mut out, old);
        }
        Message::Truncate { options, relations } => {
            out.extend_from_slice(&(relations.len() as u32).to_be_bytes());
            out.push(*options);
            for r in relations {
                out.extend_from_slice(&r.to_be_bytes());
            }
        }
        Message::Logical { transactional, lsn, prefix, content } => {
            out.push(u8::from(*transactional));
            out.extend_from_slice(&lsn.to_be_bytes());
            s(&mut out, prefix);
            out.extend_from_slice(&(content.len() as u32).to_be_bytes());
            out.extend_from_slice(content);
        }
    }
    out
}

fn image(kind: OldImage) -> u8 {
    match kind {
        OldImage::Key => b'K',
        OldImage::Full => b'O',
    }
}

fn tuple(out: &mut Vec<u8>, datums: &[Datum<'_>]) {
    out.extend_from_slice(&(datums.len() as u16).to_be_bytes());
    for d in datums {
        match d {
            Datum::Null => out.push(b'n'),
            Datum::Unchanged => out.push(b'u'),
            Datum::Text(b) | Datum::Binary(b) => {
                out.push(if matches!(d, Datum::Text(_)) { b't' } else { b'b' });
                out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}
