//! Parquet files of one schema joined into one file, their column chunks copied byte for
//! byte (no decoding, no re-encoding): each input row group becomes a row group of the
//! output, with its statistics, dictionary pages and compression as they were written.
//!
//! This is the compaction of mlvigil's raw span files (`mlvigil/core/store/duckdb/
//! span_files.py`): many small files, one per loader group, become one, so that a query
//! opens fewer files, at the cost of copying bytes (a re-encode through Arrow measured
//! ~3x the CPU of writing the files in the first place). The approach is arrow-rs's
//! `parquet-concat` tool's (`SerializedRowGroupWriter::append_column`).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

/// Why a concatenation failed: the file system's error (a missing input, a full disk), or
/// an input that is not Parquet or not of the first one's schema.
#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    Parquet(ParquetError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Parquet(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<ParquetError> for Error {
    /// The parquet crate wraps the I/O errors of its reads and writes: they stay I/O errors.
    fn from(e: ParquetError) -> Self {
        match e {
            ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
                Ok(io) => Error::Io(*io),
                Err(other) => Error::Parquet(ParquetError::External(other)),
            },
            e => Error::Parquet(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Writes the row groups of `inputs`, in order, to `output` (which must not be one of
/// them) and returns the number of rows written. Every input must have the first one's
/// schema; its key-value metadata (e.g. the Arrow schema a writer stored) is kept.
/// `output` is flushed but not synced: the caller decides about durability.
pub fn concat<P: AsRef<Path>>(inputs: &[P], output: impl Write + Send) -> Result<u64> {
    let Some(first) = inputs.first() else {
        return Err(ParquetError::General("no input file to concatenate".into()).into());
    };
    let opened = inputs
        .iter()
        .map(|path| {
            let file = File::open(path.as_ref())?;
            let metadata = ParquetMetaDataReader::new()
                .with_page_index_policy(PageIndexPolicy::Optional)
                .parse_and_finish(&file)?;
            Ok((file, metadata))
        })
        .collect::<Result<Vec<(File, ParquetMetaData)>>>()?;
    let expected = opened[0].1.file_metadata().schema_descr();
    for ((_, metadata), path) in opened.iter().zip(inputs).skip(1) {
        if metadata.file_metadata().schema_descr().root_schema() != expected.root_schema() {
            return Err(ParquetError::General(format!(
                "{} has another schema than {}",
                path.as_ref().display(),
                first.as_ref().display()
            ))
            .into());
        }
    }
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(output, expected.root_schema_ptr(), props)?;
    for kv in opened[0].1.file_metadata().key_value_metadata().into_iter().flatten() {
        writer.append_key_value_metadata(kv.clone());
    }
    let mut rows = 0u64;
    for (file, metadata) in &opened {
        let page_index = metadata.page_index();
        for (rg_idx, rg) in metadata.row_groups().iter().enumerate() {
            let mut rg_out = writer.next_row_group()?;
            for (col_idx, column) in rg.columns().iter().enumerate() {
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: rg.num_rows() as u64,
                    metadata: column.clone(),
                    // mlvigil's files have no bloom filters
                    bloom_filter: None,
                    column_index: page_index.and_then(|pi| pi.column_index(rg_idx, col_idx)).cloned(),
                    offset_index: page_index.and_then(|pi| pi.offset_index(rg_idx, col_idx)).cloned(),
                };
                rg_out.append_column(file, close)?;
            }
            rg_out.close()?;
            rows += rg.num_rows() as u64;
        }
    }
    writer.close()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use std::path::PathBuf;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("parquet-concat-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn batch(ts: &[f64], names: &[&str]) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("ts", Arc::new(Float64Array::from(ts.to_vec())) as ArrayRef),
            ("name", Arc::new(StringArray::from(names.to_vec())) as ArrayRef),
        ])
        .unwrap()
    }

    fn write(path: &Path, batches: &[RecordBatch]) {
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batches[0].schema(), None).unwrap();
        for b in batches {
            w.write(b).unwrap();
            w.flush().unwrap(); // a row group per batch
        }
        w.close().unwrap();
    }

    fn read(path: &Path) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn rows_and_row_groups_of_every_input_in_order() {
        let d = dir("order");
        let (a, b, out) = (d.join("a.parquet"), d.join("b.parquet"), d.join("out.parquet"));
        write(&a, &[batch(&[1.0, 2.0], &["x", "y"]), batch(&[3.0], &["z"])]);
        write(&b, &[batch(&[4.0, 5.0, 6.0], &["x", "x", "w"])]);
        let rows = concat(&[&a, &b], File::create(&out).unwrap()).unwrap();
        assert_eq!(rows, 6);
        let got = read(&out);
        let ts: Vec<f64> = got
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<Float64Array>().unwrap().values().to_vec())
            .collect();
        assert_eq!(ts, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let names: Vec<String> = got
            .iter()
            .flat_map(|b| {
                let s = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                (0..s.len()).map(|i| s.value(i).to_string()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(names, ["x", "y", "z", "x", "x", "w"]);
        let meta = ParquetMetaDataReader::new().parse_and_finish(&File::open(&out).unwrap()).unwrap();
        assert_eq!(meta.num_row_groups(), 3);
        // the Arrow schema the writer stored is kept, so readers see the same types
        let kv = meta.file_metadata().key_value_metadata().unwrap();
        assert!(kv.iter().any(|kv| kv.key == "ARROW:schema"));
    }

    #[test]
    fn an_input_of_another_schema_is_refused() {
        let d = dir("schema");
        let (a, b, out) = (d.join("a.parquet"), d.join("b.parquet"), d.join("out.parquet"));
        write(&a, &[batch(&[1.0], &["x"])]);
        let other = RecordBatch::try_from_iter([("ts", Arc::new(Int32Array::from(vec![1])) as ArrayRef)]).unwrap();
        write(&b, &[other]);
        let err = concat(&[&a, &b], File::create(&out).unwrap()).unwrap_err();
        assert!(matches!(err, Error::Parquet(_)) && err.to_string().contains("another schema"), "{err}");
    }

    #[test]
    fn no_input_is_an_error_and_a_missing_one_names_itself() {
        let d = dir("missing");
        let none: [&Path; 0] = [];
        assert!(concat(&none, Vec::new()).is_err());
        let err = concat(&[d.join("nope.parquet")], Vec::new()).unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err}");
        assert!(err.to_string().contains("No such file"), "{err}");
    }
}
