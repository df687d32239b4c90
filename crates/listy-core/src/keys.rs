//! Memcached keys for lists, counters and a model's meta record.
//!
//! ```text
//! {prefix}ly:{model}:m                                    meta (generation, index registry)
//! {prefix}ly:{model}:{layout fp}:{gen}:{f1,f2}={v1,v2}    a list
//! {list key}#{suffix}                                     its counters (#c, #d19700, ...)
//! ```
//!
//! Every key names the model, the generation (so `flush` is one write), the
//! record layout's fingerprint (so two schemas never share a value) and the
//! index values. Bytes that memcached forbids (space, control characters)
//! and the separators are %-escaped; non-ASCII text is escaped byte-wise.
//! Keys longer than memcached's 250 bytes keep a readable head and end in an
//! MD5 digest of the whole key.

use crate::codec::Value;
use md5::{Digest, Md5};
use std::fmt::Write;

/// memcached's limit on key length.
pub const MAX_KEY_LEN: usize = 250;

/// The meta key of a model.
pub fn meta_key(prefix: &str, model: &str) -> String {
    finish(format!("{}ly:{}:m", escape(prefix), escape(model)))
}

/// The key of one list.
pub fn list_key(
    prefix: &str,
    model: &str,
    fingerprint: u32,
    generation: u64,
    fields: &[String],
    values: &[Value],
) -> String {
    list_key_after(&list_key_head(prefix, model, fingerprint, generation, fields), values)
}

/// The part of a list's key that does not depend on its values (up to the
/// `=`): [`list_key_after`] completes it, for many lists of one index.
pub fn list_key_head(prefix: &str, model: &str, fingerprint: u32, generation: u64, fields: &[String]) -> String {
    let mut key = format!("{}ly:{}:{:08x}:{:x}:", escape(prefix), escape(model), fingerprint, generation);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        key.push_str(&escape(f));
    }
    key.push('=');
    key
}

/// The key of one list from its [`list_key_head`] and its values: the same
/// key as [`list_key`].
pub fn list_key_after(head: &str, values: &[Value]) -> String {
    let mut key = String::with_capacity(head.len() + 8 * values.len());
    key.push_str(head);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        push_value(&mut key, v);
    }
    finish(key)
}

/// The canonical order of an index's fields, as list keys name them and
/// the engine keeps indexes: sorted, each field once.
pub fn canonical_index(fields: &[String]) -> Vec<String> {
    let mut out = fields.to_vec();
    out.sort();
    out.dedup();
    out
}

/// A list key read back (see [`parse_list_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListKey {
    /// The model name the key was made for (an engine's `model`).
    pub model: String,
    /// The record layout's fingerprint.
    pub fingerprint: u32,
    /// The model's generation.
    pub generation: u64,
    /// The index fields, in canonical order.
    pub fields: Vec<String>,
    /// Each value's text form (unescaped), `None` for a null value.
    pub values: Vec<Option<String>>,
}

/// Reads a list key made by [`list_key`] with `prefix` back into its parts.
/// `None` for anything else: a meta, counter or segment key, a key
/// shortened to a digest (its values are gone), another prefix.
pub fn parse_list_key(prefix: &str, key: &str) -> Option<ListKey> {
    let rest = key.strip_prefix(&escape(prefix))?.strip_prefix("ly:")?;
    if rest.contains(['!', '@', '#']) {
        return None;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let [model, fingerprint, generation, index] = parts[..] else {
        return None;
    };
    let (fields, values) = index.split_once('=')?;
    let fields: Vec<String> = fields.split(',').map(unescape).collect::<Option<_>>()?;
    let values: Vec<Option<String>> =
        values.split(',').map(|v| if v == "~" { Some(None) } else { unescape(v).map(Some) }).collect::<Option<_>>()?;
    if fields.len() != values.len() || fields.iter().any(String::is_empty) {
        return None;
    }
    Some(ListKey {
        model: unescape(model)?,
        fingerprint: u32::from_str_radix(fingerprint, 16).ok()?,
        generation: u64::from_str_radix(generation, 16).ok()?,
        fields,
        values,
    })
}

/// Undoes [`escape`]; `None` for a broken escape. Bytes that are not UTF-8
/// become U+FFFD (a key value was text before it was escaped).
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The key of a counter that belongs to a list (`suffix` names the bucket).
pub fn counter_key(list_key: &str, suffix: &str) -> String {
    finish(format!("{list_key}#{suffix}"))
}

/// The key of segment `index` of the list build `id` whose head is `head_key`.
pub fn segment_key(head_key: &str, id: u32, index: u16) -> String {
    finish(format!("{head_key}@{id:08x}.{index}"))
}

/// The text form of a key value: the same value always gives the same text,
/// whichever way the caller spelled it (an FK instance or its id).
pub fn push_value(key: &mut String, v: &Value) {
    match v {
        Value::Null => key.push('~'),
        Value::Int(i) => write!(key, "{i}").expect("write to String"),
        Value::Bool(b) => key.push(if *b { 'T' } else { 'F' }),
        Value::Float(f) => write!(key, "{f:?}").expect("write to String"),
        Value::Str(s) | Value::Decimal(s) | Value::Json(s) => key.push_str(&escape(s)),
        Value::Bytes(b) => key.push_str(&hex(b)),
        Value::Datetime(us) | Value::Time(us) => write!(key, "{us}").expect("write to String"),
        Value::Date(d) => write!(key, "d{d}").expect("write to String"),
        Value::Uuid(u) => key.push_str(&hex(u)),
    }
}

/// %-escapes everything that is not a printable ASCII character, plus the
/// characters the key grammar uses as separators.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b':' | b',' | b'=' | b'#' | b'~') {
            out.push(b as char);
        } else {
            write!(out, "%{b:02X}").expect("write to String");
        }
    }
    out
}

