//! The protobuf wire format, read once with the checks Python's protobuf (upb) makes, so a
//! request this scanner accepts is exactly one `ParseFromString` accepts.
//!
//! - tags: at most 5 bytes, value below 2^32, field number not 0, wire types 0-5;
//! - varints: at most 10 bytes (bits past 64 dropped, as upb does);
//! - lengths: within the enclosing message;
//! - nesting: at most [`MAX_DEPTH`] messages or groups below the top-level message;
//! - UTF-8: every `string` field of a known message, including fields the normaliser never
//!   reads (unknown fields are skipped unchecked, as upb does);
//! - a known field sent with another wire type is an unknown field (skipped), as in upb.

use std::fmt;

/// Messages or groups nested below the request message (upb's limit in Python protobuf).
pub const MAX_DEPTH: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not a valid message of the request type: the whole request is refused.
    Invalid(String),
    /// Valid, but holds a shape this scanner does not map natively (rare and exotic): the
    /// caller normalises the request with the reference (Python) normaliser instead.
    Unsupported(&'static str),
    /// Valid, but with more items than the request limit (HTTP 413).
    TooLarge(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(m) => write!(f, "invalid protobuf: {m}"),
            Error::Unsupported(m) => write!(f, "not mapped natively: {m}"),
            Error::TooLarge(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Res<T> = Result<T, Error>;

pub fn invalid<T>(msg: &str) -> Res<T> {
    Err(Error::Invalid(msg.to_string()))
}

pub const VARINT: u8 = 0;
pub const I64: u8 = 1;
pub const LEN: u8 = 2;
pub const SGROUP: u8 = 3;
pub const EGROUP: u8 = 4;
pub const I32: u8 = 5;

#[derive(Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    #[inline]
    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    fn byte(&mut self) -> Res<u8> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => invalid("truncated message"),
        }
    }

    /// A varint; one-byte varints (most lengths, enums, small ints) without the loop.
    #[inline(always)]
    pub fn varint(&mut self) -> Res<u64> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(b as u64);
            }
        }
        self.varint_long()
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Res<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        invalid("varint longer than 10 bytes")
    }

    /// (field number, wire type); one-byte tags (fields 1-15, all of OTLP's but a few)
    /// without the loop.
    #[inline(always)]
    pub fn tag(&mut self) -> Res<(u32, u8)> {
        if let Some(&b) = self.buf.get(self.pos) {
            if (8..0x80).contains(&b) {
                self.pos += 1;
                return Ok(((b >> 3) as u32, b & 7));
            }
        }
        self.tag_long()
    }

    #[inline(never)]
    fn tag_long(&mut self) -> Res<(u32, u8)> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                if v > u32::MAX as u64 {
                    return invalid("tag above 2^32");
                }
                let field = (v >> 3) as u32;
                if field == 0 {
                    return invalid("field number 0");
                }
                return Ok((field, (v & 7) as u8));
            }
        }
        invalid("tag longer than 5 bytes")
    }

    #[inline]
    pub fn len_bytes(&mut self) -> Res<&'a [u8]> {
        let n = self.varint()?;
        let rest = (self.buf.len() - self.pos) as u64;
        if n > rest {
            return invalid("length past the end of its message");
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    #[inline]
    pub fn fixed64(&mut self) -> Res<u64> {
        if self.buf.len() - self.pos < 8 {
            return invalid("truncated fixed64");
        }
        let v = u64::from_le_bytes(self.buf[self.pos..self.pos + 8].try_into().unwrap());
        self.pos += 8;
        Ok(v)
    }

    #[inline]
    pub fn fixed32(&mut self) -> Res<u32> {
        if self.buf.len() - self.pos < 4 {
            return invalid("truncated fixed32");
        }
        let v = u32::from_le_bytes(self.buf[self.pos..self.pos + 4].try_into().unwrap());
        self.pos += 4;
        Ok(v)
    }

    #[inline]
    pub fn string(&mut self) -> Res<&'a str> {
        utf8(self.len_bytes()?)
    }

    /// Skip one field's value (an unknown field, or a known one the caller does not read
    /// and that holds no string or message to check). `depth` is the enclosing message's.
    pub fn skip(&mut self, field: u32, wire: u8, depth: u32) -> Res<()> {
        match wire {
            VARINT => self.varint().map(|_| ()),
            I64 => self.fixed64().map(|_| ()),
            LEN => self.len_bytes().map(|_| ()),
            I32 => self.fixed32().map(|_| ()),
            SGROUP => {
                let depth = depth + 1;
                if depth > MAX_DEPTH {
                    return invalid("nested too deeply");
                }
                loop {
                    if self.done() {
                        return invalid("unterminated group");
                    }
                    let (f, w) = self.tag()?;
                    if w == EGROUP {
                        if f != field {
                            return invalid("end-group tag does not match its start");
                        }
                        return Ok(());
                    }
                    self.skip(f, w, depth)?;
                }
            }
            EGROUP => invalid("end-group tag without a start"),
            _ => invalid("invalid wire type"),
        }
    }
}

