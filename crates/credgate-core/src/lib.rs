//! credgate's core: everything the gateway does, below the web layer. A request's path through
//! it: `auth` (who) -> `proxy` (route, purpose, decide, forward, release) -> `policy` (what may
//! be seen) -> `storage` (state), recorded by `audit`. `workflows` carries the data subjects'
//! objections, `replicas` keeps several gateway processes on one database in step, and
//! `services::Core` holds it all for the web layer. Each module returns its own error type; the
//! web layer alone turns them into HTTP problems.

pub use credgate_policy as policy;
pub use credgate_types as domain;

pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod limits;
pub mod proxy;
pub mod replicas;
pub mod services;
pub mod storage;
pub mod workflows;
