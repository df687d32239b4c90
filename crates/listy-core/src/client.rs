//! memcached text protocol: commands, reply parser.
//!
//! This module owns one synchronous connection to one memcached server
//! ([`Connection`], TCP `host:port` or a unix socket path starting with `/`),
//! the encoding of [`Op`]s into text-protocol commands, and the reply parser
//! ([`ReplyParser`]), a pure function over a byte buffer so it can be fuzzed.
//!
//! A batch of ops is written as one pipelined request and the replies are
//! read back in order. Consecutive `Op::Get`s become one `gets k1 k2 ...`.
//! After any I/O error, timeout or unparseable reply the connection is
//! *poisoned*: the position in the reply stream is unknown, so it must be
//! dropped, never reused.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::io::{AsRawFd, RawFd};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::{Item, Op, Reply};
#[cfg(feature = "tls")]
use crate::tls::{Tls, TlsStream};

/// memcached's longest key (`KEY_MAX_LENGTH`).
pub const MAX_KEY_LEN: usize = 250;

/// Longest reply line (without a data block) we accept. Real lines are short
/// (a `VALUE` line with a 250-byte key is under 320 bytes); the cap stops a
/// garbage stream from growing the buffer forever.
pub const MAX_LINE: usize = 4096;

/// Bytes asked of the kernel per `read` when the reply size is unknown.
const READ_CHUNK: usize = 64 * 1024;

/// The most the read buffer grows per `read`, so a corrupt `VALUE` length
/// cannot make us allocate its whole claimed size up front.
const MAX_READ_AHEAD: usize = 4 * 1024 * 1024;

/// memcached's ceiling for `-I`: no server can return a longer value. Values
/// above our own `max_item_size` (written by another client) are still read.
const MAX_SERVER_ITEM_SIZE: usize = 1024 * 1024 * 1024;

/// A pipelined request is written in chunks of at most this many bytes (one
/// command larger than this goes alone). Until we read, the server's replies
/// pile up in socket buffers; a request that small always fits in the
/// server's receive buffer, so our write can never block on a server that is
/// itself blocked writing replies to us (a deadlock until the timeout).
const MAX_REQUEST_CHUNK: usize = 32 * 1024;

/// The reply to `incr`/`decr` on a value that is not a number.
const NON_NUMERIC: &str = "cannot increment or decrement non-numeric value";
/// The reply to a value larger than the server's `-I` item size.
const TOO_LARGE: &str = "object too large for cache";

// ---------------------------------------------------------------------------
// Reply parser (pure)
// ---------------------------------------------------------------------------

/// One unit of a memcached text-protocol reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `VALUE key flags bytes [cas]\r\n<data>\r\n`
    Value {
        /// The key, as the server spelled it.
        key: Vec<u8>,
        /// The client flags stored with the value.
        flags: u32,
        /// The CAS token (`gets` only).
        cas: Option<u64>,
        /// The value's bytes.
        data: Vec<u8>,
    },
    /// `END`: the last line of a `get`/`stats` reply.
    End,
    /// `STORED`
    Stored,
    /// `NOT_STORED`
    NotStored,
    /// `EXISTS`: a `cas` lost.
    Exists,
    /// `NOT_FOUND`
    NotFound,
    /// `DELETED`
    Deleted,
    /// `OK` (`flush_all`, `touch`).
    Ok,
    /// The result of `incr`/`decr`.
    Number(u64),
    /// `STAT name value`
    Stat {
        /// The statistic's name.
        name: String,
        /// Its value, as text.
        value: String,
    },
    /// `ERROR [message]`: the server did not understand the command.
    Error(String),
    /// `CLIENT_ERROR message`: the command was malformed.
    ClientError(String),
    /// `SERVER_ERROR message`: the server failed (out of memory, too large).
    ServerError(String),
}

/// The outcome of parsing the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The buffer holds an incomplete frame; parse again once it holds at
    /// least `at_least` bytes.
    NeedMore {
        /// The buffer length worth parsing again at.
        at_least: usize,
    },
    /// A complete frame and the number of bytes it used.
    Frame(Frame, usize),
}

/// Bytes that can never become a valid reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Incremental, panic-free parser of memcached replies.
#[derive(Debug, Clone, Copy)]
pub struct ReplyParser {
    max_value_len: usize,
}

impl ReplyParser {
    /// `max_value_len` bounds the data block of a `VALUE` line, so a corrupt
    /// length cannot make the reader wait for (and buffer) gigabytes.
    pub fn new(max_value_len: usize) -> Self {
        ReplyParser { max_value_len }
    }

    /// Parses the first frame of `buf`.
    pub fn parse(&self, buf: &[u8]) -> std::result::Result<Parsed, ParseError> {
        let Some((line, after_line)) = split_line(buf)? else {
            return Ok(Parsed::NeedMore { at_least: buf.len() + 1 });
        };
        if let Some(header) = line.strip_prefix(b"VALUE ") {
            return self.parse_value(header, buf, after_line);
        }
        Ok(Parsed::Frame(parse_line(line)?, after_line))
    }

