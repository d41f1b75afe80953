//! Recovery: what a new coordinator picks up. The pending commands of every
//! unfinished saga are issued again; their deterministic ids make that
//! harmless for those that already ran (the executor replays them).

use domain::ids::OrderId;

use super::engine::{Engine, Work};
use super::term::TermError;
use crate::store;

impl Engine {
    /// The sagas a new coordinator must resume, with their pending commands.
    pub(crate) async fn recover(&self) -> Result<Vec<(OrderId, Vec<Work>)>, TermError> {
        let client = self.client().await?;
        let sagas = store::with_pending_commands(&client).await?;
        if !sagas.is_empty() {
            tracing::info!(
                sagas = sagas.len(),
                "re-issuing the pending commands of unfinished sagas"
            );
        }
        Ok(sagas
            .iter()
            .map(|saga| {
                (
                    saga.order_id,
                    self.works(saga, saga.state.pending_commands(), &Default::default()),
                )
            })
            .collect())
    }
}
