//! wal-record: one record's payload for mlvigil's write-ahead log (collector/wal.py), built
//! from Arrow record batches without Python.
//!
//! A payload is a sequence of tables, back to back:
//!
//! ```text
//! name length u16 LE | name (UTF-8) | IPC stream length u32 LE | Arrow IPC stream (uncompressed)
//! ```
//!
//! and the record header the log writes before it carries the payload's CRC-32 (the IEEE
//! polynomial, zlib's `crc32`; computed with carry-less multiplication where the CPU has it),
//! so a payload made here and one made by pyarrow in Python read the same way.

use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::ArrowError;

/// One record's payload and the CRC-32 of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub bytes: Vec<u8>,
    pub crc: u32,
}

/// Why a payload could not be made.
#[derive(Debug)]
pub enum Error {
    /// A table name longer than the u16 length field holds.
    NameTooLong(usize),
    /// An IPC stream longer than the u32 length field holds.
    TableTooLarge(String, usize),
    Arrow(ArrowError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NameTooLong(n) => write!(f, "a table name of {n} bytes (at most 65535)"),
            Error::TableTooLarge(name, n) => write!(f, "table {name}: {n} bytes of Arrow IPC (at most 4 GiB)"),
            Error::Arrow(e) => write!(f, "Arrow IPC: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ArrowError> for Error {
    fn from(e: ArrowError) -> Self {
        Error::Arrow(e)
    }
}

/// The payload of `tables` (in the order given; tables without rows are left out) and its
/// CRC-32. Empty bytes when no table has rows.
pub fn encode<'a>(tables: impl IntoIterator<Item = (&'a str, &'a RecordBatch)>) -> Result<Payload, Error> {
    let tables: Vec<_> = tables.into_iter().filter(|(_, b)| b.num_rows() > 0).collect();
    // The column buffers plus room for the schema and record-batch messages: one allocation.
    let estimate: usize = tables
        .iter()
        .map(|(name, b)| name.len() + 6 + b.get_array_memory_size() + 1024 + 128 * b.num_columns())
        .sum();
    let mut bytes = Vec::with_capacity(estimate);
    for (name, batch) in tables {
        let n = u16::try_from(name.len()).map_err(|_| Error::NameTooLong(name.len()))?;
        bytes.extend_from_slice(&n.to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
        let len_at = bytes.len();
        bytes.extend_from_slice(&[0; 4]);
        let mut writer = StreamWriter::try_new(&mut bytes, batch.schema_ref())?;
        writer.write(batch)?;
        writer.finish()?;
        drop(writer);
        let ipc = bytes.len() - len_at - 4;
        let ipc32 = u32::try_from(ipc).map_err(|_| Error::TableTooLarge(name.to_string(), ipc))?;
        bytes[len_at..len_at + 4].copy_from_slice(&ipc32.to_le_bytes());
    }
    let crc = crc32(&bytes);
    Ok(Payload { bytes, crc })
}

/// CRC-32 (IEEE, as zlib's `crc32`) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The (name, IPC stream) parts of a payload, for tests and tools; None when it is cut short.
pub fn split(mut payload: &[u8]) -> Option<Vec<(&str, &[u8])>> {
    let mut out = Vec::new();
    while !payload.is_empty() {
        let n = u16::from_le_bytes(payload.get(..2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(payload.get(2..2 + n)?).ok()?;
        let len = u32::from_le_bytes(payload.get(2 + n..6 + n)?.try_into().ok()?) as usize;
        let ipc = payload.get(6 + n..6 + n + len)?;
        out.push((name, ipc));
        payload = &payload[6 + n + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow_ipc::reader::StreamReader;
    use std::sync::Arc;

    fn batch(rows: usize) -> RecordBatch {
        let ts: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64 + 0.5)));
        let model: ArrayRef = Arc::new(StringArray::from_iter(
            (0..rows).map(|i| (i % 3 != 0).then(|| format!("m{i}"))),
        ));
        let tokens: ArrayRef = Arc::new(Int64Array::from_iter(
            (0..rows).map(|i| (i % 2 == 0).then_some(i as i64)),
        ));
        RecordBatch::try_from_iter([("ts", ts), ("model", model), ("tokens", tokens)]).unwrap()
    }

    #[test]
    fn the_crc_is_zlibs_crc32() {
        // zlib.crc32(b"123456789") == 0xCBF43926, and of nothing 0
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let p = encode([("llm_calls", &batch(10))]).unwrap();
        assert_eq!(p.crc, crc32(&p.bytes));
    }

    #[test]
    fn each_table_reads_back_from_its_named_ipc_stream() {
        let (a, b) = (batch(100), batch(7));
        let p = encode([("llm_calls", &a), ("spans", &b)]).unwrap();
        let parts = split(&p.bytes).unwrap();
        assert_eq!(
            parts.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["llm_calls", "spans"]
        );
        for ((_, ipc), want) in parts.iter().zip([&a, &b]) {
            let got: Vec<RecordBatch> = StreamReader::try_new(*ipc, None).unwrap().map(|r| r.unwrap()).collect();
            assert_eq!(got.len(), 1);
            assert_eq!(&got[0], want);
        }
    }

    #[test]
    fn tables_without_rows_are_left_out() {
        let p = encode([("labels", &batch(0)), ("llm_calls", &batch(1))]).unwrap();
        assert_eq!(split(&p.bytes).unwrap().len(), 1);
        let none = encode([("labels", &batch(0))]).unwrap();
        assert!(none.bytes.is_empty());
        assert_eq!(none.crc, 0);
    }

    #[test]
    fn a_name_past_the_u16_field_is_refused() {
        let name = "x".repeat(70_000);
        assert!(matches!(
            encode([(name.as_str(), &batch(1))]),
            Err(Error::NameTooLong(70_000))
        ));
    }

    #[test]
    fn a_cut_payload_does_not_split() {
        let p = encode([("llm_calls", &batch(5))]).unwrap();
        assert!(split(&p.bytes[..p.bytes.len() - 1]).is_none());
    }
}
