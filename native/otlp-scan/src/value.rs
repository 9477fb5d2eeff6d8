//! Attribute values with the semantics of the reference normaliser (collector/attributes.py):
//! `value_of` (AnyValue -> Python value), `json_text` (Python's `json.dumps` with the
//! project's options), `str()`/`repr()`, `float(str)` and truthiness, each exactly as Python
//! computes them for the values OTLP can carry. What cannot be matched exactly here (text
//! whose `repr` needs Unicode tables, huge JSON integers, lone surrogates) is
//! [`Error::Unsupported`], never a silent difference.

use std::borrow::Cow;

use crate::wire::{Error, Res};

/// A decoded value: an AnyValue (`value_of`), or a JSON document (`json.loads`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Val<'a> {
    #[default]
    None,
    Str(Cow<'a, str>),
    /// An AnyValue's bytes_value: `value_of` makes it hex text, but its `string_value` is "".
    Hex(String),
    Bool(bool),
    Int(i64),
    /// A JSON integer outside i64 (its canonical digits).
    BigInt(String),
    Double(f64),
    List(Vec<Val<'a>>),
    /// Boxed: a value is then 32 bytes, and values are moved a lot (attributes, lists).
    Dict(Box<Dict<'a>>),
}

/// A Python dict built by assignment: a repeated key keeps its first position, last value.
/// Small dicts are searched linearly; from [`INDEX_AT`] entries on, through an
/// open-addressing index of FNV-1a hashes (span attributes are looked up dozens of times).
#[derive(Debug, Clone, Default)]
pub struct Dict<'a> {
    pub entries: Vec<(Cow<'a, str>, Val<'a>)>,
    /// entry index + 1 (0: empty); length a power of two, at least twice the entries.
    slots: Vec<u32>,
    /// Bit (len % 64) set for every key length present: most lookups miss, and most
    /// misses end here without hashing.
    lengths: u64,
    /// For a dict made by [`Dict::indexed`]: entry index + 1 of each key of
    /// [`crate::keys::KNOWN`] present (0: absent); empty otherwise.
    known: Vec<u32>,
    /// After [`Dict::refill`]: the entry index of each pair it was given (empty otherwise).
    fill: Vec<u32>,
}

impl PartialEq for Dict<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

const INDEX_AT: usize = 8;

/// An empty vector with the memory of `v`: the same layout under another lifetime, so the
/// in-place `collect` keeps the allocation (tested in traces.rs). Scratch memory kept from
/// item to item or request to request goes through here, since what it held borrowed the
/// item or the request.
pub fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

thread_local! {
    /// Emptied list vectors, for the next ArrayValues decoded on this thread (a list per
    /// span is common: finish reasons). Filled by [`keep_list`].
    static LISTS: std::cell::RefCell<Vec<Vec<Val<'static>>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many vectors of at most [`POOLED_LIST_CAPACITY`] values are kept a thread.
const POOLED_LISTS: usize = 4096;
const POOLED_LIST_CAPACITY: usize = 8;

/// An empty vector for a list: a kept one when there is one.
pub fn new_list<'a>() -> Vec<Val<'a>> {
    LISTS
        .with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
        .map(recycle)
        .unwrap_or_default()
}

/// Keep the lists among these values (now emptied) for [`new_list`].
pub fn keep_lists<'x, 'a: 'x>(values: impl Iterator<Item = &'x mut Val<'a>>) {
    LISTS.with(|p| {
        let Ok(mut pool) = p.try_borrow_mut() else { return };
        for v in values {
            if let Val::List(items) = v {
                if pool.len() < POOLED_LISTS && items.capacity() <= POOLED_LIST_CAPACITY {
                    pool.push(recycle(std::mem::take(items)));
                }
            }
        }
    })
}

/// A fast hash of a key, 8 bytes at a time (keys are short; collisions cost one compare).
#[inline]
pub fn key_hash(key: &str) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let b = key.as_bytes();
    let mut h = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes(c.try_into().unwrap());
        h = (h ^ v).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(buf)).wrapping_mul(K).rotate_left(29);
    }
    h ^ (h >> 32)
}

