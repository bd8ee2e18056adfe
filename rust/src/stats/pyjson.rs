//! JSON text exactly as Python's `json.dumps(value, indent=2)` writes it (ASCII only, Python's
//! float spelling), starting at any nesting depth, so the core can write part of a document
//! that the admin API encodes in Python and splice it in (`cluster::render`).

use serde_json::{Map, Value};
use std::fmt::Write;

/// Spaces per nesting level (`indent=2`).
const INDENT: usize = 2;

pub fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', depth * INDENT));
}

/// `value` as `json.dumps(value, indent=2)` writes it when it sits at nesting `depth` (the
/// depth of the key or list item it is the value of): the first line is not indented, the
/// closing bracket is indented by `depth` levels.
pub fn write_value(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                write_f64(out, n.as_f64().unwrap_or(0.0));
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_value(out, item, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, depth),
    }
}

/// An object (`write_value` of `Value::Object`), without wrapping the map.
pub fn write_object(out: &mut String, map: &Map<String, Value>, depth: usize) {
    write_entries(out, map.iter().map(|(k, v)| (k.as_str(), v)), depth);
}

/// An object of these entries, in this order.
pub fn write_entries<'a>(
    out: &mut String,
    entries: impl Iterator<Item = (&'a str, &'a Value)>,
    depth: usize,
) {
    let mut any = false;
    for (key, value) in entries {
        out.push_str(if any { "," } else { "{" });
        any = true;
        newline(out, depth + 1);
        write_str(out, key);
        out.push_str(": ");
        write_value(out, value, depth + 1);
    }
    if any {
        newline(out, depth);
        out.push('}');
    } else {
        out.push_str("{}");
    }
}

/// A string as Python's `json.dumps` (`ensure_ascii=True`) writes it.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// A float as Python's `repr` (what `json.dumps` writes): the shortest digits that read back
/// the same, in exponent form below 1e-4 and from 1e16 up (`1e-05`, `1e+16`), else with at
/// least one decimal (`1.0`); `NaN`, `Infinity`, `-Infinity` as `json.dumps` allows them.
pub fn write_f64(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7", "0e0".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        } else if exp + 1 >= n {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (exp + 1 - n) as usize));
            out.push_str(".0");
        } else {
            let point = (exp + 1) as usize;
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(x: f64) -> String {
        let mut s = String::new();
        write_f64(&mut s, x);
        s
    }

    #[test]
    fn floats_are_spelled_as_python_repr() {
        // Each right-hand side is Python 3's repr of the left.
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.5, "0.5"),
            (123.456, "123.456"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e22, "1.2345e+22"),
            (1e300, "1e+300"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5, "-2.5"),
            (99.95, "99.95"),
        ];
        for (x, want) in cases {
            assert_eq!(f(x), want, "{x:e}");
        }
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn strings_are_ascii_with_python_escapes() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\n\t\u{1}\u{7f}é😀");
        assert_eq!(s, r#""a\"b\\c\n\t\u0001\u007f\u00e9\ud83d\ude00""#);
    }

    #[test]
    fn nesting_matches_indent_2_at_any_depth() {
        let v = json!({"a": 1, "b": {"c": [1, 2.5, null], "d": {}, "e": []}, "f": true});
        let mut s = String::new();
        write_value(&mut s, &v, 0);
        let want = "{\n  \"a\": 1,\n  \"b\": {\n    \"c\": [\n      1,\n      2.5,\n      null\n    ],\n    \"d\": {},\n    \"e\": []\n  },\n  \"f\": true\n}";
        assert_eq!(s, want);
        let mut s = String::new();
        write_value(&mut s, &json!({"x": [0]}), 2);
        assert_eq!(s, "{\n      \"x\": [\n        0\n      ]\n    }");
    }
}
