//! ExportTraceServiceRequest bytes -> the record tables, in one pass over the bytes.
//!
//! The mapping is the reference normaliser's (collector/normalize.py `normalise_traces`,
//! collector/genai.py, collector/ml.py), rule for rule: the differential tests hold the two
//! equal row for row.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use crate::k;
use crate::keys::{key, Key};
use crate::tables::{
    check_row, Cell, Normalised, TableBuilder, INFERENCES, LABELS, LLM_CALLS, LOGS, METRIC_POINTS, SPANS,
    TRAINING_STEPS,
};
use crate::value::{
    dict_json, json_text, keep_lists, new_list, parse_json, py_float, py_int_or_float, py_str, recycle, Dict, Num, Val,
};
use crate::wire::{
    child_depth, validate, Error, ItemCount, Reader, Res, ENTITY_REF, I32, I64, LEN, LINK, SCOPE, VARINT,
};

#[derive(Debug, Clone)]
pub struct Options {
    pub keep_llm_content: bool,
    pub keep_raw_spans: bool,
    pub max_content_chars: usize,
    /// ingest.max_items_per_request
    pub max_items: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keep_llm_content: false,
            keep_raw_spans: true,
            max_content_chars: 8192,
            max_items: 100_000,
        }
    }
}

// -- decoding --------------------------------------------------------------------------------

pub(crate) fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

/// An AnyValue given as the parts of a merged message (a field sent more than once).
pub(crate) fn any_value<'a>(parts: &[&'a [u8]], depth: u32) -> Res<Val<'a>> {
    let mut kind = 0u32;
    let mut val = Val::None;
    // Made only for a list or kvlist value (most values are neither: an empty Dict still
    // costs its construction and drop on every attribute).
    let mut list: Option<Vec<Val<'a>>> = None;
    let mut dict: Option<Dict<'a>> = None;
    for part in parts {
        let mut r = Reader::new(part);
        while !r.done() {
            let (f, w) = r.tag()?;
            match (f, w) {
                (1, LEN) => {
                    val = Val::Str(Cow::Borrowed(r.string()?));
                    kind = 1;
                }
                (2, VARINT) => {
                    val = Val::Bool(r.varint()? != 0);
                    kind = 2;
                }
                (3, VARINT) => {
                    val = Val::Int(r.varint()? as i64);
                    kind = 3;
                }
                (4, I64) => {
                    val = Val::Double(f64::from_bits(r.fixed64()?));
                    kind = 4;
                }
                (5, LEN) => {
                    let sub = r.len_bytes()?;
                    if kind != 5 {
                        list = Some(new_list());
                        kind = 5;
                    }
                    let list = list.as_mut().expect("made when kind became 5");
                    array_into(sub, child_depth(depth)?, list)?;
                }
                (6, LEN) => {
                    let sub = r.len_bytes()?;
                    if kind != 6 {
                        dict = Some(Dict::new());
                        kind = 6;
                    }
                    let dict = dict.as_mut().expect("made when kind became 6");
                    kvlist_into(sub, child_depth(depth)?, dict)?;
                }
                (7, LEN) => {
                    val = Val::Hex(hex(r.len_bytes()?));
                    kind = 7;
                }
                (8, VARINT) => {
                    r.varint()?;
                    val = Val::None; // string_value_strindex: value_of gives None
                    kind = 8;
                }
                _ => r.skip(f, w, depth)?,
            }
        }
    }
    Ok(match (kind, list, dict) {
        (5, Some(list), _) => Val::List(list),
        (6, _, Some(dict)) => Val::Dict(Box::new(dict)),
        _ => val,
    })
}

fn array_into<'a>(buf: &'a [u8], depth: u32, out: &mut Vec<Val<'a>>) -> Res<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        let (f, w) = r.tag()?;
        if (f, w) == (1, LEN) {
            let sub = r.len_bytes()?;
            out.push(any_value(&[sub], child_depth(depth)?)?);
        } else {
            r.skip(f, w, depth)?;
        }
    }
    Ok(())
}

fn kvlist_into<'a>(buf: &'a [u8], depth: u32, out: &mut Dict<'a>) -> Res<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        let (f, w) = r.tag()?;
        if (f, w) == (1, LEN) {
            let sub = r.len_bytes()?;
            let (k, v) = key_value(sub, child_depth(depth)?)?;
            out.insert(Cow::Borrowed(k), v);
        } else {
            r.skip(f, w, depth)?;
        }
    }
    Ok(())
}

pub(crate) fn key_value<'a>(buf: &'a [u8], depth: u32) -> Res<(&'a str, Val<'a>)> {
    let mut r = Reader::new(buf);
    let mut key = "";
    let mut first: Option<&'a [u8]> = None;
    let mut more: Vec<&'a [u8]> = Vec::new(); // a value sent more than once: merged
    while !r.done() {
        let (f, w) = r.tag()?;
        match (f, w) {
            (1, LEN) => key = r.string()?,
            (2, LEN) => {
                let part = r.len_bytes()?;
                match first {
                    None => first = Some(part),
                    Some(p) => {
                        if more.is_empty() {
                            more.push(p);
                        }
                        more.push(part);
                    }
                }
            }
            _ => r.skip(f, w, depth)?,
        }
    }
    let v = match first {
        None => Val::None,
        Some(p) if more.is_empty() => {
            let d = child_depth(depth)?;
            match scalar(p) {
                Some(v) => v,
                None => any_value(&[p], d)?,
            }
        }
        Some(_) => any_value(&more, child_depth(depth)?)?,
    };
    Ok((key, v))
}

/// An AnyValue that is one string, bool, int or double field and nothing else (most
/// attribute values) as `any_value` reads it, built in place: `any_value`'s general loop
/// and its result moved through the stack cost more than the reading (~10% of a scan).
/// None for any other shape, and for bytes `any_value` refuses (it gives the error).
#[inline(always)]
fn scalar(p: &[u8]) -> Option<Val<'_>> {
    let mut r = Reader::new(p);
    let v = match r.tag().ok()? {
        (1, LEN) => Val::Str(Cow::Borrowed(r.string().ok()?)),
        (2, VARINT) => Val::Bool(r.varint().ok()? != 0),
        (3, VARINT) => Val::Int(r.varint().ok()? as i64),
        (4, I64) => Val::Double(f64::from_bits(r.fixed64().ok()?)),
        _ => return None,
    };
    r.done().then_some(v)
}

struct Event<'a> {
    time: u64,
    name: &'a str,
    /// Its attributes: a range of [`Arena::event_attrs`].
    attrs: Range<usize>,
}

/// A span as the first pass decodes it; its attributes and events are ranges of the
/// request's [`Arena`], so decoding a span allocates nothing of its own.
struct SpanRec<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent: &'a [u8],
    name: &'a str,
    kind: i32,
    start: u64,
    end: u64,
    /// Its attributes as sent (repeats kept, in order): a range of [`Arena::attrs`].
    attrs: Range<usize>,
    /// Whether `traceloop.span.kind` is among them (the span names its children's workflow).
    named: bool,
    events: Range<usize>,
    status_code: i32,
    status_message: &'a str,
}

