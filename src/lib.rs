//! credgate: a privacy and security gateway in front of credit-information stores.
//!
//! The modules follow a request's path: `http` (entry, errors) -> `auth` (who) -> `proxy`
//! (route, decide, forward, filter) -> `policy` (what may be seen) -> `storage` (state).
//! `replicas` keeps several gateway processes on one database in step.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub use credgate_types as domain;
pub mod http;
pub mod limits;
pub use credgate_policy as policy;
pub mod proxy;
pub mod replicas;
pub mod services;
pub use credgate_sample_store as sample_store;
pub mod storage;
pub mod telemetry;
pub mod workflows;
