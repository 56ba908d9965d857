//! Phase 2, route: normalise the requested path and match it against a store's configured
//! routes. Only what a route declares is ever forwarded.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use unicode_normalization::is_nfkc;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// A configured path such as `/entities/{uscc}`: whole-segment literals and placeholders.
#[derive(Debug, Clone)]
pub struct RoutePattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(String),
}

impl RoutePattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let rest = pattern.strip_prefix('/').ok_or("must start with '/'")?;
        if rest.is_empty() {
            return Err("must name at least one segment".into());
        }
        let mut segments = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for seg in rest.split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(format!("segment `{seg}` is not allowed"));
            }
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if !crate::names::is_name(name) {
                    return Err(format!("placeholder `{{{name}}}` needs a lower-case name"));
                }
                if !seen.insert(name.to_string()) {
                    return Err(format!("placeholder `{{{name}}}` appears twice"));
                }
                segments.push(Segment::Param(name.to_string()));
            } else if seg.contains(['{', '}', '%', '?', '#', '\\']) {
                return Err(format!("segment `{seg}` has a reserved character"));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(Self { segments })
    }

    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The index of the segment holding this placeholder.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.segments
            .iter()
            .position(|s| matches!(s, Segment::Param(p) if p == name))
    }

    /// The path with its placeholders filled in, as decoded segments.
    pub fn fill(&self, value_of: impl Fn(&str) -> Option<String>) -> Option<Vec<String>> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => Some(l.clone()),
                Segment::Param(p) => value_of(p),
            })
            .collect()
    }

    /// Whether the decoded segments match, without collecting the placeholder values.
    pub fn is_match(&self, segs: &[String]) -> bool {
        segs.len() == self.segments.len()
            && self.segments.iter().zip(segs).all(|(pat, seg)| match pat {
                Segment::Literal(l) => l == seg,
                Segment::Param(_) => true,
            })
    }

    /// Matches decoded segments; returns the placeholder values.
    pub fn matches<'a>(&self, segs: &'a [String]) -> Option<Vec<(&str, &'a str)>> {
        if segs.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (pat, seg) in self.segments.iter().zip(segs) {
            match pat {
                Segment::Literal(l) if l == seg => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.as_str(), seg.as_str())),
            }
        }
        Some(params)
    }
}

/// Why a path was refused before any routing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path segment")]
    Empty,
    #[error("dot segments are not allowed, in any spelling")]
    DotSegment,
    #[error("after one decoding, a segment holds `%`, `/`, `;`, `\\` or a control character")]
    Encoded,
    #[error("path is not valid UTF-8")]
    Utf8,
    #[error(
        "a segment holds an invisible format character or a compatibility look-alike (such as a fullwidth `/`)"
    )]
    Lookalike,
}

/// Characters that some server or file system reads as a dot (NFKC folds most of them to `.`).
const DOT_LOOKALIKES: &[char] = &[
    '\u{2024}', // one dot leader
    '\u{2025}', // two dot leader
    '\u{2026}', // horizontal ellipsis
    '\u{FE52}', // small full stop
    '\u{FF0E}', // fullwidth full stop
    '\u{3002}', // ideographic full stop
    '\u{FF61}', // halfwidth ideographic full stop
];

/// Splits a raw (still percent-encoded) path into segments decoded exactly once, refusing any
/// segment that another decoder, router or file system could read differently than we do:
/// whatever still holds `%` after the decoding (double encoding such as `%252e` or `%%32%66`),
/// `/`, `;` (path parameters: `..;`), `\`, control characters, invalid UTF-8 (overlong forms
/// such as `%c0%ae`), and dot segments in any spelling (encoded, unicode look-alikes, trailing
/// dots and blanks that Windows strips), invisible format characters and anything NFKC would
/// fold into another character (fullwidth `／`, `；`). The caller re-encodes what it forwards from these
/// validated segments only.
///
/// `raw` is the part after the store name, without its leading slash: a leading slash here is
/// an empty segment (`/v1/stores/s//x`) and is refused like any other.
pub fn normalise(raw: &str) -> Result<Vec<String>, PathError> {
    raw.split('/').map(segment).collect()
}