/// What the first pass decodes, for every span of the request, in flat vectors.
#[derive(Default)]
struct Arena<'a> {
    attrs: Vec<(&'a str, Val<'a>)>,
    events: Vec<Event<'a>>,
    event_attrs: Vec<(&'a str, Val<'a>)>,
}

fn event<'a>(buf: &'a [u8], depth: u32, attrs: &mut Vec<(&'a str, Val<'a>)>) -> Res<Event<'a>> {
    let mut r = Reader::new(buf);
    let first = attrs.len();
    let mut ev = Event {
        time: 0,
        name: "",
        attrs: 0..0,
    };
    while !r.done() {
        let (f, w) = r.tag()?;
        match (f, w) {
            (1, I64) => ev.time = r.fixed64()?,
            (2, LEN) => ev.name = r.string()?,
            (3, LEN) => {
                let sub = r.len_bytes()?;
                attrs.push(key_value(sub, child_depth(depth)?)?);
            }
            _ => r.skip(f, w, depth)?,
        }
    }
    ev.attrs = first..attrs.len();
    Ok(ev)
}

const SPAN_KIND_KEY: Key = k!("traceloop.span.kind");

fn span<'a>(buf: &'a [u8], depth: u32, arena: &mut Arena<'a>) -> Res<SpanRec<'a>> {
    let mut r = Reader::new(buf);
    let (first_attr, first_event) = (arena.attrs.len(), arena.events.len());
    let mut s = SpanRec {
        trace_id: b"",
        span_id: b"",
        parent: b"",
        name: "",
        kind: 0,
        start: 0,
        end: 0,
        attrs: 0..0,
        named: false,
        events: 0..0,
        status_code: 0,
        status_message: "",
    };
    while !r.done() {
        let (f, w) = r.tag()?;
        match (f, w) {
            (1, LEN) => s.trace_id = r.len_bytes()?,
            (2, LEN) => s.span_id = r.len_bytes()?,
            (3, LEN) => {
                r.string()?;
            }
            (4, LEN) => s.parent = r.len_bytes()?,
            (5, LEN) => s.name = r.string()?,
            (6, VARINT) => s.kind = r.varint()? as i32,
            (7, I64) => s.start = r.fixed64()?,
            (8, I64) => s.end = r.fixed64()?,
            (9, LEN) => {
                let sub = r.len_bytes()?;
                let (k, v) = key_value(sub, child_depth(depth)?)?;
                s.named |= k == SPAN_KIND_KEY.name;
                arena.attrs.push((k, v));
            }
            (11, LEN) => {
                let sub = r.len_bytes()?;
                let ev = event(sub, child_depth(depth)?, &mut arena.event_attrs)?;
                arena.events.push(ev);
            }
            (13, LEN) => {
                let sub = r.len_bytes()?;
                validate(sub, &LINK, child_depth(depth)?)?;
            }
            (15, LEN) => {
                // Status, merged field by field when sent more than once.
                let sub = r.len_bytes()?;
                let d = child_depth(depth)?;
                let mut st = Reader::new(sub);
                while !st.done() {
                    let (f, w) = st.tag()?;
                    match (f, w) {
                        (2, LEN) => s.status_message = st.string()?,
                        (3, VARINT) => s.status_code = st.varint()? as i32,
                        _ => st.skip(f, w, d)?,
                    }
                }
            }
            (16, I32) => {
                r.fixed32()?;
            }
            _ => r.skip(f, w, depth)?,
        }
    }
    s.attrs = first_attr..arena.attrs.len();
    s.events = first_event..arena.events.len();
    Ok(s)
}

/// `get` over attributes as sent (a dict built from them keeps the last value of a key).
fn raw_get<'x, 'a>(attrs: &'x [(&'a str, Val<'a>)], keys: &[Key]) -> Option<&'x Val<'a>> {
    for k in keys {
        if let Some((_, v)) = attrs.iter().rev().find(|(name, _)| *name == k.name) {
            return if matches!(v, Val::None) { None } else { Some(v) };
        }
    }
    None
}

/// `get_str` over attributes as sent, not borrowing them (text is the request's).
fn raw_get_str<'a>(attrs: &[(&'a str, Val<'a>)], keys: &[Key]) -> Option<Cow<'a, str>> {
    raw_get(attrs, keys).map(|v| match v {
        Val::Str(Cow::Borrowed(s)) => Cow::Borrowed(*s),
        other => Cow::Owned(str_of(other).into_owned()),
    })
}

pub(crate) fn resource<'a>(parts: &[&'a [u8]], depth: u32) -> Res<Dict<'a>> {
    let mut attrs = Dict::new();
    for part in parts {
        let mut r = Reader::new(part);
        while !r.done() {
            let (f, w) = r.tag()?;
            match (f, w) {
                (1, LEN) => {
                    let sub = r.len_bytes()?;
                    let (k, v) = key_value(sub, child_depth(depth)?)?;
                    attrs.insert(Cow::Borrowed(k), v);
                }
                (3, LEN) => {
                    let sub = r.len_bytes()?;
                    validate(sub, &ENTITY_REF, child_depth(depth)?)?;
                }
                _ => r.skip(f, w, depth)?,
            }
        }
    }
    Ok(attrs)
}

// -- the attribute getters of collector/attributes.py ---------------------------------------

/// `get`: the value of the first present key (which may be None).
pub(crate) fn get<'b, 'a>(a: &'b Dict<'a>, keys: &[Key]) -> Option<&'b Val<'a>> {
    for k in keys {
        if let Some(v) = a.get_key(k) {
            return if matches!(v, Val::None) { None } else { Some(v) };
        }
    }
    None
}

fn str_of<'b>(v: &'b Val) -> Cow<'b, str> {
    match v.as_str() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(json_text(v, true)),
    }
}

pub(crate) fn get_str<'b>(a: &'b Dict, keys: &[Key]) -> Option<Cow<'b, str>> {
    get(a, keys).map(str_of)
}

pub(crate) fn get_float(a: &Dict, keys: &[Key]) -> Res<Option<f64>> {
    match get(a, keys) {
        Some(v) => py_float(v),
        None => Ok(None),
    }
}

pub(crate) fn get_int(a: &Dict, keys: &[Key]) -> Res<Option<Num>> {
    match get(a, keys) {
        Some(Val::Bool(_)) | None => Ok(None),
        Some(v) => py_int_or_float(v),
    }
}

/// Python's `x or y` for optional text.
pub(crate) fn or<'b>(x: Option<Cow<'b, str>>, y: Option<Cow<'b, str>>) -> Option<Cow<'b, str>> {
    match x {
        Some(s) if !s.is_empty() => Some(s),
        _ => y,
    }
}

