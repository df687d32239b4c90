//! The memcached client and pool against real memcached processes (and a few
//! fake servers for exact wire bytes and broken replies).
#![cfg(unix)] // the memcached these tests start, stop and kill is a Unix process

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use common::{closed_addr, Memcached};
use listy_core::client::{Connection, Failure};
use listy_core::pool::{MemcachedPool, PoolConfig};
use listy_core::{Error, Item, Op, Reply, Store};

const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_millis(300);
const MIB: usize = 1024 * 1024;

fn connect(addr: &str) -> Connection {
    Connection::connect(addr, CONNECT_TIMEOUT, TIMEOUT, MIB).expect("connect")
}

fn pool(addrs: &[String]) -> MemcachedPool {
    let mut cfg = PoolConfig::new(addrs.to_vec());
    cfg.timeout = TIMEOUT;
    MemcachedPool::new(cfg).expect("pool")
}

fn get(key: &str) -> Op {
    Op::Get { key: key.into() }
}

fn set(key: &str, value: &[u8]) -> Op {
    Op::Set { key: key.into(), value: value.to_vec() }
}

fn one(conn: &mut Connection, op: Op) -> listy_core::Result<Reply> {
    conn.execute(&[op]).pop().unwrap()
}

/// The item behind `key`, which must exist.
fn item(conn: &mut Connection, key: &str) -> Item {
    match one(conn, get(key)).unwrap() {
        Reply::Value(Some(item)) => item,
        other => panic!("{key}: expected a value, got {other:?}"),
    }
}

fn value(conn: &mut Connection, key: &str) -> Option<Vec<u8>> {
    match one(conn, get(key)).unwrap() {
        Reply::Value(item) => item.map(|i| i.value),
        other => panic!("{key}: unexpected {other:?}"),
    }
}

fn stat(conn: &mut Connection, name: &str) -> u64 {
    let stats = conn.stats().unwrap();
    let (_, value) = stats.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no stat {name}"));
    value.parse().unwrap()
}

fn pool_stat(pool: &MemcachedPool, name: &str) -> u64 {
    let stats = pool.stats().unwrap();
    let (_, _, value) = stats.iter().find(|(_, n, _)| n == name).unwrap_or_else(|| panic!("no stat {name}"));
    value.parse().unwrap()
}

fn ok(results: Vec<listy_core::Result<Reply>>) -> Vec<Reply> {
    results.into_iter().map(|r| r.unwrap()).collect()
}

#[test]
fn set_add_and_gets() {
    let mc = Memcached::start();
    let mut conn = connect(&mc.addr());
    let replies = ok(conn.execute(&[
        set("a", b"1"),
        Op::Add { key: "a".into(), value: b"2".to_vec() },
        Op::Add { key: "b".into(), value: b"3".to_vec() },
        set("empty", b""),
    ]));
    assert_eq!(replies, vec![Reply::Stored, Reply::NotStored, Reply::Stored, Reply::Stored]);
    assert_eq!(value(&mut conn, "a").unwrap(), b"1");
    assert_eq!(value(&mut conn, "b").unwrap(), b"3");
    assert_eq!(value(&mut conn, "empty").unwrap(), b"");
    assert!(item(&mut conn, "a").cas > 0);
}

#[test]
fn missing_key_is_a_miss() {
    let mc = Memcached::start();
    let mut conn = connect(&mc.addr());
    assert_eq!(one(&mut conn, get("nothing-here")).unwrap(), Reply::Value(None));
}

