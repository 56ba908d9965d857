//! Labels of signing in and out, and of the session (both consoles share them).

pub const EN: &[(&str, &str)] = &[];

pub const ZH_CN: &[(&str, &str)] = &[];