fn string_value<'b>(v: &'b Val) -> &'b str {
    match v {
        Val::Str(s) => s,
        _ => "",
    }
}

// -- genai.py -------------------------------------------------------------------------------

const PROVIDER: &[Key] = &[
    key("gen_ai.provider.name"),
    key("gen_ai.system"),
    key("llm.provider"),
    key("llm.system"),
];
const OPERATION: &[Key] = &[key("gen_ai.operation.name"), key("llm.request.type")];
const REQUEST_MODEL: &[Key] = &[key("gen_ai.request.model"), key("llm.request.model")];
const RESPONSE_MODEL: &[Key] = &[
    key("gen_ai.response.model"),
    key("llm.response.model"),
    key("llm.model_name"),
];
const INPUT_TOKENS: &[Key] = &[
    key("gen_ai.usage.input_tokens"),
    key("gen_ai.usage.prompt_tokens"),
    key("llm.usage.prompt_tokens"),
    key("llm.token_count.prompt"),
];
const OUTPUT_TOKENS: &[Key] = &[
    key("gen_ai.usage.output_tokens"),
    key("gen_ai.usage.completion_tokens"),
    key("llm.usage.completion_tokens"),
    key("llm.token_count.completion"),
];
const TOTAL_TOKENS: &[Key] = &[
    key("gen_ai.usage.total_tokens"),
    key("llm.usage.total_tokens"),
    key("llm.token_count.total"),
];
const TEMPERATURE: &[Key] = &[key("gen_ai.request.temperature"), key("llm.request.temperature")];
const MAX_TOKENS: &[Key] = &[key("gen_ai.request.max_tokens"), key("llm.request.max_tokens")];
const TTFT: &[Key] = &[
    key("mlvigil.llm.time_to_first_token"),
    key("gen_ai.response.time_to_first_token"),
    key("gen_ai.server.time_to_first_token"),
    key("llm.response.time_to_first_token"),
];
const WORKFLOW: &[Key] = &[key("traceloop.workflow.name"), key("gen_ai.workflow.name")];
const ENTITY: &[Key] = &[
    key("traceloop.entity.name"),
    key("gen_ai.agent.name"),
    key("traceloop.entity.path"),
];
const ERROR: &[Key] = &[key("error.type")];
const FIRST_TOKEN_EVENTS: &[&str] = &[
    "gen_ai.content.completion.chunk",
    "llm.content.completion.chunk",
    "First Token Stream Event",
    "gen_ai.first_token",
    "mlvigil.first_token",
];
const MARKERS: &[Key] = &[
    key("gen_ai.provider.name"),
    key("gen_ai.system"),
    key("llm.provider"),
    key("llm.system"),
    key("gen_ai.operation.name"),
    key("llm.request.type"),
    key("gen_ai.request.model"),
    key("llm.request.model"),
    key("gen_ai.response.model"),
    key("llm.model_name"),
];

/// `openinference.span.kind`, upper-cased (Unicode rules: only non-ASCII text needs them,
/// and only then is a copy made).
fn oi_kind_upper(a: &Dict) -> Option<OiKind> {
    a.get_key(&k!("openinference.span.kind")).map(|v| {
        let t = string_value(v);
        let is = |word: &str| {
            if t.is_ascii() {
                t.eq_ignore_ascii_case(word)
            } else {
                t.to_uppercase() == word
            }
        };
        if is("LLM") {
            OiKind::Llm
        } else if is("EMBEDDING") {
            OiKind::Embedding
        } else {
            OiKind::Other
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OiKind {
    Llm,
    Embedding,
    Other,
}

fn is_llm_span(a: &Dict) -> bool {
    if let Some(kind) = oi_kind_upper(a) {
        return kind != OiKind::Other;
    }
    MARKERS.iter().any(|k| a.contains_key(k))
}

/// `_indexed`: `prefix.N.field` attributes as a list of dicts ordered by N.
fn indexed<'a>(a: &Dict<'a>, prefix: &str, fields: &[&str]) -> Res<Vec<Dict<'a>>> {
    let mut items: BTreeMap<(usize, String), Dict<'a>> = BTreeMap::new();
    for (key, v) in &a.entries {
        let Some(tail) = key.strip_prefix(prefix) else { continue };
        let (idx, rest) = tail.split_once('.').unwrap_or((tail, ""));
        if !fields.contains(&rest) || idx.is_empty() {
            continue;
        }
        if !idx.is_ascii() {
            // str.isdigit() takes other Unicode digits too.
            return Err(Error::Unsupported("non-ASCII index in an indexed attribute"));
        }
        if !idx.bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if idx.len() > 4300 {
            return Err(Error::Unsupported("index of more than 4300 digits"));
        }
        let digits = idx.trim_start_matches('0');
        let n = (digits.len(), digits.to_string());
        let value = if matches!(v, Val::None) { Val::None } else { v.clone() };
        items.entry(n).or_default().insert(Cow::Owned(rest.to_string()), value);
    }
    Ok(items.into_values().collect())
}

/// `_finite`: a finite int or float (not a bool).
fn finite(v: Option<&Val>) -> Res<bool> {
    Ok(match v {
        Some(Val::Int(_)) => true,
        Some(Val::Double(f)) => f.is_finite(),
        Some(Val::BigInt(s)) => {
            if s.trim_start_matches('-').len() > 300 {
                return Err(Error::Unsupported("integer too large for a float"));
            }
            true
        }
        _ => false,
    })
}

fn num_of(v: &Val) -> Res<Num> {
    Ok(match v {
        Val::Int(i) => Num::Int(*i as i128),
        Val::Double(f) => Num::Float(*f),
        Val::BigInt(s) => Num::Int(if s.starts_with('-') { i128::MIN } else { i128::MAX }),
        _ => return Err(Error::Unsupported("not a number")),
    })
}

fn messages<'a>(v: Option<&Val<'a>>) -> Res<Val<'a>> {
    Ok(match v {
        None => Val::None,
        Some(v) => match v.as_str() {
            Some(s) => match parse_json(s)? {
                Some(parsed) => into_owned(parsed),
                None => v.clone(),
            },
            None => v.clone(),
        },
    })
}

/// A value parsed from text that does not outlive the text.
fn into_owned<'x>(v: Val<'_>) -> Val<'x> {
    match v {
        Val::None => Val::None,
        Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
        Val::Hex(s) => Val::Hex(s),
        Val::Bool(b) => Val::Bool(b),
        Val::Int(i) => Val::Int(i),
        Val::BigInt(s) => Val::BigInt(s),
        Val::Double(f) => Val::Double(f),
        Val::List(l) => Val::List(l.into_iter().map(into_owned).collect()),
        Val::Dict(d) => {
            let mut out = Dict::new();
            for (k, v) in d.entries {
                out.insert(Cow::Owned(k.into_owned()), into_owned(v));
            }
            Val::Dict(Box::new(out))
        }
    }
}

