//! Reading a store's answer into a `serde_json::Value` and writing the masked one back, with
//! the same results as `serde_json::from_str` and `serde_json::to_vec`, for less work.
//!
//! Callgrind of a 100-row list request: building each object key by key (`Map::insert`
//! searches the node from its start for every key, and the keys arrive sorted, so each is
//! compared with all before it) was 40% of the parse; escaping strings byte by byte was most of
//! the serialisation. Here an object's entries are collected and built in one go
//! (`Map::from_iter`: a stable sort, then the last of equal keys kept, as repeated inserts keep
//! it; std does not promise which duplicate survives, so a unit test pins it), and a string with nothing to escape is copied whole. The tokenizer, numbers and every
//! string that needs escaping are still serde_json's own.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The prefix of the keys by which serde_json's optional features read an object as something
/// else (`raw_value`: a string parsed as a new document, with a new depth limit, so a store
/// could nest a document ~2400 deep inside 4 MiB; `arbitrary_precision`: a number). No store
/// sends them: an answer with such a key is refused (502, as an answer that is not JSON), and
/// a dependency that turned a feature on would fail every test rather than change values.
const PRIVATE_TOKEN: &str = "$serde_json::private::";

/// `serde_json::from_str::<Value>(text)`: the same value or an error for the same texts, but
/// an error for a document holding a key that begins with `PRIVATE_TOKEN`.
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Seed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Builds one value.
#[derive(Clone, Copy)]
struct Seed;

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// The same arms as serde_json's own `ValueVisitor`, but nested values use this seed.
impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Value::Object(Map::new()));
        };
        // Rows of a list carry a dozen keys: one allocation for most objects.
        let mut entries = Vec::with_capacity(16);
        entries.push((public(first)?, map.next_value_seed(self)?));
        while let Some(key) = map.next_key::<String>()? {
            entries.push((public(key)?, map.next_value_seed(self)?));
        }
        Ok(Value::Object(Map::from_iter(entries)))
    }
}

/// `key`, unless serde_json reserves it (`PRIVATE_TOKEN`).
fn public<E: de::Error>(key: String) -> Result<String, E> {
    if key.starts_with(PRIVATE_TOKEN) {
        return Err(E::custom("a key serde_json reserves"));
    }
    Ok(key)
}

/// `serde_json::to_vec(v)`, byte for byte, appended to `out`.
fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => number(n, out),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                write(item, out);
            }
            out.push(b'}');
        }
    }
}

/// The masked answer as bytes, in a buffer sized for `hint` bytes (the answer as received).
/// Shrunk when masking made it much shorter: the buffer is held until a slow client has read
/// the answer, and a 4 MiB answer cut to 5 KiB must not hold 4 MiB meanwhile.
pub fn to_vec(v: &Value, hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(hint);
    write(v, &mut out);
    if out.capacity() > 2 * out.len() {
        out.shrink_to_fit();
    }
    out
}

/// `serde_json::to_string(items)` for a list of strings, byte for byte: an audit record's
/// subjects, written for every record (a list answer's hundred or more ids were escaped byte
/// by byte by serde_json, 0.8% of a list load's CPU on the audit writer).
pub fn string_list(items: &[String]) -> String {
    let mut out = Vec::with_capacity(2 + items.iter().map(|s| s.len() + 3).sum::<usize>());
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(s, &mut out);
    }
    out.push(b']');
    String::from_utf8(out).expect("JSON of strings is UTF-8")
}

fn number(n: &Number, out: &mut Vec<u8>) {
    // serde_json's own formatting (itoa, ryu); writing into a Vec cannot fail.
    serde_json::to_writer(&mut *out, n).expect("a number serialises into memory");
}

