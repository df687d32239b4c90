//! Test support: a real, private memcached process per test.
//!
//! `Memcached::start()` runs `/usr/bin/memcached -U 0 -l 127.0.0.1 -p <free
//! port> -m 64` (plus any extra arguments), waits until it accepts
//! connections and kills it on drop. `Memcached::unix()` listens on a fresh
//! unix socket instead. `pause()`/`resume()` send SIGSTOP/SIGCONT to simulate
//! a hung server; `restart()` brings a killed server back on the same address
//! (empty, like a real restart).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const MEMCACHED: &str = "/usr/bin/memcached";

/// How long a fresh server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a probe waits for `stats` (a paused server never answers).
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
enum Listen {
    Tcp(u16),
    Unix(PathBuf),
}

/// A memcached child process, killed on drop.
pub struct Memcached {
    child: Option<Child>,
    listen: Listen,
    extra: Vec<String>,
}

impl Memcached {
    /// A TCP server on 127.0.0.1 with the default arguments.
    pub fn start() -> Self {
        Self::with_args(&[])
    }

    /// A TCP server with extra arguments, e.g. `&["-I", "2m"]`.
    pub fn with_args(args: &[&str]) -> Self {
        for _ in 0..20 {
            let listen = Listen::Tcp(free_port());
            if let Some(server) = Self::launch(listen, args) {
                return server;
            }
            // Someone else took the port between our probe and memcached's
            // bind: try another.
        }
        panic!("could not start {MEMCACHED} on a free port");
    }

    /// A server listening on a fresh unix socket instead of TCP.
    pub fn unix() -> Self {
        Self::unix_with_args(&[])
    }

    pub fn unix_with_args(args: &[&str]) -> Self {
        let listen = Listen::Unix(fresh_socket_path());
        Self::launch(listen, args).unwrap_or_else(|| panic!("could not start {MEMCACHED} on a unix socket"))
    }

    /// `127.0.0.1:port`, or the socket path: what the pool and
    /// `Connection::connect` take.
    pub fn addr(&self) -> String {
        match &self.listen {
            Listen::Tcp(port) => format!("127.0.0.1:{port}"),
            Listen::Unix(path) => path.display().to_string(),
        }
    }

    /// The TCP port (`None` for a unix socket server).
    pub fn port(&self) -> Option<u16> {
        match self.listen {
            Listen::Tcp(port) => Some(port),
            Listen::Unix(_) => None,
        }
    }

    /// The memcached process id (panics after `kill`).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("memcached was killed").id() as i32
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing. Returns
    /// once every memcached thread is stopped (signals are asynchronous: a
    /// worker could otherwise still answer one more request).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        self.wait_for_threads(|state| state == 'T' || state == 't');
    }

    /// SIGCONT after [`pause`](Self::pause); returns once no thread is
    /// stopped any more.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
        self.wait_for_threads(|state| state != 'T' && state != 't');
    }

    /// Kills the server now (drop does it too).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server (if running) and starts an empty one on the same
    /// address with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let deadline = Instant::now() + START_TIMEOUT;
        // The old socket may linger for a moment; memcached sets
        // SO_REUSEADDR, so this normally succeeds at once.
        loop {
            if let Some(mut fresh) = Self::launch(self.listen.clone(), &args) {
                self.child = fresh.child.take();
                return;
            }
            assert!(Instant::now() < deadline, "could not restart memcached on {}", self.addr());
            sleep(Duration::from_millis(50));
        }
    }

    /// Polls `/proc/<pid>/task/*/stat` until every thread's state passes.
    fn wait_for_threads(&self, ok: impl Fn(char) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !thread_states(self.pid()).into_iter().all(&ok) {
            assert!(Instant::now() < deadline, "memcached threads did not change state");
            sleep(Duration::from_millis(1));
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Spawns memcached and waits until it accepts connections; `None` if it
    /// exited first (typically: address in use).
    fn launch(listen: Listen, args: &[&str]) -> Option<Self> {
        let mut command = Command::new(MEMCACHED);
        command.args(["-U", "0", "-m", "64"]);
        match &listen {
            Listen::Tcp(port) => command.args(["-l", "127.0.0.1", "-p", &port.to_string()]),
            Listen::Unix(path) => {
                let _ = std::fs::remove_file(path);
                command.arg("-s").arg(path)
            }
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // memcached refuses to run as root without -u.
            command.args(["-u", "root"]);
        }
        command.args(args).stdin(Stdio::null()).stdout(Stdio::null());
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot run {MEMCACHED}: {e}"));
        let extra = args.iter().map(|a| a.to_string()).collect();
        let mut server = Memcached { child: Some(child), listen, extra };
        server.wait_ready().then_some(server)
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let exited = self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.child = None;
                return false;
            }
            let pid = self.child.as_ref().map(Child::id);
            let answered = match &self.listen {
                Listen::Tcp(port) => TcpStream::connect(("127.0.0.1", *port)).ok().map(|mut c| {
                    c.set_read_timeout(Some(PROBE_TIMEOUT)).ok();
                    server_pid(&mut c)
                }),
                Listen::Unix(path) => UnixStream::connect(path).ok().map(|mut c| {
                    c.set_read_timeout(Some(PROBE_TIMEOUT)).ok();
                    server_pid(&mut c)
                }),
            };
            match answered {
                Some(found) if found == pid => return true,
                // Another test's server holds the port (it was free when we
                // probed it): ours cannot bind and will exit.
                Some(Some(_)) => {
                    self.kill();
                    return false;
                }
                _ => {}
            }
            sleep(Duration::from_millis(5));
        }
        panic!("memcached did not accept connections on {} within {START_TIMEOUT:?}", self.addr());
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.kill();
        if let Listen::Unix(path) = &self.listen {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The pid a memcached server reports in `stats` (`None` if it does not answer).
fn server_pid(conn: &mut (impl Read + Write)) -> Option<u32> {
    conn.write_all(b"stats\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(b"END\r\n") {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply);
    text.lines().find_map(|l| l.strip_prefix("STAT pid ")).and_then(|p| p.trim().parse().ok())
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// An address where nothing listens: connections are refused.
pub fn closed_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The state letter of each thread of `pid` (`R`, `S`, `T`, ...).
fn thread_states(pid: i32) -> Vec<char> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/<pid>/task");
    let mut states = Vec::new();
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // `pid (comm) S ...`: the state follows the last ')'.
        if let Some(state) = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()) {
            states.push(state);
        }
    }
    states
}

fn fresh_socket_path() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    // Short: unix socket paths are limited to 107 bytes.
    std::env::temp_dir().join(format!("listy-mc-{}-{n}.sock", std::process::id()))
}
