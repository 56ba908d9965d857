//! Names: the identifiers used in config, tokens, URLs and policy files.

/// Names used as identifiers in config, tokens and URLs.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
