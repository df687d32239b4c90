//! TLS to memcached (feature `tls`): the client side of `memcached -Z` and of
//! managed services that accept only TLS (ElastiCache with in-transit
//! encryption).
//!
//! This module owns the rustls client configuration a pool's connections
//! share ([`Tls`]): the trusted roots (a PEM CA file, else the system's),
//! an optional client certificate and key, and the name the server's
//! certificate is checked against (sent as SNI; by default the host of each
//! server's address). The server is always verified. [`Tls::handshake`]
//! wraps a connected TCP socket; the client module reads and writes through
//! it.

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::error::{Error, Result};

/// A TLS stream over TCP, as the client module holds it.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// How a pool's connections speak TLS (cheap to clone: the configuration is shared).
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.server_name == other.server_name
    }
}

impl Eq for Tls {}

fn config_error(what: &str, path: &Path, e: impl fmt::Display) -> Error {
    Error::Config(format!("TLS {what} {}: {e}", path.display()))
}

impl Tls {
    /// A configuration that trusts the certificates of `ca_file` (PEM), or
    /// the system's roots when None; presents `client` (certificate chain
    /// and key, PEM files) when given; checks every server against
    /// `server_name` when given, else against the host of its address.
    pub fn new(ca_file: Option<&Path>, client: Option<(&Path, &Path)>, server_name: Option<String>) -> Result<Tls> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| config_error("CA file", path, e))?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| config_error("CA file", path, e))?;
                if certs.is_empty() {
                    return Err(config_error("CA file", path, "no certificate in it"));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| config_error("CA file", path, e))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(Error::Config("TLS: no system root certificates found; give a CA file".into()));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let chain = CertificateDer::pem_file_iter(cert_file)
                    .map_err(|e| config_error("certificate file", cert_file, e))?
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| config_error("certificate file", cert_file, e))?;
                let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| config_error("key file", key_file, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Config(format!("TLS client certificate: {e}")))?
            }
        };
        Ok(Tls { config: Arc::new(config), server_name })
    }

    /// The name `address` (`host:port`, `[v6]:port`) is verified against.
    fn name_for(&self, address: &str) -> io::Result<ServerName<'static>> {
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => match address.rsplit_once(':') {
                Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
                None => address,
            },
        };
        ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS server name {host:?}: {e}")))
    }

    /// Runs the handshake over `tcp` (its timeouts already set): a server
    /// whose certificate does not verify, or one that does not speak TLS,
    /// fails here.
    pub fn handshake(&self, address: &str, mut tcp: TcpStream) -> io::Result<TlsStream> {
        let mut conn = ClientConnection::new(self.config.clone(), self.name_for(address)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS: {e}")))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        Ok(StreamOwned::new(conn, tcp))
    }
}
