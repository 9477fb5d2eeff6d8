//! otlp-scan: OTLP request bytes -> mlvigil's record tables as Arrow record batches.
//!
//! One pass over the serialized request: the wire format is checked as Python's protobuf
//! checks it ([`wire`]), attribute values get the reference normaliser's semantics
//! ([`value`]), and rows go straight into Arrow column builders ([`tables`]).

pub mod keys;
pub mod logs;
pub mod metrics;
pub mod printable;
pub mod tables;
pub mod traces;
pub mod value;
pub mod wire;

pub use logs::normalise_logs;
pub use metrics::normalise_metrics;
pub use tables::Normalised;
pub use traces::{normalise_traces, Options};
pub use wire::Error;
