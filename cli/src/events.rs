//! `ordo events`: the audit query over the log, as a table or JSON lines.

use std::io::Write as _;

use eventstore::envelope::{format_time, Envelope};
use eventstore::store::LogFilter;
use eventstore::{EventStore, Position};

use crate::config::EventsArgs;

/// Rows fetched per query while paging.
const PAGE: u32 = 1000;

/// Prints the events matching `args` in log order.
pub async fn run(store: &EventStore, args: EventsArgs) -> anyhow::Result<()> {
    let filter = LogFilter {
        stream_id: args.stream,
        stream_type: args.stream_type,
        event_type: args.event_type,
        correlation_id: args.correlation,
        since: args.since,
        until: args.until,
        actor: args.actor,
    };
    let mut after = args.after.unwrap_or(Position::START);
    let mut remaining = args.limit;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !args.json {
        writeln!(
            out,
            "{:<22} {:<27} {:<44} {:>7}  {:<20} correlation",
            "position", "recorded at", "stream", "version", "type"
        )?;
    }
    let mut printed = 0u64;
    while remaining > 0 {
        let batch = store
            .read_log(after, &filter, i64::from(remaining.min(PAGE)))
            .await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        remaining -= batch.len() as u32;
        for event in &batch {
            if args.json {
                serde_json::to_writer(&mut out, &Envelope::from_recorded(event))?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<22} {:<27} {:<44} {:>7}  {:<20} {}",
                    event.position.to_string(),
                    format_time(&event.recorded_at),
                    event.stream_id,
                    event.version,
                    event.event_type,
                    event
                        .metadata
                        .correlation_id
                        .map(|c| c.to_string())
                        .unwrap_or_default()
                )?;
            }
            printed += 1;
        }
    }
    if !args.json {
        writeln!(out, "({printed} events; continue with --after {after})")?;
    }
    Ok(())
}
