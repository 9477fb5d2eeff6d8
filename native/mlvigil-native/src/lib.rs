//! `mlvigil_native`: the Python face of otlp-scan. OTLP request bytes in; the record
//! tables out as `pyarrow.RecordBatch`es (moved across the Arrow C data interface, no
//! copy), with the OTLP partial-success tally. The GIL is released while scanning.
//! `Forest`: tree-eval's LightGBM tree ensemble, applied to a float64 array without the GIL.

use arrow_array::ffi::{to_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::{Array, RecordBatch, StructArray};
use otlp_scan::{normalise_logs as scan_logs, normalise_metrics as scan_metrics};
use otlp_scan::{normalise_traces as scan_traces, Error, Normalised, Options};
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};
use tree_eval::{predict_each, Child, Forest, LastRows, Missing, Split, Test, Tree};

mod features;

create_exception!(
    mlvigil_native,
    InvalidRequest,
    PyValueError,
    "The bytes are not a valid OTLP export request."
);
create_exception!(
    mlvigil_native,
    TooLarge,
    PyValueError,
    "More items in the request than ingest.max_items_per_request allows."
);
create_exception!(
    mlvigil_native,
    Unsupported,
    PyException,
    "A valid request holding a rare shape the native normaliser does not map; use the reference normaliser."
);

/// A request body: one bytes object, or the chunks it arrived in (an HTTP body as read),
/// joined here without the GIL rather than in Python with it.
#[derive(FromPyObject)]
enum Body {
    Whole(PyBackedBytes),
    Chunks(Vec<PyBackedBytes>),
}

impl Body {
    /// The bytes, joining chunks into `joined` when there are several.
    fn bytes<'a>(&'a self, joined: &'a mut Vec<u8>) -> &'a [u8] {
        match self {
            Body::Whole(b) => b,
            Body::Chunks(c) if c.len() == 1 => &c[0],
            Body::Chunks(c) => {
                joined.reserve_exact(c.iter().map(|b| b.len()).sum());
                for b in c {
                    joined.extend_from_slice(b);
                }
                joined
            }
        }
    }
}

fn to_pyarrow<'py>(py: Python<'py>, batch: RecordBatch) -> PyResult<Bound<'py, PyAny>> {
    let data = StructArray::from(batch).into_data();
    let (array, schema) = to_ffi(&data).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let array: *mut FFI_ArrowArray = Box::into_raw(Box::new(array));
    let schema: *mut FFI_ArrowSchema = Box::into_raw(Box::new(schema));
    let result = py
        .import("pyarrow")?
        .getattr("RecordBatch")?
        .call_method1("_import_from_c", (array as usize, schema as usize));
    // pyarrow moved (released) both structs, also on failure; free the boxes only.
    unsafe {
        drop(Box::from_raw(array));
        drop(Box::from_raw(schema));
    }
    result
}

fn to_python<'py>(py: Python<'py>, out: Normalised) -> PyResult<Bound<'py, PyAny>> {
    let reasons = PyDict::new(py);
    for (reason, n) in &out.reasons {
        reasons.set_item(reason, n)?;
    }
    let tables = PyDict::new(py);
    for (name, batch) in out.tables {
        tables.set_item(name, to_pyarrow(py, batch)?)?;
    }
    Ok((out.received, out.rejected, reasons, tables)
        .into_pyobject(py)?
        .into_any())
}

/// A request's tables as one write-ahead log record payload (wal-record), made while the
/// GIL is still released.
struct Logged {
    received: u64,
    rejected: u64,
    reasons: Vec<(String, u64)>,
    payload: wal_record::Payload,
}

fn to_log_record(out: Normalised) -> Result<Logged, String> {
    let payload =
        wal_record::encode(out.tables.iter().map(|(name, batch)| (&**name, batch))).map_err(|e| e.to_string())?;
    Ok(Logged {
        received: out.received,
        rejected: out.rejected,
        reasons: out.reasons.into_iter().collect(),
        payload,
    })
}

fn logged_to_python<'py>(py: Python<'py>, out: Logged) -> PyResult<Bound<'py, PyAny>> {
    let reasons = PyDict::new(py);
    for (reason, n) in &out.reasons {
        reasons.set_item(reason, n)?;
    }
    let payload = PyBytes::new(py, &out.payload.bytes);
    Ok((out.received, out.rejected, reasons, (payload, out.payload.crc))
        .into_pyobject(py)?
        .into_any())
}

