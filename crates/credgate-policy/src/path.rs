//! Field paths of the catalog (`legal_representative.phone`, `penalties[*].decided_at`), parsed
//! once into segments and merged into a trie, so that masking walks the JSON document and the
//! trie together in one pass instead of matching strings per field.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    AnyIndex,
}

/// Parses `a.b[*].c`. Keys are non-empty runs of letters, digits and `_`/`-`.
pub fn parse(path: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() && (segs.is_empty() || rest.is_empty()) {
            return Err(format!("`{path}`: empty key"));
        }
        if !key.is_empty() {
            if !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "`{path}`: key `{key}` has characters other than a-z, 0-9, _ and -"
                ));
            }
            segs.push(Seg::Key(key.to_string()));
        }
        while !rest.is_empty() {
            match rest.strip_prefix("[*]") {
                Some(r) => {
                    segs.push(Seg::AnyIndex);
                    rest = r;
                }
                None => {
                    return Err(format!(
                        "`{path}`: only `[*]` may follow a key (every element of an array)"
                    ));
                }
            }
        }
    }
    if segs.is_empty() {
        return Err("empty path".into());
    }
    Ok(segs)
}

/// A trie's children by key. Every key of every object of an answer is looked up here, so the
/// hasher is foldhash, not SipHash (callgrind: SipHash was 276k of a 100-row list's 7.9M
/// instructions). SipHash's resistance to crafted collisions is not needed: the table's keys
/// come from the catalog; a store's keys are only looked up and never inserted.
pub type Keys<T> = HashMap<String, Trie<T>, foldhash::fast::RandomState>;

/// A trie over path segments; `T` is what a classified node carries.
#[derive(Debug, Clone)]
pub struct Trie<T> {
    pub value: Option<T>,
    pub keys: Keys<T>,
    pub any_index: Option<Box<Trie<T>>>,
}

impl<T> Default for Trie<T> {
    fn default() -> Self {
        Self {
            value: None,
            keys: Keys::default(),
            any_index: None,
        }
    }
}

impl<T> Trie<T> {
    /// Inserts; refuses a path inside or above one already classified, since one of the two
    /// could never apply.
    pub fn insert(&mut self, segs: &[Seg], value: T) -> Result<(), String> {
        let mut node = self;
        for (i, seg) in segs.iter().enumerate() {
            if node.value.is_some() {
                return Err(format!(
                    "lies inside a path already classified as a whole (its first {i} segment(s))"
                ));
            }
            node = match seg {
                Seg::Key(k) => node.keys.entry(k.clone()).or_default(),
                Seg::AnyIndex => node.any_index.get_or_insert_with(Default::default),
            };
        }
        if node.value.is_some() {
            return Err("is classified twice".into());
        }
        if !node.keys.is_empty() || node.any_index.is_some() {
            return Err("contains paths that are classified separately".into());
        }
        node.value = Some(value);
        Ok(())
    }

    pub fn map<U>(&self, f: &impl Fn(&T) -> U) -> Trie<U> {
        Trie {
            value: self.value.as_ref().map(f),
            keys: self
                .keys
                .iter()
                .map(|(k, v)| (k.clone(), v.map(f)))
                .collect(),
            any_index: self.any_index.as_ref().map(|n| Box::new(n.map(f))),
        }
    }

    pub fn get(&self, segs: &[Seg]) -> Option<&Trie<T>> {
        let mut node = self;
        for seg in segs {
            node = match seg {
                Seg::Key(k) => node.keys.get(k)?,
                Seg::AnyIndex => node.any_index.as_deref()?,
            };
        }
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse("items[*].legal_representative.phone").unwrap(),
            vec![
                Seg::Key("items".into()),
                Seg::AnyIndex,
                Seg::Key("legal_representative".into()),
                Seg::Key("phone".into())
            ]
        );
        assert!(parse("a..b").is_err());
        assert!(parse("a[0]").is_err());
        assert!(parse("a[*]x").is_err());
        assert!(parse("$.a").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn overlapping_classifications_are_refused() {
        let mut t = Trie::default();
        t.insert(&parse("a.b").unwrap(), 1).unwrap();
        assert!(t.insert(&parse("a.b").unwrap(), 2).is_err());
        assert!(t.insert(&parse("a.b.c").unwrap(), 2).is_err());
        assert!(t.insert(&parse("a").unwrap(), 2).is_err());
        t.insert(&parse("a.c[*]").unwrap(), 3).unwrap();
    }
}
