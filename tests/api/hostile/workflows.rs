//! Hostile-input tests: see mod.rs.