/// `",".join(str(v) for v in values)`; one text value is borrowed, not copied.
fn join_str<'x>(mut values: impl ExactSizeIterator<Item = &'x Val<'x>>) -> Res<Cow<'x, str>> {
    if values.len() == 1 {
        let v = values.next().unwrap();
        if let Some(t) = v.as_str() {
            return Ok(Cow::Borrowed(t));
        }
        let mut out = String::new();
        py_str(v, &mut out)?;
        return Ok(Cow::Owned(out));
    }
    let mut out = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        py_str(v, &mut out)?;
    }
    Ok(Cow::Owned(out))
}

fn text(v: &Val, max_chars: usize) -> Option<String> {
    let s = match v {
        Val::None => return None,
        Val::Str(s) => s.to_string(),
        Val::Hex(s) => s.clone(),
        other => json_text(other, false),
    };
    Some(match s.char_indices().nth(max_chars) {
        Some((cut, _)) => s[..cut].to_string(),
        None => s,
    })
}

struct LlmRow<'b> {
    dialect: &'static str,
    provider: Option<Cow<'b, str>>,
    operation: Option<Cow<'b, str>>,
    request_model: Option<Cow<'b, str>>,
    response_model: Option<Cow<'b, str>>,
    input_tokens: Option<Num>,
    output_tokens: Option<Num>,
    total_tokens: Option<Num>,
    latency: Option<f64>,
    ttft: Option<f64>,
    finish_reasons: Option<Cow<'b, str>>,
    error: Option<Cow<'b, str>>,
    temperature: Option<f64>,
    max_tokens: Option<Num>,
    workflow: Option<Cow<'b, str>>,
    entity: Option<Cow<'b, str>>,
    prompt: Option<String>,
    completion: Option<String>,
}

fn llm_row<'b>(item: &SpanItem<'b>, opts: &Options, latency: Option<f64>) -> Res<LlmRow<'b>> {
    let (s, a) = (item.s, item.a);
    let (mut has_traceloop, mut has_indexed_completion, mut has_oi_messages) = (false, false, false);
    for key in a.keys() {
        if key.starts_with("traceloop.")
            || key.starts_with("llm.")
            || key.starts_with("gen_ai.prompt.")
            || key.starts_with("gen_ai.completion.")
        {
            has_traceloop = true;
            if key.starts_with("gen_ai.completion.") {
                has_indexed_completion = true;
            } else if key.starts_with("llm.input_messages.") || key.starts_with("llm.output_messages.") {
                has_oi_messages = true;
            }
        }
    }
    let oi_kind = oi_kind_upper(a);
    let dialect = if oi_kind.is_some() {
        "openinference"
    } else if has_traceloop {
        "traceloop"
    } else {
        "gen_ai"
    };
    let params: Dict = if oi_kind.is_some() {
        match get(a, &[k!("llm.invocation_parameters")]) {
            Some(v) => match v.as_str() {
                Some(t) => match parse_json(t)? {
                    Some(Val::Dict(d)) => match into_owned(Val::Dict(d)) {
                        Val::Dict(d) => *d,
                        _ => unreachable!(),
                    },
                    _ => Dict::new(),
                },
                None => match v {
                    Val::Dict(d) => (**d).clone(),
                    _ => Dict::new(),
                },
            },
            None => Dict::new(),
        }
    } else {
        Dict::new()
    };
    let start = s.start;
    let mut latency = latency;
    if latency.is_none() && s.end >= start {
        latency = Some((s.end - start) as f64 / 1e9);
    }

    let mut ttft = get_float(a, TTFT)?;
    if ttft.is_none() {
        for ev in item.events {
            if FIRST_TOKEN_EVENTS.contains(&ev.name) && ev.time >= start {
                ttft = Some((ev.time - start) as f64 / 1e9);
                break;
            }
        }
    }

    let completions = if has_indexed_completion {
        indexed(a, "gen_ai.completion.", &["finish_reason", "content", "role"])?
    } else {
        Vec::new()
    };
    let mut reasons = match get(
        a,
        &[k!("gen_ai.response.finish_reasons"), k!("llm.response.finish_reason")],
    ) {
        Some(Val::List(items)) if !items.is_empty() => Some(join_str(items.iter())?),
        Some(v) => v.as_str().filter(|t| !t.is_empty()).map(Cow::Borrowed),
        None => None,
    };
    let mut output_messages = Val::None;
    if reasons.is_none() || opts.keep_llm_content {
        output_messages = messages(get(a, &[k!("gen_ai.output.messages")]))?;
    }
    if reasons.is_none() {
        let mut found: Vec<&Val> = completions
            .iter()
            .filter_map(|c| c.get("finish_reason"))
            .filter(|v| v.truthy())
            .collect();
        if found.is_empty() {
            if let Val::List(items) = &output_messages {
                for m in items {
                    if let Val::Dict(d) = m {
                        if let Some(r) = d.get("finish_reason").filter(|v| v.truthy()) {
                            found.push(r);
                        }
                    }
                }
            }
        }
        if !found.is_empty() {
            reasons = Some(Cow::Owned(join_str(found.into_iter())?.into_owned()));
        }
    }

    let mut error = get_str(a, ERROR);
    if error.is_none() && s.status_code == 2 {
        error = Some(Cow::Borrowed(if s.status_message.is_empty() {
            "error"
        } else {
            s.status_message
        }));
    }
    if error.is_none() {
        if let Some(ev) = item.events.iter().find(|ev| ev.name == "exception") {
            let attrs = &item.event_attrs[ev.attrs.clone()];
            error = Some(match attrs.iter().find(|(k, _)| *k == "exception.type") {
                Some((_, v)) => Cow::Borrowed(string_value(v)),
                None => Cow::Borrowed("exception"),
            });
        }
    }

    let input_tokens = get_int(a, INPUT_TOKENS)?;
    let output_tokens = get_int(a, OUTPUT_TOKENS)?;
    let mut total_tokens = get_int(a, TOTAL_TOKENS)?;
    if total_tokens.is_none() {
        if let (Some(i), Some(o)) = (input_tokens, output_tokens) {
            total_tokens = Some(i.plus(o));
        }
    }

    let mut operation = get_str(a, OPERATION);
    if operation.is_none() {
        if let Some(kind) = &oi_kind {
            operation = Some(Cow::Borrowed(if *kind == OiKind::Embedding {
                "embeddings"
            } else {
                "chat"
            }));
        }
    }

    let mut temperature = get_float(a, TEMPERATURE)?;
    if temperature.is_none() && finite(params.get("temperature"))? {
        temperature = py_float(params.get("temperature").unwrap())?;
    }
    let mut max_tokens = get_int(a, MAX_TOKENS)?;
    if max_tokens.is_none() {
        for key in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            if finite(params.get(key))? {
                max_tokens = Some(num_of(params.get(key).unwrap())?);
                break;
            }
        }
    }

    let mut request_model = get_str(a, REQUEST_MODEL);
    if request_model.is_none() {
        if let Some(m) = params.get("model").and_then(|v| v.as_str()) {
            request_model = Some(Cow::Owned(m.to_string()));
        }
    }
    let response_model = get_str(a, RESPONSE_MODEL);

    let (mut prompt, mut completion) = (None, None);
    if opts.keep_llm_content {
        let mut prompt_value: Val = get(a, &[k!("gen_ai.input.messages")]).cloned().unwrap_or(Val::None);
        if matches!(prompt_value, Val::None) {
            let items = indexed(a, "gen_ai.prompt.", &["role", "content"])?;
            if !items.is_empty() {
                prompt_value = Val::List(items.into_iter().map(|d| Val::Dict(Box::new(d))).collect());
            }
        }
        if matches!(prompt_value, Val::None) && has_oi_messages {
            let items = indexed(a, "llm.input_messages.", &["message.role", "message.content"])?;
            if !items.is_empty() {
                prompt_value = Val::List(items.into_iter().map(|d| Val::Dict(Box::new(d))).collect());
            }
        }
        if matches!(prompt_value, Val::None) {
            prompt_value = get(a, &[k!("input.value")]).cloned().unwrap_or(Val::None);
        }
        let mut completion_value = output_messages;
        if matches!(completion_value, Val::None) && !completions.is_empty() {
            let items = completions
                .iter()
                .map(|c| {
                    let mut d = Dict::new();
                    for (k, v) in &c.entries {
                        if k == "role" || k == "content" {
                            d.insert(k.clone(), v.clone());
                        }
                    }
                    Val::Dict(Box::new(d))
                })
                .collect();
            completion_value = Val::List(items);
        }
        if matches!(completion_value, Val::None) && has_oi_messages {
            let items = indexed(a, "llm.output_messages.", &["message.role", "message.content"])?;
            if !items.is_empty() {
                completion_value = Val::List(items.into_iter().map(|d| Val::Dict(Box::new(d))).collect());
            }
        }
        if matches!(completion_value, Val::None) {
            completion_value = get(a, &[k!("output.value")]).cloned().unwrap_or(Val::None);
        }
        prompt = text(&prompt_value, opts.max_content_chars);
        completion = text(&completion_value, opts.max_content_chars);
    }

    Ok(LlmRow {
        dialect,
        provider: get_str(a, PROVIDER),
        operation,
        request_model: or(request_model.clone(), response_model.clone()),
        response_model: or(response_model, request_model),
        input_tokens,
        output_tokens,
        total_tokens,
        latency,
        ttft,
        finish_reasons: reasons,
        error,
        temperature,
        max_tokens,
        workflow: get_str(a, WORKFLOW),
        entity: get_str(a, ENTITY),
        prompt,
        completion,
    })
}

