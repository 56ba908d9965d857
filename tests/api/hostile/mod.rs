//! Hostile-input tests: each attack an issue names, tried as an attacker would, against the
//! gateway over real HTTP, with a store of the tests' own that records what reaches it. Every
//! test here runs on SQLite and, with `CREDGATE_TEST_PG`, on PostgreSQL.

mod audit_authz;
mod edge;
mod proxy_paths;
mod workflows;
