use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("a Unified Social Credit Code has 18 characters")]
    UsccLength,
    #[error("a Unified Social Credit Code uses digits and the letters of GB 32100 only")]
    UsccCharset,
    #[error("the organisation code inside the Unified Social Credit Code fails its check")]
    UsccOrgCheck,
    #[error("the Unified Social Credit Code check character is wrong")]
    UsccCheck,
    #[error("a resident ID number has 18 characters")]
    ResidentLength,
    #[error("a resident ID number has 17 digits and a check character (digit or X)")]
    ResidentCharset,
    #[error("the birth date inside the resident ID number is not a real date")]
    ResidentBirthDate,
    #[error("the resident ID number check character is wrong")]
    ResidentCheck,
}

/// GB 32100-2015 alphabet: digits and upper-case letters without I, O, Z, S, V.
const USCC_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];
/// GB 11714 organisation-code weights, for characters 9 to 16 of the USCC.
const ORG_WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];

/// An 18-character Unified Social Credit Code (GB 32100) of a legal person.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Uscc(String);

impl Uscc {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let s = s.trim().to_ascii_uppercase();
        let b = s.as_bytes();
        if b.len() != 18 {
            return Err(IdError::UsccLength);
        }
        let mut values = [0u32; 18];
        for (i, c) in b.iter().enumerate() {
            values[i] = USCC_ALPHABET
                .iter()
                .position(|a| a == c)
                .ok_or(IdError::UsccCharset)? as u32;
        }
        // Characters 9-17 are the GB 11714 organisation code, itself check-summed.
        let org = &b[8..17];
        if org_check_char(&org[..8]) != Some(org[8]) {
            return Err(IdError::UsccOrgCheck);
        }
        if values[17] != uscc_check_value(&values[..17]) {
            return Err(IdError::UsccCheck);
        }
        Ok(Self(s))
    }

    /// Completes 16 leading characters into a valid code (used by the sample store).
    pub fn complete(first16: &str) -> Result<Self, IdError> {
        let b = first16.as_bytes();
        if b.len() != 16 {
            return Err(IdError::UsccLength);
        }
        let org_check = org_check_char(&b[8..16]).ok_or(IdError::UsccCharset)?;
        let mut s = String::from(first16);
        s.push(org_check as char);
        let mut values = [0u32; 17];
        for (i, c) in s.bytes().enumerate() {
            values[i] = USCC_ALPHABET
                .iter()
                .position(|a| *a == c)
                .ok_or(IdError::UsccCharset)? as u32;
        }
        s.push(USCC_ALPHABET[uscc_check_value(&values) as usize] as char);
        Self::parse(&s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn uscc_check_value(values: &[u32]) -> u32 {
    let sum: u32 = values.iter().zip(USCC_WEIGHTS).map(|(v, w)| v * w).sum();
    (31 - sum % 31) % 31
}

fn org_check_char(body: &[u8]) -> Option<u8> {
    let mut sum = 0;
    for (c, w) in body.iter().zip(ORG_WEIGHTS) {
        let v = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'A'..=b'Z' => (c - b'A') as u32 + 10,
            _ => return None,
        };
        sum += v * w;
    }
    Some(match 11 - sum % 11 {
        10 => b'X',
        11 => b'0',
        d => b'0' + d as u8,
    })
}

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: &[u8; 11] = b"10X98765432";

/// An 18-character resident identity number (GB 11643) of a natural person.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ResidentId(String);

impl ResidentId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let s = s.trim().to_ascii_uppercase();
        let b = s.as_bytes();
        if b.len() != 18 {
            return Err(IdError::ResidentLength);
        }
        if !b[..17].iter().all(u8::is_ascii_digit) || !(b[17].is_ascii_digit() || b[17] == b'X') {
            return Err(IdError::ResidentCharset);
        }
        let year: i32 = s[6..10].parse().map_err(|_| IdError::ResidentBirthDate)?;
        let month: u8 = s[10..12].parse().map_err(|_| IdError::ResidentBirthDate)?;
        let day: u8 = s[12..14].parse().map_err(|_| IdError::ResidentBirthDate)?;
        let month = time::Month::try_from(month).map_err(|_| IdError::ResidentBirthDate)?;
        let born = time::Date::from_calendar_date(year, month, day)
            .map_err(|_| IdError::ResidentBirthDate)?;
        if year < 1900 || born > time::OffsetDateTime::now_utc().date() {
            return Err(IdError::ResidentBirthDate);
        }
        if resident_check_char(&b[..17]) != b[17] {
            return Err(IdError::ResidentCheck);
        }
        Ok(Self(s))
    }

    /// Completes 17 digits into a valid number (used by the sample store).
    pub fn complete(first17: &str) -> Result<Self, IdError> {
        if first17.len() != 17 || !first17.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::ResidentCharset);
        }
        let mut s = first17.to_string();
        s.push(resident_check_char(first17.as_bytes()) as char);
        Self::parse(&s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn resident_check_char(digits: &[u8]) -> u8 {
    let sum: u32 = digits
        .iter()
        .zip(ID_WEIGHTS)
        .map(|(d, w)| (d - b'0') as u32 * w)
        .sum();
    ID_CHECK[(sum % 11) as usize]
}

/// Whether a data subject is a legal person (USCC) or a natural person (resident ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectType {
    Legal,
    Natural,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::Legal => "legal",
            SubjectType::Natural => "natural",
        }
    }
}

impl std::str::FromStr for SubjectType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "legal" => Ok(Self::Legal),
            "natural" => Ok(Self::Natural),
            _ => Err(format!("`{s}` is not a subject type (legal or natural)")),
        }
    }
}

