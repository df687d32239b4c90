//! Per-server connections, timeouts, fork detection, dead-server backoff.
//!
//! [`MemcachedPool`] is the memcached implementation of [`Store`]. It owns:
//! - the server list and its parsing (`host:port`, `host:port weight`,
//!   `host:port:weight`, `host` for port 11211, `[v6]:port`, `/unix/path`);
//! - the routing of each op to its server through the [`Ring`], one pipelined
//!   round trip per server, results back in the caller's order;
//! - a small pool of idle [`Connection`]s per server, dropped in a forked
//!   child (sockets inherited across `fork` are shared with the parent);
//! - dead-server backoff: a server that refused a connection or timed out is
//!   skipped (its ops fail fast with `Unavailable`) until `retry_dead_after`
//!   has passed. Its keys are *never* rehashed to another server: Listy must
//!   not read a key from a server that did not receive its writes;
//! - budgets ([`within_budget`]): a call that may hold its thread only so
//!   long (an async read on the event loop's thread) uses pooled
//!   connections only, each read and write bounded by what is left, and
//!   gives up without marking the server dead when the budget runs out.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::client::{Connection, Failure};
use crate::error::{Error, Result};
use crate::ketama::{Distribution, Node, Ring};
use crate::store::{Op, Reply, Store};

/// memcached's default port; a server given without one uses it.
pub const DEFAULT_PORT: u16 = 11211;

/// Idle connections kept per server; more are closed after use.
const MAX_IDLE: usize = 4;

/// How to reach the memcached servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// `host:port`, `host:port weight` (or pylibmc's `host:port:weight`),
    /// `host` (port 11211), `[v6addr]:port`, or `/unix/socket/path`.
    /// The order matters: it is part of the ketama ring, as in libmemcached.
    pub servers: Vec<String>,
    /// Bound on establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Bound on each read and write of a request.
    pub timeout: Duration,
    /// The largest value sent (memcached's `-I`); larger ones fail with
    /// `TooLarge` without a round trip.
    pub max_item_size: usize,
    /// How long a server stays marked down after a connect failure or a
    /// timeout, its ops failing fast meanwhile.
    pub retry_dead_after: Duration,
    /// Which pylibmc/libmemcached key distribution to reproduce.
    pub distribution: Distribution,
    /// Speak TLS to every server (feature `tls`); None: plaintext.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::Tls>,
}

impl PoolConfig {
    /// Defaults: connect timeout 0.25 s, I/O timeout 0.5 s, 1 MiB items,
    /// retry a dead server after 1 s, `ketama_weighted` distribution.
    pub fn new<I>(servers: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        PoolConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_millis(250),
            timeout: Duration::from_millis(500),
            max_item_size: 1024 * 1024,
            retry_dead_after: Duration::from_secs(1),
            distribution: Distribution::KetamaWeighted,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(Error::Config("no memcached servers configured".into()));
        }
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            return Err(Error::Config("memcached timeouts must be greater than zero".into()));
        }
        if self.max_item_size == 0 {
            return Err(Error::Config("max_item_size must be greater than zero".into()));
        }
        Ok(())
    }
}

/// One parsed server entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// What [`Connection::connect`] takes and `server_for` returns:
    /// `host:port`, `[v6addr]:port` or the socket path.
    pub address: String,
    /// The server as libmemcached names it on the ring.
    pub node: Node,
}