impl<'a> Dict<'a> {
    pub fn new() -> Self {
        Dict {
            entries: Vec::new(),
            slots: Vec::new(),
            lengths: 0,
            known: Vec::new(),
            fill: Vec::new(),
        }
    }

    /// An empty dict with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Dict {
            entries: Vec::with_capacity(n),
            slots: Vec::new(),
            lengths: 0,
            known: Vec::new(),
            fill: Vec::new(),
        }
    }

    /// An empty dict indexed from the first entry (span attributes: usually more than
    /// [`INDEX_AT`] entries, so the linear phase and the first rebuild are waste).
    pub fn indexed(n: usize) -> Self {
        Dict {
            entries: Vec::with_capacity(n),
            slots: vec![0; (4 * n).next_power_of_two().max(16)],
            lengths: 0,
            known: vec![0; crate::keys::NK],
            fill: Vec::new(),
        }
    }

    /// Empty the dict and keep its memory (a dict refilled item by item). An index grown
    /// for a large item goes back to 128 slots, so that clearing stays cheap.
    pub fn clear(&mut self) {
        self.entries.clear();
        let keep = self.slots.len().min(128);
        self.slots.truncate(keep);
        self.slots.fill(0);
        self.known.fill(0);
        self.lengths = 0;
        self.fill.clear();
    }

    /// This dict's memory, emptied, for values of another lifetime (a dict kept between
    /// requests).
    pub fn recycle<'b>(mut self) -> Dict<'b> {
        self.clear();
        Dict {
            entries: recycle(self.entries),
            slots: self.slots,
            lengths: 0,
            known: self.known,
            fill: self.fill,
        }
    }

    pub fn insert(&mut self, key: Cow<'a, str>, value: Val<'a>) {
        self.fill.clear();
        self.insert_at(key, value);
    }

    /// Empty the dict and insert `pairs` (their values taken, left `Val::None`). When the
    /// keys are those of the previous refill, in the same order, the dict already holds
    /// those keys at the same places, so only the values are replaced: no key is hashed
    /// or looked up. Consecutive spans of one instrumentation usually have the same keys
    /// (a span's attribute dict is refilled span by span).
    pub fn refill(&mut self, pairs: &mut [(&'a str, Val<'a>)]) {
        // Comparing each key to the key of the entry it went to last time is comparing the
        // two key sequences: the previous one is exactly those entries' keys.
        let same = self.fill.len() == pairs.len()
            && pairs
                .iter()
                .zip(&self.fill)
                .all(|((k, _), &e)| *self.entries[e as usize].0 == **k);
        if same {
            for ((_, v), &e) in pairs.iter_mut().zip(&self.fill) {
                // In order: a repeated key ends with its last value, as `insert` leaves it.
                self.entries[e as usize].1 = std::mem::take(v);
            }
            return;
        }
        self.clear();
        for (k, v) in pairs.iter_mut() {
            let e = self.insert_at(Cow::Borrowed(*k), std::mem::take(v));
            self.fill.push(e as u32);
        }
    }

    /// `insert`, giving the index of the entry that holds the key.
    fn insert_at(&mut self, key: Cow<'a, str>, value: Val<'a>) -> usize {
        self.lengths |= 1u64 << (key.len() % 64);
        if self.slots.is_empty() {
            if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
                self.entries[i].1 = value;
                return i;
            }
            self.entries.push((key, value));
            if self.entries.len() >= INDEX_AT {
                self.rebuild(64);
            }
            return self.entries.len() - 1;
        }
        let mask = self.slots.len() - 1;
        let hash = key_hash(&key);
        let mut s = hash as usize & mask;
        loop {
            match self.slots[s] {
                0 => break,
                i if self.entries[i as usize - 1].0 == key => {
                    self.entries[i as usize - 1].1 = value;
                    return i as usize - 1;
                }
                _ => s = (s + 1) & mask,
            }
        }
        if !self.known.is_empty() {
            if let Some(id) = crate::keys::known_id(&key, hash) {
                self.known[id] = self.entries.len() as u32 + 1;
            }
        }
        self.entries.push((key, value));
        if 2 * self.entries.len() > self.slots.len() {
            self.rebuild(self.slots.len() * 2);
        } else {
            self.slots[s] = self.entries.len() as u32;
        }
        self.entries.len() - 1
    }

    fn rebuild(&mut self, size: usize) {
        self.slots.clear();
        self.slots.resize(size, 0);
        for i in 0..self.entries.len() {
            self.place(i);
        }
    }

    #[inline]
    fn place(&mut self, i: usize) {
        let mask = self.slots.len() - 1;
        let mut s = key_hash(&self.entries[i].0) as usize & mask;
        while self.slots[s] != 0 {
            s = (s + 1) & mask;
        }
        self.slots[s] = i as u32 + 1;
    }

    #[inline]
    fn position(&self, key: &str) -> Option<usize> {
        if self.lengths & (1u64 << (key.len() % 64)) == 0 {
            return None;
        }
        if self.slots.is_empty() {
            return self.entries.iter().position(|(k, _)| k == key);
        }
        let mask = self.slots.len() - 1;
        let mut s = key_hash(key) as usize & mask;
        loop {
            match self.slots[s] {
                0 => return None,
                i => {
                    if self.entries[i as usize - 1].0 == key {
                        return Some(i as usize - 1);
                    }
                }
            }
            s = (s + 1) & mask;
        }
    }

    /// The value of a present key (which may be `Val::None`).
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Val<'a>> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    /// The value of a present key (which may be `Val::None`), found by id where the dict
    /// records known keys.
    #[inline]
    pub fn get_key(&self, k: &crate::keys::Key) -> Option<&Val<'a>> {
        if !self.known.is_empty() && k.id != crate::keys::NONE {
            return match self.known[k.id as usize] {
                0 => None,
                i => Some(&self.entries[i as usize - 1].1),
            };
        }
        self.get(k.name)
    }

    #[inline]
    pub fn contains_key(&self, k: &crate::keys::Key) -> bool {
        self.get_key(k).is_some()
    }

    #[inline]
    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_ref())
    }
}

