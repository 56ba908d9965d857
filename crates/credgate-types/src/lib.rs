//! Domain types that are valid by construction: a `Uscc` or `ResidentId` that exists is a valid
//! one, so nothing downstream re-checks them and no invalid id ever reaches a store.

mod ids;
pub mod names;
pub mod route;
pub mod time;

pub use ids::{IdError, ResidentId, SubjectId, SubjectType, Uscc};
