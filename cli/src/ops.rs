//! `ordo rebuild`, `ordo check`, `ordo status`: the operator's tools, printed
//! for people.

use eventstore::nats::StreamName;
use eventstore::EventStore;
use indicatif::{ProgressBar, ProgressStyle};
use projectors::rebuild::{self, Progress, RebuildOptions, RebuildReport};
use projectors::Projection;

/// `ordo rebuild`.
pub async fn rebuild(
    pool: &deadpool_postgres::Pool,
    stream: &StreamName,
    projections: Vec<Projection>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} events  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!(
        "{} {}",
        if dry_run { "recomputing" } else { "rebuilding" },
        names.join(", ")
    ));
    let options = RebuildOptions {
        projections,
        dry_run,
        batch_size: 20_000,
    };
    let report = rebuild::rebuild(pool, stream, &options, |Progress { applied, total }| {
        bar.set_length(total);
        bar.set_position(applied);
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    print_rebuild(&report, dry_run);
    if dry_run && !report.identical() {
        anyhow::bail!("the rebuilt read models differ from the live ones (nothing was swapped)");
    }
    Ok(())
}

fn print_rebuild(report: &RebuildReport, dry_run: bool) {
    println!(
        "{} {} events in {:.1} s ({:.0} events/s)",
        if dry_run {
            "recomputed from"
        } else {
            "rebuilt from"
        },
        report.events,
        report.elapsed.as_secs_f64(),
        report.events_per_sec()
    );
    for outcome in &report.projections {
        let state = match (outcome.swapped, outcome.differences.is_empty()) {
            (true, _) => "swapped in".to_owned(),
            (false, true) => "identical to the live tables".to_owned(),
            (false, false) => "DIFFERS from the live tables".to_owned(),
        };
        println!(
            "  {:<10} at {:<24} {state}",
            outcome.projection,
            outcome.position.to_string()
        );
        for diff in &outcome.differences {
            println!(
                "    {}: {} row(s) only in the live table, {} only in the rebuilt one",
                diff.table, diff.only_live, diff.only_rebuilt
            );
            for example in &diff.examples {
                println!("      {example}");
            }
        }
    }
}

/// `ordo check`: exit 1 with the report when anything fails.
pub async fn check(
    pool: &deadpool_postgres::Pool,
    jetstream: &async_nats::jetstream::Context,
    stream: &StreamName,
) -> anyhow::Result<()> {
    let report = projectors::check::check(pool, jetstream, stream).await?;
    println!(
        "ordo check: {} events in the log, {} on stream {stream}",
        report.log_events, report.stream_messages
    );
    println!("  4. read models equal the fold of the log");
    print_rebuild(&report.read_models, true);
    let titles = [
        (
            1u8,
            "products never oversold (on_hand, reserved, available >= 0)",
        ),
        (2, "reserved = quantities of confirmed and paid orders"),
        (3, "no order stays pending"),
        (5, "every event on the stream once, in log order"),
    ];
    for (number, title) in titles {
        let failures: Vec<_> = report
            .violations
            .iter()
            .filter(|v| v.invariant == number)
            .collect();
        println!(
            "  {number}. {title}: {}",
            if failures.is_empty() {
                "holds"
            } else {
                "FAILS"
            }
        );
        for failure in failures {
            println!("     {}", failure.detail);
        }
    }
    if report.passed() {
        println!("all invariants hold");
        Ok(())
    } else {
        anyhow::bail!("the check failed (see above)")
    }
}

/// `ordo status`.
pub async fn status(store: &EventStore, stream: &StreamName) -> anyhow::Result<()> {
    let client = store.client().await?;
    let head = store.head().await?;
    println!("log head           {head}");
    let horizon = store.horizon().await?;
    match &horizon.holder {
        Some(holder) if holder.age_seconds > 1.0 => println!(
            "log horizon        held {:.1} s by pid {} ({}, {}, {}): {}",
            holder.age_seconds,
            holder.pid,
            holder.database.as_deref().unwrap_or("?"),
            holder.state.as_deref().unwrap_or("?"),
            if holder.may_append {
                "may append events: readers wait for it"
            } else {
                "cannot append events: readers pass over it"
            },
            holder.query.as_deref().unwrap_or("").replace('\n', " ")
        ),
        _ => println!("log horizon        moving (no long transaction)"),
    }
    match eventstore::relay::checkpoint(&**client, stream).await? {
        Some(relay) => {
            let (lag_events, lag_seconds) =
                projectors::status::lag_after(&**client, relay.position).await?;
            println!(
                "relay              at {} (stream sequence {}), lag {} events / {:.1} s",
                relay.position, relay.stream_sequence, lag_events, lag_seconds
            );
        }
        None => println!("relay              has published nothing to {stream} yet"),
    }
    match sagas::status(&client, stream).await {
        Ok(saga) => {
            println!(
                "sagas              at {}, lag {} events / {:.1} s; {} unfinished, {} need attention, {} timers{}",
                saga.position.map(|p| p.to_string()).unwrap_or_else(|| "the start".into()),
                saga.lag_events,
                saga.lag_seconds,
                saga.unfinished,
                saga.needs_attention,
                saga.timers,
                saga.next_timer_due.map(|t| format!(" (next due {t})")).unwrap_or_default()
            );
            if saga.needs_attention > 0 {
                for order in sagas::query::needing_attention(&client, 10).await? {
                    println!(
                        "                   needs attention: order {order} (GET /sagas/{order})"
                    );
                }
            }
        }
        Err(e) => println!("sagas              unknown: {e}"),
    }
    for projection in projectors::status::projections(&**client).await? {
        println!(
            "projection {:<8} at {}, lag {} events / {:.1} s, {}",
            projection.name,
            projection.position,
            projection.lag_events,
            projection.lag_seconds,
            projection.status
        );
        if let Some(error) = &projection.error {
            println!("                    {error}");
        }
    }
    Ok(())
}
