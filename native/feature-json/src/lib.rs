//! Feature values out of each inference row's `features` JSON text, exactly as the DuckDB
//! `feature_window` SQL gives them (mlvigil/core/store/duckdb/queries.py): a numeric feature as
//! `TRY_CAST(json_extract(...) AS DOUBLE)`, a text feature as the category label of its CASE.
//!
//! Only strict JSON (RFC 8259) is read here. What DuckDB's reader settles by rules this crate
//! does not reproduce (its leniency: NaN, trailing commas; its number writer: a fractional
//! number or one of 1e38 and more as a category label) marks the row *unsure*: the caller
//! extracts those rows with the SQL itself, so no value ever differs.

use std::borrow::Cow;
use std::collections::HashMap;

/// Nesting deeper than this marks the row unsure (the SQL decides).
const MAX_DEPTH: usize = 128;

/// The extracted columns: `numeric[j][row]`, `text[j][row]` in the order asked for, and the
/// rows (ascending) whose values must come from the SQL instead (their values here are None).
#[derive(Debug, Default, PartialEq)]
pub struct Extracted {
    pub numeric: Vec<Vec<Option<f64>>>,
    pub text: Vec<Vec<Option<String>>>,
    pub unsure: Vec<usize>,
}

struct Unsure;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(&c) = self.s.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), Unsure> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    fn hex4(&mut self) -> Result<u32, Unsure> {
        let h = self.s.get(self.i..self.i + 4).ok_or(Unsure)?;
        let mut v = 0u32;
        for &c in h {
            v = v * 16 + (c as char).to_digit(16).ok_or(Unsure)?;
        }
        self.i += 4;
        Ok(v)
    }

    /// A string (the opening quote at `i`), unescaped. Lone surrogates and raw control
    /// characters are unsure.
    fn string(&mut self) -> Result<Cow<'a, str>, Unsure> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.peek().ok_or(Unsure)? {
                b'"' => {
                    let raw = &self.s[start..self.i];
                    self.i += 1;
                    return Ok(Cow::Borrowed(std::str::from_utf8(raw).map_err(|_| Unsure)?));
                }
                b'\\' => break,
                c if c < 0x20 => return Err(Unsure),
                _ => self.i += 1,
            }
        }
        let mut out = String::from(std::str::from_utf8(&self.s[start..self.i]).map_err(|_| Unsure)?);
        loop {
            let c = self.peek().ok_or(Unsure)?;
            self.i += 1;
            match c {
                b'"' => return Ok(Cow::Owned(out)),
                b'\\' => {
                    let e = self.peek().ok_or(Unsure)?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(Unsure);
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(Unsure);
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(Unsure);
                            } else {
                                hi
                            };
                            out.push(char::from_u32(cp).ok_or(Unsure)?);
                        }
                        _ => return Err(Unsure),
                    }
                }
                c if c < 0x20 => return Err(Unsure),
                c if c < 0x80 => out.push(c as char),
                _ => {
                    // A multi-byte UTF-8 sequence: copy it whole (the input is valid UTF-8).
                    let begin = self.i - 1;
                    let mut end = self.i;
                    while end < self.s.len() && (self.s[end] & 0xC0) == 0x80 {
                        end += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.s[begin..end]).map_err(|_| Unsure)?);
                    self.i = end;
                }
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), Unsure> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Unsure),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(Unsure);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(Unsure);
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Unsure> {
        if self.s.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// Any value, checked and skipped; `i` ends after it.
    fn value(&mut self, depth: usize) -> Result<(), Unsure> {
        if depth > MAX_DEPTH {
            return Err(Unsure);
        }
        match self.peek().ok_or(Unsure)? {
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(Unsure),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(Unsure),
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }
}

/// The raw JSON text of each wanted key's first occurrence (DuckDB takes the first of
/// duplicate keys); all None for a document that is not an object.
fn members<'a>(doc: &'a str, wanted: &HashMap<&str, usize>, out: &mut [Option<&'a str>]) -> Result<(), Unsure> {
    out.iter_mut().for_each(|v| *v = None);
    let mut p = Parser {
        s: doc.as_bytes(),
        i: 0,
    };
    p.ws();
    if p.peek() != Some(b'{') {
        p.value(0)?;
    } else {
        p.i += 1;
        p.ws();
        if p.peek() == Some(b'}') {
            p.i += 1;
        } else {
            loop {
                p.ws();
                let key = p.string()?;
                p.ws();
                p.eat(b':')?;
                p.ws();
                let start = p.i;
                p.value(1)?;
                if let Some(&slot) = wanted.get(key.as_ref()) {
                    if out[slot].is_none() {
                        out[slot] = Some(&doc[start..p.i]);
                    }
                }
                p.ws();
                match p.peek() {
                    Some(b',') => p.i += 1,
                    Some(b'}') => {
                        p.i += 1;
                        break;
                    }
                    _ => return Err(Unsure),
                }
            }
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(Unsure);
    }
    Ok(())
}

fn is_number(raw: &str) -> bool {
    matches!(raw.as_bytes().first(), Some(b'-' | b'0'..=b'9'))
}

/// `TRY_CAST(<the value's JSON text> AS DOUBLE)`: numbers only (a quoted "1.5" is NULL).
fn numeric_value(raw: Option<&str>) -> Option<f64> {
    let raw = raw?;
    if !is_number(raw) {
        return None;
    }
    let v: f64 = raw.parse().ok()?;
    // An integer is read as one (-0 is 0); only a fraction or exponent keeps -0.0.
    if v == 0.0 && !raw.contains(['.', 'e', 'E']) {
        return Some(0.0);
    }
    Some(v)
}

/// The CASE expression's category label. Err: DuckDB's number writer decides (unsure).
fn text_value(raw: Option<&str>) -> Result<Option<String>, Unsure> {
    let Some(raw) = raw else { return Ok(None) };
    match raw.as_bytes()[0] {
        b'n' | b'[' | b'{' => Ok(None),
        b't' => Ok(Some("True".into())),
        b'f' => Ok(Some("False".into())),
        b'"' => Parser {
            s: raw.as_bytes(),
            i: 0,
        }
        .string()
        .map(|s| Some(s.into_owned())),
        _ => {
            if !raw.contains(['.', 'e', 'E']) {
                // Integer text digit for digit; -0 is read as the integer 0.
                if raw.trim_start_matches('-').bytes().all(|c| c == b'0') {
                    return Ok(Some("0".into()));
                }
                return Ok(Some(raw.into()));
            }
            let v: f64 = raw.parse().map_err(|_| Unsure)?;
            if v.abs() < 1e38 && v == v.trunc() {
                // Exact: a whole double below 1e38 fits i128.
                Ok(Some((v as i128).to_string()))
            } else if v.is_finite() && significant_digits(raw) <= 15 {
                // Up to 15 significant digits, the shortest digits that read back the same
                // are the text's own (one double per such decimal), so no tie-breaking rule
                // between writers can differ.
                Ok(Some(json_double(v)))
            } else {
                Err(Unsure)
            }
        }
    }
}

/// The significant digits of a JSON number's mantissa (leading and trailing zeros aside).
fn significant_digits(raw: &str) -> usize {
    let mantissa = raw.split(['e', 'E']).next().unwrap_or(raw);
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let first = digits.iter().position(|&c| c != b'0');
    let last = digits.iter().rposition(|&c| c != b'0');
    match (first, last) {
        (Some(a), Some(b)) => b - a + 1,
        _ => 0,
    }
}

/// A fractional double as DuckDB's JSON writer spells it: the shortest digits that read
/// back the same, in decimal notation when the decimal point falls within (-6, 21] digits
/// of the first, else as `<digits>e<exponent>` (`1e-7`, `1.5e300`).
fn json_double(v: f64) -> String {
    let sci = format!("{v:e}");
    let exp: i32 = sci.rsplit_once('e').and_then(|(_, e)| e.parse().ok()).unwrap_or(0);
    if -6 < exp + 1 && exp < 21 {
        format!("{v}")
    } else {
        sci
    }
}

/// Extract `numeric` and `text` features (a name may be in both) from each row's JSON
/// (None: a NULL `features`).
pub fn extract<'a, I>(rows: I, numeric: &[&str], text: &[&str]) -> Extracted
where
    I: IntoIterator<Item = Option<&'a str>>,
{
    let mut wanted: HashMap<&str, usize> = HashMap::new();
    for k in numeric.iter().chain(text) {
        let n = wanted.len();
        wanted.entry(k).or_insert(n);
    }
    let num_slots: Vec<usize> = numeric.iter().map(|k| wanted[k]).collect();
    let text_slots: Vec<usize> = text.iter().map(|k| wanted[k]).collect();
    let mut out = Extracted {
        numeric: vec![Vec::new(); numeric.len()],
        text: vec![Vec::new(); text.len()],
        unsure: Vec::new(),
    };
    let mut raw: Vec<Option<&str>> = vec![None; wanted.len()];
    let mut labels: Vec<Option<String>> = vec![None; text.len()];
    for (row, doc) in rows.into_iter().enumerate() {
        let mut sure = match doc {
            None => {
                raw.iter_mut().for_each(|v| *v = None);
                true
            }
            Some(doc) => members(doc, &wanted, &mut raw).is_ok(),
        };
        if sure {
            for (j, &slot) in text_slots.iter().enumerate() {
                match text_value(raw[slot]) {
                    Ok(v) => labels[j] = v,
                    Err(Unsure) => {
                        sure = false;
                        break;
                    }
                }
            }
        }
        if !sure {
            out.unsure.push(row);
            out.numeric.iter_mut().for_each(|c| c.push(None));
            out.text.iter_mut().for_each(|c| c.push(None));
            continue;
        }
        for (col, &slot) in out.numeric.iter_mut().zip(&num_slots) {
            col.push(numeric_value(raw[slot]));
        }
        for (col, label) in out.text.iter_mut().zip(labels.iter_mut()) {
            col.push(label.take());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(doc: &str) -> (Option<f64>, Option<String>, bool) {
        let e = extract([Some(doc)], &["a"], &["a"]);
        (e.numeric[0][0], e.text[0][0].clone(), !e.unsure.is_empty())
    }

    #[test]
    fn values_as_the_sql_gives_them() {
        // Each expectation is what DuckDB 2.0's feature_window SQL returned for the row.
        assert_eq!(one(r#"{"a":1.5}"#), (Some(1.5), Some("1.5".into()), false));
        assert_eq!(one(r#"{"a":1e-7}"#), (Some(1e-7), Some("1e-7".into()), false));
        assert_eq!(one(r#"{"a":1.5e300}"#), (Some(1.5e300), Some("1.5e300".into()), false));
        assert_eq!(one(r#"{"a":1e38}"#), (Some(1e38), Some("1e38".into()), false));
        assert_eq!(one(r#"{"a":2.50}"#), (Some(2.5), Some("2.5".into()), false));
        assert_eq!(one(r#"{"a":"1.5"}"#), (None, Some("1.5".into()), false));
        assert_eq!(one(r#"{"a":true}"#), (None, Some("True".into()), false));
        assert_eq!(one(r#"{"a":false}"#), (None, Some("False".into()), false));
        assert_eq!(one(r#"{"a":null}"#), (None, None, false));
        assert_eq!(one(r#"{"a":[1]}"#), (None, None, false));
        assert_eq!(one(r#"{"a":{}}"#), (None, None, false));
        assert_eq!(
            one(r#"{"a":12345678901234567890123}"#),
            (
                Some(1.2345678901234568e22),
                Some("12345678901234567890123".into()),
                false
            )
        );
        assert_eq!(one(r#"{"a":1e5}"#), (Some(100000.0), Some("100000".into()), false));
        assert_eq!(one(r#"{"a":-0}"#), (Some(0.0), Some("0".into()), false));
        assert!(one(r#"{"a":-0}"#).0.unwrap().is_sign_positive());
        assert!(one(r#"{"a":-0.0}"#).0.unwrap().is_sign_negative());
        assert_eq!(one(r#"{"a":1,"a":2}"#), (Some(1.0), Some("1".into()), false));
        assert_eq!(one(r#"{"\u0061":3}"#), (Some(3.0), Some("3".into()), false));
        assert_eq!(one(r#"{"a":"\ud83d\ude00"}"#), (None, Some("😀".into()), false));
        assert_eq!(one(r#"[1,2]"#), (None, None, false));
        assert_eq!(one(r#" {"a":1} "#), (Some(1.0), Some("1".into()), false));
        assert_eq!(
            one(r#"{"a":9.99e37}"#),
            (
                Some(9.99e37),
                Some("99900000000000004872389669800002977792".into()),
                false
            )
        );
    }

    #[test]
    fn what_the_sql_must_settle_is_unsure() {
        for doc in [
            r#"{"a":1"#,
            "nope",
            r#"{"a":NaN}"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":1.5} x"#,
            r#"{"a":1E400}"#,
            r#"{"a":573514882531718.2}"#,
            "",
        ] {
            assert!(one(doc).2, "{doc}");
        }
        let deep = format!("{{\"b\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(one(&deep).2);
    }

    #[test]
    fn null_rows_and_absent_keys() {
        let e = extract(
            [None, Some(r#"{"b":1}"#), Some(r#"{"a":2,"b":"x"}"#)],
            &["a", "b"],
            &["b"],
        );
        assert_eq!(
            e.numeric,
            vec![vec![None, None, Some(2.0)], vec![None, Some(1.0), None]]
        );
        assert_eq!(e.text, vec![vec![None, Some("1".into()), Some("x".into())]]);
        assert!(e.unsure.is_empty());
    }
}