/// A string as serde_json writes it: copied whole when nothing in it needs escaping, else
/// escaped by serde_json itself.
fn string(s: &str, out: &mut Vec<u8>) {
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("a string serialises into memory");
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Whether any byte is one serde_json escapes: a control character (below 0x20), `"` or `\`.
/// Eight bytes at a time: a word has such a byte exactly when it has a byte below 0x20, or a
/// zero byte once XORed with `"` or `\` repeated. The last word
/// overlaps the one before it rather than being copied out and padded.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    if bytes.len() < 8 {
        return bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    }
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH != 0;
    let escapes = |c: &[u8]| {
        let w = u64::from_ne_bytes(c.try_into().expect("eight bytes"));
        below(w, 0x20)
            || below(w ^ (ONES * u64::from(b'"')), 1)
            || below(w ^ (ONES * u64::from(b'\\')), 1)
    };
    bytes.chunks_exact(8).any(escapes) || escapes(&bytes[bytes.len() - 8..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_serde(text: &str) {
        let ours = parse(text).map_err(|_| ());
        let theirs = serde_json::from_str::<Value>(text).map_err(|_| ());
        assert_eq!(ours, theirs, "{text:?}");
        // Bytes, not `==` alone: `Number`'s equality takes -0.0 for 0.0.
        if let (Ok(v), Ok(theirs)) = (ours, theirs) {
            let mut out = Vec::new();
            write(&v, &mut out);
            assert_eq!(out, serde_json::to_vec(&theirs).unwrap(), "{text:?}");
        }
    }

    /// Every ASCII byte, at every place of strings around the word size, written as serde_json
    /// writes it; a non-ASCII character next to each, too.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for b in 0u8..0x80 {
            for len in 0..20 {
                for at in 0..len {
                    let mut s: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                    s[at] = b;
                    let mut s = String::from_utf8(s).unwrap();
                    for v in [Value::String(s.clone()), {
                        s.insert(at, '名');
                        Value::String(s)
                    }] {
                        let mut out = Vec::new();
                        write(&v, &mut out);
                        assert_eq!(out, serde_json::to_vec(&v).unwrap(), "{v:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn string_lists_are_written_as_serde_json_writes_them() {
        let odd: Vec<String> = (0u8..0x80)
            .map(|b| format!("91{}名\u{1F642}x", char::from(b)))
            .chain(["".into(), "\\\"".into(), "a".repeat(40)])
            .collect();
        for items in [&odd[..], &odd[..1], &[]] {
            assert_eq!(string_list(items), serde_json::to_string(items).unwrap());
        }
    }

    #[test]
    fn documents_parse_and_write_as_serde_json_does() {
        for text in [
            r#"{"b":1,"a":2,"b":3,"c":{"z":[1,-2,3.5,1e400,-0.0,18446744073709551615,-9223372036854775808]}}"#,
            r#"{"k\"ey":"v\u0000\n\u001f\u007f名\ud83d\ude42","":null,"t":true,"f":false,"e":{},"a":[]}"#,
            r#"[{"x":1},{"x":1,"x":{"y":2}},[],[[[]]],"s",1.0,12345678901234567890123]"#,
            " {\"a\" : [ 1 , 2 ] } ",
            r#"{"a":1}x"#,
            r#"{"a":1,}"#,
            r#"{"a":"\ud800"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a" 1}"#,
            "[1,2",
            "",
            "null",
            "\"only a string\"",
        ] {
            same_as_serde(text);
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        same_as_serde(&deep);
        let deep_obj = format!("{}1{}", r#"{"a":"#.repeat(130), "}".repeat(130));
        same_as_serde(&deep_obj);
    }

    /// A key serde_json reserves is refused wherever it stands, escaped or not: under
    /// `raw_value` it would parse a string as a new document with a new depth limit.
    #[test]
    fn keys_serde_json_reserves_are_refused() {
        let raw = r#"{"$serde_json::private::RawValue":"[[[1]]]"}"#;
        let nested = format!(r#"{{"a":[{raw}]}}"#);
        for text in [
            raw,
            &nested,
            r#"{"x":1,"$serde_json::private::RawValue":"2"}"#,
            r#"{"$serde_json::private::Number":"12"}"#,
            r#"{"\u0024serde_json::private::RawValue":"1"}"#,
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        assert!(parse(r#"{"$serde_json::public":1,"serde_json::private::":2}"#).is_ok());
    }

    /// The buffer starts at the hint and keeps it only when the answer fills half of it: a
    /// store's 1 MiB answer masked to a few bytes must not hold 1 MiB while a client reads it.
    #[test]
    fn an_answer_much_shorter_than_its_hint_gives_the_rest_back() {
        let small = Value::String("short".into());
        let out = to_vec(&small, 1 << 20);
        assert_eq!(out, b"\"short\"");
        assert!(out.capacity() <= 2 * out.len(), "{}", out.capacity());
        let long = Value::String("x".repeat(1000));
        assert!(
            to_vec(&long, 1500).capacity() >= 1500,
            "a fitting hint is kept"
        );
    }

    /// serde_json's depth limit, at its edge: each depth is accepted or refused as serde_json
    /// does, and the range holds both answers.
    #[test]
    fn depth_is_limited_where_serde_json_limits_it() {
        let mut answers = std::collections::BTreeSet::new();
        for n in 120..=136 {
            for text in [
                format!("{}{}", "[".repeat(n), "]".repeat(n)),
                format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n)),
            ] {
                same_as_serde(&text);
                answers.insert(parse(&text).is_ok());
            }
        }
        assert_eq!(answers.len(), 2, "the limit is not inside 120..=136");
    }
}