    /// `VALUE` header tokens `key flags bytes [cas]`, then the data block.
    fn parse_value(&self, header: &[u8], buf: &[u8], start: usize) -> std::result::Result<Parsed, ParseError> {
        let tokens: Vec<&[u8]> = header.split(|&b| b == b' ').filter(|t| !t.is_empty()).collect();
        if !(3..=4).contains(&tokens.len()) {
            return Err(err("VALUE line needs 3 or 4 fields", header));
        }
        let flags = parse_dec::<u32>(tokens[1]).ok_or_else(|| err("bad VALUE flags", tokens[1]))?;
        let len = parse_dec::<usize>(tokens[2]).ok_or_else(|| err("bad VALUE length", tokens[2]))?;
        if len > self.max_value_len {
            return Err(ParseError(format!("VALUE of {len} bytes exceeds the {} byte limit", self.max_value_len)));
        }
        let cas = match tokens.get(3) {
            Some(t) => Some(parse_dec::<u64>(t).ok_or_else(|| err("bad VALUE cas", t))?),
            None => None,
        };
        // `len <= max_value_len` keeps these sums far from overflow, but stay
        // checked so arbitrary limits can never panic.
        let data_end = start.checked_add(len).ok_or_else(|| err("VALUE length overflows", tokens[2]))?;
        let total = data_end.checked_add(2).ok_or_else(|| err("VALUE length overflows", tokens[2]))?;
        if buf.len() < total {
            return Ok(Parsed::NeedMore { at_least: total });
        }
        if &buf[data_end..total] != b"\r\n" {
            return Err(err("VALUE data not followed by CRLF", &buf[data_end..total]));
        }
        let frame = Frame::Value { key: tokens[0].to_vec(), flags, cas, data: buf[start..data_end].to_vec() };
        Ok(Parsed::Frame(frame, total))
    }
}

/// Splits off the first CRLF-terminated line: `(line, bytes used)`, or
/// `None` when no complete line is there yet.
fn split_line(buf: &[u8]) -> std::result::Result<Option<(&[u8], usize)>, ParseError> {
    let window = &buf[..buf.len().min(MAX_LINE + 2)];
    match window.iter().position(|&b| b == b'\n') {
        None if buf.len() >= MAX_LINE + 2 => Err(err("reply line too long", &buf[..32])),
        None => Ok(None),
        Some(0) => Err(ParseError("reply line ends with a bare LF".into())),
        Some(nl) if buf[nl - 1] != b'\r' => Err(err("reply line ends with a bare LF", &buf[..nl])),
        Some(nl) => Ok(Some((&buf[..nl - 1], nl + 1))),
    }
}

/// Every reply line except `VALUE`.
fn parse_line(line: &[u8]) -> std::result::Result<Frame, ParseError> {
    let frame = match line {
        b"END" => Frame::End,
        b"STORED" => Frame::Stored,
        b"NOT_STORED" => Frame::NotStored,
        b"EXISTS" => Frame::Exists,
        b"NOT_FOUND" => Frame::NotFound,
        b"DELETED" => Frame::Deleted,
        b"OK" => Frame::Ok,
        b"ERROR" => Frame::Error(String::new()),
        _ => return parse_other_line(line),
    };
    Ok(frame)
}

fn parse_other_line(line: &[u8]) -> std::result::Result<Frame, ParseError> {
    if let Some(rest) = line.strip_prefix(b"STAT ") {
        let mut parts = rest.splitn(2, |&b| b == b' ');
        let name = text(parts.next().unwrap_or_default());
        let value = text(parts.next().unwrap_or_default());
        return Ok(Frame::Stat { name, value });
    }
    if let Some(message) = error_message(line, b"CLIENT_ERROR") {
        return Ok(Frame::ClientError(message));
    }
    if let Some(message) = error_message(line, b"SERVER_ERROR") {
        return Ok(Frame::ServerError(message));
    }
    if let Some(message) = error_message(line, b"ERROR") {
        return Ok(Frame::Error(message));
    }
    // memcached pads nothing in the reply, but be lenient about trailing
    // spaces (old servers padded incr results in place).
    let digits = trim_end_spaces(line);
    match parse_dec::<u64>(digits) {
        Some(n) => Ok(Frame::Number(n)),
        None => Err(err("unexpected reply line", line)),
    }
}

/// The message after `KEYWORD ` (or empty for a bare `KEYWORD`).
fn error_message(line: &[u8], keyword: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(keyword)?;
    if rest.is_empty() {
        return Some(String::new());
    }
    rest.strip_prefix(b" ").map(text)
}

fn trim_end_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [head @ .., b' '] = bytes {
        bytes = head;
    }
    bytes
}

/// A non-empty run of ASCII digits (no sign, no spaces) that fits in `T`.
fn parse_dec<T: std::str::FromStr>(token: &[u8]) -> Option<T> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn err(what: &str, bytes: &[u8]) -> ParseError {
    let shown = &bytes[..bytes.len().min(64)];
    ParseError(format!("{what}: {:?}", String::from_utf8_lossy(shown)))
}

// ---------------------------------------------------------------------------
// Request encoding (pure)
// ---------------------------------------------------------------------------

/// Checks that `key` can go on a text-protocol command line as one token.
/// Keys are normally escaped by `keys.rs` already; this is the last guard.
pub fn check_key(key: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Config(format!("invalid memcached key {key:?}: {why}")));
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad(&format!("{} bytes, the limit is {MAX_KEY_LEN}", key.len()));
    }
    if key.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return bad("contains a space or a control character");
    }
    Ok(())
}

/// One command of a pipelined request, pointing back at its op(s).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    /// One `gets` for a run of consecutive `Op::Get`s (op indices, in order).
    Gets(Vec<usize>),
    /// Any other op (its index).
    Single(usize),
}