// -- ml.py ----------------------------------------------------------------------------------

const MODEL: &[Key] = &[key("mlvigil.model.name")];
const MODEL_VERSION: &[Key] = &[key("mlvigil.model.version")];
const REQUEST_ID: &[Key] = &[key("mlvigil.inference.request_id")];
const FEATURES: Key = key("mlvigil.inference.features");
const FEATURE_PREFIX: &str = "mlvigil.feature.";
const PREDICTION: &[Key] = &[key("mlvigil.inference.prediction")];
const SCORE: &[Key] = &[key("mlvigil.inference.score")];
pub(crate) const LABEL_REQUEST_ID: Key = key("mlvigil.label.request_id");
const LABEL_VALUE: &[Key] = &[key("mlvigil.label.value")];
pub(crate) const RUN_ID: Key = key("mlvigil.train.run_id");
const TRAIN_INT: &[Key] = &[
    key("mlvigil.train.step"),
    key("mlvigil.train.rank"),
    key("mlvigil.train.world_size"),
];
const TRAIN_FLOAT: &[Key] = &[
    key("mlvigil.train.loss"),
    key("mlvigil.train.grad_norm"),
    key("mlvigil.train.learning_rate"),
    key("mlvigil.train.samples"),
    key("mlvigil.train.tokens"),
    key("mlvigil.train.data_wait_seconds"),
    key("mlvigil.train.forward_seconds"),
    key("mlvigil.train.backward_seconds"),
    key("mlvigil.train.optimizer_seconds"),
    key("mlvigil.train.comm_seconds"),
    key("mlvigil.train.checkpoint_seconds"),
];
const STEP_TIME: &[Key] = &[key("mlvigil.train.step_time_seconds")];
const GPU_UUID: &[Key] = &[key("mlvigil.train.gpu_uuid"), key("hw.id")];

pub(crate) fn is_inference(a: &Dict) -> bool {
    a.keys()
        .any(|k| k.starts_with("mlvigil.inference.") || k.starts_with(FEATURE_PREFIX))
}

/// `features_of`, as JSON text; Err(reason) rejects the item.
pub(crate) fn features_json(a: &Dict) -> Res<Result<String, String>> {
    let mut feats = Dict::new();
    let raw = get(a, &[FEATURES]);
    let parsed;
    let raw = match raw.and_then(|v| v.as_str()) {
        Some(t) => match parse_json(t)? {
            Some(v) => {
                parsed = into_owned(v);
                Some(&parsed)
            }
            None => {
                return Ok(Err(format!(
                    "{} is not JSON, or is larger or deeper than the JSON limits",
                    FEATURES.name
                )))
            }
        },
        None => raw,
    };
    match raw {
        Some(Val::Dict(d)) => {
            for (k, v) in &d.entries {
                feats.insert(k.clone(), v.clone());
            }
        }
        None | Some(Val::None) => {}
        Some(_) => {
            return Ok(Err(format!(
                "{} must be a JSON object or a key-value list",
                FEATURES.name
            )))
        }
    }
    for (k, v) in &a.entries {
        if let Some(name) = k.strip_prefix(FEATURE_PREFIX) {
            feats.insert(Cow::Owned(name.to_string()), v.clone());
        }
    }
    Ok(Ok(dict_json(&feats, true)))
}

// -- the request ----------------------------------------------------------------------------

pub(crate) struct Resource<'b> {
    pub(crate) service: Option<Cow<'b, str>>,
    pub(crate) service_version: Option<Cow<'b, str>>,
    pub(crate) host: Option<Cow<'b, str>>,
    pub(crate) k8s_pod: Option<Cow<'b, str>>,
    pub(crate) hw_id: Option<Cow<'b, str>>,
    pub(crate) attrs_json: String,
}

pub(crate) fn resource_info<'b>(a: &'b Dict) -> Resource<'b> {
    Resource {
        service: get_str(a, &[k!("service.name")]),
        service_version: get_str(a, &[k!("service.version")]),
        host: get_str(a, &[k!("host.name"), k!("k8s.node.name")]),
        k8s_pod: get_str(a, &[k!("k8s.pod.name")]),
        hw_id: get_str(a, &[k!("hw.id")]),
        attrs_json: dict_json(a, true),
    }
}