#[test]
fn multi_get_with_hits_and_misses() {
    let mc = Memcached::start();
    let mut conn = connect(&mc.addr());
    ok(conn.execute(&[set("a", b"A"), set("c", b"C")]));
    let gets_before = stat(&mut conn, "cmd_get");
    let replies = ok(conn.execute(&[get("a"), get("b"), get("c"), get("a")]));
    let values: Vec<Option<Vec<u8>>> = replies
        .into_iter()
        .map(|r| match r {
            Reply::Value(item) => item.map(|i| i.value),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(values, vec![Some(b"A".to_vec()), None, Some(b"C".to_vec()), Some(b"A".to_vec())]);
    // One `gets a b c`: the repeated key is asked once.
    assert_eq!(stat(&mut conn, "cmd_get") - gets_before, 3);
}

#[test]
fn cas_stored_exists_and_not_found() {
    let mc = Memcached::start();
    let mut conn = connect(&mc.addr());
    one(&mut conn, set("k", b"v1")).unwrap();
    let token = item(&mut conn, "k").cas;
    let cas = |value: &[u8], cas| Op::Cas { key: "k".into(), value: value.to_vec(), cas };
    assert_eq!(one(&mut conn, cas(b"v2", token)).unwrap(), Reply::Stored);
    assert_eq!(one(&mut conn, cas(b"v3", token)).unwrap(), Reply::Exists);
    assert_eq!(value(&mut conn, "k").unwrap(), b"v2");
    one(&mut conn, Op::Delete { key: "k".into() }).unwrap();
    assert_eq!(one(&mut conn, cas(b"v4", token)).unwrap(), Reply::NotFound);
}

#[test]
fn prepend_and_delete() {
    let mc = Memcached::start();
    let mut conn = connect(&mc.addr());
    let prepend = |key: &str, value: &[u8]| Op::Prepend { key: key.into(), value: value.to_vec() };
    assert_eq!(one(&mut conn, prepend("missing", b"x")).unwrap(), Reply::NotStored);
    assert_eq!(value(&mut conn, "missing"), None);
    one(&mut conn, set("list", b"tail")).unwrap();
    assert_eq!(one(&mut conn, prepend("list", b"head,")).unwrap(), Reply::Stored);
    assert_eq!(value(&mut conn, "list").unwrap(), b"head,tail");
    assert_eq!(one(&mut conn, Op::Delete { key: "list".into() }).unwrap(), Reply::Deleted);
    assert_eq!(one(&mut conn, Op::Delete { key: "list".into() }).unwrap(), Reply::NotFound);
}

#[test]
fn prepend_past_the_item_size_is_not_stored_and_keeps_the_old_value() {
    let mc = Memcached::with_args(&["-I", "1m"]);
    let mut conn = connect(&mc.addr());
    let old = vec![b'o'; 1_000_000];
    one(&mut conn, set("big", &old)).unwrap();
    let prepend = Op::Prepend { key: "big".into(), value: vec![b'n'; 100_000] };
    assert_eq!(one(&mut conn, prepend).unwrap(), Reply::NotStored);
    assert_eq!(value(&mut conn, "big").unwrap(), old);
}

#[test]
fn values_over_the_item_size() {
    let mc = Memcached::with_args(&["-I", "1m"]);
    let mut conn = connect(&mc.addr());
    let sets_before = stat(&mut conn, "cmd_set");
    // Over our limit: refused without a round trip.
    let refused = one(&mut conn, set("k", &vec![0; MIB + 1])).unwrap_err();
    assert!(matches!(refused, Error::TooLarge { size, limit: MIB } if size == MIB + 1), "{refused}");
    assert_eq!(stat(&mut conn, "cmd_set"), sets_before);
    // Within our limit but over memcached's real one (item headers count
    // against -I): the server refuses, the connection stays usable.
    let refused = one(&mut conn, set("k", &vec![0; MIB])).unwrap_err();
    assert!(matches!(refused, Error::TooLarge { size: MIB, limit: MIB }), "{refused}");
    assert!(!conn.is_poisoned());
    assert_eq!(one(&mut conn, set("k", b"small")).unwrap(), Reply::Stored);
    // The largest value that fits is a little under 1 MiB.
    assert_eq!(one(&mut conn, set("k", &vec![1; MIB - 1024])).unwrap(), Reply::Stored);
    assert_eq!(value(&mut conn, "k").unwrap().len(), MIB - 1024);
}

#[test]
fn incr_and_decr() {
    let mc = Memcached::start();
    let mut conn = connect(&mc.addr());
    let incr = |delta| Op::Incr { key: "n".into(), delta };
    let decr = |delta| Op::Decr { key: "n".into(), delta };
    assert_eq!(one(&mut conn, incr(1)).unwrap(), Reply::NotFound);
    assert_eq!(one(&mut conn, decr(1)).unwrap(), Reply::NotFound);
    one(&mut conn, set("n", b"10")).unwrap();
    let replies = ok(conn.execute(&[incr(5), decr(3), decr(100), incr(u64::MAX)]));
    assert_eq!(replies, vec![Reply::Number(15), Reply::Number(12), Reply::Number(0), Reply::Number(u64::MAX)]);
    one(&mut conn, set("lease", b"LEASE:abc")).unwrap();
    let non_numeric = ok(conn.execute(&[
        Op::Incr { key: "lease".into(), delta: 1 },
        Op::Decr { key: "lease".into(), delta: 1 },
        get("n"),
    ]));
    assert_eq!(non_numeric[..2], [Reply::NonNumeric, Reply::NonNumeric]);
    assert!(matches!(&non_numeric[2], Reply::Value(Some(_))));
}

#[test]
fn bad_keys_are_refused_and_the_rest_of_the_batch_runs() {
    let mc = Memcached::start();
    let mut conn = connect(&mc.addr());
    let results = conn.execute(&[set("ok", b"1"), set("has space", b"2"), get(&"k".repeat(251)), get("ok"), get("")]);
    assert!(matches!(results[0], Ok(Reply::Stored)));
    assert!(matches!(results[1], Err(Error::Config(_))));
    assert!(matches!(results[2], Err(Error::Config(_))));
    assert!(matches!(&results[3], Ok(Reply::Value(Some(i))) if i.value == b"1"));
    assert!(matches!(results[4], Err(Error::Config(_))));
    assert!(!conn.is_poisoned());
}

#[test]
fn flush_all_and_stats() {
    let mc = Memcached::start();
    let mut conn = connect(&mc.addr());
    one(&mut conn, set("k", b"v")).unwrap();
    conn.flush_all().unwrap();
    assert_eq!(value(&mut conn, "k"), None);
    let stats = conn.stats().unwrap();
    assert!(stats.iter().any(|(n, v)| n == "pid" && v == &mc.pid().to_string()));
}

#[test]
fn large_batches_and_values_round_trip() {
    let mc = Memcached::with_args(&["-I", "2m"]);
    let mut conn = Connection::connect(&mc.addr(), CONNECT_TIMEOUT, TIMEOUT, 2 * MIB).unwrap();
    // Several 1.5 MiB values mixed with gets of them: more than any socket
    // buffer in both directions, so the request must be chunked.
    let big: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 1_500_000]).collect();
    let mut ops = Vec::new();
    for (i, v) in big.iter().enumerate() {
        ops.push(set(&format!("big{i}"), v));
        ops.push(get(&format!("big{i}")));
    }
    let replies = ok(conn.execute(&ops));
    for (i, pair) in replies.chunks(2).enumerate() {
        assert_eq!(pair[0], Reply::Stored);
        assert!(matches!(&pair[1], Reply::Value(Some(item)) if item.value == big[i]), "big{i}");
    }
    // Thousands of small ops in one batch.
    let many: Vec<Op> = (0..5000).map(|i| set(&format!("k{i}"), format!("v{i}").as_bytes())).collect();
    assert!(ok(conn.execute(&many)).iter().all(|r| *r == Reply::Stored));
    let gets: Vec<Op> = (0..5000).map(|i| get(&format!("k{i}"))).collect();
    for (i, reply) in ok(conn.execute(&gets)).into_iter().enumerate() {
        assert!(matches!(reply, Reply::Value(Some(item)) if item.value == format!("v{i}").as_bytes()));
    }
}

