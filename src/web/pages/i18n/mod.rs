//! The message catalogs: one file per area of the site, each holding its English and Chinese
//! tables side by side so that a key added to one is seen missing from the other (and
//! `tests::catalogs_have_the_same_keys` fails if it is). English labels are a contract: outside
//! tests find inputs and buttons by them (DESIGN.md).

mod console;
mod portal;
mod public;
mod signin;

use http::{HeaderMap, header};

type Catalog = &'static [(&'static str, &'static str)];

/// One catalog per area of the site, each owned by its own file so that areas grow without
/// touching each other; `t` looks a key up in all of them.
const PARTS: &[(Catalog, Catalog)] = &[
    (public::EN, public::ZH_CN),
    (signin::EN, signin::ZH_CN),
    (console::EN, console::ZH_CN),
    (portal::EN, portal::ZH_CN),
];

/// The languages the pages speak. Anything else falls back to English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhCn,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "en" => Some(Lang::En),
            "zh-CN" => Some(Lang::ZhCn),
            _ => None,
        }
    }

    /// The `lang` cookie set by the switch wins; then the first `Accept-Language` entry we
    /// speak, by the caller's quality order; then English.
    pub fn choose(headers: &HeaderMap) -> Self {
        if let Some(l) = super::cookie(headers, "lang").and_then(|v| Lang::parse(&v)) {
            return l;
        }
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(from_accept_language)
            .unwrap_or(Lang::En)
    }

    fn catalogs(self) -> impl Iterator<Item = Catalog> {
        PARTS.iter().map(move |(en, zh)| match self {
            Lang::En => *en,
            Lang::ZhCn => *zh,
        })
    }

    /// A missing key shows the key itself: visible in a screenshot, caught by the key test.
    pub fn t(self, key: &str) -> &'static str {
        self.catalogs()
            .flat_map(|c| c.iter())
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or("??")
    }
}

/// The highest-quality language tag we speak (`zh`, `zh-CN`, `zh-Hans` -> Chinese).
fn from_accept_language(value: &str) -> Option<Lang> {
    let mut best: Option<(f32, Lang)> = None;
    for part in value.split(',').take(16) {
        let mut it = part.trim().split(';');
        let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse().ok()))
            .unwrap_or(1.0f32);
        let lang = if tag == "zh" || tag.starts_with("zh-cn") || tag.starts_with("zh-hans") {
            Lang::ZhCn
        } else if tag == "en" || tag.starts_with("en-") {
            Lang::En
        } else {
            continue;
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map(|(_, l)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_have_the_same_keys() {
        fn keys(c: &'static [(&'static str, &'static str)]) -> Vec<&'static str> {
            let mut k: Vec<&str> = c.iter().map(|(k, _)| *k).collect();
            k.sort_unstable();
            k
        }
        let mut all = Vec::new();
        for (en, zh) in PARTS {
            assert_eq!(
                keys(en),
                keys(zh),
                "the two catalogs must carry the same keys"
            );
            assert!(zh.iter().chain(en.iter()).all(|(_, v)| !v.is_empty()));
            all.extend(keys(en));
        }
        all.sort_unstable();
        let mut dedup = all.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), all.len(), "a key appears twice");
    }

    #[test]
    fn accept_language_picks_by_quality() {
        assert_eq!(
            from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"),
            Some(Lang::ZhCn)
        );
        assert_eq!(from_accept_language("en-GB,zh;q=0.5"), Some(Lang::En));
        assert_eq!(from_accept_language("fr, zh;q=0.3"), Some(Lang::ZhCn));
        assert_eq!(from_accept_language("fr"), None);
        assert_eq!(from_accept_language("zh;q=0, en;q=0.1"), Some(Lang::En));
    }
}
