use pyo3::prelude::*;
#[pymodule]
fn mlvigil_native(_m: &Bound<'_, PyModule>) -> PyResult<()> { Ok(()) }