/// Keeps keys under memcached's limit: a long key becomes its first 200
/// bytes, then `!` and the MD5 of the whole key (a different key of the same
/// head still gets a different digest).
fn finish(key: String) -> String {
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    let digest = Md5::digest(key.as_bytes());
    let mut head = key;
    head.truncate(200);
    head.push('!');
    head.push_str(&hex(&digest));
    head
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(s, "{b:02x}").expect("write to String");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn memcached_safe(key: &str) -> bool {
        key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
    }

    #[test]
    fn list_keys_name_model_generation_fields_and_values() {
        let k = list_key(
            "site1:",
            "app.Follow",
            0xabc,
            17,
            &fields(&["followee_id", "follower_id"]),
            &[Value::Int(5), Value::Int(-7)],
        );
        assert_eq!(k, "site1%3Aly:app.Follow:00000abc:11:followee_id,follower_id=5,-7");
        assert_eq!(counter_key(&k, "c"), format!("{k}#c"));
    }

    #[test]
    fn spaces_control_and_non_ascii_are_escaped() {
        let k = list_key("", "m", 1, 1, &fields(&["name"]), &[Value::Str("a b\n\u{e9},=".into())]);
        assert!(memcached_safe(&k), "{k}");
        assert!(k.ends_with("name=a%20b%0A%C3%A9%2C%3D"), "{k}");
        // Distinct values give distinct keys even when they share characters.
        let a = list_key("", "m", 1, 1, &fields(&["a", "b"]), &[Value::Str("x,y".into()), Value::Str("z".into())]);
        let b = list_key("", "m", 1, 1, &fields(&["a", "b"]), &[Value::Str("x".into()), Value::Str("y,z".into())]);
        assert_ne!(a, b);
        let n = list_key("", "m", 1, 1, &fields(&["a"]), &[Value::Null]);
        let t = list_key("", "m", 1, 1, &fields(&["a"]), &[Value::Str("~".into())]);
        assert_ne!(n, t);
    }

    #[test]
    fn long_keys_get_a_digest_and_stay_distinct() {
        let long_a = "x".repeat(400);
        let long_b = format!("{}y", "x".repeat(399));
        let a = list_key("", "m", 1, 1, &fields(&["name"]), &[Value::Str(long_a)]);
        let b = list_key("", "m", 1, 1, &fields(&["name"]), &[Value::Str(long_b)]);
        assert!(memcached_safe(&a) && memcached_safe(&b));
        assert_ne!(a, b);
        assert!(memcached_safe(&counter_key(&a, "d20000")));
        assert_ne!(counter_key(&a, "c"), counter_key(&a, "d1"));
    }

    #[test]
    fn the_meta_key_escapes_the_prefix_and_the_model() {
        assert_eq!(meta_key("a:b", "app.M+x"), "a%3Ably:app.M+x:m");
        let long = meta_key("t", &"x".repeat(300));
        assert_eq!(long.len(), 233);
        assert!(long.starts_with(&format!("tly:{}", "x".repeat(196))));
    }

    #[test]
    fn canonical_index_sorts_and_keeps_each_field_once() {
        let order = canonical_index(&fields(&["follower_id", "followee_id", "follower_id"]));
        assert_eq!(order, fields(&["followee_id", "follower_id"]));
        assert_eq!(canonical_index(&[]), Vec::<String>::new());
    }

    #[test]
    fn list_keys_parse_back_into_their_parts() {
        let k = list_key(
            "site:1 ",
            "app.Follow+softdeleted",
            0xabc,
            0x1f,
            &fields(&["a", "name", "n"]),
            &[Value::Int(-7), Value::Str("x, y=\u{e9}~".into()), Value::Null],
        );
        let parsed = parse_list_key("site:1 ", &k).expect("a list key");
        assert_eq!(
            parsed,
            ListKey {
                model: "app.Follow+softdeleted".into(),
                fingerprint: 0xabc,
                generation: 0x1f,
                fields: fields(&["a", "name", "n"]),
                values: vec![Some("-7".into()), Some("x, y=\u{e9}~".into()), None],
            }
        );
        assert_eq!(parse_list_key("other", &k), None);
    }

    #[test]
    fn other_keys_are_not_list_keys() {
        let k = list_key("", "m", 1, 1, &fields(&["a"]), &[Value::Int(1)]);
        assert!(parse_list_key("", &k).is_some());
        assert_eq!(parse_list_key("", &meta_key("", "m")), None);
        assert_eq!(parse_list_key("", &counter_key(&k, "c")), None);
        assert_eq!(parse_list_key("", &segment_key(&k, 7, 0)), None);
        let long = list_key("", "m", 1, 1, &fields(&["a"]), &[Value::Str("z".repeat(300))]);
        assert_eq!(parse_list_key("", &long), None);
        assert_eq!(parse_list_key("", "ly:m:1:1:a=%G1"), None);
        assert_eq!(parse_list_key("", "ly:m:1:1:a,b=1"), None);
        assert_eq!(parse_list_key("", "ly:m:zz:1:a=1"), None);
    }

    proptest::proptest! {
        #[test]
        fn every_key_is_memcached_safe(prefix in ".{0,40}", s in ".{0,300}", i in proptest::num::i64::ANY) {
            let k = list_key(&prefix, "app.M", 9, 3, &fields(&["a", "b"]), &[Value::Str(s), Value::Int(i)]);
            proptest::prop_assert!(memcached_safe(&k), "{}", k);
            proptest::prop_assert!(memcached_safe(&meta_key(&prefix, "app.M")));
        }
    }
}
