//! `sqlx::migrate!` embeds the migration files at compile time, but Cargo does not know they
//! are inputs: a migration added to a built tree was left out of the next incremental build
//! (the binary started without it, and said nothing). Rebuild this crate when they change.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
