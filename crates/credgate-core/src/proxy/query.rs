//! The query string, decided and forwarded as one thing. It is parsed once into pairs; anything
//! another parser could read differently (a `;` separator, a key repeated or differing only in
//! case, an array form such as `id[]` or `id[0]`, a control character) is refused; and only the
//! pairs so validated, re-serialised, reach the store, the subject's id in its canonical form.

use std::collections::HashSet;

use super::DataError as Error;
use super::upstream::{Route, SubjectLocator};
use crate::domain::SubjectId;

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

/// At most this many `&`-separated pairs: a longer query is refused, not scanned.
pub const MAX_PAIRS: usize = 64;

/// A plain parameter name: letters, digits, `_`, `-` and `.`; no brackets, no blanks.
fn plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A key as the laxest parser behind a store could read it: case folded, with the separators
/// `_`, `.`, `-`, blank and `[` dropped (PHP turns `id.number` into `id_number`; Spring and
/// Jackson bind `idNumber` to `id_number`). Two keys that normalise alike are one key to some
/// store, so they are refused together.
pub fn normalised_key(k: &str) -> String {
    k.chars()
        .filter(|c| !matches!(c, '_' | '.' | '-' | ' ' | '['))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Splits the raw query into pairs, refusing what a parser could read in more than one way:
/// a `;` separator, too many pairs, and a key without `=` (which some stores read as a flag
/// and others as an empty value; it is refused rather than rewritten as `key=`).
fn pairs(raw: &str) -> Result<Vec<(String, String)>, Error> {
    if raw.contains(';') {
        return Err(refuse("`;` is not a separator; use `&`"));
    }
    let pieces = raw.split('&').filter(|p| !p.is_empty());
    if pieces.clone().count() > MAX_PAIRS {
        return Err(refuse(format!("more than {MAX_PAIRS} parameters")));
    }
    if let Some(p) = pieces.clone().find(|p| !p.contains('=')) {
        let shown: String = p.chars().take(64).collect();
        return Err(refuse(format!(
            "parameter `{shown}` has no `=` and a value"
        )));
    }
    serde_urlencoded::from_str(raw).map_err(|_| refuse("the query string is malformed"))
}

pub fn decide(raw: Option<&str>, route: &Route) -> Result<Decided, Error> {
    let raw = raw.unwrap_or("");
    if raw.is_empty() {
        return Ok(Decided::default());
    }
    let subject_key = match &route.subject {
        Some((SubjectLocator::Query(name), kind)) => Some((name.as_str(), *kind)),
        _ => None,
    };
    let reserved: HashSet<String> = route.subject_names().collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut forwarded = Vec::new();
    let mut subject = None;
    for (k, v) in pairs(raw)? {
        if k.contains(['[', ']']) {
            return Err(refuse(format!("array form `{k}` is not accepted")));
        }
        if !plain_key(&k) {
            return Err(refuse(
                "a parameter name is empty or has reserved characters",
            ));
        }
        let norm = normalised_key(&k);
        if !seen.insert(norm.clone()) {
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
            // Only the route's own subject parameter, spelt exactly, may name who it is about.
            _ if reserved.contains(&norm) => {
                return Err(refuse(format!(
                    "`{k}` names the subject of this route, which only its path or its own parameter may"
                )));
            }
            _ if !route.allows_query(&k) => {
                return Err(refuse(format!("this route takes no parameter `{k}`")));
            }
            _ => v,
        };
        forwarded.push((k, value));
    }
    let forwarded = serde_urlencoded::to_string(&forwarded)
        .map_err(|_| refuse("the query string is malformed"))?;
    Ok(Decided {
        subject,
        forwarded: (!forwarded.is_empty()).then_some(forwarded),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::SubjectType, proxy::route::RoutePattern};

    const A: &str = "11010519491231002X";
    const USCC: &str = "91350100M000100Y43";

    fn route(
        path: &str,
        subject: Option<SubjectLocator>,
        kind: SubjectType,
        query: &[&str],
    ) -> Route {
        Route {
            method: http::Method::GET,
            template: path.into(),
            pattern: RoutePattern::parse(path).unwrap(),
            dataset: "d".into(),
            subject: subject.map(|s| (s, kind)),
            profile: false,
            query: query.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn forwarded(raw: &str, r: &Route) -> Result<Option<String>, String> {
        decide(Some(raw), r)
            .map(|d| d.forwarded)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_route_without_a_list_takes_no_parameter() {
        let r = route(
            "/entities/{uscc}",
            Some(SubjectLocator::Path("uscc".into())),
            SubjectType::Legal,
            &[],
        );
        assert!(forwarded(&format!("uscc={USCC}"), &r).is_err());
        assert!(forwarded("page=1", &r).is_err());
        assert_eq!(forwarded("", &r), Ok(None));
    }

    #[test]
    fn a_key_spelling_the_subject_another_way_is_refused_even_when_listed() {
        let q = route(
            "/persons",
            Some(SubjectLocator::Query("id_number".into())),
            SubjectType::Natural,
            &["id.number", "ID-NUMBER", "idNumber", "page"],
        );
        assert_eq!(
            forwarded(&format!("id_number={A}&page=2"), &q),
            Ok(Some(format!("id_number={A}&page=2")))
        );
        for bad in [
            format!("id_number={A}&id.number={USCC}"),
            format!("id.number={A}"),
            format!("ID-NUMBER={A}"),
            format!("id_number={A}&Id_Number={A}"),
            format!("id%20number={A}"),
            format!("idNumber={A}"),
        ] {
            assert!(forwarded(&bad, &q).is_err(), "{bad}");
        }
        let p = route(
            "/things/{name}",
            None,
            SubjectType::Legal,
            &["name", "n-ame"],
        );
        assert!(forwarded("name=x", &p).is_err());
        assert!(forwarded("NAME=x", &p).is_err());
        assert!(forwarded("n-ame=x", &p).is_err(), "separators are dropped");
    }

    #[test]
    fn keys_that_normalise_alike_are_one_key() {
        let r = route(
            "/list",
            None,
            SubjectType::Legal,
            &["page_size", "page-size", "page.size"],
        );
        assert!(forwarded("page_size=1", &r).is_ok());
        assert!(forwarded("page_size=1&page-size=2", &r).is_err());
        assert!(forwarded("page.size=1&page_size=2", &r).is_err());
        assert!(
            forwarded("pageSize=1&page_size=2", &r).is_err(),
            "camelCase"
        );
    }

    #[test]
    fn a_key_without_a_value_and_too_many_pairs_are_refused() {
        let r = route("/list", None, SubjectType::Legal, &["a", "page"]);
        assert!(
            forwarded("a", &r).is_err(),
            "`a` is refused, never rewritten as `a=`"
        );
        assert!(forwarded("page=1&a", &r).is_err());
        assert_eq!(forwarded("a=", &r), Ok(Some("a=".into())));
        let many: Vec<String> = (0..=MAX_PAIRS).map(|i| format!("k{i}=1")).collect();
        let e = forwarded(&many.join("&"), &r).unwrap_err();
        assert!(e.contains("more than"), "{e}");
        // The cap is checked before any key is looked at, so a flood costs one split.
        let names: Vec<String> = (0..MAX_PAIRS).map(|i| format!("k{i}")).collect();
        let wide = route(
            "/list",
            None,
            SubjectType::Legal,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let ok: Vec<String> = names.iter().map(|n| format!("{n}=1")).collect();
        assert!(forwarded(&ok.join("&"), &wide).is_ok());
    }
}
