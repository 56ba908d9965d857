//! Labels of the staff console `/console/`.

pub const EN: &[(&str, &str)] = &[
    ("console.nav.dashboard", "Dashboard"),
    ("console.dashboard", "Dashboard"),
];

pub const ZH_CN: &[(&str, &str)] = &[
    ("console.nav.dashboard", "仪表板"),
    ("console.dashboard", "仪表板"),
];
