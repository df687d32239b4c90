//! PostgreSQL's `pgoutput` logical decoding messages, decoded (protocol
//! version 1, the one `pg_logical_slot_peek_binary_changes(slot, ...,
//! 'proto_version', '1', 'publication_names', ...)` returns, one message
//! per row of its result).
//!
//! Pure: bytes in, a [`Message`] borrowing from them out, no I/O. The
//! change stream follower (`manage.py listy_sync`) reads the messages over
//! SQL, decodes them here and hands the row images to `Engine::change`.
//!
//! The wire format is PostgreSQL's "Logical Replication Message Formats":
//! big-endian integers, NUL-terminated strings, one type byte first. The
//! messages of protocol 1 are Begin (`B`), Commit (`C`), Origin (`O`),
//! Relation (`R`), Type (`Y`), Insert (`I`), Update (`U`), Delete (`D`),
//! Truncate (`T`) and, with `messages 'true'`, logical decoding messages
//! (`M`). Anything else, a short buffer, a bad tag or trailing bytes is a
//! [`DecodeError`] naming the offset: a stream this decoder does not
//! understand must stop the follower, never be skipped.

use std::fmt;

/// PostgreSQL's epoch (2000-01-01) in microseconds after the Unix epoch:
/// add it to a commit timestamp to get Unix microseconds.
pub const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// One column value of a row image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datum<'a> {
    /// SQL NULL.
    Null,
    /// A TOASTed value the update did not change (not sent; take it from the
    /// old image, which `REPLICA IDENTITY FULL` provides).
    Unchanged,
    /// The value in the type's text output form.
    Text(&'a [u8]),
    /// The value in the type's binary form (only with `binary 'true'`).
    Binary(&'a [u8]),
}

/// A row image: one [`Datum`] per column of the relation, in column order.
pub type Tuple<'a> = Vec<Datum<'a>>;

/// Which old image an Update or Delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldImage {
    /// `K`: the replica identity key columns only (others are Null).
    Key,
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full,
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column<'a> {
    /// Whether the column is part of the replica identity key.
    pub key: bool,
    /// The column's name.
    pub name: &'a str,
    /// The OID of its data type.
    pub type_oid: u32,
    /// Its type modifier (`atttypmod`).
    pub type_modifier: i32,
}

