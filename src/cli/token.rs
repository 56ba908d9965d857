//! `credgate token subject`: a data-subject token from the demo identity provider's key,
//! which only the demo configuration trusts.

use anyhow::Context;
use clap::Subcommand;

use super::ConfigArg;
use crate::{
    auth::subject::mint_demo_token,
    domain::{SubjectId, SubjectType},
};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint a data-subject token with the demo identity provider's key; prints only the token.
    Subject {
        /// The subject's id: a USCC (18 characters) for `legal`, a resident ID number for
        /// `natural`; checked digit and all.
        #[arg(long)]
        id: String,
        /// The kind of subject: `legal` (a company) or `natural` (a person).
        #[arg(long = "type", default_value = "legal")]
        subject_type: SubjectType,
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub async fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Subject {
            id,
            subject_type,
            config,
        } => {
            let config = config.load()?;
            let demo = config.demo_identity_provider.as_ref().context(
                "this configuration has no demo_identity_provider; only the demo config can mint subject tokens",
            )?;
            let id = SubjectId::parse(subject_type, &id)
                .with_context(|| format!("--id is not a valid {} id", subject_type.as_str()))?;
            println!("{}", mint_demo_token(demo, &id, 3600)?);
        }
    }
    Ok(())
}