#[test]
fn refused_connection_is_unavailable_quickly() {
    let addr = closed_addr();
    let start = Instant::now();
    let error = Connection::connect(&addr, CONNECT_TIMEOUT, TIMEOUT, MIB).expect_err("nothing listens there");
    assert!(error.is_unavailable(), "{error}");
    assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());
    let error = pool(&[addr]).get("k").unwrap_err();
    assert!(error.is_unavailable(), "{error}");
}

#[test]
fn paused_server_times_out_and_poisons_the_connection() {
    let mc = Memcached::start();
    let mut conn = connect(&mc.addr());
    one(&mut conn, set("k", b"v")).unwrap();
    mc.pause();
    let start = Instant::now();
    let results = conn.execute(&[get("k"), set("k", b"w")]);
    let elapsed = start.elapsed();
    mc.resume();
    assert!(results.iter().all(|r| matches!(r, Err(e) if e.is_unavailable())), "{results:?}");
    assert!(elapsed >= TIMEOUT && elapsed < 3 * TIMEOUT, "{elapsed:?}");
    assert!(conn.is_poisoned());
    assert_eq!(conn.failure(), Some(Failure::TimedOut));
}

#[test]
fn paused_server_through_the_pool() {
    let mc = Memcached::start();
    let pool = pool(&[mc.addr()]);
    pool.one(set("k", b"v")).unwrap();
    mc.pause();
    let start = Instant::now();
    let error = pool.get("k").unwrap_err();
    let elapsed = start.elapsed();
    mc.resume();
    assert!(error.is_unavailable(), "{error}");
    assert!(elapsed < 3 * TIMEOUT, "{elapsed:?}");
}