/// A batch encoded for the wire, cut into chunks (see [`MAX_REQUEST_CHUNK`]).
#[derive(Debug, Default)]
struct Request {
    bytes: Vec<u8>,
    commands: Vec<Command>,
    /// (end of the chunk in `bytes`, end of the chunk in `commands`).
    chunks: Vec<(usize, usize)>,
}

impl Request {
    /// Encodes `ops`; ops refused client-side get their error in `results`
    /// and are not sent.
    fn build(ops: &[Op], max_item_size: usize, results: &mut [Option<Result<Reply>>]) -> Request {
        let mut request = Request::default();
        let mut gets: Vec<usize> = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            if let Err(refused) = check_op(op, max_item_size) {
                results[index] = Some(Err(refused));
                continue;
            }
            if matches!(op, Op::Get { .. }) {
                gets.push(index);
                continue;
            }
            if !gets.is_empty() {
                request.push(ops, Command::Gets(std::mem::take(&mut gets)));
            }
            request.push(ops, Command::Single(index));
        }
        if !gets.is_empty() {
            request.push(ops, Command::Gets(gets));
        }
        request.close_chunk();
        request
    }

    /// Appends one command, first closing the current chunk if the command
    /// would push it past [`MAX_REQUEST_CHUNK`].
    fn push(&mut self, ops: &[Op], command: Command) {
        let mut encoded = Vec::new();
        match &command {
            Command::Gets(indices) => encode_gets(&mut encoded, indices.iter().map(|&i| ops[i].key())),
            Command::Single(index) => encode_op(&mut encoded, &ops[*index]),
        }
        let chunk_start = self.chunks.last().map_or(0, |&(end, _)| end);
        let chunk_len = self.bytes.len() - chunk_start;
        if chunk_len > 0 && chunk_len + encoded.len() > MAX_REQUEST_CHUNK {
            self.close_chunk();
        }
        self.bytes.extend_from_slice(&encoded);
        self.commands.push(command);
    }

    fn close_chunk(&mut self) {
        let open = self.chunks.last().map_or(0, |&(_, cmds)| cmds) < self.commands.len();
        if open {
            self.chunks.push((self.bytes.len(), self.commands.len()));
        }
    }
}

/// Client-side refusals: bad keys and values over the item size limit.
fn check_op(op: &Op, max_item_size: usize) -> Result<()> {
    check_key(op.key())?;
    match op {
        Op::Set { value, .. } | Op::Add { value, .. } | Op::Cas { value, .. } | Op::Prepend { value, .. }
            if value.len() > max_item_size =>
        {
            Err(Error::TooLarge { size: value.len(), limit: max_item_size })
        }
        _ => Ok(()),
    }
}

/// `gets k1 k2 ...\r\n`, each distinct key once (memcached would answer a
/// repeated key twice; one answer is enough to serve both ops).
fn encode_gets<'a>(out: &mut Vec<u8>, keys: impl Iterator<Item = &'a str>) {
    out.extend_from_slice(b"gets");
    let mut seen = std::collections::HashSet::new();
    for key in keys.filter(|k| seen.insert(*k)) {
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Every non-`Get` op, with flags 0 and exptime 0, never `noreply`.
fn encode_op(out: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Get { key } => encode_gets(out, std::iter::once(key.as_str())),
        Op::Set { key, value } => encode_storage(out, "set", key, value, None),
        Op::Add { key, value } => encode_storage(out, "add", key, value, None),
        Op::Prepend { key, value } => encode_storage(out, "prepend", key, value, None),
        Op::Cas { key, value, cas } => encode_storage(out, "cas", key, value, Some(*cas)),
        Op::Delete { key } => encode_line(out, &["delete", key]),
        Op::Incr { key, delta } => encode_line(out, &["incr", key, &delta.to_string()]),
        Op::Decr { key, delta } => encode_line(out, &["decr", key, &delta.to_string()]),
    }
}

fn encode_storage(out: &mut Vec<u8>, verb: &str, key: &str, value: &[u8], cas: Option<u64>) {
    let len = value.len().to_string();
    match cas {
        Some(cas) => encode_line(out, &[verb, key, "0", "0", &len, &cas.to_string()]),
        None => encode_line(out, &[verb, key, "0", "0", &len]),
    }
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn encode_line(out: &mut Vec<u8>, tokens: &[&str]) {
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(token.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

/// Why a connection was poisoned; the pool decides from this whether to mark
/// the server dead or retry on a fresh connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A read or write timed out: the server is unresponsive.
    TimedOut,
    /// The connection broke (closed, reset, other I/O error). `before_reply`
    /// is true when not one reply byte had arrived for the failed `execute`
    /// (e.g. the server had closed an idle connection), so nothing of it ran
    /// on a live server and a retry on a fresh connection is safe.
    Broken {
        /// No reply byte had arrived: a retry is safe.
        before_reply: bool,
    },
    /// The server sent bytes the protocol does not allow at this point: the
    /// reply stream cannot be trusted any more.
    Desync,
}

enum Stream {
    Tcp(TcpStream),
    /// Unix sockets exist on Unix only; elsewhere a `/path` server is refused
    /// at connect time (see [`open`]).
    #[cfg(unix)]
    Unix(UnixStream),
    /// TLS over TCP (feature `tls`): reads and writes go through rustls.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

impl Stream {
    #[cfg(unix)]
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.sock.as_raw_fd(),
        }
    }

    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            #[cfg(unix)]
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            #[cfg(feature = "tls")]
            Stream::Tls(s) => {
                s.sock.set_read_timeout(Some(timeout))?;
                s.sock.set_write_timeout(Some(timeout))
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }

    /// `send(SEND_FLAGS)` for both socket kinds: a server that went away
    /// must give us EPIPE, not a SIGPIPE that kills the host process
    /// (`MSG_NOSIGNAL` where it exists; Apple systems have `SO_NOSIGPIPE`,
    /// set by [`open`] instead).
    #[cfg(unix)]
    fn send_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Stream::Tls(s) = self {
            // rustls writes through std's TcpStream, which sends with
            // MSG_NOSIGNAL where it exists (and the socket has SO_NOSIGPIPE
            // on Apple systems).
            use std::io::Write;
            s.write_all(buf)?;
            return s.flush();
        }
        while !buf.is_empty() {
            // SAFETY: `buf` is a live slice of `buf.len()` readable bytes and
            // the descriptor is owned by `self` for the whole call.
            let sent = unsafe { libc::send(self.fd(), buf.as_ptr().cast(), buf.len(), SEND_FLAGS) };
            if sent < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if sent == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "server accepted no bytes"));
            }
            buf = &buf[sent as usize..];
        }
        Ok(())
    }

    /// Windows has no SIGPIPE: a plain write reports a closed peer as an error.
    #[cfg(not(unix))]
    fn send_all(&mut self, buf: &[u8]) -> io::Result<()> {
        use std::io::Write;
        match self {
            Stream::Tcp(s) => s.write_all(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => {
                s.write_all(buf)?;
                s.flush()
            }
        }
    }
}