#[inline]
pub fn utf8(b: &[u8]) -> Res<&str> {
    // Most strings here are short ASCII keys and values: one word-at-a-time high-bit test
    // is cheaper than the general validator's call and set-up.
    if b.len() <= 64 && is_ascii_words(b) {
        // SAFETY: every byte is below 0x80, so the bytes are valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(b) });
    }
    match std::str::from_utf8(b) {
        Ok(s) => Ok(s),
        Err(_) => invalid("string field is not valid UTF-8"),
    }
}

#[inline]
fn is_ascii_words(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(8);
    let mut acc = 0u64;
    for c in &mut chunks {
        acc |= u64::from_le_bytes(c.try_into().unwrap());
    }
    let mut tail = 0u8;
    for &c in chunks.remainder() {
        tail |= c;
    }
    acc & 0x8080_8080_8080_8080 == 0 && tail < 0x80
}

#[inline]
pub fn child_depth(depth: u32) -> Res<u32> {
    if depth + 1 > MAX_DEPTH {
        return invalid("nested too deeply");
    }
    Ok(depth + 1)
}

/// What a known field holds, for checking the messages the normaliser does not read.
#[derive(Clone, Copy)]
pub enum Kind {
    Str,
    Bytes,
    Msg(&'static Schema),
    Varint,
    Fixed64,
    Fixed32,
    /// `repeated double` / `repeated fixed64`: packed (LEN) or not.
    PackedFixed64,
    /// `repeated uint64`: packed (LEN, whole varints) or not.
    PackedVarint,
}

pub struct Schema {
    pub fields: &'static [(u32, Kind)],
}

impl Schema {
    #[inline]
    fn kind(&self, field: u32) -> Option<Kind> {
        self.fields.iter().find(|(f, _)| *f == field).map(|(_, k)| *k)
    }
}

/// Check a message the normaliser does not read: what upb would check when parsing it.
/// `depth` is this message's own depth.
pub fn validate(buf: &[u8], schema: &Schema, depth: u32) -> Res<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        let (field, wire) = r.tag()?;
        check_field(&mut r, schema, field, wire, depth)?;
    }
    Ok(())
}

/// Read and check one field of a message described by `schema` (its tag already read).
pub fn check_field(r: &mut Reader, schema: &Schema, field: u32, wire: u8, depth: u32) -> Res<()> {
    match (schema.kind(field), wire) {
        (Some(Kind::Str), LEN) => {
            r.string()?;
        }
        (Some(Kind::Msg(s)), LEN) => {
            let sub = r.len_bytes()?;
            validate(sub, s, child_depth(depth)?)?;
        }
        (Some(Kind::PackedFixed64), LEN) => {
            let sub = r.len_bytes()?;
            if sub.len() % 8 != 0 {
                return invalid("packed fixed64 field of a length that is not a multiple of 8");
            }
        }
        (Some(Kind::PackedVarint), LEN) => {
            let mut p = Reader::new(r.len_bytes()?);
            while !p.done() {
                p.varint()?;
            }
        }
        _ => r.skip(field, wire, depth)?,
    }
    Ok(())
}

pub static KEY_VALUE: Schema = Schema {
    fields: &[(1, Kind::Str), (2, Kind::Msg(&ANY_VALUE)), (3, Kind::Varint)],
};
pub static ANY_VALUE: Schema = Schema {
    fields: &[
        (1, Kind::Str),
        (2, Kind::Varint),
        (3, Kind::Varint),
        (4, Kind::Fixed64),
        (5, Kind::Msg(&ARRAY_VALUE)),
        (6, Kind::Msg(&KEY_VALUE_LIST)),
        (7, Kind::Bytes),
        (8, Kind::Varint),
    ],
};
pub static ARRAY_VALUE: Schema = Schema {
    fields: &[(1, Kind::Msg(&ANY_VALUE))],
};
pub static KEY_VALUE_LIST: Schema = Schema {
    fields: &[(1, Kind::Msg(&KEY_VALUE))],
};
pub static ENTITY_REF: Schema = Schema {
    fields: &[(1, Kind::Str), (2, Kind::Str), (3, Kind::Str), (4, Kind::Str)],
};
pub static SCOPE: Schema = Schema {
    fields: &[
        (1, Kind::Str),
        (2, Kind::Str),
        (3, Kind::Msg(&KEY_VALUE)),
        (4, Kind::Varint),
    ],
};
pub static LINK: Schema = Schema {
    fields: &[
        (1, Kind::Bytes),
        (2, Kind::Bytes),
        (3, Kind::Str),
        (4, Kind::Msg(&KEY_VALUE)),
        (5, Kind::Varint),
        (6, Kind::Fixed32),
    ],
};