/// Parses one server entry (see [`PoolConfig::servers`]).
pub fn parse_server(spec: &str) -> Result<ServerSpec> {
    let bad = |why: &str| Error::Config(format!("bad memcached server {spec:?}: {why}"));
    let mut parts = spec.split_whitespace();
    let addr = parts.next().ok_or_else(|| bad("empty"))?;
    let weight =
        parts.next().map(|w| parse_weight(w).ok_or_else(|| bad("weight must be an integer >= 1"))).transpose()?;
    if parts.next().is_some() {
        return Err(bad("expected `host:port [weight]`"));
    }
    if addr.starts_with('/') {
        // libmemcached names a unix socket server `path` with port 0.
        let node = Node::new(addr, 0, weight.unwrap_or(1));
        return Ok(ServerSpec { address: addr.to_string(), node });
    }
    if addr.starts_with("udp:") {
        return Err(bad("UDP is not supported"));
    }
    let (host, rest, bracketed) = split_host(addr).ok_or_else(|| bad("unclosed '['"))?;
    if !valid_host(host, bracketed) {
        return Err(bad("invalid host name"));
    }
    let (port, inline_weight) =
        parse_port_and_weight(rest).ok_or_else(|| bad("expected `host:port[:weight]`, port 1-65535"))?;
    if weight.is_some() && inline_weight.is_some() {
        return Err(bad("weight given twice"));
    }
    let weight = weight.or(inline_weight).unwrap_or(1);
    let address = if bracketed { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    Ok(ServerSpec { address, node: Node::new(host, port, weight) })
}

/// `(host, rest after the host, bracketed)`; `rest` is "" or starts with ':'.
fn split_host(addr: &str) -> Option<(&str, &str, bool)> {
    if let Some(inner) = addr.strip_prefix('[') {
        let (host, rest) = inner.split_once(']')?;
        return Some((host, rest, true));
    }
    let end = addr.find(':').unwrap_or(addr.len());
    Some((&addr[..end], &addr[end..], false))
}

/// `""` (default port), `":port"` or `":port:weight"`.
fn parse_port_and_weight(rest: &str) -> Option<(u16, Option<u32>)> {
    if rest.is_empty() {
        return Some((DEFAULT_PORT, None));
    }
    let mut fields = rest.strip_prefix(':')?.split(':');
    let port = fields.next()?.parse::<u16>().ok().filter(|&p| p != 0)?;
    let weight = match fields.next() {
        Some(w) => Some(parse_weight(w)?),
        None => None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some((port, weight))
}

fn parse_weight(text: &str) -> Option<u32> {
    text.parse::<u32>().ok().filter(|&w| w >= 1)
}

fn valid_host(host: &str, bracketed: bool) -> bool {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || (bracketed && matches!(c, ':' | '%'));
    !host.is_empty() && host.chars().all(allowed)
}

thread_local! {
    /// The deadline of the budgeted call running on this thread, if any.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Set when the budgeted call on this thread ran out of time.
    static EXCEEDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with a time budget for the memcached I/O it does on this thread:
/// only pooled connections are used (opening one could take the whole
/// connect timeout), each read and write is bounded by the time left, and
/// an op that runs out of it fails with `Unavailable` without marking its
/// server dead. Returns `f`'s result and whether the budget ran out (then
/// the caller tries again without one, elsewhere). A budget does not nest:
/// an inner call replaces the outer deadline until it returns.
pub fn within_budget<T>(budget: Duration, f: impl FnOnce() -> T) -> (T, bool) {
    let before = DEADLINE.with(|d| d.replace(Some(Instant::now() + budget)));
    let exceeded_before = EXCEEDED.with(|e| e.replace(false));
    let out = f();
    DEADLINE.with(|d| d.set(before));
    let exceeded = EXCEEDED.with(|e| e.replace(exceeded_before));
    (out, exceeded)
}

/// The time left of this thread's budget (`None`: no budget).
fn budget_left() -> Option<Duration> {
    DEADLINE.with(Cell::get).map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

fn over_budget(server: &Server) -> Error {
    EXCEEDED.with(|e| e.set(true));
    Error::Unavailable { server: server.address.clone(), reason: "over the time budget of the call".into() }
}

/// When a server is skipped, and why.
struct Dead {
    until: Instant,
    reason: String,
}

struct Server {
    address: String,
    /// Idle connections, each tagged with the pid of the process that opened it.
    idle: Mutex<Vec<(u32, Connection)>>,
    dead: Mutex<Option<Dead>>,
}

/// The memcached [`Store`]: see the module docs.
pub struct MemcachedPool {
    cfg: PoolConfig,
    servers: Vec<Server>,
    ring: Ring,
    /// The process the pooled connections belong to.
    pid: AtomicU32,
}

impl std::fmt::Debug for MemcachedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedPool")
            .field("servers", &self.servers())
            .field("distribution", &self.cfg.distribution)
            .finish_non_exhaustive()
    }
}

impl MemcachedPool {
    /// Parses and checks `cfg`; connects lazily (on first use).
    pub fn new(cfg: PoolConfig) -> Result<Self> {
        cfg.validate()?;
        let specs = cfg.servers.iter().map(|s| parse_server(s)).collect::<Result<Vec<_>>>()?;
        for (i, spec) in specs.iter().enumerate() {
            if specs[..i].iter().any(|other| other.address == spec.address) {
                return Err(Error::Config(format!("memcached server {} is listed twice", spec.address)));
            }
        }
        let nodes: Vec<Node> = specs.iter().map(|s| s.node.clone()).collect();
        let ring = Ring::new(&nodes, cfg.distribution);
        let servers = specs
            .into_iter()
            .map(|s| Server { address: s.address, idle: Mutex::new(Vec::new()), dead: Mutex::new(None) })
            .collect();
        Ok(MemcachedPool { cfg, servers, ring, pid: AtomicU32::new(current_pid()) })
    }

    /// The configuration the pool was built from.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// The server addresses, in configuration order.
    pub fn servers(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.address.clone()).collect()
    }

    /// True while `server` (an address from [`servers`](Self::servers)) is
    /// marked down and its ops fail fast.
    pub fn is_marked_dead(&self, server: &str) -> bool {
        self.servers.iter().any(|s| s.address == server && dead_reason(s).is_some())
    }

    /// Runs `f` on a connection to `server`; retries once on a fresh
    /// connection when a pooled one turns out to have been closed before any
    /// reply (the server restarted or dropped an idle connection: nothing of
    /// the request ran).
    fn on_server<T>(&self, server: &Server, mut f: impl FnMut(&mut Connection) -> T) -> Result<T> {
        if let Some(left) = budget_left() {
            return self.on_server_within(server, left, f);
        }
        let (mut conn, reused) = self.checkout(server)?;
        let mut out = f(&mut conn);
        if reused && conn.failure() == Some(Failure::Broken { before_reply: true }) {
            conn = self.connect(server)?;
            out = f(&mut conn);
        }
        self.checkin(server, conn);
        Ok(out)
    }

    /// `on_server` within a budget with `left` of it remaining: a pooled
    /// connection only, reads and writes bounded by `left`, no retry, and a
    /// timeout that only drops the connection (the server may be fine: the
    /// budget was short).
    fn on_server_within<T>(&self, server: &Server, left: Duration, f: impl FnOnce(&mut Connection) -> T) -> Result<T> {
        if let Some(reason) = dead_reason(server) {
            return Err(Error::Unavailable { server: server.address.clone(), reason });
        }
        let pid = current_pid();
        let pooled = loop {
            match lock(&server.idle).pop() {
                Some((owner, conn)) if owner == pid => break Some(conn),
                Some(_) => continue,
                None => break None,
            }
        };
        let Some(mut conn) = pooled.filter(|_| !left.is_zero()) else {
            return Err(over_budget(server));
        };
        let bound = left.min(self.cfg.timeout);
        if conn.set_io_timeout(bound).is_err() {
            return Err(over_budget(server));
        }
        let out = f(&mut conn);
        match conn.failure() {
            None if conn.set_io_timeout(self.cfg.timeout).is_ok() => self.checkin(server, conn),
            None => {}
            Some(Failure::TimedOut) if bound < self.cfg.timeout => {
                over_budget(server);
            }
            Some(_) => self.checkin(server, conn),
        }
        Ok(out)
    }

    /// An idle connection of this process, or a new one: `(conn, reused)`.
    fn checkout(&self, server: &Server) -> Result<(Connection, bool)> {
        if let Some(reason) = dead_reason(server) {
            return Err(Error::Unavailable { server: server.address.clone(), reason });
        }
        let pid = current_pid();
        while let Some((owner, conn)) = lock(&server.idle).pop() {
            if owner == pid {
                return Ok((conn, true));
            }
        }
        Ok((self.connect(server)?, false))
    }

    fn connect(&self, server: &Server) -> Result<Connection> {
        let cfg = &self.cfg;
        #[cfg(feature = "tls")]
        if let Some(tls) = &cfg.tls {
            return Connection::connect_tls(&server.address, cfg.connect_timeout, cfg.timeout, cfg.max_item_size, tls)
                .inspect_err(|error| self.mark_dead(server, &error.to_string()));
        }
        Connection::connect(&server.address, cfg.connect_timeout, cfg.timeout, cfg.max_item_size).inspect_err(|error| {
            self.mark_dead(server, &error.to_string());
        })
    }

    /// Returns a healthy connection to the idle pool; drops a poisoned one
    /// (marking its server dead if it timed out).
    fn checkin(&self, server: &Server, conn: Connection) {
        match conn.failure() {
            None => {
                let mut idle = lock(&server.idle);
                if idle.len() < MAX_IDLE {
                    idle.push((current_pid(), conn));
                }
            }
            Some(Failure::TimedOut) => self.mark_dead(server, &format!("timed out after {:?}", self.cfg.timeout)),
            Some(_) => {}
        }
    }

    fn mark_dead(&self, server: &Server, reason: &str) {
        let until = Instant::now() + self.cfg.retry_dead_after;
        *lock(&server.dead) = Some(Dead { until, reason: reason.to_string() });
    }

    /// In a forked child, closes the connections inherited from the parent
    /// (the parent still uses those sockets) so new ones get opened.
    fn check_fork(&self) {
        let pid = current_pid();
        if self.pid.load(Ordering::SeqCst) == pid {
            return;
        }
        for server in &self.servers {
            lock(&server.idle).retain(|(owner, _)| *owner == pid);
        }
        self.pid.store(pid, Ordering::SeqCst);
    }

    /// Runs one server's share of a batch.
    fn run_batch(&self, server: &Server, ops: &[Op]) -> Vec<Result<Reply>> {
        match self.on_server(server, |conn| conn.execute(ops)) {
            Ok(results) => results,
            Err(error) => ops.iter().map(|_| Err(duplicate(&error))).collect(),
        }
    }
}

impl Store for MemcachedPool {
    fn execute(&self, ops: Vec<Op>) -> Vec<Result<Reply>> {
        self.check_fork();
        let count = ops.len();
        // Each server's ops, in the caller's order, with their positions.
        let mut groups: Vec<(Vec<usize>, Vec<Op>)> = self.servers.iter().map(|_| (Vec::new(), Vec::new())).collect();
        for (position, op) in ops.into_iter().enumerate() {
            let group = &mut groups[self.ring.server_index(op.key().as_bytes())];
            group.0.push(position);
            group.1.push(op);
        }
        let mut results: Vec<Option<Result<Reply>>> = (0..count).map(|_| None).collect();
        for (server, (positions, ops)) in self.servers.iter().zip(groups) {
            if ops.is_empty() {
                continue;
            }
            for (position, result) in positions.into_iter().zip(self.run_batch(server, &ops)) {
                results[position] = Some(result);
            }
        }
        results.into_iter().map(|r| r.expect("every op is routed to exactly one server")).collect()
    }

    fn max_item_size(&self) -> usize {
        self.cfg.max_item_size
    }

    /// Flushes every server, even after one fails; returns the first error.
    fn flush_all(&self) -> Result<()> {
        self.check_fork();
        let mut first_error = None;
        for server in &self.servers {
            if let Err(error) = self.on_server(server, Connection::flush_all).and_then(|r| r) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn server_for(&self, key: &str) -> String {
        self.servers[self.ring.server_index(key.as_bytes())].address.clone()
    }

    /// `stats` of every server; fails if any server cannot answer.
    fn stats(&self) -> Result<Vec<(String, String, String)>> {
        self.check_fork();
        let mut all = Vec::new();
        for server in &self.servers {
            let stats = self.on_server(server, Connection::stats).and_then(|r| r)?;
            all.extend(stats.into_iter().map(|(name, value)| (server.address.clone(), name, value)));
        }
        Ok(all)
    }
}

/// Why `server` is skipped right now, or `None` if it may be tried.
fn dead_reason(server: &Server) -> Option<String> {
    let mut dead = lock(&server.dead);
    let now = Instant::now();
    match dead.as_ref() {
        Some(d) if d.until > now => Some(format!("marked down for {:?} more after: {}", d.until - now, d.reason)),
        Some(_) => {
            *dead = None;
            None
        }
        None => None,
    }
}

/// A mutex guard even if a panicking thread poisoned the mutex: the guarded
/// lists stay consistent (every change is a single push/pop/assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn current_pid() -> u32 {
    // `getpid` on Unix (asked afresh each time, so a fork is noticed), the
    // process id on Windows (no fork there).
    std::process::id()
}

/// The same error again, for each op of a batch that failed as a whole.
fn duplicate(error: &Error) -> Error {
    match error {
        Error::Unavailable { server, reason } => Error::Unavailable { server: server.clone(), reason: reason.clone() },
        Error::Protocol { server, reason } => Error::Protocol { server: server.clone(), reason: reason.clone() },
        Error::Config(reason) => Error::Config(reason.clone()),
        other => Error::Config(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn spec(s: &str) -> ServerSpec {
        parse_server(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn parses_server_entries() {
        assert_eq!(
            spec("10.0.0.1:11212"),
            ServerSpec { address: "10.0.0.1:11212".into(), node: Node::new("10.0.0.1", 11212, 1) }
        );
        assert_eq!(spec("cache"), ServerSpec { address: "cache:11211".into(), node: Node::new("cache", 11211, 1) });
        assert_eq!(spec("cache:11300 3").node, Node::new("cache", 11300, 3));
        assert_eq!(spec("cache:11300:3").node, Node::new("cache", 11300, 3));
        assert_eq!(spec("  cache:11300   2 ").address, "cache:11300");
        assert_eq!(spec("[::1]:11300"), ServerSpec { address: "[::1]:11300".into(), node: Node::new("::1", 11300, 1) });
        assert_eq!(spec("[::1]").address, "[::1]:11211");
        assert_eq!(
            spec("/run/mc.sock"),
            ServerSpec { address: "/run/mc.sock".into(), node: Node::new("/run/mc.sock", 0, 1) }
        );
        assert_eq!(spec("/run/mc.sock 4").node.weight, 4);
    }

    #[test]
    fn rejects_bad_server_entries() {
        for bad in [
            "",
            "   ",
            "host:",
            "host:0",
            "host:70000",
            "host:x",
            "host:1 0",
            "host:1 x",
            "host:1:0",
            "host:1:2 3",
            "host:1 2 3",
            "ho st:1",
            "h/x:1",
            "[::1",
            "udp:host:1",
            "host:1:2:3",
        ] {
            assert!(matches!(parse_server(bad), Err(Error::Config(_))), "{bad:?} should be refused");
        }
    }

    #[test]
    fn refuses_bad_configs() {
        let empty: Vec<String> = Vec::new();
        assert!(matches!(MemcachedPool::new(PoolConfig::new(empty)), Err(Error::Config(_))));
        assert!(matches!(MemcachedPool::new(PoolConfig::new(["a:1", "nope:"])), Err(Error::Config(_))));
        assert!(matches!(MemcachedPool::new(PoolConfig::new(["a:1", "a:1 2"])), Err(Error::Config(_))));
        let mut cfg = PoolConfig::new(["a:1"]);
        cfg.timeout = Duration::ZERO;
        assert!(matches!(MemcachedPool::new(cfg), Err(Error::Config(_))));
    }

    #[test]
    fn defaults() {
        let cfg = PoolConfig::new(vec!["a".to_string()]);
        assert_eq!(cfg.connect_timeout, Duration::from_millis(250));
        assert_eq!(cfg.timeout, Duration::from_millis(500));
        assert_eq!(cfg.max_item_size, 1 << 20);
        assert_eq!(cfg.retry_dead_after, Duration::from_secs(1));
        let pool = MemcachedPool::new(cfg).unwrap();
        assert_eq!(pool.server_for("anything"), "a:11211");
        assert_eq!(pool.max_item_size(), 1 << 20);
    }

    #[test]
    fn routes_like_the_ring() {
        let pool = MemcachedPool::new(PoolConfig::new(["10.0.0.1", "10.0.0.2", "10.0.0.3"])).unwrap();
        // Same placements as ketama's libmemcached vectors (port 11211).
        assert_eq!(pool.server_for("foo"), "10.0.0.2:11211");
        assert_eq!(pool.server_for("baz"), "10.0.0.1:11211");
        assert_eq!(pool.server_for("listy:1:posts:42"), "10.0.0.3:11211");
    }

    /// A port nothing listens on: connections are refused at once.
    fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        addr
    }

    #[test]
    fn refused_server_is_marked_dead_then_retried() {
        let addr = closed_port();
        let mut cfg = PoolConfig::new([addr.clone()]);
        cfg.retry_dead_after = Duration::from_millis(200);
        let pool = MemcachedPool::new(cfg).unwrap();
        let first = pool.get("k").unwrap_err();
        assert!(first.is_unavailable(), "{first}");
        assert!(pool.is_marked_dead(&addr));
        let second = pool.get("k").unwrap_err().to_string();
        assert!(second.contains("marked down"), "{second}");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!pool.is_marked_dead(&addr));
        let third = pool.get("k").unwrap_err().to_string();
        assert!(!third.contains("marked down"), "a new connect attempt was expected: {third}");
        assert!(pool.flush_all().unwrap_err().is_unavailable());
        assert!(pool.stats().unwrap_err().is_unavailable());
    }
}
