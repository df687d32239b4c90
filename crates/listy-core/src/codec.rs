//! The wire format of one cached list (SPEC §4): a concatenation of
//! self-delimiting frames, newest first, closed by a fixed-size trailer.
//!
//! ```text
//! record     = 0xA1 varint(pk) [null bitmap] field*   (a row added to the list)
//! update     = 0xA4 varint(pk) [null bitmap] field*   (new content of a row already listed)
//! tombstone  = 0xA2 varint(pk)                         (soft: a later record revives)
//! final tomb = 0xA3 varint(pk)                         (hard delete: hides every record of pk)
//! index      = 0xA5 varint(n) (varint(count) zigzag(min pk) zigzag(max pk))*n
//!                                                     (a head with segments: what each holds)
//! trailer    = 0xAF version:u8 fingerprint:u32le part:u16le id:u32le "LY"   (14 bytes, last)
//! ```
//!
//! Records carry no length: a `Layout` (the schema minus the fields the
//! list's key fixes) says how to walk them. The trailer's fingerprint covers
//! the layout, so a value written for another schema is never read as a list.
//! Integers are zigzag varints, datetimes microseconds from 2024-01-01 UTC,
//! dates days from 1970-01-01.
//!
//! A list larger than one item is stored in parts: a small *head* that takes
//! the prepends (its trailer's `part` is the number of segments) and older
//! *segments* (`part` = 0x8000 | index), all carrying the same random `id`
//! so that parts of two builds never mix. Such a head starts, as built, with
//! an *index* frame (each segment's record count and pk range, see
//! [`crate::segments`]): frames before it were prepended since the build.
//!
//! Reading rules: the newest frame of a pk decides (a record or update shows
//! the row with that content, a tombstone hides it); a shown row stands where
//! its newest `record` frame stands (an `update` does not move it); a final
//! tombstone anywhere hides it.

use crate::error::{Error, Result};
use std::collections::HashSet;
use std::sync::Arc;

/// The first byte of a record frame (a row added to the list).
pub const TAG_RECORD: u8 = 0xA1;
/// The first byte of a tombstone (the row left the list; a later record revives it).
pub const TAG_TOMBSTONE: u8 = 0xA2;
/// The first byte of a final tombstone (the row is gone for good).
pub const TAG_FINAL_TOMBSTONE: u8 = 0xA3;
/// The first byte of an update frame (new content of a row already listed).
pub const TAG_UPDATE: u8 = 0xA4;
/// The first byte of a segment index (see [`crate::segments`]): written once,
/// at build, in a head with segments; frames before it were prepended since.
pub const TAG_INDEX: u8 = 0xA5;
/// The first byte of the trailer.
pub const TAG_TRAILER: u8 = 0xAF;
/// The format version every trailer carries.
pub const FORMAT_VERSION: u8 = 2;
/// The size of the trailer, in bytes.
pub const TRAILER_LEN: usize = 14;
const SEGMENT_BIT: u16 = 0x8000;
/// Hard tombstones kept through a compaction, so that an add whose prepend
/// arrives late (after the delete's) still finds the tombstone.
const KEPT_HARD_TOMBSTONES: usize = 32;
const TRAILER_MAGIC: &[u8; 2] = b"LY";

/// Microseconds from the Unix epoch to 2024-01-01T00:00:00Z: datetimes are
/// stored relative to it so that recent ones take 7 varint bytes, not 8.
pub const DATETIME_BASE_MICROS: i64 = 1_704_067_200_000_000;

/// The type of one field, as the codec packs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A 64-bit signed integer (every integer field, foreign keys too).
    Int,
    /// A boolean.
    Bool,
    /// A 64-bit float.
    Float,
    /// UTF-8 text.
    Str,
    /// Raw bytes.
    Bytes,
    /// Microseconds since the Unix epoch (UTC).
    Datetime,
    /// Days since 1970-01-01.
    Date,
    /// Microseconds since midnight.
    Time,
    /// Decimal as its canonical text.
    Decimal,
    /// A UUID as its 16 bytes.
    Uuid,
    /// JSON as text.
    Json,
}

impl Kind {
    /// The kind called `name` (`int`, `bool`, `float`, `str`, `bytes`,
    /// `datetime`, `date`, `time`, `decimal`, `uuid`, `json`).
    pub fn parse(name: &str) -> Result<Kind> {
        Ok(match name {
            "int" => Kind::Int,
            "bool" => Kind::Bool,
            "float" => Kind::Float,
            "str" => Kind::Str,
            "bytes" => Kind::Bytes,
            "datetime" => Kind::Datetime,
            "date" => Kind::Date,
            "time" => Kind::Time,
            "decimal" => Kind::Decimal,
            "uuid" => Kind::Uuid,
            "json" => Kind::Json,
            other => return Err(Error::Schema(format!("unknown field kind {other:?}"))),
        })
    }

    /// The kind's name, as [`Kind::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Int => "int",
            Kind::Bool => "bool",
            Kind::Float => "float",
            Kind::Str => "str",
            Kind::Bytes => "bytes",
            Kind::Datetime => "datetime",
            Kind::Date => "date",
            Kind::Time => "time",
            Kind::Decimal => "decimal",
            Kind::Uuid => "uuid",
            Kind::Json => "json",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }
}

/// One field of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's name (Django's attname: `follower_id`, `entry_id.title`).
    pub name: String,
    /// How its values are packed.
    pub kind: Kind,
    /// Whether it may hold NULL.
    pub nullable: bool,
}

impl Field {
    /// A field called `name` of `kind`.
    pub fn new(name: &str, kind: Kind, nullable: bool) -> Field {
        Field { name: name.to_string(), kind, nullable }
    }
}

/// An owned field value (rows handed in for encoding, key values).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL (a nullable field only).
    Null,
    /// [`Kind::Int`].
    Int(i64),
    /// [`Kind::Bool`].
    Bool(bool),
    /// [`Kind::Float`].
    Float(f64),
    /// [`Kind::Str`].
    Str(String),
    /// [`Kind::Bytes`].
    Bytes(Vec<u8>),
    /// [`Kind::Datetime`]: microseconds since the Unix epoch (UTC).
    Datetime(i64),
    /// [`Kind::Date`]: days since 1970-01-01.
    Date(i32),
    /// [`Kind::Time`]: microseconds since midnight.
    Time(i64),
    /// [`Kind::Decimal`]: its canonical text.
    Decimal(String),
    /// [`Kind::Uuid`]: its 16 bytes.
    Uuid([u8; 16]),
    /// [`Kind::Json`]: its text.
    Json(String),
}

