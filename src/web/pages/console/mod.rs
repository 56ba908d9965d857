//! The staff console `/console/`: every page takes a `StaffPage` (a staff session), so a
//! subject's session or none never reaches a handler here. Audited as `admin` records that
//! name the person, as `/admin` calls with a staff token are.

mod dashboard;

use super::super::routes::{AuditKind, Group, audited, get};

/// This area's navigation: the catalog key of each label and where it goes.
pub const NAV: &[(&str, &str)] = &[("console.nav.dashboard", "/console/")];

/// This area's templates (name, source), registered with the page environment. The sign-in
/// pages' templates live here too: they are drawn for staff and subjects alike.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "console/signin_failed.html",
        include_str!("../templates/console/signin_failed.html"),
    ),
    (
        "console/signout.html",
        include_str!("../templates/console/signout.html"),
    ),
    (
        "console/dashboard.html",
        include_str!("../templates/console/dashboard.html"),
    ),
];

pub fn routes() -> Vec<Group> {
    vec![audited(
        AuditKind::Admin,
        vec![
            get("/console", dashboard::to_home),
            get("/console/", dashboard::show),
        ],
    )]
}
