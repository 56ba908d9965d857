//! The query string, decided and forwarded as one thing. It is parsed once into pairs; anything
//! another parser could read differently (a `;` separator, a key repeated or differing only in
//! case, an array form such as `id[]` or `id[0]`, a control character) is refused; and only the
//! pairs so validated, re-serialised, reach the store, the subject's id in its canonical form.

use super::upstream::{Route, SubjectLocator};
use crate::{domain::SubjectId, http::Error};

/// What the route phase made of the query: the subject it names and the text forwarded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decided {
    pub subject: Option<SubjectId>,
    /// The re-serialised query, `None` when there is nothing to forward.
    pub forwarded: Option<String>,
}

fn refuse(why: impl Into<String>) -> Error {
    Error::BadRequest(format!("query refused: {}", why.into()))
}

/// A plain parameter name: letters, digits, `_`, `-` and `.`; no brackets, no blanks.
fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub fn decide(raw: Option<&str>, route: &Route) -> Result<Decided, Error> {
    let raw = raw.unwrap_or("");
    if raw.is_empty() {
        return Ok(Decided::default());
    }
    if raw.contains(';') {
        return Err(refuse("`;` is not a separator; use `&`"));
    }
    let subject_key = match &route.subject {
        Some((SubjectLocator::Query(name), kind)) => Some((name.as_str(), *kind)),
        _ => None,
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut subject = None;
    let parsed: Vec<(String, String)> =
        serde_urlencoded::from_str(raw).map_err(|_| refuse("the query string is malformed"))?;
    for (k, v) in parsed {
        if k.contains(['[', ']']) {
            return Err(refuse(format!("array form `{k}` is not accepted")));
        }
        if !plain_key(&k) {
            return Err(refuse(
                "a parameter name is empty or has reserved characters",
            ));
        }
        if pairs.iter().any(|(seen, _)| seen.eq_ignore_ascii_case(&k)) {
            return Err(refuse(format!("parameter `{k}` given more than once")));
        }
        if v.chars().any(|c| c.is_control() || c == '\u{FFFD}') {
            return Err(refuse(format!("parameter `{k}` has a control character")));
        }
        let value = match subject_key {
            Some((name, kind)) if k == name => {
                let id = SubjectId::parse(kind, &v)?;
                let canonical = id.as_str().to_string();
                subject = Some(id);
                canonical
            }
            Some((name, _)) if k.eq_ignore_ascii_case(name) => {
                return Err(refuse(format!("`{k}` is not `{name}`: names are exact")));
            }
            _ if !route.allows_query(&k) => {
                return Err(refuse(format!("this route takes no parameter `{k}`")));
            }
            _ => v,
        };
        pairs.push((k, value));
    }
    let forwarded =
        serde_urlencoded::to_string(&pairs).map_err(|_| refuse("the query string is malformed"))?;
    Ok(Decided {
        subject,
        forwarded: (!forwarded.is_empty()).then_some(forwarded),
    })
}
