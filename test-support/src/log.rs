//! Reading a test's event log whole. The log is read below the server's
//! oldest running transaction, which other tests' work may hold back for a
//! moment: an empty page before the log's head means "again", not "the end".

use std::time::Duration;

use eventstore::store::LogFilter;
use eventstore::{EventStore, Position, RecordedEvent};

use crate::wait::{poll, wait_for};

/// How long a read may wait for other tests' transactions to end.
const PATIENCE: Duration = Duration::from_secs(20);

/// The next page of at most `limit` events after `after`, waiting while the
/// horizon holds back events up to `head`; empty only at `head`.
pub async fn next_page(
    store: &EventStore,
    after: Position,
    head: Position,
    limit: i64,
) -> Vec<RecordedEvent> {
    wait_for(PATIENCE, || async move {
        let page = store
            .read_log(after, &LogFilter::default(), limit)
            .await
            .unwrap_or_else(|e| panic!("read the log: {e}"));
        (!page.is_empty() || after >= head).then_some(page)
    })
    .await
}

/// The whole log as committed now, in log order.
pub async fn whole_log(store: &EventStore) -> Vec<RecordedEvent> {
    let head = store
        .head()
        .await
        .unwrap_or_else(|e| panic!("the log's head: {e}"));
    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let page = next_page(store, after, head, 5000).await;
        let Some(last) = page.last() else {
            return all;
        };
        after = last.position;
        all.extend(page);
    }
}

/// Whether, within ten seconds, nothing is pending beyond the horizon any
/// more (other tests' transactions end within moments).
pub async fn horizon_clears(store: &EventStore) -> bool {
    let pending = poll(
        Duration::from_secs(10),
        || async {
            store
                .pending_beyond_horizon()
                .await
                .unwrap_or_else(|e| panic!("ask the horizon: {e}"))
        },
        |pending| !pending,
    )
    .await;
    !pending
}
