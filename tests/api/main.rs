//! Integration tests: each spawns the gateway on port 0 with a fresh database and key
//! directory, in front of real stores on loopback, and talks to it over real HTTP.
//! `TEST_LOG=1 cargo test` shows the gateway's logs.

mod helpers;

mod law;

mod access_log;
mod alerts;
mod audit;
mod axe;
mod backup;
mod browser_console;
mod browser_portal;
mod browser_walks;
mod chains;
mod cli;
mod clock_steps;
mod complaints;
mod consent;
mod console;
mod crash;
mod db_file_gone;
mod demo;
mod edge_tls;
mod faults_db;
mod faults_store;
mod faults_support;
mod hardening;
mod health;
mod hostile;
mod index_steps;
mod indexer;
mod io_threads;
mod oauth;
mod objections;
mod oidc;
mod oidc_https;
mod pages;
mod people;
mod policy;
mod policy_props;
mod portal;
mod portal_api;
mod profile;
mod proxy;
mod ratelimits;
mod replicas;
mod reports;
mod requests;
mod rev2_review;
mod rev3_review;
mod rev4_low;
mod rev4_review;
mod roles;
mod routes;
mod shipping;
mod shipping_rev1;
mod signin;
mod sink;
mod standard_client;
mod step_rows;
mod subject;
mod subject_steps;
mod tokens;