/// A decoded field value borrowing from the cached bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// NULL.
    Null,
    /// See [`Value::Int`].
    Int(i64),
    /// See [`Value::Bool`].
    Bool(bool),
    /// See [`Value::Float`].
    Float(f64),
    /// See [`Value::Str`].
    Str(&'a str),
    /// See [`Value::Bytes`].
    Bytes(&'a [u8]),
    /// See [`Value::Datetime`].
    Datetime(i64),
    /// See [`Value::Date`].
    Date(i32),
    /// See [`Value::Time`].
    Time(i64),
    /// See [`Value::Decimal`].
    Decimal(&'a str),
    /// See [`Value::Uuid`].
    Uuid(&'a [u8; 16]),
    /// See [`Value::Json`].
    Json(&'a str),
}

impl ValueRef<'_> {
    /// The value, copied out of the cached bytes.
    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Int(v) => Value::Int(v),
            ValueRef::Bool(v) => Value::Bool(v),
            ValueRef::Float(v) => Value::Float(v),
            ValueRef::Str(v) => Value::Str(v.to_string()),
            ValueRef::Bytes(v) => Value::Bytes(v.to_vec()),
            ValueRef::Datetime(v) => Value::Datetime(v),
            ValueRef::Date(v) => Value::Date(v),
            ValueRef::Time(v) => Value::Time(v),
            ValueRef::Decimal(v) => Value::Decimal(v.to_string()),
            ValueRef::Uuid(v) => Value::Uuid(*v),
            ValueRef::Json(v) => Value::Json(v.to_string()),
        }
    }
}

/// A row in schema order; the first value is the integer primary key.
pub type Row = Vec<Value>;

/// The fields of one model, primary key first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    fields: Vec<Field>,
}

impl Schema {
    /// A schema of `fields` in record order; the first must be the
    /// non-null integer primary key, at most 64 may be nullable.
    pub fn new(fields: Vec<Field>) -> Result<Schema> {
        match fields.first() {
            Some(f) if f.kind == Kind::Int && !f.nullable => {}
            _ => return Err(Error::Schema("the first field must be a non-null integer primary key".into())),
        }
        // The null bitmap of a record is one 64-bit varint.
        if fields.iter().filter(|f| f.nullable).count() > 64 {
            return Err(Error::Schema("at most 64 nullable fields can be cached in one model".into()));
        }
        let mut seen = HashSet::new();
        for f in &fields {
            if !seen.insert(f.name.as_str()) {
                return Err(Error::Schema(format!("field {:?} appears twice", f.name)));
            }
        }
        Ok(Schema { fields })
    }

    /// The fields, primary key first.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The position of the field called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// FNV-1a over names, kinds and nullability: two processes agree on a
    /// layout exactly when they agree on this number.
    pub fn fingerprint(&self) -> u32 {
        let mut h = Fnv::new();
        for f in &self.fields {
            h.write(f.name.as_bytes());
            h.write(&[0, f.kind.code(), f.nullable as u8]);
        }
        h.finish()
    }
}

/// The record layout of one list: the schema minus the fields its key fixes.
#[derive(Debug, Clone)]
pub struct Layout {
    schema: Arc<Schema>,
    /// Schema positions stored in each record, after the pk.
    stored: Vec<usize>,
    /// The kind and nullability of each of `stored` (what decoding reads).
    kinds: Vec<(Kind, bool)>,
    /// How many of `stored` are nullable (they get a null bitmap).
    nullable: usize,
    fingerprint: u32,
}

impl Layout {
    /// `fixed`: schema positions whose value the list key fixes.
    pub fn new(schema: Arc<Schema>, fixed: &[usize]) -> Layout {
        let stored: Vec<usize> = (1..schema.fields.len()).filter(|i| !fixed.contains(i)).collect();
        let nullable = stored.iter().filter(|&&i| schema.fields[i].nullable).count();
        let mut h = Fnv::new();
        h.write(&schema.fingerprint().to_le_bytes());
        for i in &stored {
            h.write(&(*i as u32).to_le_bytes());
        }
        let kinds = stored.iter().map(|&i| (schema.fields[i].kind, schema.fields[i].nullable)).collect();
        Layout { schema, stored, kinds, nullable, fingerprint: h.finish() }
    }

    /// The schema the layout is cut from.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Schema positions carried by each record after the pk, in order.
    pub fn stored(&self) -> &[usize] {
        &self.stored
    }

    /// The layout's fingerprint (schema and stored fields): every
    /// trailer and list key carries it.
    pub fn fingerprint(&self) -> u32 {
        self.fingerprint
    }

    /// The trailer of one part of a list built with `id`.
    pub fn trailer(&self, part: Part, id: u32) -> [u8; TRAILER_LEN] {
        let fp = self.fingerprint.to_le_bytes();
        let part = match part {
            Part::Head { segments } => segments.min(SEGMENT_BIT - 1),
            Part::Segment { index } => SEGMENT_BIT | index,
        }
        .to_le_bytes();
        let id = id.to_le_bytes();
        [
            TAG_TRAILER,
            FORMAT_VERSION,
            fp[0],
            fp[1],
            fp[2],
            fp[3],
            part[0],
            part[1],
            id[0],
            id[1],
            id[2],
            id[3],
            TRAILER_MAGIC[0],
            TRAILER_MAGIC[1],
        ]
    }

    /// Which part `bytes` is and the id of its build, if its trailer is valid
    /// for this layout.
    pub fn part_of(&self, bytes: &[u8]) -> Result<(Part, u32)> {
        if bytes.len() < TRAILER_LEN {
            return Err(Error::Decode("no trailer: the list is incomplete".into()));
        }
        match trailer_of(bytes) {
            Some(t) if t.version == FORMAT_VERSION && t.fingerprint == self.fingerprint => Ok((t.part, t.id)),
            _ => Err(Error::Decode("no trailer for this schema: incomplete list or another schema".into())),
        }
    }

    /// Appends one record frame for `row` (schema order) to `out`.
    pub fn encode_record(&self, row: &[Value], out: &mut Vec<u8>) -> Result<()> {
        self.encode_frame(TAG_RECORD, row, out)
    }

    /// Appends one `update` frame: new content for a row the list holds.
    pub fn encode_update(&self, row: &[Value], out: &mut Vec<u8>) -> Result<()> {
        self.encode_frame(TAG_UPDATE, row, out)
    }

