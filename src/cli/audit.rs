//! `credgate audit verify | archive | export`: offline, beside a running gateway.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Subcommand;

use super::ConfigArg;
use crate::storage::Db;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every writer's hash chain and the signed checkpoints; exits non-zero if anything is wrong.
    Verify {
        /// A previous report's `last_checkpoint`, kept outside the database: the log must
        /// still hold it (deleting the tail with its checkpoints is found). Written after
        /// each successful verification for the next one (created if absent, 0600).
        #[arg(long, value_name = "FILE")]
        witness: Option<PathBuf>,
        /// What an audit sink received (`[audit.ship]`; a file of one RFC 5424 message a line,
        /// as rsyslog's `%rawmsg%` writes it): each chain's newest checkpoint in it is a
        /// witness the log must still hold, so a tail cut from the database is found. One
        /// deployment's file: another key's checkpoint fails the verification.
        #[arg(long, value_name = "FILE")]
        sink_file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Move records older than the retention minimum (up to a signed checkpoint) to an
    /// archive file in DIR; the live log keeps verifying from that checkpoint.
    Archive {
        /// Directory for the archive file (created 0700 if absent; the file is 0600).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write every record to stdout, oldest first; each record's `time` is RFC 3339 (UTC).
    Export {
        /// Output format: one JSON object per line, or CSV with a header row.
        #[arg(long, default_value = "ndjson", value_parser = ["csv", "ndjson"])]
        format: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify {
            witness,
            sink_file,
            config,
        } => {
            let config = config.load()?;
            let db = Db::open(&config.storage_url).await?;
            let keyring = crate::auth::keyring::Keyring::open(&config.key_dir)?;
            let key = keyring.gateway_keys(&db).await?.audit_signing;
            let shipped = sink_file
                .as_deref()
                .map(|p| read_sink_file(p, &key.public))
                .transpose()?;
            return verify_with_witness(&db, &key.public, witness.as_deref(), shipped).await;
        }
        AuditCommand::Archive { out, config } => {
            let config = config.load()?;
            let db = Db::open(&config.storage_url).await?;
            private_dir(&out)?;
            let report = crate::audit::archive::archive_report(
                &db,
                config.audit.retention_days,
                crate::storage::now_micros(),
                &out,
            )
            .await?;
            // Records a sink has not confirmed stay in the database: said on stderr, so stdout
            // stays the JSON of what was archived.
            for held in &report.held_back {
                eprintln!("held back: {held}");
            }
            let done = report.archived;
            // Nothing archived is said as it is: a chain held back has records older than the
            // retention, which a sink has not confirmed.
            if done.is_empty() && report.held_back.is_empty() {
                println!(
                    "nothing is older than the retention minimum ({} days) up to a checkpoint",
                    config.audit.retention_days
                );
            } else if done.is_empty() {
                println!(
                    "nothing archived: {} chain(s) have records older than the retention minimum \
                     ({} days) up to a checkpoint, held back because a sink has not confirmed \
                     them (see `held back:` on stderr)",
                    report.held_back.len(),
                    config.audit.retention_days
                );
            }
            // One file per chain; the process umask (see main) already made each 0600.
            for a in &done {
                private_file(std::path::Path::new(&a.file))?;
            }
            if !done.is_empty() {
                println!("{}", serde_json::to_string_pretty(&done)?);
            }
        }
        AuditCommand::Export { format, config } => {
            use std::io::Write;
            let config = config.load()?;
            let db = Db::open(&config.storage_url).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if format == "csv" {
                out.write_all(&crate::audit::export::csv_bytes(&[
                    crate::audit::export::CSV_HEADER
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ]))?;
            }
            let mut after = 0;
            loop {
                let page = crate::audit::store::page_after(&db, after, 1000).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                if format == "csv" {
                    let rows: Vec<_> = page.iter().map(crate::audit::export::csv_row).collect();
                    out.write_all(&crate::audit::export::csv_bytes(&rows))?;
                } else {
                    for r in &page {
                        out.write_all(&ndjson_line(r))?;
                    }
                }
            }
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Archives hold the whole audit log: their directory is the owner's only (0700).
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// `audit verify`, against the witness in `witness` when that file exists; a successful
/// verification leaves its last checkpoint there for the next run. A failed one leaves the
/// old witness untouched, so the evidence is not overwritten by the tampered log's head.
///
/// The witness is the report's `last_checkpoint` (the newest checkpoint of any chain) with a
/// `chains` list beside it: every chain's last checkpoint, so that a tail removed with its
/// checkpoints is found in whichever chain it was. A witness file from before per-writer
/// chains (one checkpoint, no `chains`) is read as the legacy chain's.
///
/// `shipped`: the witnesses a sink's file holds (`--sink-file`), checked beside the file's.
async fn verify_with_witness(
    db: &Db,
    public_key: &[u8],
    witness: Option<&std::path::Path>,
    shipped: Option<crate::audit::ship::SinkFile>,
) -> anyhow::Result<ExitCode> {
    use crate::audit::verify;
    let mut kept = match witness {
        Some(path) if path.exists() => Some(read_witness(path)?),
        _ => None,
    };
    if let Some(shipped) = &shipped {
        kept.get_or_insert_with(Vec::new)
            .extend(shipped.witnesses.iter().cloned());
    }
    let mut report = match &kept {
        Some(w) => verify::verify_against_all(db, public_key, w).await?,
        None => verify::verify(db, public_key).await?,
    };
    let sink_check = match &shipped {
        Some(found) if report.ok => Some(check_sink_file(db, &mut report, found).await?),
        _ => None,
    };
    let mut printed = with_times(&report);
    if let Some(check) = sink_check {
        printed["sink_file"] = check;
    }
    println!("{}", serde_json::to_string_pretty(&printed)?);
    if !report.ok {
        return Ok(ExitCode::FAILURE);
    }
    // The witness is the printed `last_checkpoint`, its RFC 3339 `time` included (ignored when
    // it is read back: `time_us` is what is compared).
    if let (Some(path), Some(_)) = (witness, &report.last_checkpoint) {
        write_private(
            path,
            &serde_json::to_vec_pretty(&printed["last_checkpoint"])?,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The first chain whose newest shipped record the log no longer holds with that hash (and
/// no archive covers): its writer, the place, and why.
async fn newest_record_not_held(
    db: &Db,
    found: &crate::audit::ship::SinkFile,
) -> anyhow::Result<Option<(String, i64, String)>> {
    for r in &found.newest_records {
        let (base, _) = crate::audit::archive::base(db, &r.writer_id).await?;
        if r.chain_seq <= base {
            continue;
        }
        let held = crate::storage::shipping::record_hash_at(db, &r.writer_id, r.chain_seq).await?;
        if held.as_deref() != Some(r.hash.as_str()) {
            let why = format!(
                "unsigned witness: the sink file holds record {} of chain `{}` (hash {}), which \
                 the log {}: a tail cut after the last checkpoint, or a forged line",
                r.chain_seq,
                r.writer_id,
                r.hash,
                if held.is_some() {
                    "holds with another hash"
                } else {
                    "no longer holds"
                }
            );
            return Ok(Some((r.writer_id.clone(), r.chain_seq, why)));
        }
    }
    Ok(None)
}

/// The first signed checkpoint of the sink file whose place the log no longer holds with that
/// hash, and no archive covers: its writer, the place, and why. The signature is this log's,
/// so the log held that record once: it was cut (and perhaps written again), which checking
/// only each chain's newest checkpoint misses once the chain grew past the cut (rev3 F6).
/// One indexed look-up per signed place.
async fn signed_checkpoint_not_held(
    db: &Db,
    found: &crate::audit::ship::SinkFile,
) -> anyhow::Result<Option<(String, i64, String)>> {
    for (writer, places) in &found.signed {
        let (base, _) = crate::audit::archive::base(db, writer).await?;
        for (&place, hash) in places.range(base + 1..) {
            let held = crate::storage::shipping::record_hash_at(db, writer, place).await?;
            if held.as_deref() == Some(hash.as_str()) {
                continue;
            }
            let why = format!(
                "the sink file holds a checkpoint signed by this log's key at place {place} of \
                 chain `{writer}` (hash {hash}), which the log {}: records were removed from \
                 the log (a tail cut, perhaps written again since)",
                if held.is_some() {
                    "holds with another hash"
                } else {
                    "no longer holds"
                }
            );
            return Ok(Some((writer.clone(), place, why)));
        }
    }
    Ok(None)
}

/// Marks the report failed by the sink file's check, with that check's own verdict.
fn sink_failed(
    (check, report): (
        &mut serde_json::Value,
        &mut crate::audit::verify::ChainVerdict,
    ),
    verdict: &str,
    writer: Option<String>,
    why: String,
) {
    check["verdict"] = verdict.into();
    report.ok = false;
    report.writer_id = writer;
    report.reason = Some(why);
}

/// Each chain's signed checkpoints and newest record line in a sink's file; what was
/// read is said on stderr (stdout stays the report), checkpoint lines whose signature does not
/// verify with this log's key (forged, or another deployment's) included.
fn read_sink_file(
    path: &std::path::Path,
    public_key: &[u8],
) -> anyhow::Result<crate::audit::ship::SinkFile> {
    let reading = || format!("reading the sink file {}", path.display());
    let file = std::fs::File::open(path).with_context(reading)?;
    let found = crate::audit::ship::witnesses_from(std::io::BufReader::new(file), public_key)
        .with_context(reading)?;
    eprintln!(
        "sink file {}: {} records, {} signed checkpoints, {} checkpoint lines NOT signed by this \
         log's key (ignored), {} other lines; {} chains witnessed by a checkpoint",
        path.display(),
        found.records,
        found.checkpoints,
        found.unsigned,
        found.skipped,
        found.witnesses.len()
    );
    if let Some(n) = found.line_too_long {
        eprintln!(
            "sink file {}: line {n} is longer than {} bytes, which no message credgate ships is: \
             not read past it",
            path.display(),
            crate::audit::ship::MAX_SINK_LINE
        );
    }
    Ok(found)
}

/// What `--sink-file` adds once the log verified against the file's newest signed checkpoints:
/// the file must witness some chain (M3: the wrong or an empty file must not pass silently);
/// no two signed checkpoints of one place may differ, and every signed checkpoint's place
/// must still be in the log with that hash, or archived (F6: a tail cut and written again);
/// each chain's newest shipped record must still be in the log with that hash, or archived
/// (M1: a tail cut after the last checkpoint). A record line is unsigned, so its failure is
/// its own verdict (`unsigned_witness_not_held`): the log was cut, or someone able to send
/// syslog to the receiver forged the line; either way a person must look. Chains of the log
/// with checkpoints but no witness in the file are named (not yet shipped, or lost there).
/// A line too long to be a message ends the reading and fails the check
/// (`sink_line_too_long`): the rest of the file was not read.
async fn check_sink_file(
    db: &Db,
    report: &mut crate::audit::verify::ChainVerdict,
    found: &crate::audit::ship::SinkFile,
) -> anyhow::Result<serde_json::Value> {
    let witnessed: std::collections::BTreeSet<&str> = found
        .witnesses
        .iter()
        .filter_map(|w| w.writer_id.as_deref())
        .collect();
    let unwitnessed: Vec<&str> = report
        .chains
        .iter()
        .filter(|c| c.last_checkpoint.is_some() && !witnessed.contains(c.writer_id.as_str()))
        .map(|c| c.writer_id.as_str())
        .collect();
    for w in &unwitnessed {
        eprintln!("sink file: chain `{w}` has checkpoints in the log but none in the file");
    }
    let mut check = serde_json::json!({
        "verdict": "ok",
        "chains_witnessed": witnessed.len(),
        "unsigned_checkpoint_lines": found.unsigned,
        "unwitnessed_chains": unwitnessed,
    });
    // Fail closed: what follows the line was not read, so the file cannot vouch for the log.
    if let Some(n) = found.line_too_long {
        check["line"] = n.into();
        sink_failed(
            (&mut check, report),
            "sink_line_too_long",
            None,
            format!(
                "line {n} of the sink file is longer than {} bytes, which no message credgate \
                 ships is: the file was not read past it (a damaged file, or not a sink's)",
                crate::audit::ship::MAX_SINK_LINE
            ),
        );
        return Ok(check);
    }
    if witnessed.is_empty() {
        sink_failed(
            (&mut check, report),
            "no_witness",
            None,
            "the sink file holds no checkpoint signed by this log's key: it witnesses nothing \
             (the wrong file, an empty one, or another deployment's)"
                .into(),
        );
        return Ok(check);
    }
    if let Some(c) = &found.conflict {
        let why = format!(
            "the sink file holds two checkpoints signed by this log's key at place {} of chain \
             `{}` with different hashes ({} and {}): the chain was cut and written again",
            c.chain_seq, c.writer_id, c.hashes[0], c.hashes[1]
        );
        sink_failed(
            (&mut check, report),
            "signed_checkpoints_disagree",
            Some(c.writer_id.clone()),
            why,
        );
        report.first_bad_seq = Some(c.chain_seq);
        return Ok(check);
    }
    if let Some((writer, place, why)) = signed_checkpoint_not_held(db, found).await? {
        sink_failed(
            (&mut check, report),
            "signed_checkpoint_not_held",
            Some(writer),
            why,
        );
        report.first_bad_seq = Some(place);
        return Ok(check);
    }
    if let Some((writer, place, why)) = newest_record_not_held(db, found).await? {
        sink_failed(
            (&mut check, report),
            "unsigned_witness_not_held",
            Some(writer),
            why,
        );
        report.first_bad_seq = Some(place);
    }
    Ok(check)
}

/// The checkpoints a witness file holds: its `chains` list, or the one checkpoint it is.
fn read_witness(path: &std::path::Path) -> anyhow::Result<Vec<crate::audit::verify::Witness>> {
    let text =
        std::fs::read(path).with_context(|| format!("reading the witness {}", path.display()))?;
    let not_one = || {
        format!(
            "{} is not a witness (a report's `last_checkpoint`)",
            path.display()
        )
    };
    let v: serde_json::Value = serde_json::from_slice(&text).with_context(not_one)?;
    let mut all = vec![serde_json::from_value(v.clone()).with_context(not_one)?];
    if let Some(chains) = v.get("chains") {
        let chains: Vec<crate::audit::verify::Witness> =
            serde_json::from_value(chains.clone()).with_context(not_one)?;
        all.extend(chains);
    }
    Ok(all)
}

/// A verification report as printed: each checkpoint's `time_us` gets an RFC 3339 `time`
/// beside it, and `last_checkpoint` lists every chain's last checkpoint in `chains` (the
/// witness file keeps the checkpoints as they are).
fn with_times(report: &crate::audit::verify::ChainVerdict) -> serde_json::Value {
    let mut v = serde_json::to_value(report).expect("a report serialises");
    if let Some(last) = &report.last_checkpoint {
        v["last_checkpoint"]["time"] = crate::storage::micros_to_rfc3339(last.time_us).into();
        let chains: Vec<_> = report
            .chains
            .iter()
            .filter_map(|c| c.last_checkpoint.as_ref())
            .collect();
        v["last_checkpoint"]["chains"] = serde_json::to_value(chains).expect("witnesses serialise");
    }
    for (i, c) in report.chains.iter().enumerate() {
        if let Some(last) = &c.last_checkpoint {
            v["chains"][i]["last_checkpoint"]["time"] =
                crate::storage::micros_to_rfc3339(last.time_us).into();
        }
    }
    v
}

/// One exported record as a JSON line, with an RFC 3339 `time` beside its `time_us`.
fn ndjson_line(r: &crate::audit::AuditRecord) -> Vec<u8> {
    let mut v = serde_json::to_value(r).expect("a record serialises");
    v["time"] = crate::storage::micros_to_rfc3339(r.time_us).into();
    let mut line = serde_json::to_vec(&v).expect("a value serialises");
    line.push(b'\n');
    line
}

/// Writes `bytes` to `path` through a 0600 temporary file renamed over it: the witness is
/// never half written, and never readable by others even for a moment.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    private_file(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn private_file(path: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private (0600)", path.display()))?;
    }
    Ok(())
}