/// The scan's outcome as Python sees it: with `log_record`, the tables as one write-ahead
/// log payload `(bytes, crc32)` instead of RecordBatches (encoded without the GIL).
fn scanned<'py>(
    py: Python<'py>,
    log_record: bool,
    scan: impl FnOnce() -> Result<Normalised, Error> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    if !log_record {
        return result(py, py.detach(scan));
    }
    match py.detach(|| scan().map(to_log_record)) {
        Ok(Ok(out)) => logged_to_python(py, out),
        Ok(Err(m)) => Err(PyValueError::new_err(m)),
        Err(e) => result(py, Err(e)),
    }
}

/// normalise_traces(body, keep_llm_content=False, keep_raw_spans=True, max_content_chars=8192,
/// max_items=100000, log_record=False)
/// -> (received, rejected, {reason: count}, {table: pyarrow.RecordBatch})
///
/// `body` is bytes or a list of bytes (the chunks of one request, joined without the GIL).
/// With log_record=True the last element is the write-ahead log payload of the tables with
/// rows instead, `(bytes, crc32)` (empty bytes when none has rows). Raises InvalidRequest for
/// bytes protobuf refuses, Unsupported for a shape to hand to the reference normaliser.
#[pyfunction]
#[pyo3(signature = (body, keep_llm_content=false, keep_raw_spans=true, max_content_chars=8192, max_items=100_000, log_record=false))]
fn normalise_traces<'py>(
    py: Python<'py>,
    body: Body,
    keep_llm_content: bool,
    keep_raw_spans: bool,
    max_content_chars: usize,
    max_items: usize,
    log_record: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = Options {
        keep_llm_content,
        keep_raw_spans,
        max_content_chars,
        max_items,
    };
    scanned(py, log_record, || scan_traces(body.bytes(&mut Vec::new()), &opts))
}

fn result<'py>(py: Python<'py>, r: Result<Normalised, Error>) -> PyResult<Bound<'py, PyAny>> {
    match r {
        Ok(out) => to_python(py, out),
        Err(Error::Invalid(m)) => Err(InvalidRequest::new_err(m)),
        Err(Error::Unsupported(m)) => Err(Unsupported::new_err(m)),
        Err(Error::TooLarge(m)) => Err(TooLarge::new_err(m)),
    }
}

/// normalise_metrics(body, max_items=100000, log_record=False)
/// -> (received, rejected, {reason: count}, {table: pyarrow.RecordBatch} | (bytes, crc32))
#[pyfunction]
#[pyo3(signature = (body, max_items=100_000, log_record=false))]
fn normalise_metrics<'py>(
    py: Python<'py>,
    body: Body,
    max_items: usize,
    log_record: bool,
) -> PyResult<Bound<'py, PyAny>> {
    scanned(py, log_record, || scan_metrics(body.bytes(&mut Vec::new()), max_items))
}

/// normalise_logs(body, max_items=100000, log_record=False)
/// -> (received, rejected, {reason: count}, {table: pyarrow.RecordBatch} | (bytes, crc32))
#[pyfunction]
#[pyo3(signature = (body, max_items=100_000, log_record=false))]
fn normalise_logs<'py>(py: Python<'py>, body: Body, max_items: usize, log_record: bool) -> PyResult<Bound<'py, PyAny>> {
    scanned(py, log_record, || scan_logs(body.bytes(&mut Vec::new()), max_items))
}

/// crc32(data) -> int: CRC-32 of a bytes-like object as zlib.crc32 computes it (carry-less
/// multiplication where the CPU has it; the GIL released for large inputs).
#[pyfunction]
fn crc32(py: Python<'_>, data: PyBuffer<u8>) -> PyResult<u32> {
    if !data.is_c_contiguous() {
        return Err(PyValueError::new_err("crc32 needs a contiguous buffer"));
    }
    // SAFETY: a contiguous u8 buffer of len_bytes() bytes held by `data` for this call; the
    // exporter (bytes, or a log read buffer) is not resized while we hold the view.
    let bytes = unsafe { std::slice::from_raw_parts(data.buf_ptr() as *const u8, data.len_bytes()) };
    if bytes.len() < 64 * 1024 {
        return Ok(wal_record::crc32(bytes));
    }
    let addr = bytes.as_ptr() as usize;
    let len = bytes.len();
    // SAFETY: as above; the slice is rebuilt on the other side of detach (raw pointers are not Send).
    Ok(py.detach(move || wal_record::crc32(unsafe { std::slice::from_raw_parts(addr as *const u8, len) })))
}