    fn encode_frame(&self, tag: u8, row: &[Value], out: &mut Vec<u8>) -> Result<()> {
        if row.len() != self.schema.fields.len() {
            return Err(Error::Schema(format!(
                "row has {} values, the schema has {} fields",
                row.len(),
                self.schema.fields.len()
            )));
        }
        let pk = match row[0] {
            Value::Int(pk) => pk,
            ref other => return Err(Error::Schema(format!("primary key must be an integer, got {other:?}"))),
        };
        let start = out.len();
        out.push(tag);
        put_varint(out, zigzag(pk));
        if self.nullable > 0 {
            let mut bits = 0u64;
            let mut n = 0;
            for &i in &self.stored {
                if self.schema.fields[i].nullable {
                    if row[i] == Value::Null {
                        bits |= 1 << n;
                    }
                    n += 1;
                }
            }
            put_varint(out, bits);
        }
        for &i in &self.stored {
            let field = &self.schema.fields[i];
            if let Err(e) = encode_value(field, &row[i], out) {
                out.truncate(start);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A complete list in one value: the records (newest first) and the trailer.
    pub fn encode_list<'r>(&self, rows: impl IntoIterator<Item = &'r Row>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for row in rows {
            self.encode_record(row, &mut out)?;
        }
        out.extend_from_slice(&self.trailer(Part::Head { segments: 0 }, 0));
        Ok(out)
    }

    /// A complete list in parts: a head of at most `head_max` bytes of
    /// records (and, with segments, their index), then segments of at most
    /// `segment_max` bytes each.
    pub fn encode_parts<'r>(
        &self,
        rows: impl IntoIterator<Item = &'r Row>,
        id: u32,
        head_max: usize,
        segment_max: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let mut frames = Vec::new();
        let mut bounds = Vec::new();
        for row in rows {
            let start = frames.len();
            self.encode_record(row, &mut frames)?;
            bounds.push((start, frames.len()));
        }
        self.pack(bounds.iter().map(|&(s, e)| &frames[s..e]), &[], id, head_max, segment_max)
    }

    /// Packs record frames (newest first) into parts; `tombstones` go first
    /// in the head. Every frame is written as a `record`.
    pub fn pack<'f>(
        &self,
        records: impl Iterator<Item = &'f [u8]>,
        tombstones: &[u8],
        id: u32,
        head_max: usize,
        segment_max: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let mut parts: Vec<Vec<u8>> = vec![tombstones.to_vec()];
        // What each segment holds (its record count and pk range): the
        // head's index, so that counts and deep pages need no full read.
        let mut infos: Vec<SegmentInfo> = Vec::new();
        // A pk listed twice would be counted twice by the index: the first
        // record of a pk wins, as a reader would decide.
        let mut seen: PkSet = HashSet::default();
        for frame in records {
            let (pk, _) = get_varint(frame.get(1..).unwrap_or_default())?;
            let pk = unzigzag(pk);
            if !seen.insert(pk) {
                continue;
            }
            let limit = if parts.len() == 1 { head_max } else { segment_max };
            let last = parts.last_mut().expect("at least the head");
            if !last.is_empty() && last.len() + frame.len() + TRAILER_LEN > limit {
                parts.push(Vec::new());
                infos.push(SegmentInfo { count: 0, min: pk, max: pk });
            }
            let last = parts.last_mut().expect("at least the head");
            if frame.len() + TRAILER_LEN > segment_max {
                return Err(Error::TooLarge { size: frame.len(), limit: segment_max });
            }
            last.push(TAG_RECORD);
            last.extend_from_slice(&frame[1..]);
            if let (true, Some(info)) = (parts.len() > 1, infos.last_mut()) {
                info.count += 1;
                info.min = info.min.min(pk);
                info.max = info.max.max(pk);
            }
        }
        let segments = (parts.len() - 1) as u16;
        if segments > 0 {
            let mut head = Vec::with_capacity(parts[0].len() + 8 + infos.len() * 12);
            encode_index(&infos, &mut head);
            head.extend_from_slice(&parts[0]);
            if head.len() + TRAILER_LEN > segment_max {
                return Err(Error::TooLarge { size: head.len(), limit: segment_max });
            }
            parts[0] = head;
        }
        for (i, part) in parts.iter_mut().enumerate() {
            let which = if i == 0 { Part::Head { segments } } else { Part::Segment { index: (i - 1) as u16 } };
            part.extend_from_slice(&self.trailer(which, id));
        }
        Ok(parts)
    }

    /// The build id in a part's trailer (0 if it has none).
    pub fn part_id(&self, bytes: &[u8]) -> u32 {
        self.part_of(bytes).map(|(_, id)| id).unwrap_or(0)
    }

