//! `credgate policy check | test`: offline, on a policy directory, before it is deployed.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

use crate::policy::PolicySet;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Load and validate the policy directory.
    Check {
        /// Policy directory [default: ./policies]
        dir: Option<PathBuf>,
        /// Check the `policy_dir` this configuration file names (what `serve` would load)
        /// instead of DIR.
        #[arg(long, value_name = "FILE", conflicts_with = "dir")]
        config: Option<PathBuf>,
    },
    /// Run the policy test cases in DIR/tests/*.toml; exits non-zero on any failure.
    Test {
        /// Policy directory [default: ./policies]
        dir: Option<PathBuf>,
    },
}

pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check { dir, config } => {
            let dir = match (dir, config) {
                (_, Some(file)) => match crate::config::Config::load(Some(&file)) {
                    Ok(c) => c.policy_dir,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        return ExitCode::FAILURE;
                    }
                },
                (dir, None) => dir.unwrap_or_else(|| PathBuf::from("policies")),
            };
            match PolicySet::load(&dir) {
                Ok(set) => println!(
                    "policies in {} are valid: {} purposes, {} roles",
                    dir.display(),
                    set.purpose_codes().len(),
                    set.role_names().len()
                ),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        PolicyCommand::Test { dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("policies"));
            match crate::policy::testing::run(&dir) {
                Ok(report) => {
                    for f in &report.failures {
                        println!("FAIL {f}");
                    }
                    println!("{} passed, {} failed", report.passed, report.failures.len());
                    if !report.failures.is_empty() {
                        return ExitCode::FAILURE;
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