/// Scan only (no Python objects built): the number of rows, for measuring the scanner.
#[pyfunction]
#[pyo3(signature = (body, keep_llm_content=false, keep_raw_spans=true, max_content_chars=8192))]
fn scan_traces_count(
    py: Python<'_>,
    body: PyBackedBytes,
    keep_llm_content: bool,
    keep_raw_spans: bool,
    max_content_chars: usize,
) -> PyResult<usize> {
    let opts = Options {
        keep_llm_content,
        keep_raw_spans,
        max_content_chars,
        max_items: usize::MAX,
    };
    match py.detach(|| scan_traces(&body, &opts)) {
        Ok(out) => Ok(out.tables.iter().map(|(_, b)| b.num_rows()).sum()),
        Err(Error::Invalid(m)) => Err(InvalidRequest::new_err(m)),
        Err(Error::Unsupported(m)) => Err(Unsupported::new_err(m)),
        Err(Error::TooLarge(m)) => Err(TooLarge::new_err(m)),
    }
}

/// One tree as Python hands it over: per split its feature, threshold, decision code
/// (bits 0-1 missing type: 0 None, 1 Zero, 2 NaN; bit 2 default left; bit 3 categorical),
/// left and right child (LightGBM's: a split index, or -1 - leaf index), category list
/// (categorical splits; empty otherwise); then the leaf values.
type TreeArrays = (
    Vec<usize>,
    Vec<f64>,
    Vec<u8>,
    Vec<i64>,
    Vec<i64>,
    Vec<Vec<u32>>,
    Vec<f64>,
);

fn tree_from(t: usize, (feature, threshold, decision, left, right, categories, leaves): TreeArrays) -> PyResult<Tree> {
    let n = feature.len();
    if [
        threshold.len(),
        decision.len(),
        left.len(),
        right.len(),
        categories.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        return Err(PyValueError::new_err(format!(
            "tree {t}: the split arrays differ in length"
        )));
    }
    let child = |c: i64| {
        if c >= 0 {
            Child::Split(c as usize)
        } else {
            Child::Leaf((-1 - c) as usize)
        }
    };
    let mut splits = Vec::with_capacity(n);
    for (i, categories) in categories.into_iter().enumerate() {
        let d = decision[i];
        let test = if d & 8 != 0 {
            Test::Categorical { categories }
        } else {
            let missing = match d & 3 {
                0 => Missing::None,
                1 => Missing::Zero,
                2 => Missing::NaN,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "tree {t}, split {i}: missing type code 3"
                    )))
                }
            };
            Test::Numerical {
                threshold: threshold[i],
                missing,
                default_left: d & 4 != 0,
            }
        };
        splits.push(Split {
            feature: feature[i],
            test,
            left: child(left[i]),
            right: child(right[i]),
        });
    }
    Ok(Tree { splits, leaves })
}

/// Forest(trees, average_output=False): LightGBM's trees (detectors/estimation/forest.py
/// builds the arrays from `Booster.dump_model()`), applied as LightGBM's predictor does.
#[pyclass(frozen, name = "Forest", module = "mlvigil_native")]
struct PyForest {
    inner: Forest,
}

#[pymethods]
impl PyForest {
    #[new]
    #[pyo3(signature = (trees, average_output=false))]
    fn new(trees: Vec<TreeArrays>, average_output: bool) -> PyResult<Self> {
        let trees = trees
            .into_iter()
            .enumerate()
            .map(|(t, a)| tree_from(t, a))
            .collect::<PyResult<Vec<_>>>()?;
        let inner = Forest::new(&trees, average_output).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyForest { inner })
    }

    #[getter]
    fn n_trees(&self) -> usize {
        self.inner.n_trees()
    }

    #[getter]
    fn n_features(&self) -> usize {
        self.inner.n_features()
    }

    /// Whether the trees are applied by QuickScorer (every split a plain `<=`, at most 32
    /// leaves a tree, an AVX2 CPU) rather than walked: the same predictions either way.
    #[getter]
    fn quick_scorer(&self) -> bool {
        self.inner.is_quick_scorer()
    }

    /// predict(x, out, threads=0): the raw score of each row of `x` (2-D float64, any
    /// layout) into `out` (1-D float64, writable, one per row), on `threads` threads
    /// (0: one per core, as long as each has at least tree_eval::MIN_ROWS_PER_THREAD rows).
    /// The scores are the same, bit for bit, for every thread count.
    #[pyo3(signature = (x, out, threads=0))]
    fn predict(&self, py: Python<'_>, x: PyBuffer<f64>, out: PyBuffer<f64>, threads: usize) -> PyResult<()> {
        if x.dimensions() != 2 || out.dimensions() != 1 || out.readonly() {
            return Err(PyValueError::new_err(
                "predict needs a 2-D float64 x and a writable 1-D float64 out",
            ));
        }
        let (rows, cols) = (x.shape()[0], x.shape()[1]);
        if out.shape()[0] != rows {
            return Err(PyValueError::new_err(format!(
                "out has {} places for {rows} rows",
                out.shape()[0]
            )));
        }
        // A copy, so that nothing Python does while the GIL is released can change the input.
        let values = x.to_vec(py)?;
        let mut result = vec![0.0; rows];
        py.detach(|| self.inner.predict_on(&values, cols, &mut result, threads))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        out.copy_from_slice(py, &result)
    }
}