    /// Reads a list stored in one value (a head without segments).
    pub fn read<'a>(&self, bytes: &'a [u8]) -> Result<ListView<'a>> {
        let view = self.read_parts(&[bytes])?;
        if !view.complete {
            return Err(Error::Decode("the list has segments: read it with read_parts".into()));
        }
        Ok(view)
    }

    /// Reads a head and as many of its segments as given (all, or none for a
    /// partial view of the newest records).
    pub fn read_parts<'a>(&self, parts: &[&'a [u8]]) -> Result<ListView<'a>> {
        ListView::new(self, parts)
    }

    /// Decodes the stored fields of one record frame (as found by `read`).
    /// Returns the pk and the values of `stored()` in order.
    pub fn decode_record<'a>(&self, frame: &'a [u8], out: &mut Vec<ValueRef<'a>>) -> Result<i64> {
        let mut r = Reader { buf: frame, pos: 0 };
        if !matches!(r.byte()?, TAG_RECORD | TAG_UPDATE) {
            return Err(Error::Decode("not a record frame".into()));
        }
        let pk = unzigzag(r.varint()?);
        self.decode_fields(&mut r, Some(out))?;
        Ok(pk)
    }

    fn decode_fields<'a>(&self, r: &mut Reader<'a>, out: Option<&mut Vec<ValueRef<'a>>>) -> Result<()> {
        let nulls = if self.nullable > 0 { r.varint()? } else { 0 };
        let mut n = 0;
        let mut is_null = |nullable: bool| {
            nullable && {
                n += 1;
                nulls & (1 << (n - 1)) != 0
            }
        };
        match out {
            Some(out) => {
                out.reserve(self.kinds.len());
                for &(kind, nullable) in &self.kinds {
                    out.push(if is_null(nullable) { ValueRef::Null } else { decode_value(kind, r)? });
                }
            }
            // Skipping a frame checks what decoding it would.
            None => {
                for &(kind, nullable) in &self.kinds {
                    if !is_null(nullable) {
                        skip_value(kind, r)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Skips one frame starting at `pos`; returns (kind tag, pk, end). An
    /// index frame has pk 0.
    pub(crate) fn frame_at(&self, bytes: &[u8], pos: usize) -> Result<(u8, i64, usize)> {
        let mut r = Reader { buf: bytes, pos };
        let tag = r.byte()?;
        match tag {
            TAG_INDEX => {
                let (_, end) = decode_index(bytes, pos)?;
                Ok((tag, 0, end))
            }
            TAG_RECORD | TAG_UPDATE => {
                let pk = unzigzag(r.varint()?);
                self.decode_fields(&mut r, None)?;
                Ok((tag, pk, r.pos))
            }
            TAG_TOMBSTONE | TAG_FINAL_TOMBSTONE => {
                let pk = unzigzag(r.varint()?);
                Ok((tag, pk, r.pos))
            }
            other => Err(Error::Decode(format!("unknown frame tag 0x{other:02x} at byte {pos}"))),
        }
    }
}

/// A tombstone frame; `hard` ones hide every record of `pk` wherever it is.
pub fn encode_tombstone(pk: i64, hard: bool, out: &mut Vec<u8>) {
    out.push(if hard { TAG_FINAL_TOMBSTONE } else { TAG_TOMBSTONE });
    put_varint(out, zigzag(pk));
}

/// The trailer that closes one stored part, as written (see [`trailer_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// The wire format version.
    pub version: u8,
    /// The fingerprint of the layout the part was written with.
    pub fingerprint: u32,
    /// A head (with the number of segments that follow) or a segment.
    pub part: Part,
    /// The id shared by every part of one build.
    pub id: u32,
    /// Where the trailer starts in the value (it is the last `TRAILER_LEN` bytes).
    pub offset: usize,
}

/// The trailer `bytes` ends with, whatever layout and version it was
/// written for; `None` when the value does not end with one (a lease
/// marker, a value still being written, another kind of value).
pub fn trailer_of(bytes: &[u8]) -> Option<Trailer> {
    let offset = bytes.len().checked_sub(TRAILER_LEN)?;
    let t = &bytes[offset..];
    if t[0] != TAG_TRAILER || t[12..14] != TRAILER_MAGIC[..] {
        return None;
    }
    let part = u16::from_le_bytes([t[6], t[7]]);
    let part = if part & SEGMENT_BIT != 0 {
        Part::Segment { index: part & !SEGMENT_BIT }
    } else {
        Part::Head { segments: part }
    };
    Some(Trailer {
        version: t[1],
        fingerprint: u32::from_le_bytes([t[2], t[3], t[4], t[5]]),
        part,
        id: u32::from_le_bytes([t[8], t[9], t[10], t[11]]),
        offset,
    })
}

/// What one segment of a list holds, as the head's index frame says: its
/// records (each pk once) and the range of their pks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Record frames in the segment (all live when it was written).
    pub count: u32,
    /// The smallest pk among them.
    pub min: i64,
    /// The largest pk among them.
    pub max: i64,
}

/// Appends an index frame describing `infos` (segment 0 first).
pub fn encode_index(infos: &[SegmentInfo], out: &mut Vec<u8>) {
    out.push(TAG_INDEX);
    put_varint(out, infos.len() as u64);
    for info in infos {
        put_varint(out, info.count as u64);
        put_varint(out, zigzag(info.min));
        put_varint(out, zigzag(info.max));
    }
}

/// Reads the index frame at `pos` of `bytes`; returns it and where it ends.
pub fn decode_index(bytes: &[u8], pos: usize) -> Result<(Vec<SegmentInfo>, usize)> {
    let mut r = Reader { buf: bytes, pos };
    if r.byte()? != TAG_INDEX {
        return Err(Error::Decode(format!("no index frame at byte {pos}")));
    }
    let n = r.varint()?;
    if n > u16::MAX as u64 {
        return Err(Error::Decode(format!("an index of {n} segments")));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let count = u32::try_from(r.varint()?).map_err(|_| Error::Decode("segment count out of range".into()))?;
        let min = unzigzag(r.varint()?);
        let max = unzigzag(r.varint()?);
        out.push(SegmentInfo { count, min, max });
    }
    Ok((out, r.pos))
}

/// The name of a frame's tag, as inspection tools show it.
pub fn frame_kind(tag: u8) -> &'static str {
    match tag {
        TAG_RECORD => "record",
        TAG_UPDATE => "update",
        TAG_TOMBSTONE => "tombstone",
        TAG_FINAL_TOMBSTONE => "final-tombstone",
        TAG_INDEX => "index",
        _ => "unknown",
    }
}

/// A frame as the reader saw it (for inspection tools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    /// Where the frame starts in the value.
    pub offset: usize,
    /// Its length in bytes.
    pub len: usize,
    /// Its tag (`TAG_RECORD`, `TAG_UPDATE`, `TAG_TOMBSTONE`, `TAG_FINAL_TOMBSTONE`).
    pub tag: u8,
    /// The primary key it is about.
    pub pk: i64,
    /// Whether this frame decides what the list shows of `pk`.
    pub live: bool,
}

/// Which part of a list a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The head: the newest records, where prepends land.
    Head {
        /// How many segments follow it.
        segments: u16,
    },
    /// One older segment of a list stored in parts.
    Segment {
        /// Its place after the head, from 0.
        index: u16,
    },
}

/// A validated list (or the head of one): where its live records are.
/// Building it walks frame headers only; values are decoded on demand.
#[derive(Debug, Clone)]
pub struct ListView<'a> {
    parts: Vec<&'a [u8]>,
    /// (part, start, end) of each live record's content, in list order.
    live: Vec<(u16, u32, u32)>,
    frames: usize,
    /// Hard tombstones of the head (kept through compaction).
    hard: Vec<i64>,
    segments: u16,
    id: u32,
    complete: bool,
}

/// What the walk knows of one pk before reaching its `record` frame.
#[derive(Clone, Copy)]
enum Pending {
    Content(u16, u32, u32),
    Hidden,
}