/// The tables of one request, each made on its first row (a request fills one or two of
/// the seven), with room for the request's items.
pub(crate) struct Builders {
    items: usize,
    /// In the order the tables are handed back.
    tables: [Option<TableBuilder>; 7],
}

const TABLE_ORDER: [(&str, &[(&str, crate::tables::Col)]); 7] = [
    ("llm_calls", LLM_CALLS),
    ("training_steps", TRAINING_STEPS),
    ("inferences", INFERENCES),
    ("labels", LABELS),
    ("spans", SPANS),
    ("metric_points", METRIC_POINTS),
    ("logs", LOGS),
];

impl Builders {
    pub(crate) fn new() -> Self {
        Self::with_capacity(0)
    }

    /// Builders for a request of `items` items: a table gets room for `items` rows when
    /// it is made (0: Arrow's default room).
    pub(crate) fn with_capacity(items: usize) -> Self {
        Builders {
            items,
            tables: Default::default(),
        }
    }

    pub(crate) fn get(&mut self, name: &str) -> &mut TableBuilder {
        let i = TABLE_ORDER
            .iter()
            .position(|(n, _)| *n == name)
            .expect("one of the record tables");
        let (name, cols) = TABLE_ORDER[i];
        let items = self.items;
        self.tables[i].get_or_insert_with(|| TableBuilder::new(name, cols, items))
    }

    pub(crate) fn finish(self, out: &mut Normalised) {
        for b in self.tables.into_iter().flatten() {
            if b.rows > 0 {
                let name = b.name;
                out.tables.push((name, b.finish()));
            }
        }
    }
}

