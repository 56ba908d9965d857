//! Labels of the subject portal `/portal/`.

pub const EN: &[(&str, &str)] = &[];

pub const ZH_CN: &[(&str, &str)] = &[];