impl<'a> ListView<'a> {
    fn new(layout: &Layout, parts: &[&'a [u8]]) -> Result<ListView<'a>> {
        let Some(head) = parts.first() else { return Err(Error::Decode("no head".into())) };
        let (segments, id) = match layout.part_of(head)? {
            (Part::Head { segments }, id) => (segments, id),
            _ => return Err(Error::Decode("a segment where the head was expected".into())),
        };
        let complete = parts.len() == segments as usize + 1;
        if parts.len() > 1 && !complete {
            return Err(Error::Decode(format!("{} segments given, the head names {segments}", parts.len() - 1)));
        }
        let mut bodies = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            if i > 0 && layout.part_of(part)? != (Part::Segment { index: (i - 1) as u16 }, id) {
                return Err(Error::Decode(format!("segment {} does not belong to this head", i - 1)));
            }
            bodies.push(&part[..part.len() - TRAILER_LEN]);
        }
        // The head is walked once: its frames are kept for the second look
        // below, once its final tombstones (which hide a pk wherever it is)
        // are known.
        let mut head_frames: Vec<(u8, i64, u32, u32)> = Vec::with_capacity(bodies[0].len() / 8);
        let mut hard = Vec::new();
        let mut pos = 0;
        while pos < bodies[0].len() {
            let (tag, pk, end) = layout.frame_at(bodies[0], pos)?;
            if tag == TAG_FINAL_TOMBSTONE {
                hard.push(pk);
            }
            if tag != TAG_INDEX {
                head_frames.push((tag, pk, pos as u32, end as u32));
            }
            pos = end;
        }
        let hard_set: PkSet = hard.iter().copied().collect();
        let frames_hint = parts.iter().map(|p| p.len()).sum::<usize>() / 8;
        let mut placed: PkSet = HashSet::with_capacity_and_hasher(frames_hint, Default::default());
        let mut pending: std::collections::HashMap<i64, Pending, std::hash::BuildHasherDefault<PkHasher>> =
            Default::default();
        let mut live = Vec::new();
        let mut frames = 0;
        for (p, body) in bodies.iter().enumerate() {
            let mut pos = 0;
            let mut next_head_frame = 0;
            loop {
                let (tag, pk, start, end) = if p == 0 {
                    let Some(&frame) = head_frames.get(next_head_frame) else { break };
                    next_head_frame += 1;
                    frame
                } else {
                    if pos >= body.len() {
                        break;
                    }
                    let (tag, pk, end) = layout.frame_at(body, pos)?;
                    let start = pos;
                    pos = end;
                    if tag == TAG_INDEX {
                        continue;
                    }
                    (tag, pk, start as u32, end as u32)
                };
                frames += 1;
                let here = (p as u16, start, end);
                if placed.contains(&pk) {
                    continue;
                }
                if tag == TAG_RECORD {
                    placed.insert(pk);
                    let content = match pending.remove(&pk) {
                        Some(Pending::Content(a, b, c)) => Some((a, b, c)),
                        Some(Pending::Hidden) => None,
                        None => Some(here),
                    };
                    if let (Some(c), false) = (content, hard_set.contains(&pk)) {
                        live.push(c);
                    }
                } else {
                    pending.entry(pk).or_insert(if tag == TAG_UPDATE {
                        Pending::Content(here.0, here.1, here.2)
                    } else {
                        Pending::Hidden
                    });
                }
            }
        }
        if complete {
            // An update whose record was never written (a defensive case):
            // list it rather than lose it.
            for (pk, p) in pending {
                if let (Pending::Content(a, b, c), false) = (p, hard_set.contains(&pk)) {
                    live.push((a, b, c));
                }
            }
        }
        Ok(ListView { parts: parts.to_vec(), live, frames, hard, segments, id, complete })
    }

    /// The number of live records (rows the list shows).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when the list shows no row.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// True when every part was read (a head-only view lists only the
    /// newest records, in their final order).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// How many segments the head names.
    pub fn segments(&self) -> u16 {
        self.segments
    }

    /// The id of the build the parts belong to.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Frames that no longer count (superseded records, tombstones).
    pub fn dead_frames(&self) -> usize {
        self.frames - self.live.len()
    }

    /// The bytes of the i-th live record's content frame.
    pub fn record(&self, i: usize) -> &'a [u8] {
        let (p, s, e) = self.live[i];
        &self.parts[p as usize][s as usize..e as usize]
    }

    /// (part, start, end) of the live records, in list order.
    pub fn ranges(&self) -> &[(u16, u32, u32)] {
        &self.live
    }

    /// The same list without dead frames, in parts (for compaction). The
    /// newest hard tombstones stay in the head.
    pub fn compacted(&self, layout: &Layout, id: u32, head_max: usize, segment_max: usize) -> Result<Vec<Vec<u8>>> {
        let mut tombstones = Vec::new();
        for pk in self.hard.iter().take(KEPT_HARD_TOMBSTONES) {
            encode_tombstone(*pk, true, &mut tombstones);
        }
        layout.pack((0..self.live.len()).map(|i| self.record(i)), &tombstones, id, head_max, segment_max)
    }
}

/// The pks of the final tombstones in a head's frames, newest first.
/// Describes every frame of `bytes` (even of an incomplete value) for
/// inspection; stops at the first undecodable byte.
pub fn describe(layout: &Layout, bytes: &[u8]) -> (Vec<FrameInfo>, Option<String>) {
    let body_len = match layout.part_of(bytes) {
        Ok(_) => bytes.len() - TRAILER_LEN,
        Err(_) => bytes.len(),
    };
    let live: HashSet<usize> = layout
        .read_parts(&[bytes])
        .map(|v| v.live.iter().filter(|l| l.0 == 0).map(|l| l.1 as usize).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body_len {
        // Frames end before the trailer: a frame cut off there is an error.
        match layout.frame_at(&bytes[..body_len], pos) {
            Ok((tag, pk, end)) => {
                out.push(FrameInfo { offset: pos, len: end - pos, tag, pk, live: live.contains(&pos) });
                pos = end;
            }
            Err(e) => return (out, Some(e.to_string())),
        }
    }
    (out, None)
}

/// A set of primary keys with a cheap multiplicative hash: walking a list
/// hashes every pk, and SipHash would cost more than decoding.
pub(crate) type PkSet = HashSet<i64, std::hash::BuildHasherDefault<PkHasher>>;

#[derive(Default)]
pub(crate) struct PkHasher(u64);

impl std::hash::Hasher for PkHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

fn encode_value(field: &Field, value: &Value, out: &mut Vec<u8>) -> Result<()> {
    let mismatch = || Error::Schema(format!("field {:?} ({:?}) cannot hold {value:?}", field.name, field.kind));
    match (field.kind, value) {
        (_, Value::Null) if field.nullable => {}
        (Kind::Int, Value::Int(v)) => put_varint(out, zigzag(*v)),
        (Kind::Bool, Value::Bool(v)) => out.push(*v as u8),
        (Kind::Float, Value::Float(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (Kind::Str, Value::Str(s)) | (Kind::Decimal, Value::Decimal(s)) | (Kind::Json, Value::Json(s)) => {
            put_bytes(out, s.as_bytes())
        }
        (Kind::Bytes, Value::Bytes(b)) => put_bytes(out, b),
        (Kind::Datetime, Value::Datetime(us)) => put_varint(out, zigzag(us.wrapping_sub(DATETIME_BASE_MICROS))),
        (Kind::Date, Value::Date(d)) => put_varint(out, zigzag(*d as i64)),
        (Kind::Time, Value::Time(us)) => put_varint(out, zigzag(*us)),
        (Kind::Uuid, Value::Uuid(u)) => out.extend_from_slice(u),
        _ => return Err(mismatch()),
    }
    Ok(())
}

fn decode_value<'a>(kind: Kind, r: &mut Reader<'a>) -> Result<ValueRef<'a>> {
    Ok(match kind {
        Kind::Int => ValueRef::Int(unzigzag(r.varint()?)),
        Kind::Bool => match r.byte()? {
            0 => ValueRef::Bool(false),
            1 => ValueRef::Bool(true),
            b => return Err(Error::Decode(format!("bad boolean byte {b}"))),
        },
        Kind::Float => ValueRef::Float(f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"))),
        Kind::Str => ValueRef::Str(r.str()?),
        Kind::Decimal => ValueRef::Decimal(r.str()?),
        Kind::Json => ValueRef::Json(r.str()?),
        Kind::Bytes => {
            let n = r.len()?;
            ValueRef::Bytes(r.take(n)?)
        }
        Kind::Datetime => ValueRef::Datetime(unzigzag(r.varint()?).wrapping_add(DATETIME_BASE_MICROS)),
        Kind::Date => {
            let d = unzigzag(r.varint()?);
            ValueRef::Date(i32::try_from(d).map_err(|_| Error::Decode("date out of range".into()))?)
        }
        Kind::Time => ValueRef::Time(unzigzag(r.varint()?)),
        Kind::Uuid => ValueRef::Uuid(r.take(16)?.try_into().expect("16 bytes")),
    })
}

/// Steps over one value, with the checks `decode_value` makes: integers
/// (the bulk of most records) are skipped without being assembled.
fn skip_value(kind: Kind, r: &mut Reader<'_>) -> Result<()> {
    match kind {
        Kind::Int | Kind::Datetime | Kind::Time => r.skip_varint(),
        other => decode_value(other, r).map(|_| ()),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or_else(truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let (v, n) = get_varint(&self.buf[self.pos.min(self.buf.len())..])?;
        self.pos += n;
        Ok(v)
    }

    /// Steps over a varint that `varint` would accept.
    fn skip_varint(&mut self) -> Result<()> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        for (i, &b) in rest.iter().enumerate().take(10) {
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err(Error::Decode("varint overflows 64 bits".into()));
                }
                self.pos += i + 1;
                return Ok(());
            }
            if i == 9 {
                return Err(Error::Decode("varint overflows 64 bits".into()));
            }
        }
        Err(truncated())
    }

    fn len(&mut self) -> Result<usize> {
        usize::try_from(self.varint()?).map_err(|_| truncated())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn str(&mut self) -> Result<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| Error::Decode("text field is not UTF-8".into()))
    }
}

