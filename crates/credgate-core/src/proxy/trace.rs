//! The caller's own ids: `X-Request-Id` and W3C Trace Context (`traceparent`, `tracestate`).
//!
//! They are the caller's words, so they are believed only in a strict form and otherwise
//! ignored: not recorded, not forwarded, and the request is still served. They are never
//! echoed back (the response's `X-Request-Id` stays the gateway's own). A value the caller sent
//! more than once is ignored too: which copy would be meant is not ours to guess.

use http::{HeaderMap, HeaderValue};
use ring::rand::{SecureRandom, SystemRandom};

/// The longest caller request id kept. A longer one is ignored, not cut: a cut id would name
/// a different request.
pub const MAX_CALLER_REQUEST_ID: usize = 128;

/// The longest `tracestate` passed on (W3C Trace Context: at least 512 characters should be
/// propagated; more than that may be dropped whole).
const MAX_TRACESTATE: usize = 512;
/// At most this many list members in `tracestate` (W3C Trace Context, section 3.3.1).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The single value of `name`, as text; none when absent, repeated or not visible ASCII.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut all = headers.get_all(name).iter();
    let v = all.next()?;
    if all.next().is_some() {
        return None;
    }
    v.to_str().ok()
}

/// The caller's `X-Request-Id`, when it is one value of 1 to 128 visible ASCII characters
/// (no space, no control character, nothing outside ASCII).
pub fn caller_request_id(headers: &HeaderMap) -> Option<String> {
    let v = single(headers, "x-request-id")?;
    let ok = !v.is_empty()
        && v.len() <= MAX_CALLER_REQUEST_ID
        && v.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| v.to_string())
}

/// A caller's trace context, validated: what the audit record keeps (the trace id) and what
/// the store is sent (the same trace, with the gateway's own span as the parent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// The trace flags the caller sent (only the `sampled` bit is passed on).
    pub flags: u8,
    /// The caller's `tracestate`, re-joined, when it was valid.
    pub tracestate: Option<String>,
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn all_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

impl TraceContext {
    /// The caller's trace context, or none when `traceparent` is absent, repeated or not of
    /// the W3C form: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, trace and parent ids not all
    /// zero; version `ff` is invalid, and a later version is read by its first four fields
    /// (and must not carry more unless after a `-`). `tracestate` is kept only when valid.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let v = single(headers, "traceparent")?;
        let (trace_id, flags) = parse_traceparent(v)?;
        Some(Self {
            trace_id,
            flags,
            tracestate: tracestate(headers),
        })
    }

    /// The `traceparent` for the store: the same trace, a fresh parent id (the gateway's span),
    /// version 00, the sampled flag as the caller set it.
    pub fn child_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            new_span_id(),
            self.flags & 0x01
        )
    }

    /// Sets `traceparent` (and a valid `tracestate`) on a request to a store.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.child_traceparent()) {
            headers.insert("traceparent", v);
        }
        if let Some(state) = &self.tracestate
            && let Ok(v) = HeaderValue::from_str(state)
        {
            headers.insert("tracestate", v);
        }
    }
}

/// The trace id and flags of a well-formed `traceparent`.
fn parse_traceparent(v: &str) -> Option<(String, u8)> {
    if v.len() < 55 || !v.is_ascii() {
        return None;
    }
    let (head, rest) = v.split_at(55);
    let mut parts = head.split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !lower_hex(version, 2) || version == "ff" {
        return None;
    }
    // Version 00 is exactly 55 characters; a later one may add fields after a dash.
    if (version == "00" && !rest.is_empty()) || !(rest.is_empty() || rest.starts_with('-')) {
        return None;
    }
    if !lower_hex(trace_id, 32) || !lower_hex(parent_id, 16) || !lower_hex(flags, 2) {
        return None;
    }
    if all_zero(trace_id) || all_zero(parent_id) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id.to_string(), flags))
}

/// The caller's `tracestate` (all its header lines, joined), when every member is valid.
fn tracestate(headers: &HeaderMap) -> Option<String> {
    let mut members: Vec<&str> = Vec::new();
    for line in headers.get_all("tracestate") {
        for m in line.to_str().ok()?.split(',') {
            let m = m.trim_matches([' ', '\t']);
            if !m.is_empty() {
                members.push(m);
            }
        }
    }
    if members.is_empty() || members.len() > MAX_TRACESTATE_MEMBERS {
        return None;
    }
    let mut keys = std::collections::HashSet::new();
    for m in &members {
        let (key, value) = m.split_once('=')?;
        if !valid_key(key) || !valid_value(value) || !keys.insert(key) {
            return None;
        }
    }
    let joined = members.join(",");
    (joined.len() <= MAX_TRACESTATE).then_some(joined)
}