impl<'a> Val<'a> {
    /// Python truthiness.
    pub fn truthy(&self) -> bool {
        match self {
            Val::None => false,
            Val::Str(s) => !s.is_empty(),
            Val::Hex(s) => !s.is_empty(),
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::BigInt(_) => true,
            Val::Double(f) => *f != 0.0,
            Val::List(l) => !l.is_empty(),
            Val::Dict(d) => !d.is_empty(),
        }
    }

    /// The text of a str value (`isinstance(v, str)`), bytes included (value_of makes hex).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Hex(s) => Some(s),
            _ => None,
        }
    }
}

// -- numbers -------------------------------------------------------------------------------

/// A number on its way into an integer column (`get_int`: an int, or a float as sent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    /// Python's `a + b` of two numbers (ints stay exact).
    pub fn plus(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Num::Int(a + b),
            (a, b) => Num::Float(a.as_f64() + b.as_f64()),
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// `float(value)` of a Python value, None where Python raises (TypeError/ValueError) or the
/// value is a bool (`get_float` refuses bools).
pub fn py_float(v: &Val) -> Res<Option<f64>> {
    Ok(match v {
        Val::Bool(_) | Val::None | Val::List(_) | Val::Dict(_) => None,
        Val::Int(i) => Some(*i as f64),
        Val::BigInt(s) => Some(bigint_f64(s)?),
        Val::Double(f) => Some(*f),
        Val::Str(s) => parse_py_float(s)?,
        Val::Hex(s) => parse_py_float(s)?,
    })
}

/// `get_int`'s value: ints and floats as sent, `float(str)` for text.
pub fn py_int_or_float(v: &Val) -> Res<Option<Num>> {
    Ok(match v {
        Val::Int(i) => Some(Num::Int(*i as i128)),
        Val::Double(f) => Some(Num::Float(*f)),
        Val::BigInt(_) => return Err(Error::Unsupported("integer beyond 64 bits")),
        other => py_float(other)?.map(Num::Float),
    })
}

fn bigint_f64(s: &str) -> Res<f64> {
    if s.trim_start_matches('-').len() > 300 {
        // float() of it overflows: Python raises OverflowError, not a mapped case.
        return Err(Error::Unsupported("integer too large for a float"));
    }
    Ok(s.parse::<f64>().unwrap_or(f64::NAN))
}

/// Python's `float(text)`: None where it raises ValueError. Only ASCII text is mapped here
/// (Python also takes Unicode digits and spaces): other text is Unsupported.
pub fn parse_py_float(s: &str) -> Res<Option<f64>> {
    if !s.is_ascii() {
        return Err(Error::Unsupported("non-ASCII text read as a number"));
    }
    let t = s.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1f'));
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let body = &t[i..];
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return Ok(t.to_ascii_lowercase().parse::<f64>().ok());
    }
    // [digits][.digits][e[sign]digits], with '_' only between two digits.
    let mut clean = String::with_capacity(t.len());
    clean.push_str(&t[..i]);
    let digits = |i: &mut usize, clean: &mut String| -> usize {
        let mut n = 0;
        while *i < b.len() {
            let c = b[*i];
            if c.is_ascii_digit() {
                clean.push(c as char);
                n += 1;
                *i += 1;
            } else if c == b'_' && n > 0 && *i + 1 < b.len() && b[*i + 1].is_ascii_digit() {
                *i += 1;
            } else {
                break;
            }
        }
        n
    };
    let int_digits = digits(&mut i, &mut clean);
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        clean.push('.');
        i += 1;
        frac_digits = digits(&mut i, &mut clean);
    }
    if int_digits + frac_digits == 0 {
        return Ok(None);
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        clean.push('e');
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            clean.push(b[i] as char);
            i += 1;
        }
        if digits(&mut i, &mut clean) == 0 {
            return Ok(None);
        }
    }
    if i != b.len() {
        return Ok(None);
    }
    Ok(clean.parse::<f64>().ok())
}

