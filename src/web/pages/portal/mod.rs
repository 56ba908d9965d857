//! The subject portal `/portal/`.

use super::super::routes::Group;

/// This area's navigation: the catalog key of each label and where it goes.
pub const NAV: &[(&str, &str)] = &[];

/// This area's templates (name, source), registered with the page environment.
pub const TEMPLATES: &[(&str, &str)] = &[];

pub fn routes() -> Vec<Group> {
    Vec::new()
}
