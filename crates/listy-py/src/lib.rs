//! `listy._native`: the PyO3 face of `listy-core`. It converts values,
//! releases the GIL around store I/O, builds model instances from records,
//! and maps core errors to one Python exception tree. No protocol logic
//! lives here.

mod convert;
mod datetime_capi;
mod engine;
mod errors;
mod pgoutput;
mod protocol;
mod records;
mod store;
mod template;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<store::PyStore>()?;
    m.add_class::<convert::PySchema>()?;
    m.add_class::<engine::PyEngine>()?;
    m.add_class::<records::Records>()?;
    m.add_class::<records::RecordsIter>()?;
    m.add_function(wrap_pyfunction!(engine::bucket_start, m)?)?;
    m.add_function(wrap_pyfunction!(engine::change_plan, m)?)?;
    m.add_function(wrap_pyfunction!(convert::utc_days, m)?)?;
    m.add_function(wrap_pyfunction!(pgoutput::decode_pgoutput, m)?)?;
    m.add_function(wrap_pyfunction!(pgoutput::format_lsn, m)?)?;
    protocol::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
