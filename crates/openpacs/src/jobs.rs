//! `openpacs jobs …`: the durable jobs every node shares (outbound HL7 messages…), and the
//! retry of a failed one. Works while the servers run (the job table is in the index); a
//! retry is audited.

use std::process::ExitCode;

use anyhow::bail;
use pacs_archive::Archive;
use pacs_store::{AuditEvent, JobFilter, JobState};

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first (tab-separated: id, state, kind, queue key, attempts/max,
    /// not before, last error, summary).
    List {
        /// pending, running, done or failed.
        #[arg(long)]
        state: Option<String>,
        /// e.g. hl7-outbound.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Send a failed (or backing-off) job again now, its attempts counted afresh.
    Retry { id: i64 },
}

impl Default for JobsCommand {
    fn default() -> Self {
        JobsCommand::List {
            state: None,
            kind: None,
            limit: 100,
        }
    }
}

pub async fn run(config: Config, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let archive = Archive::open(&crate::serve::archive_config(&config)?).await?;
    let index = archive.index();
    match command {
        JobsCommand::List { state, kind, limit } => {
            let state = match state {
                Some(s) => match JobState::parse(&s) {
                    Some(state) => Some(state),
                    None => bail!("state {s:?} is not pending, running, done or failed"),
                },
                None => None,
            };
            let filter = JobFilter {
                state,
                kind,
                before: None,
                limit: limit.max(1),
            };
            for job in index.jobs(&filter).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}/{}\t{}\t{}\t{}",
                    job.id,
                    job.state.as_str(),
                    job.kind,
                    job.queue_key,
                    job.attempts,
                    job.max_attempts,
                    job.not_before,
                    job.last_error
                        .as_deref()
                        .unwrap_or("")
                        .replace(['\t', '\n', '\r'], " "),
                    job.summary,
                );
            }
        }
        JobsCommand::Retry { id } => {
            let audit = AuditEvent {
                event: "job-retry".into(),
                actor: format!(
                    "cli:{}",
                    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                ),
                peer: "local".into(),
                outcome: "success".into(),
                detail: Some(format!("job {id}")),
                ..AuditEvent::default()
            };
            if !index.retry_job(id, audit).await? {
                bail!("no failed or pending job {id}");
            }
            println!("job {id} will be attempted again now");
        }
    }
    Ok(ExitCode::SUCCESS)
}