/// The identifier of a data subject, validated for its type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum SubjectId {
    Legal(Uscc),
    Natural(ResidentId),
}

impl SubjectId {
    pub fn parse(kind: SubjectType, s: &str) -> Result<Self, IdError> {
        Ok(match kind {
            SubjectType::Legal => Self::Legal(Uscc::parse(s)?),
            SubjectType::Natural => Self::Natural(ResidentId::parse(s)?),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Legal(u) => u.as_str(),
            Self::Natural(r) => r.as_str(),
        }
    }

    pub fn subject_type(&self) -> SubjectType {
        match self {
            Self::Legal(_) => SubjectType::Legal,
            Self::Natural(_) => SubjectType::Natural,
        }
    }

    /// Whether a row that names a subject by this id and this type names this subject. The
    /// one comparison for consents, objections and the access log: an id is a subject only
    /// with its type, since a company and a person can share the same 18 characters.
    pub fn is(&self, id: &str, kind: SubjectType) -> bool {
        self.subject_type() == kind && self.as_str() == id
    }

    /// `is` for a row that stores the type as text (`legal`, `natural`); any other text names
    /// no subject.
    pub fn is_named(&self, id: &str, kind: &str) -> bool {
        kind.parse().is_ok_and(|k| self.is(id, k))
    }

    /// Whether the id is also valid as the other type's: then the id alone does not say which
    /// subject a record is about.
    pub fn is_ambiguous(&self) -> bool {
        let other = match self.subject_type() {
            SubjectType::Legal => SubjectType::Natural,
            SubjectType::Natural => SubjectType::Legal,
        };
        Self::parse(other, self.as_str()).is_ok()
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! show_as_str {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self.0)
            }
        }
    };
}
show_as_str!(Uscc);
show_as_str!(ResidentId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_uscc_example_is_valid() {
        // The specimen printed on business licences.
        assert!(Uscc::parse("91350100M000100Y43").is_ok());
        assert!(
            Uscc::parse("91350100m000100y43").is_ok(),
            "case is normalised"
        );
    }

    #[test]
    fn uscc_errors_say_what_is_wrong() {
        assert_eq!(Uscc::parse("91350100M000100Y4"), Err(IdError::UsccLength));
        assert_eq!(Uscc::parse("91350100M000100Y4I"), Err(IdError::UsccCharset));
        assert_eq!(Uscc::parse("91350100M000100Y44"), Err(IdError::UsccCheck));
        assert_eq!(
            Uscc::parse("91350100M000101Y43"),
            Err(IdError::UsccOrgCheck)
        );
        assert_eq!(Uscc::parse("' OR 1=1 --xxxxxxxx"), Err(IdError::UsccLength));
    }

    #[test]
    fn every_single_character_change_of_a_uscc_is_caught() {
        let good = "91350100M000100Y43";
        for i in 0..18 {
            for c in USCC_ALPHABET {
                let mut b = good.as_bytes().to_vec();
                if b[i] == *c {
                    continue;
                }
                b[i] = *c;
                let s = String::from_utf8(b).unwrap();
                assert!(Uscc::parse(&s).is_err(), "{s} accepted");
            }
        }
    }

    #[test]
    fn completed_codes_round_trip() {
        let u = Uscc::complete("9111000012345678").unwrap();
        assert_eq!(Uscc::parse(u.as_str()).unwrap(), u);
        let r = ResidentId::complete("11010519491231002").unwrap();
        assert_eq!(r.as_str(), "11010519491231002X");
    }

    #[test]
    fn a_subject_is_its_id_and_its_type() {
        let person = SubjectId::parse(SubjectType::Natural, "11010519491231002X").unwrap();
        assert!(person.is("11010519491231002X", SubjectType::Natural));
        assert!(!person.is("11010519491231002X", SubjectType::Legal));
        assert!(!person.is("11010519491231002x", SubjectType::Natural));
        assert!(person.is_named("11010519491231002X", "natural"));
        assert!(!person.is_named("11010519491231002X", "legal"));
        assert!(!person.is_named("11010519491231002X", "Natural"));
        assert!(!person.is_ambiguous());
        // An id that passes both checks: the same text is two subjects.
        let both = (0..10_000)
            .filter_map(|i| ResidentId::complete(&format!("1101051980010{i:04}")).ok())
            .find(|r| Uscc::parse(r.as_str()).is_ok())
            .unwrap();
        let as_person = SubjectId::Natural(both.clone());
        let as_company = SubjectId::parse(SubjectType::Legal, both.as_str()).unwrap();
        assert!(as_person.is_ambiguous() && as_company.is_ambiguous());
        assert_ne!(as_person, as_company);
        assert!(!as_company.is(both.as_str(), SubjectType::Natural));
    }

    #[test]
    fn resident_id_checks() {
        assert!(ResidentId::parse("11010519491231002X").is_ok());
        assert!(ResidentId::parse("11010519491231002x").is_ok());
        assert_eq!(
            ResidentId::parse("110105194912310021"),
            Err(IdError::ResidentCheck)
        );
        assert_eq!(
            ResidentId::parse("11010519490231002X"),
            Err(IdError::ResidentBirthDate),
            "30 February"
        );
        assert_eq!(
            ResidentId::parse("1101051949123100"),
            Err(IdError::ResidentLength)
        );
        assert_eq!(
            ResidentId::parse("1101051949123100AX"),
            Err(IdError::ResidentCharset)
        );
    }
}