/// Python's `repr(float)` (also `str(float)`).
pub fn float_repr(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("nan");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Python's repr does.
    let e = format!("{:e}", f);
    let (mant, exp) = e.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        let decpt = exp + 1;
        if decpt <= 0 {
            out.push_str("0.");
            for _ in 0..(-decpt) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if decpt as usize >= digits.len() {
            out.push_str(&digits);
            for _ in 0..(decpt as usize - digits.len()) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push('0');
        }
        out.push_str(&a.to_string());
    }
}

// -- str() / repr() --------------------------------------------------------------------------

/// Python's `str(value)`.
pub fn py_str(v: &Val, out: &mut String) -> Res<()> {
    match v {
        Val::Str(s) => out.push_str(s),
        Val::Hex(s) => out.push_str(s),
        _ => py_repr(v, out)?,
    }
    Ok(())
}

/// Python's `repr(value)`.
pub fn py_repr(v: &Val, out: &mut String) -> Res<()> {
    match v {
        Val::None => out.push_str("None"),
        Val::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Val::Int(i) => out.push_str(&i.to_string()),
        Val::BigInt(s) => out.push_str(s),
        Val::Double(f) => float_repr(*f, out),
        Val::Str(s) => repr_str(s, out)?,
        Val::Hex(s) => repr_str(s, out)?,
        Val::List(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(x, out)?;
            }
            out.push(']');
        }
        Val::Dict(d) => {
            out.push('{');
            for (i, (k, x)) in d.entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_str(k, out)?;
                out.push_str(": ");
                py_repr(x, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Python's `repr(str)`: the quote it picks, and its escapes (non-printable characters as
/// `\x`, `\u` or `\U` escapes, by the running Python's Unicode table in [`crate::printable`]).
fn repr_str(s: &str, out: &mut String) -> Res<()> {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x7f || crate::printable::is_printable(c) => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    Ok(())
}

// -- JSON ------------------------------------------------------------------------------------

/// `mlvigil.records.json_text(value, ascii_only=...)`: compact `json.dumps`, NaN and the
/// infinities written as null.
pub fn json_text(v: &Val, ascii_only: bool) -> String {
    let mut out = String::new();
    json_write(v, ascii_only, &mut out);
    out
}

/// `json_text` of a dict.
pub fn dict_json(d: &Dict, ascii_only: bool) -> String {
    let mut out = String::new();
    write_dict(d, ascii_only, &mut out);
    out
}

fn write_dict(d: &Dict, ascii_only: bool, out: &mut String) {
    out.push('{');
    for (i, (k, x)) in d.entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(k, ascii_only, out);
        out.push(':');
        json_write(x, ascii_only, out);
    }
    out.push('}');
}

pub fn json_write(v: &Val, ascii_only: bool, out: &mut String) {
    match v {
        Val::None => out.push_str("null"),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Int(i) => out.push_str(&i.to_string()),
        Val::BigInt(s) => out.push_str(s),
        Val::Double(f) => {
            if f.is_finite() {
                float_repr(*f, out)
            } else {
                out.push_str("null")
            }
        }
        Val::Str(s) => json_str(s, ascii_only, out),
        Val::Hex(s) => json_str(s, ascii_only, out),
        Val::List(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_write(x, ascii_only, out);
            }
            out.push(']');
        }
        Val::Dict(d) => write_dict(d, ascii_only, out),
    }
}

pub fn json_str(s: &str, ascii_only: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ascii_only && (c as u32) >= 0x7f => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The JSON limits of collector/otlp_decode.py's `JsonLimits` defaults.
pub const JSON_MAX_DEPTH: usize = 64;
pub const JSON_MAX_CONTAINERS: usize = 1_000_000;

/// `collector.attributes.parse_json`: Python's `json.loads` within the JSON limits;
/// Ok(None) where Python raises ValueError (not JSON, too deep, too many containers).
pub fn parse_json(text: &str) -> Res<Option<Val<'_>>> {
    let mut p = JsonParser {
        s: text.as_bytes(),
        src: text,
        pos: 0,
        containers: 0,
    };
    p.ws();
    let v = match p.value(1) {
        Ok(v) => v,
        Err(JsonErr::Bad) => return Ok(None),
        Err(JsonErr::Unsupported(m)) => return Err(Error::Unsupported(m)),
    };
    p.ws();
    if p.pos != p.s.len() {
        return Ok(None);
    }
    Ok(Some(v))
}

enum JsonErr {
    Bad,
    Unsupported(&'static str),
}

struct JsonParser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
    containers: usize,
}

impl<'a> JsonParser<'a> {
    fn ws(&mut self) {
        while self.pos < self.s.len() && matches!(self.s[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    fn lit(&mut self, word: &str) -> bool {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn enter(&mut self, depth: usize) -> Result<(), JsonErr> {
        self.containers += 1;
        if depth > JSON_MAX_DEPTH || self.containers > JSON_MAX_CONTAINERS {
            return Err(JsonErr::Bad);
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Val<'a>, JsonErr> {
        let Some(&c) = self.s.get(self.pos) else {
            return Err(JsonErr::Bad);
        };
        match c {
            b'{' => {
                self.enter(depth)?;
                self.pos += 1;
                let mut d = Dict::new();
                self.ws();
                if self.s.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    return Ok(Val::Dict(Box::new(d)));
                }
                loop {
                    self.ws();
                    if self.s.get(self.pos) != Some(&b'"') {
                        return Err(JsonErr::Bad);
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.s.get(self.pos) != Some(&b':') {
                        return Err(JsonErr::Bad);
                    }
                    self.pos += 1;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    d.insert(k, v);
                    self.ws();
                    match self.s.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Val::Dict(Box::new(d)));
                        }
                        _ => return Err(JsonErr::Bad),
                    }
                }
            }
            b'[' => {
                self.enter(depth)?;
                self.pos += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    return Ok(Val::List(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Val::List(items));
                        }
                        _ => return Err(JsonErr::Bad),
                    }
                }
            }
            b'"' => Ok(Val::Str(self.string()?)),
            b'n' if self.lit("null") => Ok(Val::None),
            b't' if self.lit("true") => Ok(Val::Bool(true)),
            b'f' if self.lit("false") => Ok(Val::Bool(false)),
            b'N' if self.lit("NaN") => Ok(Val::Double(f64::NAN)),
            b'I' if self.lit("Infinity") => Ok(Val::Double(f64::INFINITY)),
            b'-' if self.lit("-Infinity") => Ok(Val::Double(f64::NEG_INFINITY)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(JsonErr::Bad),
        }
    }

    fn number(&mut self) -> Result<Val<'a>, JsonErr> {
        let start = self.pos;
        let s = self.s;
        let mut i = self.pos;
        if s[i] == b'-' {
            i += 1;
        }
        match s.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while i < s.len() && s[i].is_ascii_digit() {
                    i += 1;
                }
            }
            _ => return Err(JsonErr::Bad),
        }
        let int_end = i;
        let mut is_float = false;
        if s.get(i) == Some(&b'.') && s.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
            is_float = true;
            i += 1;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
        }
        if matches!(s.get(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(s.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if s.get(j).is_some_and(|c| c.is_ascii_digit()) {
                is_float = true;
                while j < s.len() && s[j].is_ascii_digit() {
                    j += 1;
                }
                i = j;
            }
        }
        let text = &self.src[start..if is_float { i } else { int_end }];
        self.pos = if is_float { i } else { int_end };
        if is_float {
            return Ok(Val::Double(text.parse::<f64>().map_err(|_| JsonErr::Bad)?));
        }
        if let Ok(v) = text.parse::<i64>() {
            return Ok(Val::Int(v));
        }
        if text.len() > 4300 {
            // Python refuses int() of more than 4300 digits with its own ValueError.
            return Err(JsonErr::Unsupported("JSON integer of more than 4300 digits"));
        }
        Ok(Val::BigInt(text.to_string()))
    }

    fn hex4(&mut self) -> Result<u32, JsonErr> {
        let h = self.s.get(self.pos..self.pos + 4).ok_or(JsonErr::Bad)?;
        let mut v = 0u32;
        for &c in h {
            v = v * 16 + (c as char).to_digit(16).ok_or(JsonErr::Bad)?;
        }
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<Cow<'a, str>, JsonErr> {
        self.pos += 1; // the opening quote
        let start = self.pos;
        // Fast path: no escapes.
        while self.pos < self.s.len() {
            let c = self.s[self.pos];
            if c == b'"' {
                let out = &self.src[start..self.pos];
                self.pos += 1;
                return Ok(Cow::Borrowed(out));
            }
            if c == b'\\' {
                break;
            }
            if c < 0x20 {
                return Err(JsonErr::Bad);
            }
            self.pos += 1;
        }
        let mut out = String::from(&self.src[start..self.pos]);
        loop {
            let Some(&c) = self.s.get(self.pos) else {
                return Err(JsonErr::Bad);
            };
            match c {
                b'"' => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    let Some(&e) = self.s.get(self.pos + 1) else {
                        return Err(JsonErr::Bad);
                    };
                    self.pos += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{08}'),
                        b'f' => out.push('\u{0c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let u = self.hex4()?;
                            if (0xd800..0xdc00).contains(&u) {
                                if self.s.get(self.pos..self.pos + 2) == Some(b"\\u") {
                                    let save = self.pos;
                                    self.pos += 2;
                                    let lo = self.hex4()?;
                                    if (0xdc00..0xe000).contains(&lo) {
                                        let cp = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
                                        out.push(char::from_u32(cp).unwrap());
                                        continue;
                                    }
                                    self.pos = save;
                                }
                                return Err(JsonErr::Unsupported("JSON text with a lone surrogate"));
                            }
                            if (0xdc00..0xe000).contains(&u) {
                                return Err(JsonErr::Unsupported("JSON text with a lone surrogate"));
                            }
                            out.push(char::from_u32(u).unwrap());
                        }
                        _ => return Err(JsonErr::Bad),
                    }
                }
                c if c < 0x20 => return Err(JsonErr::Bad),
                _ => {
                    // Copy one UTF-8 character.
                    let rest = &self.src[self.pos..];
                    let ch = rest.chars().next().unwrap();
                    out.push(ch);
                    self.pos += ch.len_utf8();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(f: f64) -> String {
        let mut s = String::new();
        float_repr(f, &mut s);
        s
    }

    #[test]
    fn float_repr_is_pythons() {
        assert_eq!(repr(1.0), "1.0");
        assert_eq!(repr(0.3), "0.3");
        assert_eq!(repr(1e16), "1e+16");
        assert_eq!(repr(1.5e-5), "1.5e-05");
        assert_eq!(repr(0.0001), "0.0001");
        assert_eq!(repr(123456789012345.6), "123456789012345.6");
        assert_eq!(repr(-0.0), "-0.0");
        assert_eq!(repr(1e22), "1e+22");
        assert_eq!(repr(2.5e-300), "2.5e-300");
        assert_eq!(repr(9999999999999998.0), "9999999999999998.0");
    }

    #[test]
    fn float_of_text_is_pythons() {
        let f = |s: &str| parse_py_float(s).unwrap();
        assert_eq!(f(" 1.5 "), Some(1.5));
        assert_eq!(f("1_000"), Some(1000.0));
        assert_eq!(f("1__0"), None);
        assert_eq!(f("_1"), None);
        assert_eq!(f("1."), Some(1.0));
        assert_eq!(f(".5"), Some(0.5));
        assert_eq!(f("."), None);
        assert_eq!(f("1e5"), Some(1e5));
        assert_eq!(f("1e"), None);
        assert_eq!(f("-Infinity"), Some(f64::NEG_INFINITY));
        assert!(f("nan").unwrap().is_nan());
        assert_eq!(f("0x10"), None);
        assert_eq!(f(""), None);
    }

    #[test]
    fn json_round_trip_matches_python_dumps() {
        let v = parse_json(r#" {"a": [1, 2.50, "x\u00e9\ud83d\ude00", null, true], "a": NaN, "b": 1e400} "#)
            .unwrap()
            .unwrap();
        assert_eq!(json_text(&v, true), r#"{"a":null,"b":null}"#);
        let v = parse_json(r#"["\u00e9\ud83d\ude00\u007f", 10000000000000000000000, -0, 1E2]"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            json_text(&v, true),
            r#"["\u00e9\ud83d\ude00\u007f",10000000000000000000000,0,100.0]"#
        );
        assert_eq!(
            json_text(&v, false),
            "[\"\u{e9}\u{1f600}\u{7f}\",10000000000000000000000,0,100.0]"
        );
        assert_eq!(parse_json("[1,]").unwrap(), None);
        assert_eq!(parse_json("01").unwrap(), None);
        assert_eq!(parse_json(&"[".repeat(65)).unwrap(), None);
        assert!(parse_json(&format!("{}{}", "[".repeat(64), "]".repeat(64)))
            .unwrap()
            .is_some());
        assert!(parse_json("\"\\ud800\"").is_err());
    }

    #[test]
    fn repr_is_pythons() {
        let mut s = String::new();
        py_repr(
            &Val::List(vec![
                Val::Str("it's".into()),
                Val::Int(1),
                Val::Double(2.0),
                Val::Bool(true),
                Val::None,
            ]),
            &mut s,
        )
        .unwrap();
        assert_eq!(s, r#"["it's", 1, 2.0, True, None]"#);
        let mut s = String::new();
        py_repr(
            &Val::List(vec![Val::Str("\u{e9}\u{a0}\u{200b}\u{1f600}\u{e0001}".into())]),
            &mut s,
        )
        .unwrap();
        assert_eq!(s, "['\u{e9}\\xa0\\u200b\u{1f600}\\U000e0001']");
    }
}