type Names<'a> = HashMap<&'a [u8], (Option<Cow<'a, str>>, Option<Cow<'a, str>>, &'a [u8])>;

/// Memory the scanner keeps on each thread from request to request (emptied, lifetimes
/// erased by [`recycle`]): the decoded spans, the attribute dict, the staged rows.
#[derive(Default)]
struct Scratch {
    attrs: Vec<(&'static str, Val<'static>)>,
    events: Vec<Event<'static>>,
    event_attrs: Vec<(&'static str, Val<'static>)>,
    spans: Vec<SpanRec<'static>>,
    dict: Option<Dict<'static>>,
    bufs: RowBufs,
}

/// A vector holding more than this many bytes after a request is not kept for the next one:
/// what a thread keeps is at most ~5 x 2 MiB here (with the attribute dict), plus the pooled lists (value.rs, 1 MiB).
const KEPT_BYTES: usize = 2 << 20;

impl Scratch {
    fn keep<T>(v: Vec<T>) -> Vec<T> {
        if v.capacity() * std::mem::size_of::<T>() > KEPT_BYTES {
            Vec::new()
        } else {
            v
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

/// Normalise one ExportTraceServiceRequest.
pub fn normalise_traces(body: &[u8], opts: &Options) -> Res<Normalised> {
    let mut scratch = SCRATCH.with(std::cell::Cell::take);
    let out = normalise_traces_in(body, opts, &mut scratch);
    SCRATCH.with(|s| s.set(scratch));
    out
}

fn normalise_traces_in(body: &[u8], opts: &Options, scratch: &mut Scratch) -> Res<Normalised> {
    let mut out = Normalised::default();
    let mut r = Reader::new(body);
    // The whole request is checked before anything is mapped (a request protobuf refuses
    // is refused whole), so every span is decoded first (into flat vectors: nothing is
    // allocated per span) and mapped after.
    let mut arena = Arena {
        attrs: recycle(std::mem::take(&mut scratch.attrs)),
        events: recycle(std::mem::take(&mut scratch.events)),
        event_attrs: recycle(std::mem::take(&mut scratch.event_attrs)),
    };
    let mut spans: Vec<SpanRec> = recycle(std::mem::take(&mut scratch.spans));
    // Each resource's attributes and its spans (a range of `spans`).
    let mut resources: Vec<(Dict, Range<usize>)> = Vec::new();
    let mut count = ItemCount::new(opts.max_items);
    while !r.done() {
        let (f, w) = r.tag()?;
        if (f, w) != (1, LEN) {
            r.skip(f, w, 0)?;
            continue;
        }
        count.add(1);
        let rs = r.len_bytes()?;
        let d_rs = 1;
        let mut rr = Reader::new(rs);
        let mut res_parts: Vec<&[u8]> = Vec::new();
        let first_span = spans.len();
        while !rr.done() {
            let (f, w) = rr.tag()?;
            match (f, w) {
                (1, LEN) => res_parts.push(rr.len_bytes()?),
                (2, LEN) => {
                    let ss = rr.len_bytes()?;
                    count.add(1);
                    let d_ss = child_depth(d_rs)?;
                    let mut sr = Reader::new(ss);
                    while !sr.done() {
                        let (f, w) = sr.tag()?;
                        match (f, w) {
                            (1, LEN) => validate(sr.len_bytes()?, &SCOPE, child_depth(d_ss)?)?,
                            (2, LEN) => {
                                let sub = sr.len_bytes()?;
                                let sp = span(sub, child_depth(d_ss)?, &mut arena)?;
                                if count.add(1) {
                                    spans.push(sp);
                                }
                            }
                            (3, LEN) => {
                                sr.string()?;
                            }
                            _ => sr.skip(f, w, d_ss)?,
                        }
                    }
                }
                (3, LEN) => {
                    rr.string()?;
                }
                _ => rr.skip(f, w, d_rs)?,
            }
        }
        let attrs = resource(&res_parts, child_depth(d_rs)?)?;
        if !count.over() {
            resources.push((attrs, first_span..spans.len()));
        }
    }
    count.check()?;
    let mut builders = Builders::with_capacity(spans.len());
    // One attribute dict for every span, refilled (its memory kept) span by span.
    let mut a = scratch.dict.take().map_or_else(|| Dict::indexed(32), Dict::recycle);
    let bufs = &mut scratch.bufs;
    for (attrs, range) in &resources {
        let spans = &spans[range.clone()];
        out.received += spans.len() as u64;
        let res = resource_info(attrs);
        let mut names: Names = HashMap::new();
        for s in spans.iter().filter(|s| s.named) {
            let attrs = &arena.attrs[s.attrs.clone()];
            names.insert(
                s.span_id,
                (raw_get_str(attrs, WORKFLOW), raw_get_str(attrs, ENTITY), s.parent),
            );
        }
        for s in spans {
            if s.trace_id.len() != 16 || s.span_id.len() != 8 {
                out.reject("invalid trace_id or span_id length".into());
                continue;
            }
            if s.end != 0 && s.end < s.start {
                out.reject("span ends before it starts".into());
                continue;
            }
            keep_lists(a.entries.iter_mut().map(|(_, v)| v));
            a.refill(&mut arena.attrs[s.attrs.clone()]);
            let item = SpanItem {
                s,
                a: &a,
                events: &arena.events[s.events.clone()],
                event_attrs: &arena.event_attrs,
            };
            let mut rows = bufs.rows();
            match span_rows(&item, &res, &names, opts, &mut rows, bufs)? {
                Ok(()) => {
                    for (table, row) in &mut rows {
                        builders.get(table).append(row.drain(..));
                    }
                }
                Err(reason) => out.reject(reason),
            }
            bufs.put_back(rows);
        }
    }
    builders.finish(&mut out);
    keep_lists(a.entries.iter_mut().map(|(_, v)| v));
    let a = a.recycle();
    let entry = std::mem::size_of::<(Cow<str>, Val)>();
    scratch.dict = (a.entries.capacity() * entry <= KEPT_BYTES).then_some(a);
    scratch.attrs = Scratch::keep(recycle(arena.attrs));
    scratch.events = Scratch::keep(recycle(arena.events));
    scratch.event_attrs = Scratch::keep(recycle(arena.event_attrs));
    scratch.spans = Scratch::keep(recycle(spans));
    Ok(out)
}

pub(crate) type Rows<'b> = Vec<(&'static str, Vec<Cell<'b>>)>;

/// The staged rows of one item, kept from item to item. The rows borrow the item's
/// attributes, so the vectors go back empty with their lifetime erased ([`recycle`]) and
/// are reused: staging an item allocates nothing once the first few have been staged.
#[derive(Default)]
pub(crate) struct RowBufs {
    rows: Vec<(&'static str, Vec<Cell<'static>>)>,
    cells: Vec<Vec<Cell<'static>>>,
}

impl RowBufs {
    pub(crate) fn rows<'b>(&mut self) -> Rows<'b> {
        recycle(std::mem::take(&mut self.rows))
    }

    pub(crate) fn cells<'b>(&mut self) -> Vec<Cell<'b>> {
        self.cells.pop().map(recycle).unwrap_or_default()
    }

    pub(crate) fn put_back(&mut self, mut rows: Rows<'_>) {
        for (_, cells) in rows.drain(..) {
            self.cells.push(recycle(cells));
        }
        self.rows = recycle(rows);
    }
}

/// One span being mapped: its record, its attributes as a dict, its events.
struct SpanItem<'b> {
    s: &'b SpanRec<'b>,
    a: &'b Dict<'b>,
    events: &'b [Event<'b>],
    event_attrs: &'b [(&'b str, Val<'b>)],
}

/// A cell borrowing an optional resource column (no copy of owned text).
fn cell_of<'b>(v: &'b Option<Cow<'_, str>>) -> Cell<'b> {
    v.as_deref().map_or(Cell::Null, |s| Cell::Str(Cow::Borrowed(s)))
}

fn span_rows<'b>(
    item: &SpanItem<'b>,
    res: &'b Resource,
    names: &'b Names,
    opts: &Options,
    rows: &mut Rows<'b>,
    bufs: &mut RowBufs,
) -> Res<Result<(), String>> {
    let (s, a) = (item.s, item.a);
    let ts = s.start as f64 / 1e9;
    let duration = if s.end != 0 {
        Some((s.end - s.start) as f64 / 1e9)
    } else {
        None
    };
    let mut kind = "span";
    if is_llm_span(a) {
        let mut row = llm_row(item, opts, duration)?;
        if row.workflow.is_none() || row.entity.is_none() {
            let mut parent = s.parent;
            let mut hops = 0;
            while hops < 32 && (row.workflow.is_none() || row.entity.is_none()) {
                let Some((w, e, p)) = names.get(parent) else { break };
                row.workflow = or(row.workflow.take(), w.clone());
                row.entity = or(row.entity.take(), e.clone());
                parent = p;
                hops += 1;
            }
        }
        let mut cells = bufs.cells();
        cells.extend([
            Cell::F64(ts),
            cell_of(&res.service),
            cell_of(&res.service_version),
            cell_of(&res.host),
            Cell::Hex(s.trace_id),
            Cell::Hex(s.span_id),
            Cell::Str(Cow::Borrowed(row.dialect)),
            row.provider.into(),
            row.operation.into(),
            row.request_model.into(),
            row.response_model.into(),
            row.input_tokens.into(),
            row.output_tokens.into(),
            row.total_tokens.into(),
            row.latency.into(),
            row.ttft.into(),
            row.finish_reasons.into(),
            row.error.into(),
            row.temperature.into(),
            row.max_tokens.into(),
            row.workflow.into(),
            row.entity.into(),
            row.prompt.into(),
            row.completion.into(),
        ]);
        rows.push(("llm_calls", cells));
        kind = "llm";
    } else if a.contains_key(&RUN_ID) {
        let mut cells = bufs.cells();
        training_cells(a, res, ts, duration, &mut cells)?;
        rows.push(("training_steps", cells));
        kind = "training";
    } else if is_inference(a) {
        let mut cells = bufs.cells();
        if let Err(reason) = inference_cells(a, res, ts, duration, &mut cells)? {
            bufs.cells.push(recycle(cells));
            return Ok(Err(reason));
        }
        rows.push(("inferences", cells));
        kind = "inference";
    }
    if a.contains_key(&LABEL_REQUEST_ID) {
        let mut cells = bufs.cells();
        label_cells(a, res, ts, &mut cells);
        rows.push(("labels", cells));
    }
    if opts.keep_raw_spans {
        let mut cells = bufs.cells();
        cells.extend([
            Cell::F64(ts),
            (if s.end != 0 { Some(s.end as f64 / 1e9) } else { None }).into(),
            Cell::Hex(s.trace_id),
            Cell::Hex(s.span_id),
            (if s.parent.is_empty() {
                Cell::Null
            } else {
                Cell::Hex(s.parent)
            }),
            Cell::Str(Cow::Borrowed(s.name)),
            Cell::I64(s.kind as i64),
            Cell::I64(s.status_code as i64),
            cell_of(&res.service),
            Cell::Str(Cow::Borrowed(kind)),
            Cell::Str(Cow::Borrowed(&res.attrs_json)),
        ]);
        rows.push(("spans", cells));
    }
    Ok(check_rows(rows))
}

/// `RecordBatch.add_item`'s check: every row of an item, in order; the first failure rejects it.
pub(crate) fn check_rows(rows: &mut Rows<'_>) -> Result<(), String> {
    for (table, row) in rows.iter_mut() {
        let cols = match *table {
            "llm_calls" => LLM_CALLS,
            "training_steps" => TRAINING_STEPS,
            "inferences" => INFERENCES,
            "labels" => LABELS,
            "metric_points" => METRIC_POINTS,
            "logs" => LOGS,
            _ => SPANS,
        };
        check_row(table, cols, row)?;
    }
    Ok(())
}

/// `ml.training_row` with the resource columns, into `cells`.
pub(crate) fn training_cells<'b>(
    a: &'b Dict,
    res: &'b Resource,
    ts: f64,
    duration: Option<f64>,
    cells: &mut Vec<Cell<'b>>,
) -> Res<()> {
    cells.extend([
        Cell::F64(ts),
        cell_of(&res.service),
        get_str(a, &[RUN_ID]).into(),
        get_int(a, &TRAIN_INT[0..1])?.into(),
        get_int(a, &TRAIN_INT[1..2])?.into(),
        get_int(a, &TRAIN_INT[2..3])?.into(),
        cell_of(&res.host),
        cell_of(&res.k8s_pod),
        or(get_str(a, GPU_UUID), res.hw_id.as_deref().map(Cow::Borrowed)).into(),
        get_float(a, STEP_TIME)?.or(duration).into(),
    ]);
    for k in TRAIN_FLOAT {
        cells.push(get_float(a, std::slice::from_ref(k))?.into());
    }
    Ok(())
}

