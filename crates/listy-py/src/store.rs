//! `Store`: a memcached pool or the embedded store, as a Python object.

use crate::errors::CoreError;
use listy_core::local::LocalStore;
use listy_core::pool::{MemcachedPool, PoolConfig};
use listy_core::store::Counted;
use listy_core::tls::Tls;
use listy_core::{Op, Reply, Store};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[pyclass(name = "Store", frozen, module = "listy._native")]
pub struct PyStore {
    pub inner: Arc<dyn Store>,
    counted: Arc<Counted>,
    #[pyo3(get)]
    pub kind: &'static str,
}

impl PyStore {
    fn counting(store: Arc<dyn Store>, kind: &'static str) -> PyStore {
        let counted = Arc::new(Counted::new(store));
        PyStore { inner: counted.clone(), counted, kind }
    }
}

#[pymethods]
impl PyStore {
    /// Batches sent to the store by this process (each one pipelined round
    /// trip per server it touches): what a call costs in round trips.
    #[getter]
    fn batches(&self) -> u64 {
        self.counted.batches()
    }

    #[staticmethod]
    #[pyo3(signature = (name = "default", max_item_size = 1_048_576))]
    fn local(name: &str, max_item_size: usize) -> PyStore {
        PyStore::counting(LocalStore::named(name, max_item_size), "local")
    }

    #[staticmethod]
    #[pyo3(signature = (servers, connect_timeout = 0.25, timeout = 0.5, max_item_size = 1_048_576, tls = false, tls_ca_file = None, tls_cert_file = None, tls_key_file = None, tls_server_name = None))]
    #[allow(clippy::too_many_arguments)]
    fn memcached(
        servers: Vec<String>,
        connect_timeout: f64,
        timeout: f64,
        max_item_size: usize,
        tls: bool,
        tls_ca_file: Option<PathBuf>,
        tls_cert_file: Option<PathBuf>,
        tls_key_file: Option<PathBuf>,
        tls_server_name: Option<String>,
    ) -> PyResult<PyStore> {
        for (name, value) in [("CONNECT_TIMEOUT", connect_timeout), ("TIMEOUT", timeout)] {
            if !(value.is_finite() && value > 0.0 && value < 3600.0) {
                return Err(crate::errors::ConfigError::new_err(format!(
                    "LISTY['{name}'] must be a positive number of seconds, not {value}"
                )));
            }
        }
        let mut cfg = PoolConfig::new(servers);
        cfg.connect_timeout = Duration::from_secs_f64(connect_timeout);
        cfg.timeout = Duration::from_secs_f64(timeout);
        cfg.max_item_size = max_item_size;
        if tls {
            let client = match (&tls_cert_file, &tls_key_file) {
                (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
                (None, None) => None,
                _ => {
                    return Err(crate::errors::ConfigError::new_err(
                        "LISTY['TLS']: CERT_FILE and KEY_FILE go together (a client certificate and its key)",
                    ))
                }
            };
            cfg.tls = Some(Tls::new(tls_ca_file.as_deref(), client, tls_server_name).map_err(CoreError)?);
        }
        let pool = MemcachedPool::new(cfg).map_err(CoreError)?;
        Ok(PyStore::counting(Arc::new(pool), "memcached"))
    }

    fn flush_all(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.inner.clone();
        py.detach(|| store.flush_all()).map_err(CoreError)?;
        Ok(())
    }

    fn get_raw<'py>(&self, py: Python<'py>, key: String) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let store = self.inner.clone();
        let item = py.detach(move || store.get(&key)).map_err(CoreError)?;
        Ok(item.map(|i| PyBytes::new(py, &i.value)))
    }

    fn set_raw(&self, py: Python<'_>, key: String, value: Vec<u8>) -> PyResult<()> {
        let store = self.inner.clone();
        py.detach(move || store.one(Op::Set { key, value })).map_err(CoreError)?;
        Ok(())
    }

    fn delete_raw(&self, py: Python<'_>, key: String) -> PyResult<bool> {
        let store = self.inner.clone();
        let reply = py.detach(move || store.one(Op::Delete { key })).map_err(CoreError)?;
        Ok(reply == Reply::Deleted)
    }

    /// Adds each `delta` to its counter (created at 0 when missing), in one
    /// batched round trip; returns the new values (None: that counter
    /// could not be written). For shared statistics, not for lists.
    fn add_counts(&self, py: Python<'_>, deltas: Vec<(String, u64)>) -> Vec<Option<u64>> {
        let store = self.inner.clone();
        let mut ops = Vec::with_capacity(deltas.len() * 2);
        for (key, delta) in deltas {
            ops.push(Op::Add { key: key.clone(), value: b"0".to_vec() });
            ops.push(Op::Incr { key, delta });
        }
        let replies = py.detach(move || store.execute(ops));
        replies
            .chunks(2)
            .map(|pair| match pair.get(1) {
                Some(Ok(Reply::Number(n))) => Some(*n),
                _ => None,
            })
            .collect()
    }

    fn server_for(&self, key: &str) -> String {
        self.inner.server_for(key)
    }

    fn stats(&self, py: Python<'_>) -> PyResult<Vec<(String, String, String)>> {
        let store = self.inner.clone();
        Ok(py.detach(move || store.stats()).map_err(CoreError)?)
    }

    fn __repr__(&self) -> String {
        format!("<listy Store {}>", self.kind)
    }
}