/// `simple-key` or `tenant-id@system-id` of W3C Trace Context 3.3.1.3.1.
fn valid_key(key: &str) -> bool {
    let tail = |s: &str| {
        s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    match key.split_once('@') {
        None => {
            (1..=256).contains(&key.len()) && key.as_bytes()[0].is_ascii_lowercase() && tail(key)
        }
        Some((tenant, system)) => {
            (1..=241).contains(&tenant.len())
                && (1..=14).contains(&system.len())
                && matches!(tenant.as_bytes()[0], b'a'..=b'z' | b'0'..=b'9')
                && system.as_bytes()[0].is_ascii_lowercase()
                && tail(tenant)
                && tail(system)
        }
    }
}

/// A value: 1 to 256 printable ASCII characters but `,` and `=`, not ending in a space.
fn valid_value(value: &str) -> bool {
    (1..=256).contains(&value.len())
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && !value.ends_with(' ')
}

/// A random, non-zero span id: 16 lowercase hex digits.
fn new_span_id() -> String {
    let rng = SystemRandom::new();
    let mut b = [0u8; 8];
    loop {
        if rng.fill(&mut b).is_err() {
            // The system's generator failing is not the caller's problem: a fixed non-zero id
            // still keeps the trace together.
            return "0000000000000001".into();
        }
        if b != [0; 8] {
            return hex::encode(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hostile_traceparents_are_ignored() {
        let long = format!("{GOOD}{}", "0".repeat(10_000));
        let bad: Vec<&[u8]> = vec![
            b"",
            long.as_bytes(),
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01".as_bytes(),
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\x01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            b"0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for v in bad {
            let Ok(value) = HeaderValue::from_bytes(v) else {
                continue; // http refuses it before we see it (CR/LF)
            };
            let mut h = HeaderMap::new();
            h.insert("traceparent", value);
            assert_eq!(
                TraceContext::from_headers(&h),
                None,
                "{}",
                String::from_utf8_lossy(v)
            );
        }
        // Two headers, even both valid.
        let h = headers(&[
            ("traceparent", GOOD.as_bytes()),
            ("traceparent", GOOD.as_bytes()),
        ]);
        assert_eq!(TraceContext::from_headers(&h), None);
    }

    #[test]
    fn a_valid_traceparent_keeps_its_trace_with_a_new_parent() {
        let h = headers(&[("traceparent", GOOD.as_bytes())]);
        let t = TraceContext::from_headers(&h).unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = t.child_traceparent();
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(child.ends_with("-01"));
        assert_ne!(&child[36..52], "00f067aa0ba902b7");
        assert_eq!(parse_traceparent(&child).map(|p| p.0), Some(t.trace_id));
        // A later version is read by its first four fields, and sent on as 00.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-ever";
        let t = TraceContext::from_headers(&headers(&[("traceparent", later.as_bytes())])).unwrap();
        assert!(t.child_traceparent().ends_with("-01"));
    }

    #[test]
    fn tracestate_is_kept_only_when_valid() {
        let with = |ts: &[&[u8]]| {
            let mut pairs: Vec<(&str, &[u8])> = vec![("traceparent", GOOD.as_bytes())];
            pairs.extend(ts.iter().map(|v| ("tracestate", *v)));
            TraceContext::from_headers(&headers(&pairs))
                .unwrap()
                .tracestate
        };
        assert_eq!(
            with(&[b"congo=t61rcWkgMzE"]),
            Some("congo=t61rcWkgMzE".into())
        );
        assert_eq!(
            with(&[b"rojo=00f067aa0ba902b7", b"congo=t61rcWkgMzE, t@sys=1"]),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,t@sys=1".into())
        );
        for bad in [
            &b"Congo=1"[..],
            b"congo",
            b"congo=",
            b"congo=a,congo=b",
            b"congo=a=b",
            b"congo=a\tb",
            "congo=é".as_bytes(),
        ] {
            assert_eq!(with(&[bad]), None, "{}", String::from_utf8_lossy(bad));
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(with(&[many.join(",").as_bytes()]), None);
        let long = format!("k={}", "v".repeat(256));
        let two = format!("{long},j={}", "v".repeat(256));
        assert_eq!(with(&[two.as_bytes()]), None);
        assert_eq!(with(&[]), None);
    }

    #[test]
    fn hostile_caller_request_ids_are_ignored() {
        let long = "a".repeat(129);
        for bad in [
            &b""[..],
            long.as_bytes(),
            "请求".as_bytes(),
            b"a b",
            b"a\tb",
            b"a\x7f",
        ] {
            if let Ok(v) = HeaderValue::from_bytes(bad) {
                let mut h = HeaderMap::new();
                h.insert("x-request-id", v);
                assert_eq!(caller_request_id(&h), None, "{bad:?}");
            }
        }
        let h = headers(&[("x-request-id", b"a"), ("x-request-id", b"b")]);
        assert_eq!(caller_request_id(&h), None);
        let h = headers(&[("x-request-id", "a".repeat(128).as_bytes())]);
        assert_eq!(caller_request_id(&h), Some("a".repeat(128)));
        let h = headers(&[("x-request-id", b"bank-req-7:2026/abc")]);
        assert_eq!(
            caller_request_id(&h).as_deref(),
            Some("bank-req-7:2026/abc")
        );
    }
}