fn truncated() -> Error {
    Error::Decode("frame truncated".into())
}

/// LEB128 unsigned varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint; returns (value, bytes used).
pub fn get_varint(buf: &[u8]) -> Result<(u64, usize)> {
    if let Some(&b) = buf.first() {
        if b < 0x80 {
            return Ok((b as u64, 1));
        }
    }
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err(Error::Decode("varint overflows 64 bits".into()));
        }
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            return Ok((v, i + 1));
        }
    }
    Err(truncated())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A signed integer as an unsigned one, small magnitudes small.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Fnv(u32);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0x811c_9dc5)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u32).wrapping_mul(0x0100_0193);
        }
    }
    fn finish(&self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn follow_schema() -> Arc<Schema> {
        Arc::new(
            Schema::new(vec![
                Field::new("id", Kind::Int, false),
                Field::new("created", Kind::Datetime, false),
                Field::new("follower_id", Kind::Int, false),
                Field::new("followee_id", Kind::Int, false),
            ])
            .unwrap(),
        )
    }

    fn follow(pk: i64, followee: i64) -> Row {
        // 2026-11-26T09:00:00.123456Z
        vec![Value::Int(pk), Value::Datetime(1_795_683_600_123_456), Value::Int(7), Value::Int(followee)]
    }

    fn decode_all(layout: &Layout, bytes: &[u8]) -> Vec<(i64, Vec<Value>)> {
        let view = layout.read(bytes).unwrap();
        (0..view.len())
            .map(|i| {
                let mut vals = Vec::new();
                let pk = layout.decode_record(view.record(i), &mut vals).unwrap();
                (pk, vals.into_iter().map(ValueRef::to_owned).collect())
            })
            .collect()
    }

    #[test]
    fn a_follow_record_on_a_follower_list_is_at_most_16_bytes() {
        let layout = Layout::new(follow_schema(), &[2]);
        let mut out = Vec::new();
        layout.encode_record(&follow(1_234_567, 987_654), &mut out).unwrap();
        assert!(out.len() <= 16, "{} bytes", out.len());
    }

    #[test]
    fn round_trip_skips_fixed_fields_and_keeps_order() {
        let layout = Layout::new(follow_schema(), &[2]);
        let rows = vec![follow(3, 30), follow(2, 20), follow(1, 10)];
        let bytes = layout.encode_list(&rows).unwrap();
        let got = decode_all(&layout, &bytes);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 2, 1]);
        assert_eq!(got[0].1, vec![rows[0][1].clone(), rows[0][3].clone()]);
    }

    #[test]
    fn first_frame_for_a_pk_wins_and_hard_tombstones_win_anywhere() {
        let layout = Layout::new(follow_schema(), &[2]);
        let mut bytes = layout.encode_list(&[follow(2, 20), follow(1, 10)]).unwrap();
        // Soft tombstone of 2, then a newer record of 2 revives it.
        let mut head = Vec::new();
        layout.encode_record(&follow(2, 21), &mut head).unwrap();
        encode_tombstone(2, false, &mut head);
        head.extend_from_slice(&bytes);
        bytes = head;
        let got = decode_all(&layout, &bytes);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(got[0].1[1], Value::Int(21));
        // A hard tombstone behind a record still hides it (add/delete race).
        let mut head = Vec::new();
        layout.encode_record(&follow(1, 10), &mut head).unwrap();
        let mut tail = Vec::new();
        encode_tombstone(1, true, &mut tail);
        head.extend_from_slice(&tail);
        head.extend_from_slice(&bytes);
        let view = layout.read(&head).unwrap();
        assert_eq!(view.len(), 1);
        assert_eq!(view.dead_frames(), 5);
        let compact = view.compacted(&layout, 7, 1 << 20, 1 << 20).unwrap();
        assert_eq!(compact.len(), 1);
        assert_eq!(decode_all(&layout, &compact[0]).len(), 1);
        // The hard tombstone survives compaction (a late add stays hidden).
        let mut late = Vec::new();
        layout.encode_record(&follow(1, 10), &mut late).unwrap();
        late.extend_from_slice(&compact[0]);
        assert_eq!(decode_all(&layout, &late).len(), 1);
    }

    #[test]
    fn a_list_reads_only_if_every_frame_decodes() {
        // Walking a list steps over the fields of each frame without
        // decoding them: it must refuse exactly what decoding refuses.
        let layout = Layout::new(follow_schema(), &[2]);
        let good = layout.encode_list(&[follow(1, 10)]).unwrap();
        let record = |created: &[u8], followee: &[u8]| {
            let mut frame = vec![TAG_RECORD];
            put_varint(&mut frame, zigzag(5));
            frame.extend_from_slice(created);
            frame.extend_from_slice(followee);
            let mut bytes = frame.clone();
            bytes.extend_from_slice(&good);
            (frame, bytes)
        };
        let cases: [(&[u8], &[u8], bool); 6] = [
            (&[0x02], &[0x04], true),
            (&[0xff; 9], &[0x01], false), // the followee byte ends `created`: the frame is cut off
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &[0x04], true),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], &[0x04], false), // overflows
            (&[0xff; 10], &[0x04], false),                                                   // no end within 10 bytes
            (&[0x02], &[0x80], false),                                                       // cut off
        ];
        for (created, followee, ok) in cases {
            let (frame, bytes) = record(created, followee);
            let decoded = layout.decode_record(&frame, &mut Vec::new()).is_ok()
                && frame.len() == {
                    let mut r = Reader { buf: &frame, pos: 1 };
                    r.varint().unwrap();
                    layout.decode_fields(&mut r, Some(&mut Vec::new())).map(|_| r.pos).unwrap_or(0)
                };
            assert_eq!(layout.read(&bytes).is_ok(), ok, "{created:x?} {followee:x?}");
            assert_eq!(decoded, ok, "{created:x?} {followee:x?}");
        }
    }

    #[test]
    fn values_without_the_trailer_or_of_another_layout_are_not_lists() {
        let layout = Layout::new(follow_schema(), &[2]);
        let other = Layout::new(follow_schema(), &[3]);
        let bytes = layout.encode_list(&[follow(1, 1)]).unwrap();
        assert!(layout.read(&bytes[..bytes.len() - 1]).is_err());
        assert!(other.read(&bytes).is_err());
        assert!(layout.read(b"").is_err());
        let mut prepended_marker = bytes.clone();
        prepended_marker.extend_from_slice(b"LEASE");
        assert!(layout.read(&prepended_marker).is_err());
    }

    #[test]
    fn nullable_and_text_fields_round_trip() {
        let schema = Arc::new(
            Schema::new(vec![
                Field::new("id", Kind::Int, false),
                Field::new("title", Kind::Str, true),
                Field::new("score", Kind::Float, true),
                Field::new("day", Kind::Date, false),
                Field::new("u", Kind::Uuid, false),
                Field::new("ok", Kind::Bool, false),
            ])
            .unwrap(),
        );
        let layout = Layout::new(schema, &[]);
        let rows = vec![
            vec![
                Value::Int(1),
                Value::Null,
                Value::Float(1.5),
                Value::Date(-3),
                Value::Uuid([7; 16]),
                Value::Bool(true),
            ],
            vec![
                Value::Int(2),
                Value::Str("é x".into()),
                Value::Null,
                Value::Date(20000),
                Value::Uuid([1; 16]),
                Value::Bool(false),
            ],
        ];
        let bytes = layout.encode_list(&rows).unwrap();
        let got = decode_all(&layout, &bytes);
        assert_eq!(got[0].1, rows[0][1..].to_vec());
        assert_eq!(got[1].1, rows[1][1..].to_vec());
    }

    #[test]
    fn a_row_of_the_wrong_shape_is_refused_without_output() {
        let layout = Layout::new(follow_schema(), &[]);
        let mut out = vec![1, 2, 3];
        let bad = vec![Value::Int(1), Value::Str("x".into()), Value::Int(1), Value::Int(2)];
        assert!(layout.encode_record(&bad, &mut out).is_err());
        assert_eq!(out, vec![1, 2, 3]);
        assert!(layout.encode_record(&[Value::Int(1)], &mut out).is_err());
    }

    impl Value {
        fn into_pk(self) -> i64 {
            match self {
                Value::Int(pk) => pk,
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn an_updated_row_keeps_its_place_with_its_new_content() {
        let layout = Layout::new(follow_schema(), &[2]);
        let mut bytes = Vec::new();
        layout.encode_update(&follow(2, 99), &mut bytes).unwrap();
        bytes.extend(layout.encode_list(&[follow(3, 30), follow(2, 20), follow(1, 10)]).unwrap());
        let got = decode_all(&layout, &bytes);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 2, 1]);
        assert_eq!(got[1].1[1], Value::Int(99));
        // A re-added row (record frame) goes to the front.
        let mut readd = Vec::new();
        layout.encode_record(&follow(1, 11), &mut readd).unwrap();
        readd.extend_from_slice(&bytes);
        assert_eq!(decode_all(&layout, &readd).iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 3, 2]);
    }

    fn parts_of(layout: &Layout, n: i64, head_max: usize, segment_max: usize) -> Vec<Vec<u8>> {
        let rows: Vec<Row> = (1..=n).rev().map(|i| follow(i, i)).collect();
        layout.encode_parts(&rows, 42, head_max, segment_max).unwrap()
    }

    #[test]
    fn big_lists_split_into_a_small_head_and_segments() {
        let layout = Layout::new(follow_schema(), &[2]);
        let parts = parts_of(&layout, 1000, 200, 4000);
        assert!(parts.len() > 3, "{} parts", parts.len());
        // The head's records fit in 200 bytes; its index comes on top.
        let (index, index_end) = decode_index(&parts[0], 0).unwrap();
        assert_eq!(index.len(), parts.len() - 1);
        assert!(parts[0].len() - index_end <= 200 && parts[1..].iter().all(|p| p.len() <= 4000));
        let in_segments: u32 = index.iter().map(|s| s.count).sum();
        assert_eq!(in_segments as usize + layout.read_parts(&[&parts[0]]).unwrap().len(), 1000);
        assert_eq!(
            (index[0].max, index.last().unwrap().min),
            (1000 - layout.read_parts(&[&parts[0]]).unwrap().len() as i64, 1)
        );
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let full = layout.read_parts(&refs).unwrap();
        assert!(full.complete());
        assert_eq!(full.len(), 1000);
        let head = layout.read_parts(&refs[..1]).unwrap();
        assert!(!head.complete());
        assert!(!head.is_empty() && head.len() < 1000);
        for i in 0..head.len() {
            assert_eq!(head.record(i), full.record(i), "the head is a prefix of the list");
        }
        assert!(layout.read(&parts[0]).is_err(), "a segmented head is not a whole list");
        // Segments of another build, or missing ones, are refused.
        let other = parts_of(&layout, 1000, 200, 4000);
        let mut mixed = refs.clone();
        mixed[1] = &other[1][..];
        assert!(layout.read_parts(&mixed).is_ok(), "same id 42: same build");
        let foreign = layout.encode_parts(&[follow(5, 5)], 43, 10, 4000).unwrap();
        mixed[1] = &foreign[0][..];
        assert!(layout.read_parts(&mixed).is_err());
        assert!(layout.read_parts(&refs[..refs.len() - 1]).is_err());
    }

    #[test]
    fn a_head_only_view_stays_a_prefix_when_rows_in_segments_are_updated() {
        let layout = Layout::new(follow_schema(), &[2]);
        let mut parts = parts_of(&layout, 300, 100, 1000);
        // Row 1 lives in the last segment; its update lands in the head.
        let mut head = Vec::new();
        layout.encode_update(&follow(1, 777), &mut head).unwrap();
        layout.encode_record(&follow(301, 301), &mut head).unwrap();
        head.extend_from_slice(&parts[0]);
        parts[0] = head;
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let full = layout.read_parts(&refs).unwrap();
        let head_view = layout.read_parts(&refs[..1]).unwrap();
        for i in 0..head_view.len() {
            assert_eq!(head_view.record(i), full.record(i));
        }
        assert_eq!(full.len(), 301);
        let mut vals = Vec::new();
        assert_eq!(layout.decode_record(full.record(300), &mut vals).unwrap(), 1);
        assert_eq!(vals[1], ValueRef::Int(777));
    }

    #[test]
    fn more_than_64_nullable_fields_are_refused() {
        let mut fields = vec![Field::new("id", Kind::Int, false)];
        fields.extend((0..65).map(|i| Field::new(&format!("n{i}"), Kind::Int, true)));
        assert!(Schema::new(fields.clone()).is_err());
        fields.pop();
        let layout = Layout::new(Arc::new(Schema::new(fields).unwrap()), &[]);
        let mut row = vec![Value::Int(1), Value::Null];
        row.extend((2..64).map(|_| Value::Int(0)));
        row.push(Value::Int(5));
        let bytes = layout.encode_list(&[row.clone()]).unwrap();
        assert_eq!(decode_all(&layout, &bytes), vec![(1, row[1..].to_vec())]);
    }

    #[test]
    fn trailer_of_reads_heads_and_segments_of_any_layout() {
        let layout = Layout::new(follow_schema(), &[2]);
        let parts = parts_of(&layout, 1000, 200, 4000);
        let head = trailer_of(&parts[0]).expect("a head");
        let segments = (parts.len() - 1) as u16;
        assert_eq!(head.part, Part::Head { segments });
        assert_eq!((head.version, head.fingerprint, head.id), (FORMAT_VERSION, layout.fingerprint(), 42));
        assert_eq!(head.offset, parts[0].len() - TRAILER_LEN);
        assert_eq!(trailer_of(&parts[2]).map(|t| t.part), Some(Part::Segment { index: 1 }));
        // another layout's list still shows its trailer (part_of refuses it)
        let other = Layout::new(follow_schema(), &[3]);
        let whole = other.encode_list(&[follow(1, 1)]).unwrap();
        assert_eq!(trailer_of(&whole).map(|t| t.fingerprint), Some(other.fingerprint()));
        assert!(layout.part_of(&whole).is_err());
        assert_eq!(trailer_of(&whole[..whole.len() - 1]), None);
        assert_eq!(trailer_of(b"LY"), None);
        assert_eq!(trailer_of(&[0u8; 14]), None);
    }

    #[test]
    fn frame_kinds_name_every_tag() {
        let kinds: Vec<&str> = [TAG_RECORD, TAG_TOMBSTONE, TAG_FINAL_TOMBSTONE, TAG_UPDATE, TAG_TRAILER]
            .into_iter()
            .map(frame_kind)
            .collect();
        assert_eq!(kinds, ["record", "tombstone", "final-tombstone", "update", "unknown"]);
    }

    #[test]
    fn describe_reports_a_frame_cut_by_the_trailer() {
        let layout = Layout::new(follow_schema(), &[2]);
        let mut bytes = vec![TAG_RECORD, 0x02]; // pk 1, fields missing
        bytes.extend_from_slice(&layout.trailer(Part::Head { segments: 0 }, 0));
        assert!(layout.read(&bytes).is_err());
        let (frames, error) = describe(&layout, &bytes);
        assert!(frames.is_empty() && error.is_some(), "{frames:?} {error:?}");
    }

    #[test]
    fn the_newest_frame_decides_even_after_a_soft_tombstone() {
        let layout = Layout::new(follow_schema(), &[2]);
        let mut bytes = Vec::new();
        layout.encode_update(&follow(1, 99), &mut bytes).unwrap();
        encode_tombstone(1, false, &mut bytes);
        bytes.extend(layout.encode_list(&[follow(1, 10)]).unwrap());
        let got = decode_all(&layout, &bytes);
        assert_eq!(got, vec![(1, vec![follow(1, 99)[1].clone(), Value::Int(99)])]);
    }

    fn arb_row() -> impl Strategy<Value = Row> {
        (any::<i64>(), any::<i64>(), proptest::option::of(".{0,20}"), any::<f64>(), any::<bool>()).prop_map(
            |(pk, ts, s, f, b)| {
                vec![
                    Value::Int(pk),
                    Value::Datetime(ts),
                    s.map(Value::Str).unwrap_or(Value::Null),
                    Value::Float(f),
                    Value::Bool(b),
                ]
            },
        )
    }

    fn prop_schema() -> Arc<Schema> {
        Arc::new(
            Schema::new(vec![
                Field::new("id", Kind::Int, false),
                Field::new("ts", Kind::Datetime, false),
                Field::new("s", Kind::Str, true),
                Field::new("f", Kind::Float, false),
                Field::new("b", Kind::Bool, false),
            ])
            .unwrap(),
        )
    }

    proptest! {
        #[test]
        fn any_rows_round_trip(rows in proptest::collection::vec(arb_row(), 0..40)) {
            let layout = Layout::new(prop_schema(), &[]);
            let bytes = layout.encode_list(&rows).unwrap();
            let got = decode_all(&layout, &bytes);
            let mut seen = HashSet::new();
            let expected: Vec<&Row> = rows.iter().filter(|r| seen.insert(r[0].clone().into_pk())).collect();
            prop_assert_eq!(got.len(), expected.len());
            for (g, e) in got.iter().zip(expected) {
                prop_assert_eq!(Value::Int(g.0), e[0].clone());
                for (a, b) in g.1.iter().zip(&e[1..]) {
                    match (a, b) {
                        (Value::Float(x), Value::Float(y)) => prop_assert_eq!(x.to_bits(), y.to_bits()),
                        _ => prop_assert_eq!(a, b),
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), with_trailer in any::<bool>()) {
            let layout = Layout::new(prop_schema(), &[]);
            let mut bytes = bytes;
            if with_trailer { bytes.extend_from_slice(&layout.trailer(Part::Head { segments: 0 }, 0)); }
            if let Ok(view) = layout.read(&bytes) {
                for i in 0..view.len() {
                    let mut vals = Vec::new();
                    let _ = layout.decode_record(view.record(i), &mut vals);
                }
            }
            let _ = describe(&layout, &bytes);
        }

        #[test]
        fn varints_round_trip(v in any::<i64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, zigzag(v));
            let (got, n) = get_varint(&out).unwrap();
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(unzigzag(got), v);
        }
    }
}