/// The `send` flags that turn SIGPIPE into EPIPE where the platform has one.
#[cfg(all(unix, not(target_vendor = "apple")))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(target_vendor = "apple")]
const SEND_FLAGS: libc::c_int = 0;

/// Apple systems have no `MSG_NOSIGNAL`: the socket itself is told not to
/// raise SIGPIPE.
#[cfg(target_vendor = "apple")]
fn no_sigpipe(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is an open socket and `on` outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A synchronous text-protocol connection to one memcached server.
pub struct Connection {
    server: String,
    stream: Stream,
    timeout: Duration,
    max_item_size: usize,
    parser: ReplyParser,
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// Whether any reply byte arrived during the current `execute`.
    received: bool,
    failure: Option<(Failure, String)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `server` (`host:port`, `[v6]:port`, or a unix socket path
    /// starting with `/`). `connect_timeout` bounds each TCP connect attempt,
    /// `timeout` each later read and write. A unix socket connect does not
    /// block on a live server (the kernel queues it) and fails at once on a
    /// missing one, so it has no separate timeout.
    pub fn connect(
        server: &str,
        connect_timeout: Duration,
        timeout: Duration,
        max_item_size: usize,
    ) -> Result<Connection> {
        Self::open_with(server, connect_timeout, timeout, max_item_size, Ok)
    }

    /// [`connect`](Self::connect) over TLS (feature `tls`): the handshake
    /// runs here, bounded by `timeout`; a certificate that does not verify or
    /// a server that does not speak TLS makes the server unavailable.
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        server: &str,
        connect_timeout: Duration,
        timeout: Duration,
        max_item_size: usize,
        tls: &Tls,
    ) -> Result<Connection> {
        Self::open_with(server, connect_timeout, timeout, max_item_size, |stream| match stream {
            Stream::Tcp(tcp) => Ok(Stream::Tls(Box::new(tls.handshake(server, tcp)?))),
            _ => Err(io::Error::new(io::ErrorKind::Unsupported, "TLS needs a host:port server, not a unix socket")),
        })
    }

    fn open_with(
        server: &str,
        connect_timeout: Duration,
        timeout: Duration,
        max_item_size: usize,
        wrap: impl FnOnce(Stream) -> io::Result<Stream>,
    ) -> Result<Connection> {
        if timeout.is_zero() || connect_timeout.is_zero() {
            return Err(Error::Config("memcached timeouts must be greater than zero".into()));
        }
        let stream = open(server, connect_timeout).map_err(|e| Error::unavailable(server, &e))?;
        stream.set_timeouts(timeout).map_err(|e| Error::unavailable(server, &e))?;
        let stream = wrap(stream).map_err(|e| Error::unavailable(server, &e))?;
        Ok(Connection {
            server: server.to_string(),
            stream,
            timeout,
            max_item_size,
            parser: ReplyParser::new(max_item_size.max(MAX_SERVER_ITEM_SIZE)),
            rbuf: Vec::new(),
            rpos: 0,
            rend: 0,
            received: false,
            failure: None,
        })
    }

    /// Bounds each later read and write by `timeout` instead of the one
    /// given to [`connect`](Self::connect) (the pool narrows it for a call
    /// made within a budget, see [`crate::pool::within_budget`]).
    pub fn set_io_timeout(&mut self, timeout: Duration) -> Result<()> {
        let timeout = timeout.max(Duration::from_micros(1));
        self.stream.set_timeouts(timeout).map_err(|e| Error::unavailable(&self.server, &e))
    }

    /// The server this connection talks to, as given to [`connect`](Self::connect).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// True once the connection must be dropped (see [`Failure`]).
    pub fn is_poisoned(&self) -> bool {
        self.failure.is_some()
    }

    /// Why the connection was poisoned, if it was.
    pub fn failure(&self) -> Option<Failure> {
        self.failure.as_ref().map(|(kind, _)| *kind)
    }

    /// Runs `ops` as one pipelined request and returns one result per op, in
    /// order. Ops refused client-side (bad key: `Config`, value over the item
    /// size: `TooLarge`) are not sent. If the connection fails midway, the
    /// ops without a reply get `Unavailable` (or `Protocol` after a garbled
    /// reply) and the connection is poisoned.
    pub fn execute(&mut self, ops: &[Op]) -> Vec<Result<Reply>> {
        let mut results: Vec<Option<Result<Reply>>> = ops.iter().map(|_| None).collect();
        let request = Request::build(ops, self.max_item_size, &mut results);
        self.received = false;
        let (mut byte_start, mut command_start) = (0, 0);
        for &(byte_end, command_end) in &request.chunks {
            if self.failure.is_some() || !self.send(&request.bytes[byte_start..byte_end]) {
                break;
            }
            for command in &request.commands[command_start..command_end] {
                if self.failure.is_some() {
                    break;
                }
                self.read_command(command, ops, &mut results);
            }
            (byte_start, command_start) = (byte_end, command_end);
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(self.failure_error()))).collect()
    }

    /// `flush_all`: drops every key on this server.
    pub fn flush_all(&mut self) -> Result<()> {
        self.received = false;
        if !self.send(b"flush_all\r\n") {
            return Err(self.failure_error());
        }
        match self.next_frame() {
            Some(Frame::Ok) => Ok(()),
            Some(other) => Err(self.desync(&format!("unexpected reply to flush_all: {}", describe(&other)))),
            None => Err(self.failure_error()),
        }
    }

    /// `stats`: the server's (name, value) pairs.
    pub fn stats(&mut self) -> Result<Vec<(String, String)>> {
        self.received = false;
        if !self.send(b"stats\r\n") {
            return Err(self.failure_error());
        }
        let mut stats = Vec::new();
        loop {
            match self.next_frame() {
                Some(Frame::Stat { name, value }) => stats.push((name, value)),
                Some(Frame::End) => return Ok(stats),
                Some(other) => return Err(self.desync(&format!("unexpected reply to stats: {}", describe(&other)))),
                None => return Err(self.failure_error()),
            }
        }
    }

    /// Reads the reply to one command into `results`.
    fn read_command(&mut self, command: &Command, ops: &[Op], results: &mut [Option<Result<Reply>>]) {
        match command {
            Command::Gets(indices) => self.read_gets(indices, ops, results),
            Command::Single(index) => {
                if let Some(frame) = self.next_frame() {
                    results[*index] = self.single_reply(&ops[*index], frame);
                }
            }
        }
    }

    /// Reads `VALUE`s up to `END` and hands each op its key's item.
    fn read_gets(&mut self, indices: &[usize], ops: &[Op], results: &mut [Option<Result<Reply>>]) {
        let mut wanted: HashMap<&[u8], usize> = HashMap::new();
        for &i in indices {
            *wanted.entry(ops[i].key().as_bytes()).or_default() += 1;
        }
        let mut found: HashMap<Vec<u8>, Item> = HashMap::new();
        loop {
            match self.next_frame() {
                None => return,
                Some(Frame::End) => break,
                Some(Frame::Value { key, cas: Some(cas), data, .. }) if wanted.contains_key(key.as_slice()) => {
                    found.insert(key, Item { value: data, cas });
                }
                Some(other) => {
                    self.desync(&format!("unexpected reply to gets: {}", describe(&other)));
                    return;
                }
            }
        }
        for &i in indices {
            let key = ops[i].key().as_bytes();
            let left = wanted.get_mut(key).expect("every requested key is counted");
            *left -= 1;
            // The last op asking for a key takes the item; earlier ones copy.
            let item = if *left == 0 { found.remove(key) } else { found.get(key).cloned() };
            results[i] = Some(Ok(Reply::Value(item)));
        }
    }

    /// Maps the reply to one non-`gets` command; `None` means the connection
    /// is now poisoned and the op gets the poison error.
    fn single_reply(&mut self, op: &Op, frame: Frame) -> Option<Result<Reply>> {
        let storage = matches!(op, Op::Set { .. } | Op::Add { .. } | Op::Cas { .. } | Op::Prepend { .. });
        let arithmetic = matches!(op, Op::Incr { .. } | Op::Decr { .. });
        let reply = match frame {
            Frame::Stored if storage => Reply::Stored,
            Frame::NotStored if storage => Reply::NotStored,
            Frame::Exists if storage => Reply::Exists,
            Frame::NotFound if storage || arithmetic || matches!(op, Op::Delete { .. }) => Reply::NotFound,
            Frame::Deleted if matches!(op, Op::Delete { .. }) => Reply::Deleted,
            Frame::Number(n) if arithmetic => Reply::Number(n),
            Frame::ClientError(message) if arithmetic && message == NON_NUMERIC => Reply::NonNumeric,
            // memcached swallowed the data block after a SERVER_ERROR, so
            // the stream is still in step.
            Frame::ServerError(message) => return Some(Err(self.server_error(op, &message))),
            // ERROR / CLIENT_ERROR may be followed by more error lines (the
            // data block read as a command): the stream is lost.
            other => {
                self.desync(&format!("unexpected reply to {}: {}", verb(op), describe(&other)));
                return None;
            }
        };
        Some(Ok(reply))
    }

    fn server_error(&self, op: &Op, message: &str) -> Error {
        let size = match op {
            Op::Set { value, .. } | Op::Add { value, .. } | Op::Cas { value, .. } | Op::Prepend { value, .. } => {
                value.len()
            }
            _ => 0,
        };
        if message == TOO_LARGE {
            return Error::TooLarge { size, limit: self.max_item_size };
        }
        Error::protocol(&self.server, format!("SERVER_ERROR {message} (for {})", verb(op)))
    }

    /// Writes one request chunk; false (and poisoned) on failure.
    fn send(&mut self, bytes: &[u8]) -> bool {
        match self.stream.send_all(bytes) {
            Ok(()) => true,
            Err(error) => {
                self.io_failure(&error);
                false
            }
        }
    }

    /// The next reply frame, reading as needed; `None` once poisoned.
    fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.parser.parse(&self.rbuf[self.rpos..self.rend]) {
                Ok(Parsed::Frame(frame, used)) => {
                    self.rpos += used;
                    return Some(frame);
                }
                Ok(Parsed::NeedMore { at_least }) => {
                    if let Err(error) = self.fill(at_least) {
                        self.io_failure(&error);
                        return None;
                    }
                }
                Err(ParseError(reason)) => {
                    self.desync(&reason);
                    return None;
                }
            }
        }
    }

    /// Reads at least one more byte, making room for `at_least` unparsed
    /// bytes (the whole pending frame when its size is known).
    /// `rbuf[rpos..rend]` are the unparsed bytes; the buffer stays
    /// allocated (and zeroed) between reads, so a read does not clear it.
    fn fill(&mut self, at_least: usize) -> io::Result<()> {
        if self.rpos > 0 {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        let have = self.rend;
        let target = at_least.clamp(have + READ_CHUNK, have + MAX_READ_AHEAD);
        if self.rbuf.len() < target {
            self.rbuf.resize(target, 0);
        }
        let read = loop {
            // A signal handler installed without SA_RESTART (Python's are)
            // interrupts recv: that is no reason to drop the connection.
            match self.stream.read(&mut self.rbuf[have..target]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.rend = have + *read.as_ref().unwrap_or(&0);
        match read {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the server")),
            Ok(_) => {
                self.received = true;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn io_failure(&mut self, error: &io::Error) {
        let timed_out = matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut);
        let (kind, reason) = if timed_out {
            (Failure::TimedOut, format!("no answer within {:?}", self.timeout))
        } else {
            (Failure::Broken { before_reply: !self.received }, error.to_string())
        };
        self.failure.get_or_insert((kind, reason));
    }

    /// Poisons the connection after a garbled reply; returns the error.
    fn desync(&mut self, reason: &str) -> Error {
        self.failure.get_or_insert((Failure::Desync, reason.to_string()));
        self.failure_error()
    }

    /// The error every op without a reply gets once the connection failed.
    fn failure_error(&self) -> Error {
        match &self.failure {
            Some((Failure::Desync, reason)) => Error::protocol(&self.server, reason.clone()),
            Some((_, reason)) => Error::Unavailable { server: self.server.clone(), reason: reason.clone() },
            None => Error::protocol(&self.server, "no reply was read for this op"),
        }
    }
}

/// Opens the socket: unix path or TCP (each resolved address in turn).
fn open(server: &str, connect_timeout: Duration) -> io::Result<Stream> {
    let stream = open_stream(server, connect_timeout)?;
    #[cfg(target_vendor = "apple")]
    no_sigpipe(stream.fd())?;
    Ok(stream)
}

fn open_stream(server: &str, connect_timeout: Duration) -> io::Result<Stream> {
    if server.starts_with('/') {
        #[cfg(unix)]
        return UnixStream::connect(server).map(Stream::Unix);
        #[cfg(not(unix))]
        return Err(io::Error::new(io::ErrorKind::Unsupported, "unix socket paths need a Unix system: use host:port"));
    }
    let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing");
    for addr in server.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, connect_timeout) {
            Ok(stream) => {
                // Requests are written whole; Nagle would only add latency.
                stream.set_nodelay(true)?;
                return Ok(Stream::Tcp(stream));
            }
            Err(error) => last = error,
        }
    }
    Err(last)
}

fn verb(op: &Op) -> &'static str {
    match op {
        Op::Get { .. } => "gets",
        Op::Set { .. } => "set",
        Op::Add { .. } => "add",
        Op::Cas { .. } => "cas",
        Op::Prepend { .. } => "prepend",
        Op::Delete { .. } => "delete",
        Op::Incr { .. } => "incr",
        Op::Decr { .. } => "decr",
    }
}

/// A frame for an error message, without dumping a whole value.
fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Value { key, data, .. } => format!("VALUE {} ({} bytes)", String::from_utf8_lossy(key), data.len()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parser() -> ReplyParser {
        ReplyParser::new(1 << 20)
    }

    fn frame(buf: &[u8]) -> (Frame, usize) {
        match parser().parse(buf) {
            Ok(Parsed::Frame(f, n)) => (f, n),
            other => panic!("expected a frame from {buf:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_simple_lines() {
        assert_eq!(frame(b"STORED\r\nEND\r\n"), (Frame::Stored, 8));
        assert_eq!(frame(b"NOT_STORED\r\n").0, Frame::NotStored);
        assert_eq!(frame(b"EXISTS\r\n").0, Frame::Exists);
        assert_eq!(frame(b"NOT_FOUND\r\n").0, Frame::NotFound);
        assert_eq!(frame(b"DELETED\r\n").0, Frame::Deleted);
        assert_eq!(frame(b"OK\r\n").0, Frame::Ok);
        assert_eq!(frame(b"END\r\n").0, Frame::End);
        assert_eq!(frame(b"ERROR\r\n").0, Frame::Error(String::new()));
        assert_eq!(frame(b"42\r\n").0, Frame::Number(42));
        assert_eq!(frame(b"18446744073709551615\r\n").0, Frame::Number(u64::MAX));
        assert_eq!(frame(b"7  \r\n").0, Frame::Number(7));
    }

    #[test]
    fn parses_errors_and_stats() {
        assert_eq!(
            frame(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n").0,
            Frame::ClientError(NON_NUMERIC.into())
        );
        assert_eq!(frame(b"SERVER_ERROR object too large for cache\r\n").0, Frame::ServerError(TOO_LARGE.into()));
        assert_eq!(frame(b"ERROR unknown command\r\n").0, Frame::Error("unknown command".into()));
        assert_eq!(frame(b"STAT version 1.6.18\r\n").0, Frame::Stat { name: "version".into(), value: "1.6.18".into() });
    }

    #[test]
    fn parses_values_incrementally() {
        let wire = b"VALUE k 5 3 99\r\nabc\r\nEND\r\n";
        for cut in 0..16 {
            assert!(matches!(parser().parse(&wire[..cut]), Ok(Parsed::NeedMore { .. })), "cut {cut}");
        }
        assert_eq!(parser().parse(&wire[..17]), Ok(Parsed::NeedMore { at_least: 21 }));
        let (f, used) = frame(wire);
        assert_eq!(f, Frame::Value { key: b"k".to_vec(), flags: 5, cas: Some(99), data: b"abc".to_vec() });
        assert_eq!(used, 21);
        let (f, _) = frame(b"VALUE k 0 2\r\n\r\n\r\n");
        assert_eq!(f, Frame::Value { key: b"k".to_vec(), flags: 0, cas: None, data: b"\r\n".to_vec() });
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"VALUE k 0\r\n",
            b"VALUE k x 1 1\r\n",
            b"VALUE k 0 1 1\r\nab\r\n",
            b"VALUE k 0 99999999999999999999999 1\r\n",
            b"STORED\n",
            b"\n",
            b"-1\r\n",
            b"99999999999999999999999\r\n",
        ] {
            assert!(parser().parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(ReplyParser::new(2).parse(b"VALUE k 0 3 1\r\n").is_err());
        assert!(parser().parse(&[b'x'; MAX_LINE + 2]).is_err());
        assert!(matches!(parser().parse(&[b'x'; MAX_LINE + 1]), Ok(Parsed::NeedMore { .. })));
    }

    #[test]
    fn key_checks() {
        assert!(check_key("listy:v1:posts").is_ok());
        assert!(check_key(&"k".repeat(250)).is_ok());
        assert!(matches!(check_key(&"k".repeat(251)), Err(Error::Config(_))));
        assert!(matches!(check_key(""), Err(Error::Config(_))));
        assert!(matches!(check_key("a b"), Err(Error::Config(_))));
        assert!(matches!(check_key("a\r\nb"), Err(Error::Config(_))));
        assert!(matches!(check_key("a\x7f"), Err(Error::Config(_))));
    }

    fn get(key: &str) -> Op {
        Op::Get { key: key.into() }
    }

    fn build(ops: &[Op], max: usize) -> (Request, Vec<Option<Result<Reply>>>) {
        let mut results: Vec<_> = ops.iter().map(|_| None).collect();
        let request = Request::build(ops, max, &mut results);
        (request, results)
    }

    #[test]
    fn encodes_and_coalesces_gets() {
        let ops = vec![
            get("a"),
            get("b"),
            get("a"),
            Op::Set { key: "s".into(), value: b"xy".to_vec() },
            Op::Cas { key: "c".into(), value: b"z".to_vec(), cas: 77 },
            Op::Add { key: "d".into(), value: vec![] },
            Op::Prepend { key: "p".into(), value: b"q".to_vec() },
            Op::Delete { key: "e".into() },
            Op::Incr { key: "n".into(), delta: 5 },
            Op::Decr { key: "n".into(), delta: 1 },
            get("z"),
        ];
        let (request, results) = build(&ops, 100);
        assert!(results.iter().all(Option::is_none));
        let wire = "gets a b\r\nset s 0 0 2\r\nxy\r\ncas c 0 0 1 77\r\nz\r\nadd d 0 0 0\r\n\r\n\
                    prepend p 0 0 1\r\nq\r\ndelete e\r\nincr n 5\r\ndecr n 1\r\ngets z\r\n";
        assert_eq!(String::from_utf8(request.bytes).unwrap(), wire);
        assert_eq!(request.commands[0], Command::Gets(vec![0, 1, 2]));
        assert_eq!(request.commands.len(), 9);
        assert_eq!(request.chunks, vec![(wire.len(), 9)]);
    }

    #[test]
    fn refuses_bad_ops_without_sending() {
        let ops = vec![get("bad key"), Op::Set { key: "big".into(), value: vec![0; 11] }, get("ok")];
        let (request, results) = build(&ops, 10);
        assert!(matches!(results[0], Some(Err(Error::Config(_)))));
        assert!(matches!(results[1], Some(Err(Error::TooLarge { size: 11, limit: 10 }))));
        assert_eq!(request.bytes, b"gets ok\r\n");
    }

    #[test]
    fn big_requests_are_chunked() {
        let big = vec![b'v'; MAX_REQUEST_CHUNK];
        let ops = vec![
            get("a"),
            Op::Set { key: "x".into(), value: big.clone() },
            Op::Set { key: "y".into(), value: vec![1; 10] },
            Op::Set { key: "z".into(), value: big },
        ];
        let (request, _) = build(&ops, usize::MAX);
        let ends: Vec<usize> = request.chunks.iter().map(|c| c.1).collect();
        // A command that alone fills a chunk is sent alone.
        assert_eq!(ends, vec![1, 2, 3, 4]);
        assert_eq!(request.chunks.last().unwrap().0, request.bytes.len());
        let (empty, _) = build(&[], 10);
        assert!(empty.chunks.is_empty() && empty.bytes.is_empty());
    }

    /// Parses everything it can from `chunks` fed one after another, the way
    /// the connection does; stops at the first error.
    fn feed(chunks: &[&[u8]]) -> (Vec<Frame>, Option<ParseError>) {
        let p = ReplyParser::new(512);
        let (mut buf, mut frames) = (Vec::new(), Vec::new());
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match p.parse(&buf) {
                    Ok(Parsed::Frame(f, used)) => {
                        assert!(used > 0 && used <= buf.len());
                        buf.drain(..used);
                        frames.push(f);
                    }
                    Ok(Parsed::NeedMore { at_least }) => {
                        assert!(at_least > buf.len());
                        break;
                    }
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        (frames, None)
    }

    fn split_at_points<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            pieces.push(&bytes[start..cut]);
            start = cut;
        }
        pieces
    }

    /// Byte soup that often looks like protocol, so the fuzzer gets past the
    /// first keyword.
    fn protocolish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"VALUE ".to_vec()),
            Just(b"END\r\n".to_vec()),
            Just(b"STORED\r\n".to_vec()),
            Just(b"STAT ".to_vec()),
            Just(b"SERVER_ERROR ".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b" ".to_vec()),
            (0u64..2000).prop_map(|n| n.to_string().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    fn frame_strategy() -> impl Strategy<Value = Frame> {
        let token = "[!-~]{1,20}";
        prop_oneof![
            (token, any::<u32>(), proptest::option::of(any::<u64>()), proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(k, flags, cas, data)| Frame::Value { key: k.into_bytes(), flags, cas, data }),
            Just(Frame::End),
            Just(Frame::Stored),
            Just(Frame::NotStored),
            Just(Frame::Exists),
            Just(Frame::NotFound),
            Just(Frame::Deleted),
            Just(Frame::Ok),
            any::<u64>().prop_map(Frame::Number),
            (token, "[ -~]{1,20}").prop_map(|(name, value)| Frame::Stat { name, value }),
            "[ -~]{0,30}".prop_map(Frame::ServerError),
            "[ -~]{0,30}".prop_map(Frame::ClientError),
        ]
    }

    fn encode_frame(f: &Frame) -> Vec<u8> {
        let line = |s: String| format!("{s}\r\n").into_bytes();
        match f {
            Frame::Value { key, flags, cas, data } => {
                let key = String::from_utf8_lossy(key);
                let cas = cas.map(|c| format!(" {c}")).unwrap_or_default();
                let mut out = line(format!("VALUE {key} {flags} {}{cas}", data.len()));
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
                out
            }
            Frame::End => line("END".into()),
            Frame::Stored => line("STORED".into()),
            Frame::NotStored => line("NOT_STORED".into()),
            Frame::Exists => line("EXISTS".into()),
            Frame::NotFound => line("NOT_FOUND".into()),
            Frame::Deleted => line("DELETED".into()),
            Frame::Ok => line("OK".into()),
            Frame::Number(n) => line(n.to_string()),
            Frame::Stat { name, value } => line(format!("STAT {name} {value}")),
            Frame::Error(m) if m.is_empty() => line("ERROR".into()),
            Frame::Error(m) => line(format!("ERROR {m}")),
            Frame::ClientError(m) if m.is_empty() => line("CLIENT_ERROR".into()),
            Frame::ClientError(m) => line(format!("CLIENT_ERROR {m}")),
            Frame::ServerError(m) if m.is_empty() => line("SERVER_ERROR".into()),
            Frame::ServerError(m) => line(format!("SERVER_ERROR {m}")),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic_and_splits_agree(
            bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), protocolish()],
            points in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let whole = feed(&[&bytes]);
            let pieces = split_at_points(&bytes, &points);
            prop_assert_eq!(feed(&pieces), whole);
        }

        #[test]
        fn valid_replies_round_trip(
            frames in proptest::collection::vec(frame_strategy(), 0..12),
            points in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let wire: Vec<u8> = frames.iter().flat_map(encode_frame).collect();
            let pieces = split_at_points(&wire, &points);
            prop_assert_eq!(feed(&pieces), (frames, None));
        }
    }
}