/// `ml.inference_row` with the resource columns, into `cells`; Err(reason) rejects the item.
pub(crate) fn inference_cells<'b>(
    a: &'b Dict,
    res: &'b Resource,
    ts: f64,
    latency: Option<f64>,
    cells: &mut Vec<Cell<'b>>,
) -> Res<Result<(), String>> {
    let features = match features_json(a)? {
        Ok(f) => f,
        Err(reason) => return Ok(Err(reason)),
    };
    let service = res.service.as_deref().map(Cow::Borrowed);
    let version = res.service_version.as_deref().map(Cow::Borrowed);
    cells.extend([
        Cell::F64(ts),
        cell_of(&res.service),
        or(get_str(a, MODEL), service).into(),
        or(get_str(a, MODEL_VERSION), version).into(),
        get_str(a, REQUEST_ID).into(),
        Cell::Str(Cow::Owned(features)),
        get(a, PREDICTION).map(|v| json_text(v, true)).into(),
        get_float(a, SCORE)?.into(),
        latency.into(),
        Cell::Str(Cow::Borrowed("otlp")),
    ]);
    Ok(Ok(()))
}

/// `ml.label_row` with the resource columns, into `cells`.
pub(crate) fn label_cells<'b>(a: &'b Dict, res: &'b Resource, ts: f64, cells: &mut Vec<Cell<'b>>) {
    cells.extend([
        Cell::F64(ts),
        get_str(a, &[LABEL_REQUEST_ID]).into(),
        cell_of(&res.service),
        or(get_str(a, MODEL), res.service.as_deref().map(Cow::Borrowed)).into(),
        get(a, LABEL_VALUE).map(|v| json_text(v, true)).into(),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_vectors_keep_their_memory() {
        let text = String::from("a value");
        let mut cells: Vec<Cell> = Vec::with_capacity(24);
        cells.push(Cell::Str(Cow::Borrowed(&text)));
        let at = cells.as_ptr() as usize;
        let kept: Vec<Cell<'static>> = recycle(cells);
        assert_eq!((kept.len(), kept.capacity(), kept.as_ptr() as usize), (0, 24, at));
        let mut bufs = RowBufs::default();
        let mut rows = bufs.rows();
        let mut cells = bufs.cells();
        cells.push(Cell::Hex(b"\x01"));
        let at = cells.as_ptr() as usize;
        rows.push(("spans", cells));
        bufs.put_back(rows);
        let again = bufs.cells();
        assert_eq!(again.as_ptr() as usize, at);
        assert_eq!(bufs.rows().capacity(), 4);
    }

    #[test]
    fn a_cleared_dict_is_a_new_dict() {
        let mut d = Dict::indexed(32);
        for i in 0..300 {
            d.insert(Cow::Owned(format!("k{i}")), Val::Int(i));
        }
        d.insert(Cow::Borrowed("gen_ai.system"), Val::Int(1));
        d.clear();
        assert!(d.is_empty() && d.get("k1").is_none() && d.get_key(&k!("gen_ai.system")).is_none());
        d.insert(Cow::Borrowed("gen_ai.system"), Val::Int(2));
        d.insert(Cow::Borrowed("gen_ai.system"), Val::Int(3));
        assert_eq!(d.get_key(&k!("gen_ai.system")), Some(&Val::Int(3)));
        assert_eq!(d.len(), 1);
    }

    /// A dict refilled span by span equals one built by inserting each span's pairs into an
    /// empty dict: the same keys in the same order only have their values replaced, and
    /// any other sequence (another order, a key more or less, one key changed, a repeat)
    /// rebuilds it.
    #[test]
    fn a_refilled_dict_is_the_dict_of_its_pairs() {
        let seqs: &[&[&str]] = &[
            &["gen_ai.system", "a", "gen_ai.request.model", "b"],
            &["gen_ai.system", "a", "gen_ai.request.model", "b"],
            &["gen_ai.system", "a", "gen_ai.request.model", "c"],
            &["gen_ai.system", "a", "gen_ai.request.model", "c"],
            &["a", "gen_ai.system", "gen_ai.request.model", "c"],
            &["a", "gen_ai.system", "gen_ai.request.model"],
            &["a", "gen_ai.system", "a", "gen_ai.request.model"],
            &["a", "gen_ai.system", "a", "gen_ai.request.model"],
            &["a", "gen_ai.system", "gen_ai.system", "gen_ai.request.model"],
            &[],
            &[],
            &["b"],
        ];
        let mut d = Dict::indexed(32);
        for (n, keys) in seqs.iter().enumerate() {
            let mut pairs: Vec<(&str, Val)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, Val::Int((10 * n + i) as i64)))
                .collect();
            let mut want = Dict::indexed(32);
            for (k, v) in &pairs {
                want.insert(Cow::Borrowed(*k), v.clone());
            }
            d.refill(&mut pairs);
            assert_eq!(d, want, "pairs {n}");
            assert!(pairs.iter().all(|(_, v)| *v == Val::None));
            for k in ["a", "b", "c", "gen_ai.system", "gen_ai.request.model"] {
                assert_eq!(d.get(k), want.get(k), "{k} after pairs {n}");
            }
            for key in [k!("gen_ai.system"), k!("gen_ai.request.model")] {
                assert_eq!(d.get_key(&key), want.get_key(&key), "{} after pairs {n}", key.name);
            }
        }
        // An insert after a refill: the next refill does not take the dict for the last one's.
        let mut pairs = vec![("a", Val::Int(1))];
        d.refill(&mut pairs);
        d.insert(Cow::Borrowed("b"), Val::Int(2));
        let mut pairs = vec![("a", Val::Int(3))];
        d.refill(&mut pairs);
        assert_eq!(d.len(), 1);
        assert!(d.get("b").is_none());
    }
}
