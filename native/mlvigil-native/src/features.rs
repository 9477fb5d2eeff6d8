//! `extract_features`: feature-json's extraction of feature values from each row's `features`
//! JSON text, for the DuckDB store's feature windows. The GIL is released while parsing.

use std::sync::Arc;

use arrow_array::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::{ArrayRef, Float64Array, LargeStringArray, RecordBatch, RecordBatchOptions, StringArray};
use arrow_schema::{DataType, Field, Schema};
use feature_json::{extract, Extracted};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// extract_features(features, numeric, text) -> (pyarrow.RecordBatch, [row, ...])
///
/// `features`: a pyarrow string or large_string array of JSON texts. The batch holds `n0..`
/// (float64, one per `numeric` name) and `s0..` (string, one per `text` name), with the values
/// of the DuckDB feature_window SQL; the listed rows (ascending) are the ones that SQL must
/// extract instead (their values in the batch are null).
#[pyfunction]
pub fn extract_features<'py>(
    py: Python<'py>,
    features: &Bound<'py, PyAny>,
    numeric: Vec<String>,
    text: Vec<String>,
) -> PyResult<(Bound<'py, PyAny>, Vec<usize>)> {
    let mut array = FFI_ArrowArray::empty();
    let mut schema = FFI_ArrowSchema::empty();
    features.call_method1("_export_to_c", (&raw mut array as usize, &raw mut schema as usize))?;
    // SAFETY: pyarrow filled both structs just above; from_ffi takes the array's ownership.
    let data = unsafe { from_ffi(array, &schema) }.map_err(|e| PyValueError::new_err(e.to_string()))?;
    let num: Vec<&str> = numeric.iter().map(String::as_str).collect();
    let txt: Vec<&str> = text.iter().map(String::as_str).collect();
    let rows = data.len();
    let out: Extracted = match data.data_type() {
        DataType::Utf8 => {
            let strings = StringArray::from(data);
            py.detach(|| extract(strings.iter(), &num, &txt))
        }
        DataType::LargeUtf8 => {
            let strings = LargeStringArray::from(data);
            py.detach(|| extract(strings.iter(), &num, &txt))
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "features must be a string or large_string array, not {other}"
            )))
        }
    };
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (j, col) in out.numeric.into_iter().enumerate() {
        fields.push(Field::new(format!("n{j}"), DataType::Float64, true));
        columns.push(Arc::new(Float64Array::from(col)));
    }
    for (j, col) in out.text.into_iter().enumerate() {
        fields.push(Field::new(format!("s{j}"), DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(col)));
    }
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((super::to_pyarrow(py, batch)?, out.unsure))
}