#[test]
fn dead_server_backoff() {
    let mc = Memcached::start();
    let mut cfg = PoolConfig::new([mc.addr()]);
    cfg.timeout = TIMEOUT;
    cfg.retry_dead_after = Duration::from_millis(600);
    let pool = MemcachedPool::new(cfg).unwrap();
    pool.one(set("k", b"v")).unwrap();

    mc.pause();
    let start = Instant::now();
    assert!(pool.get("k").unwrap_err().is_unavailable());
    assert!(start.elapsed() >= TIMEOUT, "the first failure waits for the timeout");
    assert!(pool.is_marked_dead(&mc.addr()));
    let marked_at = Instant::now();

    // While marked dead: fail fast, even once the server is back.
    let start = Instant::now();
    let error = pool.get("k").unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(20), "{:?}", start.elapsed());
    assert!(error.to_string().contains("marked down"), "{error}");
    mc.resume();
    assert!(pool.get("k").unwrap_err().is_unavailable());
    assert!(pool.flush_all().unwrap_err().is_unavailable());

    // After retry_dead_after: tried again, and it works.
    thread::sleep(Duration::from_millis(600).saturating_sub(marked_at.elapsed()) + Duration::from_millis(50));
    assert_eq!(pool.get("k").unwrap().unwrap().value, b"v");
    assert!(!pool.is_marked_dead(&mc.addr()));
}

#[test]
fn dead_server_does_not_move_its_keys() {
    let a = Memcached::start();
    let mut b = Memcached::start();
    let mut cfg = PoolConfig::new([a.addr(), b.addr()]);
    cfg.timeout = TIMEOUT;
    cfg.retry_dead_after = Duration::from_secs(30);
    let pool = MemcachedPool::new(cfg).unwrap();
    let keys: Vec<String> = (0..50).map(|i| format!("key{i}")).collect();
    let on_b: Vec<&String> = keys.iter().filter(|k| pool.server_for(k) == b.addr()).collect();
    assert!(!on_b.is_empty());
    b.kill();
    let results = pool.execute(keys.iter().map(|k| set(k, b"v")).collect());
    for (key, result) in keys.iter().zip(&results) {
        if pool.server_for(key) == b.addr() {
            assert!(matches!(result, Err(e) if e.is_unavailable()), "{key}: {result:?}");
        } else {
            assert_eq!(result.as_ref().unwrap(), &Reply::Stored, "{key}");
        }
    }
    // Still routed to the dead server, never to the live one.
    for key in on_b {
        assert_eq!(pool.server_for(key), b.addr());
    }
}

#[test]
fn restarted_server_gets_a_fresh_connection() {
    let mut mc = Memcached::start();
    let pool = pool(&[mc.addr()]);
    pool.one(set("k", b"v")).unwrap();
    // The pooled connection now points at a dead process; the next request
    // notices before any reply arrived and retries on a new connection.
    mc.restart();
    assert_eq!(pool.get("k").unwrap(), None, "a restarted memcached is empty");
    assert_eq!(pool.one(set("k", b"w")).unwrap(), Reply::Stored);
    assert_eq!(pool.get("k").unwrap().unwrap().value, b"w");
}

#[test]
fn fork_child_opens_its_own_connections() {
    let mc = Memcached::start();
    let pool = pool(&[mc.addr()]);
    pool.one(set("k", b"parent")).unwrap();
    // Both stats calls run on the one pooled connection: no new connection.
    let opened = pool_stat(&pool, "total_connections");
    assert_eq!(pool_stat(&pool, "total_connections"), opened);

    // SAFETY: the child only uses the pool and then _exits; it never
    // returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let child = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let seen = pool.get("k").unwrap().unwrap().value == b"parent";
            let stored = pool.one(set("k", b"child")).unwrap() == Reply::Stored;
            // Exactly one new connection: the child did not touch the
            // parent's socket.
            let own_connection = pool_stat(&pool, "total_connections") == opened + 1;
            seen && stored && own_connection
        }));
        let code = match child {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(_) => 2,
        };
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child checks failed");

    // The parent's pooled connection is intact and still the only one.
    assert_eq!(pool.get("k").unwrap().unwrap().value, b"child");
    assert_eq!(pool_stat(&pool, "total_connections"), opened + 1);
}