pub static EXEMPLAR: Schema = Schema {
    fields: &[
        (7, Kind::Msg(&KEY_VALUE)),
        (2, Kind::Fixed64),
        (3, Kind::Fixed64),
        (6, Kind::Fixed64),
        (4, Kind::Bytes),
        (5, Kind::Bytes),
    ],
};
pub static BUCKETS: Schema = Schema {
    fields: &[(1, Kind::Varint), (2, Kind::PackedVarint)],
};
pub static VALUE_AT_QUANTILE: Schema = Schema {
    fields: &[(1, Kind::Fixed64), (2, Kind::Fixed64)],
};
/// The fields of each data point kind the normaliser does not read.
pub static NUMBER_POINT_REST: Schema = Schema {
    fields: &[(5, Kind::Msg(&EXEMPLAR))],
};
pub static HISTOGRAM_POINT_REST: Schema = Schema {
    fields: &[
        (6, Kind::PackedFixed64),
        (7, Kind::PackedFixed64),
        (8, Kind::Msg(&EXEMPLAR)),
    ],
};
pub static EXP_HISTOGRAM_POINT_REST: Schema = Schema {
    fields: &[
        (8, Kind::Msg(&BUCKETS)),
        (9, Kind::Msg(&BUCKETS)),
        (11, Kind::Msg(&EXEMPLAR)),
    ],
};
pub static SUMMARY_POINT_REST: Schema = Schema {
    fields: &[(6, Kind::Msg(&VALUE_AT_QUANTILE))],
};

/// The items of a request (spans, data points, log records, with the resource, scope and
/// metric entries around them), counted as collector/otlp_decode.py `count_items` counts
/// them. Past the limit, nothing more is kept (memory stays bounded) but the rest of the
/// request is still checked, so a malformed request is refused as malformed first.
pub struct ItemCount {
    pub n: u64,
    pub max: u64,
}

impl ItemCount {
    pub fn new(max: usize) -> Self {
        ItemCount { n: 0, max: max as u64 }
    }

    /// Count `k` more; whether items may still be kept.
    #[inline]
    pub fn add(&mut self, k: u64) -> bool {
        self.n += k;
        self.n <= self.max
    }

    #[inline]
    pub fn over(&self) -> bool {
        self.n > self.max
    }

    pub fn check(&self) -> Res<()> {
        if self.over() {
            return Err(Error::TooLarge(format!(
                "more than {} items (spans, data points or log records, with the resource and scope entries around them) \
                 in one request; split the export or raise ingest.max_items_per_request",
                self.max
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(b: &[u8]) -> bool {
        validate(b, &SCOPE, 0).is_ok()
    }

    #[test]
    fn tags_and_varints_are_bounded_as_upb_bounds_them() {
        assert!(!ok(&[0x00, 0x01]), "field number 0");
        assert!(!ok(&[0x88, 0x80, 0x80, 0x80, 0x10, 0x00]), "tag above 2^32");
        assert!(ok(&[0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00]), "largest field number");
        assert!(!ok(&[0x8a, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00]), "6-byte tag");
        let mut ten = vec![0x20];
        ten.extend([0xff; 9]);
        ten.push(0x7f);
        assert!(ok(&ten), "10-byte varint");
        let mut eleven = vec![0x20];
        eleven.extend([0xff; 10]);
        eleven.push(0x01);
        assert!(!ok(&eleven), "11-byte varint");
        assert!(!ok(&[0x0c]), "end group without start");
        assert!(!ok(&[0x0e]), "wire type 6");
        assert!(!ok(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x07]), "length past the end");
        assert!(!ok(&[0x79, 1, 2, 3]), "truncated fixed64");
        assert!(!ok(&[0x7b, 0x74]), "group end mismatch");
        assert!(!ok(&[0x7b]), "unterminated group");
        assert!(ok(&[0x7b, 0x7c]), "empty group");
        assert!(ok(&[0x0b, 0x0c]), "known field as a group is unknown");
        assert!(ok(&[0x0a, 0x80, 0x00]), "overlong length varint");
    }

    #[test]
    fn strings_of_known_fields_must_be_utf8() {
        assert!(!ok(&[0x0a, 0x01, 0xff]), "scope name");
        assert!(ok(&[0xfa, 0x01, 0x01, 0xff]), "unknown field 31 is not checked");
        assert!(ok(&[0x08, 0x01]), "name as a varint is an unknown field");
    }

    #[test]
    fn nesting_is_bounded() {
        fn groups(n: usize) -> Vec<u8> {
            let mut v = vec![0x7b; n];
            v.extend(vec![0x7c; n]);
            v
        }
        assert!(validate(&groups(100), &SCOPE, 0).is_ok());
        assert!(validate(&groups(101), &SCOPE, 0).is_err());
    }
}
