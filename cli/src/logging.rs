//! Logging with `tracing`, human-readable or JSON lines, always on stderr so
//! stdout stays for command output (`ordo events --json | jq`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber.
pub fn init(filter: &str, format: LogFormat) {
    // The NATS client's own connection errors say again what ordo reports
    // itself: the first connection's failure as the process's one-line
    // error naming the setting to fix, later ones as warnings (see
    // `eventstore::nats`). Silenced unless the filter names the client.
    let filter = if filter.contains("async_nats") {
        filter.to_owned()
    } else {
        format!("{filter},async_nats::connector=off")
    };
    // The filter was validated when the command line was parsed.
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("warning: logging was already set up: {e}");
    }
}