#[test]
fn unix_socket() {
    let mc = Memcached::unix();
    assert!(mc.addr().starts_with('/'));
    let mut conn = connect(&mc.addr());
    assert_eq!(one(&mut conn, set("k", b"v")).unwrap(), Reply::Stored);
    assert_eq!(value(&mut conn, "k").unwrap(), b"v");
    let pool = pool(&[mc.addr()]);
    assert_eq!(pool.get("k").unwrap().unwrap().value, b"v");
    assert_eq!(pool.server_for("k"), mc.addr());
}

#[test]
fn paused_unix_socket_server_times_out() {
    let mc = Memcached::unix();
    let mut conn = connect(&mc.addr());
    mc.pause();
    let start = Instant::now();
    let result = one(&mut conn, get("k"));
    let elapsed = start.elapsed();
    mc.resume();
    assert!(result.unwrap_err().is_unavailable());
    assert!(elapsed < 3 * TIMEOUT, "{elapsed:?}");
}

#[test]
fn three_servers_spread_keys_and_keep_order() {
    let servers = [Memcached::start(), Memcached::start(), Memcached::unix()];
    let mut addrs: Vec<String> = servers.iter().map(Memcached::addr).collect();
    addrs[1] = format!("{} 2", addrs[1]);
    let pool = pool(&addrs);
    let keys: Vec<String> = (0..300).map(|i| format!("listy:v1:item:{i}")).collect();

    // One batch interleaving sets and gets across all servers.
    let mut ops = Vec::new();
    for key in &keys {
        ops.push(set(key, key.as_bytes()));
        ops.push(get(key));
    }
    let replies = ok(pool.execute(ops));
    for (key, pair) in keys.iter().zip(replies.chunks(2)) {
        assert_eq!(pair[0], Reply::Stored);
        assert!(matches!(&pair[1], Reply::Value(Some(item)) if item.value == key.as_bytes()), "{key}");
    }

    // Each key lives exactly on server_for(key), and every server got some
    // (the weight-2 server about half).
    let mut conns: Vec<Connection> = servers.iter().map(|s| connect(&s.addr())).collect();
    let mut counts = [0; 3];
    for key in &keys {
        let home = pool.server_for(key);
        for (i, (server, conn)) in servers.iter().zip(conns.iter_mut()).enumerate() {
            let here = value(conn, key).is_some();
            assert_eq!(here, server.addr() == home, "{key} on {}", server.addr());
            counts[i] += usize::from(here);
        }
    }
    assert!(counts.iter().all(|&c| c > 30), "{counts:?}");
    assert!(counts[1] > counts[0] && counts[1] > counts[2], "{counts:?}");

    // Reads back in one execute, in order.
    let replies = ok(pool.execute(keys.iter().rev().map(|k| get(k)).collect()));
    for (key, reply) in keys.iter().rev().zip(replies) {
        assert!(matches!(reply, Reply::Value(Some(item)) if item.value == key.as_bytes()), "{key}");
    }
    let stats = pool.stats().unwrap();
    for server in &servers {
        assert!(stats.iter().any(|(s, n, _)| s == &server.addr() && n == "curr_items"));
    }
    pool.flush_all().unwrap();
    assert_eq!(pool.get(&keys[0]).unwrap(), None);
}

/// A one-shot fake server: reads exactly `expect` request bytes, records
/// how many reads that took, then answers `reply` and closes.
fn fake_server(expect: &'static [u8], reply: &'static [u8]) -> (String, thread::JoinHandle<(Vec<u8>, usize)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut got, mut reads) = (Vec::new(), 0);
        let mut buf = [0; 4096];
        while got.len() < expect.len() {
            let n = socket.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            reads += 1;
        }
        socket.write_all(reply).unwrap();
        (got, reads)
    });
    (addr, handle)
}