/// predict_forests(forests, x, out, threads=0): each Forest's raw score of each row of `x`
/// (2-D float64, any layout) into its row of `out` (2-D float64, writable, one row per
/// forest, one column per row of `x`), on `threads` threads as `Forest.predict`: one copy of
/// the input and one start of the threads for all the forests. The scores are each forest's
/// `predict`, bit for bit.
#[pyfunction]
#[pyo3(signature = (forests, x, out, threads=0))]
fn predict_forests(
    py: Python<'_>,
    forests: Vec<Bound<'_, PyForest>>,
    x: PyBuffer<f64>,
    out: PyBuffer<f64>,
    threads: usize,
) -> PyResult<()> {
    let forests: Vec<&Forest> = forests.iter().map(|f| &f.get().inner).collect();
    predict_into(py, "predict_forests", forests.len(), x, out, |values, cols, result| {
        predict_each(&forests, values, cols, result, threads)
    })
}

/// The checks and copies of `predict_forests` and `Forests.predict` around `apply`.
fn predict_into(
    py: Python<'_>,
    name: &str,
    n_forests: usize,
    x: PyBuffer<f64>,
    out: PyBuffer<f64>,
    apply: impl FnOnce(&[f64], usize, &mut [f64]) -> Result<(), tree_eval::Error> + Send,
) -> PyResult<()> {
    if x.dimensions() != 2 || out.dimensions() != 2 || out.readonly() {
        return Err(PyValueError::new_err(format!(
            "{name} needs a 2-D float64 x and a writable 2-D float64 out"
        )));
    }
    let (rows, cols) = (x.shape()[0], x.shape()[1]);
    if out.shape() != [n_forests, rows] {
        return Err(PyValueError::new_err(format!(
            "out has shape {:?}; {n_forests} forests and {rows} rows need ({n_forests}, {rows})",
            out.shape(),
        )));
    }
    // A copy, so that nothing Python does while the GIL is released can change the input.
    let values = x.to_vec(py)?;
    let mut result = vec![0.0; n_forests * rows];
    py.detach(|| apply(&values, cols, &mut result))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    out.copy_from_slice(py, &result)
}

/// Forests(forests): Forests applied to the same rows together (tree_eval::Forests): where
/// every one is applied by QuickScorer, in one joint layout (each row's value of a feature
/// read once, a threshold several share tested once). `predict` is `predict_forests`'s, bit
/// for bit.
#[pyclass(frozen, name = "Forests", module = "mlvigil_native")]
struct PyForests {
    inner: tree_eval::Forests,
}

#[pymethods]
impl PyForests {
    #[new]
    fn new(forests: Vec<Bound<'_, PyForest>>) -> Self {
        PyForests {
            inner: tree_eval::Forests::new(forests.iter().map(|f| f.get().inner.clone()).collect()),
        }
    }

    fn __len__(&self) -> usize {
        self.inner.forests().len()
    }

    /// Whether the forests share one QuickScorer layout (else each is applied alone).
    #[getter]
    fn joint(&self) -> bool {
        self.inner.is_joint()
    }

    /// predict(x, out, threads=0): as predict_forests(these forests, x, out, threads).
    #[pyo3(signature = (x, out, threads=0))]
    fn predict(&self, py: Python<'_>, x: PyBuffer<f64>, out: PyBuffer<f64>, threads: usize) -> PyResult<()> {
        let inner = &self.inner;
        predict_into(py, "predict", inner.forests().len(), x, out, |values, cols, result| {
            inner.predict_on(values, cols, result, threads)
        })
    }
}

/// LastRows(slot_bits=16): the rows of the last window, to find in the next (tree_eval::last_rows; DLE's
/// LossCache keeps each row's predicted loss for one window).
#[pyclass(name = "LastRows", module = "mlvigil_native")]
struct PyLastRows {
    inner: LastRows,
}

