//! The embedded in-process store: memcached's semantics (CAS tokens, `add`,
//! `prepend` refusing to pass the item size limit, `incr` on decimal text)
//! in one process's memory, for development and single-process sites.
//! Stores are shared by name inside a process, like one memcached server.

use crate::error::{Error, Result};
use crate::store::{Item, Op, Reply, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A process-wide map of named stores.
static STORES: OnceLock<Mutex<HashMap<String, Arc<LocalStore>>>> = OnceLock::new();

/// One in-process store with memcached's semantics (see the module doc).
#[derive(Debug)]
pub struct LocalStore {
    name: String,
    max_item_size: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    items: HashMap<String, Item>,
    next_cas: u64,
}

impl LocalStore {
    /// The store called `name` in this process, created on first use.
    pub fn named(name: &str, max_item_size: usize) -> Arc<LocalStore> {
        let mut stores = STORES.get_or_init(Default::default).lock().expect("store registry poisoned");
        stores.entry(name.to_string()).or_insert_with(|| Arc::new(LocalStore::new(name, max_item_size))).clone()
    }

    /// A private store (tests).
    pub fn new(name: &str, max_item_size: usize) -> LocalStore {
        LocalStore { name: name.to_string(), max_item_size, state: Mutex::new(State::default()) }
    }

    fn apply(&self, state: &mut State, op: Op) -> Result<Reply> {
        state.next_cas += 1;
        let cas = state.next_cas;
        let limit = self.max_item_size;
        let too_large = |size: usize| Error::TooLarge { size, limit };
        Ok(match op {
            Op::Get { key } => Reply::Value(state.items.get(&key).cloned()),
            Op::Set { key, value } => {
                if value.len() > limit {
                    return Err(too_large(value.len()));
                }
                state.items.insert(key, Item { value, cas });
                Reply::Stored
            }
            Op::Add { key, value } => {
                if value.len() > limit {
                    return Err(too_large(value.len()));
                }
                match state.items.entry(key) {
                    std::collections::hash_map::Entry::Occupied(_) => Reply::NotStored,
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(Item { value, cas });
                        Reply::Stored
                    }
                }
            }
            Op::Cas { key, value, cas: token } => {
                if value.len() > limit {
                    return Err(too_large(value.len()));
                }
                match state.items.get_mut(&key) {
                    None => Reply::NotFound,
                    Some(item) if item.cas != token => Reply::Exists,
                    Some(item) => {
                        *item = Item { value, cas };
                        Reply::Stored
                    }
                }
            }
            Op::Prepend { key, value } => match state.items.get_mut(&key) {
                // Like memcached: a prepend that would pass the limit is not
                // stored and the old value stays.
                Some(item) if item.value.len() + value.len() <= limit => {
                    let mut joined = value;
                    joined.extend_from_slice(&item.value);
                    *item = Item { value: joined, cas };
                    Reply::Stored
                }
                _ => Reply::NotStored,
            },
            Op::Delete { key } => match state.items.remove(&key) {
                Some(_) => Reply::Deleted,
                None => Reply::NotFound,
            },
            Op::Incr { key, delta } => arith(state, &key, cas, |n| n.wrapping_add(delta)),
            Op::Decr { key, delta } => arith(state, &key, cas, |n| n.saturating_sub(delta)),
        })
    }
}

fn arith(state: &mut State, key: &str, cas: u64, f: impl Fn(u64) -> u64) -> Reply {
    let Some(item) = state.items.get_mut(key) else {
        return Reply::NotFound;
    };
    let parsed = std::str::from_utf8(&item.value).ok().and_then(|s| s.trim_end().parse::<u64>().ok());
    match parsed {
        None => Reply::NonNumeric,
        Some(n) => {
            let v = f(n);
            *item = Item { value: v.to_string().into_bytes(), cas };
            Reply::Number(v)
        }
    }
}

impl Store for LocalStore {
    fn execute(&self, ops: Vec<Op>) -> Vec<Result<Reply>> {
        let mut state = self.state.lock().expect("local store poisoned");
        ops.into_iter().map(|op| self.apply(&mut state, op)).collect()
    }

    fn max_item_size(&self) -> usize {
        self.max_item_size
    }

    fn flush_all(&self) -> Result<()> {
        self.state.lock().expect("local store poisoned").items.clear();
        Ok(())
    }

    fn server_for(&self, _key: &str) -> String {
        format!("local:{}", self.name)
    }

    fn stats(&self) -> Result<Vec<(String, String, String)>> {
        let state = self.state.lock().expect("local store poisoned");
        let bytes: usize = state.items.iter().map(|(k, v)| k.len() + v.value.len()).sum();
        let server = self.server_for("");
        Ok(vec![
            (server.clone(), "curr_items".into(), state.items.len().to_string()),
            (server.clone(), "bytes".into(), bytes.to_string()),
            (server, "limit_maxbytes".into(), "0".into()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn behaves_like_memcached() {
        let s = LocalStore::new("t", 10);
        let r = s.execute(vec![
            Op::Prepend { key: k("a"), value: b"x".to_vec() },
            Op::Add { key: k("a"), value: b"1".to_vec() },
            Op::Add { key: k("a"), value: b"2".to_vec() },
            Op::Prepend { key: k("a"), value: b"0".to_vec() },
            Op::Incr { key: k("a"), delta: 5 },
            Op::Decr { key: k("a"), delta: 100 },
            Op::Prepend { key: k("a"), value: b"0123456789".to_vec() },
            Op::Incr { key: k("nope"), delta: 1 },
        ]);
        let r: Vec<Reply> = r.into_iter().map(|x| x.unwrap()).collect();
        assert_eq!(
            r,
            vec![
                Reply::NotStored,
                Reply::Stored,
                Reply::NotStored,
                Reply::Stored,
                Reply::Number(6),
                Reply::Number(0),
                Reply::NotStored,
                Reply::NotFound
            ]
        );
        let item = s.get("a").unwrap().unwrap();
        assert_eq!(item.value, b"0");
        assert_eq!(s.one(Op::Cas { key: k("a"), value: b"z".to_vec(), cas: item.cas + 1 }).unwrap(), Reply::Exists);
        assert_eq!(s.one(Op::Cas { key: k("a"), value: b"z".to_vec(), cas: item.cas }).unwrap(), Reply::Stored);
        assert_eq!(s.one(Op::Cas { key: k("b"), value: b"z".to_vec(), cas: 1 }).unwrap(), Reply::NotFound);
        s.one(Op::Set { key: k("m"), value: b"L1".to_vec() }).unwrap();
        assert_eq!(s.one(Op::Incr { key: k("m"), delta: 1 }).unwrap(), Reply::NonNumeric);
        assert!(s.one(Op::Set { key: k("big"), value: vec![0; 11] }).is_err());
    }

    #[test]
    fn named_stores_are_shared_in_a_process() {
        let a = LocalStore::named("shared-test", 100);
        let b = LocalStore::named("shared-test", 100);
        a.one(Op::Set { key: k("x"), value: b"1".to_vec() }).unwrap();
        assert_eq!(b.get("x").unwrap().unwrap().value, b"1");
    }
}
