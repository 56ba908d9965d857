//! credgate: a privacy and security gateway in front of credit-information stores.
//!
//! This package is the web layer (`web`: state, routes, handlers, the mapping of every core
//! error to a problem document), the command line and the demo. Below it, each its own crate:
//! `credgate-core` (config, storage, auth, audit, limits, the data-path phases, workflows,
//! replicas), `credgate-policy` (the compiled policy set and masks), `credgate-types` (ids,
//! names, time, route patterns) and `credgate-sample-store` (the demo's upstream). They are
//! re-exported under their old module names, so `crate::audit::...` and `credgate::policy::...`
//! keep working.

pub use credgate_core::{
    audit, auth, config, limits, proxy, replicas, services, storage, workflows,
};
pub use credgate_policy as policy;
pub use credgate_sample_store as sample_store;
pub use credgate_types as domain;

pub mod cli;
pub mod demo;
pub mod demo_tls;
pub mod telemetry;
pub mod web;