#[pymethods]
impl PyLastRows {
    #[new]
    #[pyo3(signature = (slot_bits=tree_eval::last_rows::SLOT_BITS))]
    fn new(slot_bits: u32) -> Self {
        PyLastRows {
            inner: LastRows::with_slot_bits(slot_bits),
        }
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// match_and_keep(x, found): for each row of `x` (2-D float64, any layout), the index
    /// of an equal row (every value ==; a row with a NaN never is) among the last call's
    /// rows, or -1, into `found` (writable 1-D int64, one per row); then keeps `x`'s rows
    /// (a copy) as the last. Rows of another width than the last call's find none.
    fn match_and_keep(&mut self, py: Python<'_>, x: PyBuffer<f64>, found: PyBuffer<i64>) -> PyResult<()> {
        if x.dimensions() != 2 || found.dimensions() != 1 || found.readonly() {
            return Err(PyValueError::new_err(
                "match_and_keep needs a 2-D float64 x and a writable 1-D int64 found",
            ));
        }
        let (rows, cols) = (x.shape()[0], x.shape()[1]);
        if found.shape()[0] != rows {
            return Err(PyValueError::new_err(format!(
                "found has {} places for {rows} rows",
                found.shape()[0]
            )));
        }
        // In place where the arrays are C-contiguous (DLE's are): the GIL is held throughout,
        // so nothing changes them meanwhile; else through copies.
        let copied;
        let values: &[f64] = if x.is_c_contiguous() {
            // SAFETY: a C-contiguous buffer of rows * cols f64 values, alive and unchanged
            // while `x` is held with the GIL.
            unsafe { std::slice::from_raw_parts(x.buf_ptr() as *const f64, rows * cols) }
        } else {
            copied = x.to_vec(py)?;
            &copied
        };
        if found.is_c_contiguous() && !found.readonly() {
            // SAFETY: as `x`; writable, and no other reference to it is live in this call.
            let out = unsafe { std::slice::from_raw_parts_mut(found.buf_ptr() as *mut i64, rows) };
            return self
                .inner
                .match_and_keep(values, cols, out)
                .map_err(|e| PyValueError::new_err(e.to_string()));
        }
        let mut result = vec![-1i64; rows];
        self.inner
            .match_and_keep(values, cols, &mut result)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        found.copy_from_slice(py, &result)
    }
}

/// concat_parquet(inputs, output) -> int: the Parquet files ``inputs`` (one schema) joined
/// into a new file ``output`` with their column chunks copied as they are (crate
/// parquet-concat), fsynced; returns the rows written. On an error ``output`` is removed. The GIL is released. OSError for a
/// file that cannot be read or written, ValueError for inputs that are not Parquet files
/// of one schema.
#[pyfunction]
fn concat_parquet(py: Python<'_>, inputs: Vec<String>, output: String) -> PyResult<u64> {
    let result = py.detach(|| -> Result<u64, parquet_concat::Error> {
        let file = std::fs::File::create_new(&output)?;
        let written = parquet_concat::concat(&inputs, std::io::BufWriter::with_capacity(1 << 20, &file))
            .and_then(|rows| Ok(file.sync_data().map(|_| rows)?));
        if written.is_err() {
            let _ = std::fs::remove_file(&output); // nothing half-written is left behind
        }
        written
    });
    result.map_err(|e| match e {
        parquet_concat::Error::Io(e) => PyErr::from(e),
        parquet_concat::Error::Parquet(e) => PyValueError::new_err(e.to_string()),
    })
}

#[pymodule]
fn mlvigil_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(normalise_traces, m)?)?;
    m.add_function(wrap_pyfunction!(scan_traces_count, m)?)?;
    m.add_function(wrap_pyfunction!(normalise_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(normalise_logs, m)?)?;
    m.add_function(wrap_pyfunction!(crc32, m)?)?;
    m.add_function(wrap_pyfunction!(concat_parquet, m)?)?;
    m.add_class::<PyForest>()?;
    m.add_function(wrap_pyfunction!(predict_forests, m)?)?;
    m.add_class::<PyLastRows>()?;
    m.add_class::<PyForests>()?;
    m.add_function(wrap_pyfunction!(features::extract_features, m)?)?;
    m.add("InvalidRequest", m.py().get_type::<InvalidRequest>())?;
    m.add("Unsupported", m.py().get_type::<Unsupported>())?;
    m.add("TooLarge", m.py().get_type::<TooLarge>())?;
    // The Unicode version of the repr table: must be the running Python's (tests check).
    m.add("UNICODE_VERSION", otlp_scan::printable::UNICODE_VERSION)?;
    Ok(())
}
