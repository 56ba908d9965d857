//! The one validator of free text every workflow takes (reasons, descriptions, notes, answers,
//! contacts): one rule, so that what one form refuses no other form lets through into the
//! handlers' queues, the store's inbox or a record's annotation.

use super::WorkflowError;

/// One free-text field: its name in error messages and its bounds.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    /// Characters (not bytes), after normalising.
    pub max_chars: usize,
    /// Whether line breaks and tabs are allowed (a description) or not (a name, a contact).
    pub multiline: bool,
}

impl Field {
    pub const fn many(name: &'static str, max_chars: usize) -> Self {
        Self {
            name,
            max_chars,
            multiline: true,
        }
    }

    pub const fn one(name: &'static str, max_chars: usize) -> Self {
        Self {
            name,
            max_chars,
            multiline: false,
        }
    }

    /// The text normalised (CRLF and CR become LF, surrounding white space trimmed), or why it
    /// is refused: empty, too long, or carrying control characters or hidden ones
    /// (`is_hidden_char`: bidi marks, zero-width, tags, private use, unassigned), which make a
    /// text read differently from what it says. The message names the field
    /// and its bounds, never the text, so it can answer a whistleblower's filing too.
    pub fn clean(&self, raw: &str) -> Result<String, WorkflowError> {
        let text = raw.replace("\r\n", "\n").replace('\r', "\n");
        let text = text.trim();
        let bad = |c: char| {
            (c.is_control() && !(self.multiline && matches!(c, '\n' | '\t')))
                || crate::domain::names::is_hidden_char(c)
        };
        if text.is_empty() || text.chars().count() > self.max_chars || text.chars().any(bad) {
            return Err(WorkflowError::BadRequest(format!(
                "{} is 1 to {} characters{}, without control characters",
                self.name,
                self.max_chars,
                if self.multiline { "" } else { " on one line" }
            )));
        }
        Ok(text.to_string())
    }

    /// An optional field: absent stays absent; given, it must pass `clean`.
    pub fn clean_opt(&self, raw: Option<&str>) -> Result<Option<String>, WorkflowError> {
        raw.map(|r| self.clean(r)).transpose()
    }

    /// An optional field a form may send empty (a handler's note): blank counts as absent;
    /// anything else must pass `clean`.
    pub fn clean_or_none(&self, raw: Option<&str>) -> Result<Option<String>, WorkflowError> {
        self.clean_opt(raw.filter(|r| !r.trim().is_empty()))
    }
}

/// A handler's note on a transition (the reason of a refusal, the store's finding).
pub const NOTE: Field = Field::many("note", 2000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_refused_in_every_field() {
        let f = Field::many("reason", 50);
        for c in [
            '\u{061C}',
            '\u{00AD}',
            '\u{200B}',
            '\u{200E}',
            '\u{E0041}',
            '\u{2028}',
        ] {
            assert!(f.clean(&format!("a{c}b")).is_err(), "U+{:04X}", c as u32);
        }
        assert_eq!(f.clean("全角：ａｂ　中文").unwrap(), "全角：ａｂ　中文");
    }

    #[test]
    fn text_is_normalised_bounded_and_free_of_controls() {
        let f = Field::many("reason", 5);
        assert_eq!(f.clean("  a\r\nb \t").unwrap(), "a\nb");
        assert_eq!(
            f.clean("长长长长长").unwrap(),
            "长长长长长",
            "characters, not bytes"
        );
        for bad in [
            "",
            "   ",
            "123456",
            "a\u{0}b",
            "a\u{1b}[2Jb",
            "a\u{202E}b",
            "a\u{7f}",
        ] {
            let Err(WorkflowError::BadRequest(why)) = f.clean(bad) else {
                panic!("{bad:?} passed");
            };
            assert!(why.starts_with("reason is 1 to 5"), "{why}");
        }
        let line = Field::one("contact", 50);
        assert!(line.clean("a\nb").is_err());
        assert!(line.clean("a\tb").is_err());
        assert_eq!(line.clean(" a@b.cn ").unwrap(), "a@b.cn");
        assert_eq!(line.clean_opt(None).unwrap(), None);
        assert!(line.clean_opt(Some(" ")).is_err());
        assert_eq!(NOTE.clean_or_none(Some(" \r\n")).unwrap(), None);
        assert!(NOTE.clean_or_none(Some(&"n".repeat(2001))).is_err());
    }

    #[test]
    fn a_refusal_never_echoes_the_text() {
        let secret = "whistle@example.cn\u{0}";
        let Err(e) = Field::one("contact", 500).clean(secret) else {
            panic!()
        };
        assert!(!e.to_string().contains("whistle"));
    }
}
