//! TLS to memcached (feature `tls`) at the crate level: a pool over a real
//! `memcached -Z` with a certificate made by `openssl` for the run. A good
//! CA reads and writes; a wrong CA and a wrong server name make the server
//! unavailable, never served unverified. (tests/test_tls.py covers the
//! Django settings, a client certificate and a plaintext client.)
#![cfg(all(unix, feature = "tls"))]

use listy_core::pool::{MemcachedPool, PoolConfig};
use listy_core::tls::Tls;
use listy_core::{Error, Op, Reply, Store};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `memcached -Z` of the test's own (the common module's readiness probe
/// speaks plaintext, which a TLS listener does not answer).
struct TlsMemcached {
    child: Child,
    port: u16,
}

impl TlsMemcached {
    fn start(cert: &Path, key: &Path) -> TlsMemcached {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let opts = format!("ssl_chain_cert={},ssl_key={}", cert.display(), key.display());
        let child = Command::new(std::env::var("MEMCACHED").unwrap_or_else(|_| "memcached".into()))
            .args(["-Z", "-o", &opts, "-U", "0", "-m", "16", "-l", "127.0.0.1", "-p", &port.to_string(), "-u", "root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "memcached -Z did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        TlsMemcached { child, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsMemcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(status.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&status.stderr));
}

/// A CA, another CA and a server certificate for 127.0.0.1/localhost.
fn certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("listy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for ca in ["ca", "other"] {
        let subject = format!("/CN={ca}");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "1",
                "-subj",
                &subject,
            ],
        );
    }
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext",
        ],
    );
    dir
}

fn pool(server: &str, tls: Tls) -> MemcachedPool {
    let mut cfg = PoolConfig::new([server]);
    cfg.timeout = Duration::from_secs(2);
    cfg.tls = Some(tls);
    MemcachedPool::new(cfg).unwrap()
}

#[test]
fn tls_pool_verifies_the_server() {
    let dir = certificates();
    let server = TlsMemcached::start(&dir.join("server.pem"), &dir.join("server.key"));

    let good = pool(&server.addr(), Tls::new(Some(&dir.join("ca.pem")), None, None).unwrap());
    let set = good.one(Op::Set { key: "k".into(), value: b"over tls".to_vec() }).unwrap();
    assert_eq!(set, Reply::Stored);
    assert_eq!(good.get("k").unwrap().unwrap().value, b"over tls");

    let wrong_ca = pool(&server.addr(), Tls::new(Some(&dir.join("other.pem")), None, None).unwrap());
    assert!(matches!(wrong_ca.get("k"), Err(Error::Unavailable { .. })));

    let wrong_name =
        pool(&server.addr(), Tls::new(Some(&dir.join("ca.pem")), None, Some("cache.example.org".into())).unwrap());
    assert!(matches!(wrong_name.get("k"), Err(Error::Unavailable { .. })));

    assert!(matches!(Tls::new(Some(&dir.join("missing.pem")), None, None), Err(Error::Config(_))));
    std::fs::remove_dir_all(&dir).ok();
}
