//! Labels of the staff console `/console/`.

pub const EN: &[(&str, &str)] = &[];

pub const ZH_CN: &[(&str, &str)] = &[];