/// A Relation message: what the following changes of `oid` look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation<'a> {
    /// The relation's OID, which Insert/Update/Delete/Truncate refer to.
    pub oid: u32,
    /// Its schema (`public`).
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// `relreplident`: `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// Its columns in order.
    pub columns: Vec<Column<'a>>,
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// A transaction starts.
    Begin {
        /// The LSN of the transaction's commit record.
        final_lsn: u64,
        /// Commit time, microseconds after 2000-01-01 UTC.
        commit_time: i64,
        /// The transaction id.
        xid: u32,
    },
    /// The transaction that began last commits.
    Commit {
        /// Flags (unused, 0).
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: u64,
        /// The LSN just past it: where a consumer that applied the
        /// transaction may acknowledge up to.
        end_lsn: u64,
        /// Commit time, microseconds after 2000-01-01 UTC.
        commit_time: i64,
    },
    /// The transaction was replayed from another origin.
    Origin {
        /// The commit LSN on the origin server.
        commit_lsn: u64,
        /// The origin's name.
        name: &'a str,
    },
    /// A relation's layout (sent before its first change in a session and
    /// again after it changes).
    Relation(Relation<'a>),
    /// A data type's name.
    Type {
        /// The type's OID.
        oid: u32,
        /// Its schema.
        namespace: &'a str,
        /// Its name.
        name: &'a str,
    },
    /// A row was inserted.
    Insert {
        /// The relation's OID.
        relation: u32,
        /// The new row.
        new: Tuple<'a>,
    },
    /// A row was updated.
    Update {
        /// The relation's OID.
        relation: u32,
        /// The old row, when the replica identity sends it (and, for `K`,
        /// only when the key changed).
        old: Option<(OldImage, Tuple<'a>)>,
        /// The new row.
        new: Tuple<'a>,
    },
    /// A row was deleted.
    Delete {
        /// The relation's OID.
        relation: u32,
        /// Which old image follows.
        kind: OldImage,
        /// The old row.
        old: Tuple<'a>,
    },
    /// Relations were truncated.
    Truncate {
        /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
        options: u8,
        /// The relations' OIDs.
        relations: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`).
    Logical {
        /// Whether it belongs to the transaction (else it was emitted at once).
        transactional: bool,
        /// Its LSN.
        lsn: u64,
        /// Its prefix.
        prefix: &'a str,
        /// Its content.
        content: &'a [u8],
    },
}

impl Message<'_> {
    /// The message's type byte (`B`, `C`, `R`, ...).
    pub fn tag(&self) -> u8 {
        match self {
            Message::Begin { .. } => b'B',
            Message::Commit { .. } => b'C',
            Message::Origin { .. } => b'O',
            Message::Relation(_) => b'R',
            Message::Type { .. } => b'Y',
            Message::Insert { .. } => b'I',
            Message::Update { .. } => b'U',
            Message::Delete { .. } => b'D',
            Message::Truncate { .. } => b'T',
            Message::Logical { .. } => b'M',
        }
    }
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset into the message where decoding stopped.
    pub offset: usize,
    /// What was expected there.
    pub what: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad pgoutput message at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over one message's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn fail<T>(&self, what: impl Into<String>) -> Result<T, DecodeError> {
        Err(DecodeError { offset: self.pos, what: what.into() })
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        match self.pos.checked_add(n).filter(|&end| end <= self.buf.len()) {
            Some(end) => {
                let out = &self.buf[self.pos..end];
                self.pos = end;
                Ok(out)
            }
            None => self.fail(format!("{what}: {n} bytes, {} left", self.buf.len() - self.pos)),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return self.fail(format!("{what}: no terminating NUL"));
        };
        let Ok(s) = std::str::from_utf8(&rest[..len]) else {
            return self.fail(format!("{what}: not UTF-8"));
        };
        self.pos += len + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Tuple<'a>, DecodeError> {
        let n = self.u16("column count")? as usize;
        // Each column takes at least one byte: a count larger than what is
        // left is an error before anything is allocated for it.
        if n > self.buf.len() - self.pos {
            return self.fail(format!("{n} columns in {} bytes", self.buf.len() - self.pos));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(match self.u8("column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32("text length")? as usize;
                    Datum::Text(self.take(len, "text value")?)
                }
                b'b' => {
                    let len = self.u32("binary length")? as usize;
                    Datum::Binary(self.take(len, "binary value")?)
                }
                other => {
                    self.pos -= 1;
                    return self.fail(format!("column kind {:?}, expected n, u, t or b", other as char));
                }
            });
        }
        Ok(out)
    }

    fn old_image(&mut self, tag: u8) -> Result<OldImage, DecodeError> {
        match tag {
            b'K' => Ok(OldImage::Key),
            b'O' => Ok(OldImage::Full),
            other => {
                self.pos -= 1;
                self.fail(format!("old image tag {:?}, expected K or O", other as char))
            }
        }
    }

    fn expect_new(&mut self) -> Result<(), DecodeError> {
        match self.u8("new image tag")? {
            b'N' => Ok(()),
            other => {
                self.pos -= 1;
                self.fail(format!("new image tag {:?}, expected N", other as char))
            }
        }
    }

    fn relation(&mut self) -> Result<Relation<'a>, DecodeError> {
        let oid = self.u32("relation oid")?;
        let namespace = self.string("namespace")?;
        let name = self.string("relation name")?;
        let replica_identity = self.u8("replica identity")?;
        let n = self.u16("column count")? as usize;
        if n > self.buf.len() - self.pos {
            return self.fail(format!("{n} columns in {} bytes", self.buf.len() - self.pos));
        }
        let mut columns = Vec::with_capacity(n);
        for _ in 0..n {
            let flags = self.u8("column flags")?;
            let name = self.string("column name")?;
            let type_oid = self.u32("column type")?;
            let type_modifier = self.u32("column type modifier")? as i32;
            columns.push(Column { key: flags & 1 == 1, name, type_oid, type_modifier });
        }
        Ok(Relation { oid, namespace, name, replica_identity, columns })
    }
}

/// Decodes one pgoutput message (one `data` value of
/// `pg_logical_slot_{peek,get}_binary_changes`).
pub fn decode(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut c = Cursor { buf, pos: 0 };
    let tag = c.u8("message type")?;
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: c.u64("final LSN")?,
            commit_time: c.u64("commit time")? as i64,
            xid: c.u32("xid")?,
        },
        b'C' => Message::Commit {
            flags: c.u8("flags")?,
            commit_lsn: c.u64("commit LSN")?,
            end_lsn: c.u64("end LSN")?,
            commit_time: c.u64("commit time")? as i64,
        },
        b'O' => Message::Origin { commit_lsn: c.u64("origin LSN")?, name: c.string("origin name")? },
        b'R' => Message::Relation(c.relation()?),
        b'Y' => {
            Message::Type { oid: c.u32("type oid")?, namespace: c.string("namespace")?, name: c.string("type name")? }
        }
        b'I' => {
            let relation = c.u32("relation oid")?;
            c.expect_new()?;
            Message::Insert { relation, new: c.tuple()? }
        }
        b'U' => {
            let relation = c.u32("relation oid")?;
            let old = match c.u8("image tag")? {
                b'N' => None,
                t => {
                    let kind = c.old_image(t)?;
                    let old = c.tuple()?;
                    c.expect_new()?;
                    Some((kind, old))
                }
            };
            Message::Update { relation, old, new: c.tuple()? }
        }
        b'D' => {
            let relation = c.u32("relation oid")?;
            let t = c.u8("old image tag")?;
            let kind = c.old_image(t)?;
            Message::Delete { relation, kind, old: c.tuple()? }
        }
        b'T' => {
            let n = c.u32("relation count")? as usize;
            let options = c.u8("options")?;
            if n > (buf.len() - c.pos) / 4 {
                return c.fail(format!("{n} relations in {} bytes", buf.len() - c.pos));
            }
            let relations = (0..n).map(|_| c.u32("relation oid")).collect::<Result<_, _>>()?;
            Message::Truncate { options, relations }
        }
        b'M' => {
            let transactional = c.u8("flags")? & 1 == 1;
            let lsn = c.u64("message LSN")?;
            let prefix = c.string("prefix")?;
            let len = c.u32("content length")? as usize;
            Message::Logical { transactional, lsn, prefix, content: c.take(len, "content")? }
        }
        other => {
            c.pos = 0;
            return c.fail(format!("message type {:?} is not one of pgoutput protocol 1's", other as char));
        }
    };
    if c.pos != buf.len() {
        return c.fail(format!("{} bytes after the {:?} message", buf.len() - c.pos, tag as char));
    }
    Ok(message)
}

/// A pg_lsn in PostgreSQL's text form (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses a pg_lsn's text form (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds messages the way `pgoutput` writes them.
    #[derive(Default)]
    struct Wire(Vec<u8>);

    impl Wire {
        fn tag(t: u8) -> Wire {
            Wire(vec![t])
        }
        fn u8(mut self, v: u8) -> Wire {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Wire {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Wire {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Wire {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn s(mut self, v: &str) -> Wire {
            self.0.extend_from_slice(v.as_bytes());
            self.0.push(0);
            self
        }
        fn text(mut self, v: &str) -> Wire {
            self.0.push(b't');
            self.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
            self.0.extend_from_slice(v.as_bytes());
            self
        }
        fn raw(mut self, v: &[u8]) -> Wire {
            self.0.extend_from_slice(v);
            self
        }
    }

    #[test]
    fn begin_and_commit() {
        let b = Wire::tag(b'B').u64(0x16_B374_D848).u64(12345).u32(771).0;
        assert_eq!(decode(&b).unwrap(), Message::Begin { final_lsn: 0x16_B374_D848, commit_time: 12345, xid: 771 });
        let c = Wire::tag(b'C').u8(0).u64(10).u64(20).u64(30).0;
        assert_eq!(decode(&c).unwrap(), Message::Commit { flags: 0, commit_lsn: 10, end_lsn: 20, commit_time: 30 });
    }

    #[test]
    fn relation_with_columns() {
        let r = Wire::tag(b'R')
            .u32(16385)
            .s("public")
            .s("testapp_follow")
            .u8(b'f')
            .u16(2)
            .u8(1)
            .s("id")
            .u32(20)
            .u32(u32::MAX)
            .u8(0)
            .s("created")
            .u32(1184)
            .u32(u32::MAX)
            .0;
        let Message::Relation(rel) = decode(&r).unwrap() else { panic!("not a relation") };
        assert_eq!((rel.oid, rel.namespace, rel.name, rel.replica_identity), (16385, "public", "testapp_follow", b'f'));
        assert_eq!(rel.columns[0], Column { key: true, name: "id", type_oid: 20, type_modifier: -1 });
        assert_eq!(rel.columns[1], Column { key: false, name: "created", type_oid: 1184, type_modifier: -1 });
    }

    #[test]
    fn insert_update_delete() {
        let i = Wire::tag(b'I').u32(7).u8(b'N').u16(3).text("42").u8(b'n').text("").0;
        assert_eq!(
            decode(&i).unwrap(),
            Message::Insert { relation: 7, new: vec![Datum::Text(b"42"), Datum::Null, Datum::Text(b"")] }
        );
        let u = Wire::tag(b'U').u32(7).u8(b'O').u16(2).text("1").text("a").u8(b'N').u16(2).text("1").u8(b'u').0;
        assert_eq!(
            decode(&u).unwrap(),
            Message::Update {
                relation: 7,
                old: Some((OldImage::Full, vec![Datum::Text(b"1"), Datum::Text(b"a")])),
                new: vec![Datum::Text(b"1"), Datum::Unchanged],
            }
        );
        let plain = Wire::tag(b'U').u32(7).u8(b'N').u16(1).text("1").0;
        assert_eq!(decode(&plain).unwrap(), Message::Update { relation: 7, old: None, new: vec![Datum::Text(b"1")] });
        let d = Wire::tag(b'D').u32(7).u8(b'K').u16(2).text("1").u8(b'n').0;
        assert_eq!(
            decode(&d).unwrap(),
            Message::Delete { relation: 7, kind: OldImage::Key, old: vec![Datum::Text(b"1"), Datum::Null] }
        );
    }

    #[test]
    fn binary_values() {
        let i = Wire::tag(b'I').u32(7).u8(b'N').u16(1).u8(b'b').u32(2).raw(&[0, 255]).0;
        assert_eq!(decode(&i).unwrap(), Message::Insert { relation: 7, new: vec![Datum::Binary(&[0, 255])] });
    }

    #[test]
    fn truncate_type_origin_message() {
        let t = Wire::tag(b'T').u32(2).u8(3).u32(10).u32(11).0;
        assert_eq!(decode(&t).unwrap(), Message::Truncate { options: 3, relations: vec![10, 11] });
        let y = Wire::tag(b'Y').u32(900).s("public").s("mood").0;
        assert_eq!(decode(&y).unwrap(), Message::Type { oid: 900, namespace: "public", name: "mood" });
        let o = Wire::tag(b'O').u64(5).s("node1").0;
        assert_eq!(decode(&o).unwrap(), Message::Origin { commit_lsn: 5, name: "node1" });
        let m = Wire::tag(b'M').u8(1).u64(99).s("listy").u32(3).raw(b"abc").0;
        assert_eq!(
            decode(&m).unwrap(),
            Message::Logical { transactional: true, lsn: 99, prefix: "listy", content: b"abc" }
        );
        assert_eq!(decode(&m).unwrap().tag(), b'M');
    }

    #[test]
    fn errors_name_the_offset() {
        assert_eq!(decode(b"").unwrap_err().offset, 0);
        let e = decode(b"Z").unwrap_err();
        assert!(e.to_string().contains("message type 'Z'"), "{e}");
        // a Begin cut short
        let e = decode(&Wire::tag(b'B').u64(1).0).unwrap_err();
        assert_eq!(e.offset, 9);
        // trailing bytes
        let e = decode(&Wire::tag(b'C').u8(0).u64(1).u64(2).u64(3).u8(9).0).unwrap_err();
        assert!(e.what.contains("1 bytes after"), "{e}");
        // a bad column kind
        let e = decode(&Wire::tag(b'I').u32(7).u8(b'N').u16(1).u8(b'x').0).unwrap_err();
        assert_eq!(e.offset, 8);
        // a string without its NUL
        let e = decode(&Wire::tag(b'Y').u32(1).raw(b"public").0).unwrap_err();
        assert!(e.what.contains("NUL"), "{e}");
        // a text length past the end
        let e = decode(&Wire::tag(b'I').u32(7).u8(b'N').u16(1).u8(b't').u32(u32::MAX).0).unwrap_err();
        assert!(e.what.contains("text value"), "{e}");
        // a huge column count allocates nothing
        let e = decode(&Wire::tag(b'I').u32(7).u8(b'N').u16(u16::MAX).0).unwrap_err();
        assert!(e.what.contains("columns"), "{e}");
        let e = decode(&Wire::tag(b'T').u32(u32::MAX).u8(0).0).unwrap_err();
        assert!(e.what.contains("relations"), "{e}");
        // Update with a bad old-image tag
        let e = decode(&Wire::tag(b'U').u32(7).u8(b'Q').0).unwrap_err();
        assert!(e.what.contains("expected K or O"), "{e}");
    }

    #[test]
    fn lsn_text_form() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("x"), None);
        assert_eq!(parse_lsn(&format_lsn(u64::MAX)), Some(u64::MAX));
    }
}