#[test]
fn wire_format_is_one_pipelined_request() {
    let request = b"gets a b\r\nset c 0 0 1\r\nx\r\ngets a\r\nincr n 1\r\ndelete d\r\n";
    let reply = b"VALUE a 0 1 5\r\n1\r\nEND\r\nSTORED\r\nVALUE a 0 1 6\r\n2\r\nEND\r\n7\r\nDELETED\r\n";
    let (addr, server) = fake_server(request, reply);
    let mut conn = connect(&addr);
    let replies = ok(conn.execute(&[
        get("a"),
        get("b"),
        set("c", b"x"),
        get("a"),
        Op::Incr { key: "n".into(), delta: 1 },
        Op::Delete { key: "d".into() },
    ]));
    let (got, reads) = server.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(request));
    assert_eq!(reads, 1, "the whole request should arrive in one write");
    let item = |value: &[u8], cas| Reply::Value(Some(Item { value: value.to_vec(), cas }));
    assert_eq!(
        replies,
        vec![item(b"1", 5), Reply::Value(None), Reply::Stored, item(b"2", 6), Reply::Number(7), Reply::Deleted]
    );
    assert!(!conn.is_poisoned());
}

#[test]
fn garbled_reply_poisons_the_connection() {
    let (addr, server) = fake_server(b"set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\n", b"STORED\r\nWHAT?\r\nSTORED\r\n");
    let mut conn = connect(&addr);
    let results = conn.execute(&[set("a", b"x"), set("b", b"y")]);
    server.join().unwrap();
    assert_eq!(results[0].as_ref().unwrap(), &Reply::Stored);
    assert!(matches!(&results[1], Err(Error::Protocol { .. })), "{results:?}");
    assert_eq!(conn.failure(), Some(Failure::Desync));
}

#[test]
fn unexpected_client_error_poisons_but_server_error_does_not() {
    let (addr, server) = fake_server(
        b"set a 0 0 1\r\nx\r\nset b 0 0 1\r\ny\r\nset c 0 0 1\r\nz\r\n",
        b"SERVER_ERROR out of memory storing object\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\n",
    );
    let mut conn = connect(&addr);
    let results = conn.execute(&[set("a", b"x"), set("b", b"y"), set("c", b"z")]);
    server.join().unwrap();
    assert!(
        matches!(&results[0], Err(Error::Protocol { reason, .. }) if reason.contains("out of memory")),
        "{results:?}"
    );
    assert!(matches!(&results[1], Err(Error::Protocol { .. })));
    assert!(matches!(&results[2], Err(Error::Protocol { .. })));
    assert_eq!(conn.failure(), Some(Failure::Desync));
}

#[test]
fn server_closing_midway_is_unavailable() {
    let (addr, server) = fake_server(b"gets a\r\nset x 0 0 1\r\n1\r\ngets b\r\n", b"END\r\n");
    let mut conn = connect(&addr);
    let results = conn.execute(&[get("a"), set("x", b"1"), get("b")]);
    server.join().unwrap();
    assert_eq!(results[0].as_ref().unwrap(), &Reply::Value(None));
    assert!(results[1..].iter().all(|r| matches!(r, Err(e) if e.is_unavailable())), "{results:?}");
    assert_eq!(conn.failure(), Some(Failure::Broken { before_reply: false }));
}

#[test]
fn a_budget_bounds_a_call_on_a_frozen_server_without_marking_it_dead() {
    use listy_core::pool::within_budget;
    let mc = Memcached::start();
    let p = pool(&[mc.addr()]);
    // No pooled connection yet: a budgeted call does not open one.
    let (results, exceeded) = within_budget(Duration::from_millis(50), || p.execute(vec![get("k")]));
    assert!(exceeded && results[0].is_err());
    assert_eq!(ok(p.execute(vec![set("k", b"v")])), vec![Reply::Stored]); // opens and pools one
    let (results, exceeded) = within_budget(Duration::from_millis(50), || p.execute(vec![get("k")]));
    assert!(!exceeded);
    assert!(matches!(&results[0], Ok(Reply::Value(Some(item))) if item.value == b"v"));
    mc.pause();
    let started = Instant::now();
    let (results, exceeded) = within_budget(Duration::from_millis(5), || p.execute(vec![get("k")]));
    let took = started.elapsed();
    assert!(exceeded && results[0].is_err());
    assert!(took < TIMEOUT, "bounded by the budget ({took:?}), not the timeout ({TIMEOUT:?})");
    assert!(!p.is_marked_dead(&mc.addr()), "a short budget says nothing about the server");
    mc.resume();
    // The timed-out connection was dropped: the next call opens a fresh one.
    assert!(matches!(&p.execute(vec![get("k")])[0], Ok(Reply::Value(Some(item))) if item.value == b"v"));
}
