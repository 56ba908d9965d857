//! Phase 2, route: normalise the requested path and match it against a store's configured
//! routes. Only what a route declares is ever forwarded.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

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
                if !crate::config::is_name(name) {
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
    #[error("dot segments are not allowed")]
    DotSegment,
    #[error("encoded slashes, backslashes, dots and control characters are not allowed")]
    Encoded,
    #[error("path is not valid UTF-8")]
    Utf8,
}

/// Splits a raw (still percent-encoded) path into decoded segments, refusing anything that
/// could mean a different path to the store than to us: `.`/`..`, `%2e`, `%2f`, `%5c`,
/// backslashes, NUL and other control characters, and empty segments.
///
/// `raw` is the part after the store name, without its leading slash: a leading slash here is
/// an empty segment (`/v1/stores/s//x`) and is refused like any other.
pub fn normalise(raw: &str) -> Result<Vec<String>, PathError> {
    let mut out = Vec::new();
    for seg in raw.split('/') {
        if seg.is_empty() {
            return Err(PathError::Empty);
        }
        if seg == "." || seg == ".." {
            return Err(PathError::DotSegment);
        }
        let lower = seg.to_ascii_lowercase();
        if seg.contains('\\')
            || ["%2e", "%2f", "%5c", "%25"]
                .iter()
                .any(|e| lower.contains(e))
        {
            return Err(PathError::Encoded);
        }
        let decoded = percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| PathError::Utf8)?;
        if decoded.chars().any(char::is_control) {
            return Err(PathError::Encoded);
        }
        out.push(decoded.into_owned());
    }
    Ok(out)
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
        assert_eq!(normalise("entities/%2e%2e/x"), Err(PathError::Encoded));
        assert_eq!(normalise("entities/%2E%2E"), Err(PathError::Encoded));
        assert_eq!(normalise("entities%2Fadmin"), Err(PathError::Encoded));
        assert_eq!(normalise("entities%5cadmin"), Err(PathError::Encoded));
        assert_eq!(normalise("entities\\admin"), Err(PathError::Encoded));
        assert_eq!(normalise("entities/%00"), Err(PathError::Encoded));
        assert_eq!(normalise("entities//x"), Err(PathError::Empty));
        assert_eq!(normalise("/entities/x"), Err(PathError::Empty));
        assert_eq!(normalise(""), Err(PathError::Empty));
        assert_eq!(normalise("entities/%ff"), Err(PathError::Utf8));
        assert_eq!(normalise("entities/%252e"), Err(PathError::Encoded));
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