fn segment(raw: &str) -> Result<String, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::Utf8)?;
    if decoded
        .chars()
        .any(|c| matches!(c, '%' | '/' | ';' | '\\') || c.is_control())
    {
        return Err(PathError::Encoded);
    }
    let trimmed = decoded.trim_end_matches(|c: char| c.is_whitespace());
    let dotty = |c: char| c == '.' || DOT_LOOKALIKES.contains(&c);
    if trimmed.trim().is_empty() {
        return Err(PathError::Empty);
    }
    if decoded.contains(|c| DOT_LOOKALIKES.contains(&c)) || trimmed.ends_with(dotty) {
        return Err(PathError::DotSegment);
    }
    // What another layer could fold into something else: an invisible format character
    // (soft hyphen, zero-width space, bidi override), or a character NFKC maps to another
    // (fullwidth `／` `＼` `；`, ligatures). Only segments already in NFKC form pass.
    if decoded
        .chars()
        .any(|c| c.general_category() == GeneralCategory::Format)
        || !is_nfkc(&decoded)
    {
        return Err(PathError::Lookalike);
    }
    Ok(decoded.into_owned())
}

/// Characters escaped when a decoded segment is put back into the upstream path.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\');

pub fn encode_segments(segs: &[String]) -> String {
    let mut path = String::new();
    for s in segs {
        path.push('/');
        path.extend(utf8_percent_encode(s, SEGMENT));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_tricks_are_refused() {
        assert_eq!(normalise("entities/../admin"), Err(PathError::DotSegment));
        assert_eq!(normalise("entities/./x"), Err(PathError::DotSegment));
        assert_eq!(normalise("entities/%2e%2e/x"), Err(PathError::DotSegment));
        assert_eq!(normalise("entities/%2E%2E"), Err(PathError::DotSegment));
        assert_eq!(normalise("entities%2Fadmin"), Err(PathError::Encoded));
        assert_eq!(normalise("entities%5cadmin"), Err(PathError::Encoded));
        assert_eq!(normalise("entities\\admin"), Err(PathError::Encoded));
        assert_eq!(normalise("entities/%00"), Err(PathError::Encoded));
        assert_eq!(normalise("entities//x"), Err(PathError::Empty));
        assert_eq!(normalise("/entities/x"), Err(PathError::Empty));
        assert_eq!(normalise(""), Err(PathError::Empty));
        assert_eq!(normalise("entities/%ff"), Err(PathError::Utf8));
        assert_eq!(normalise("entities/%252e"), Err(PathError::Encoded));
        assert_eq!(normalise("entities/%%32%66"), Err(PathError::Encoded));
        assert_eq!(normalise("entities/..;"), Err(PathError::Encoded));
        assert_eq!(normalise("entities/x%3b"), Err(PathError::Encoded));
        assert_eq!(normalise("entities/%c0%ae"), Err(PathError::Utf8));
        assert_eq!(normalise("entities/%ef%bc%8e"), Err(PathError::DotSegment));
        assert_eq!(normalise("entities/x."), Err(PathError::DotSegment));
        assert_eq!(normalise("entities/..%20"), Err(PathError::DotSegment));
        assert_eq!(normalise("entities/%20"), Err(PathError::Empty));
        for lookalike in [
            "..%EF%BC%8Fadmin", // fullwidth solidus
            "..%EF%BC%BCadmin", // fullwidth reverse solidus
            "..%EF%BC%9B",      // fullwidth semicolon
            "..%C2%AD",         // soft hyphen
            "..%E2%80%8B",      // zero-width space
            "x%E2%80%AEtxt",    // right-to-left override
            "%EF%BD%81dmin",    // fullwidth `a`
            "x%EF%BB%BF",       // byte order mark
        ] {
            assert_eq!(
                normalise(&format!("entities/{lookalike}")),
                Err(PathError::Lookalike),
                "{lookalike}"
            );
        }
    }

    #[test]
    fn ordinary_paths_decode() {
        assert_eq!(
            normalise("entities/91350100M000100Y43").unwrap(),
            vec!["entities", "91350100M000100Y43"]
        );
        assert_eq!(normalise("names/%E5%8D%8E").unwrap(), vec!["names", "华"]);
        assert_eq!(
            encode_segments(&["names".into(), "华 x".into()]),
            "/names/%E5%8D%8E%20x"
        );
    }

    #[test]
    fn patterns_match_whole_segments() {
        let p = RoutePattern::parse("/entities/{uscc}").unwrap();
        let segs = vec!["entities".to_string(), "X".to_string()];
        assert_eq!(p.matches(&segs), Some(vec![("uscc", "X")]));
        assert!(p.matches(&["entities".to_string()]).is_none());
        assert!(
            p.matches(&["entity".to_string(), "X".to_string()])
                .is_none()
        );
        assert!(RoutePattern::parse("/a/../b").is_err());
        assert!(RoutePattern::parse("/a/{x}/{x}").is_err());
    }
}
