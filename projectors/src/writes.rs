//! The statements a batch writes, collected while it is folded and sent
//! later, together.
//!
//! A projection reads the rows a batch touches, folds the events into them
//! in memory and writes the changed rows back. The live projector reads
//! outside any transaction and then sends the checkpoint's move and every
//! write at once, so its transaction holds a transaction id for one round
//! trip instead of one per statement: while it is open, the log's horizon
//! cannot pass it, and the relay (and every reader of the log) waits.

use deadpool_postgres::GenericClient;
use eventstore::StoreError;
use futures::future::try_join_all;
use tokio_postgres::types::ToSql;

/// A parameter of a collected statement.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// The parameters of a collected statement: `params![a, b]`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        vec![$(Box::new($value) as $crate::writes::Param),*]
    };
}
pub(crate) use params;

/// Statements to run, in order, each with its parameters.
#[derive(Default)]
pub struct Writes {
    statements: Vec<(String, Vec<Param>)>,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.statements.iter().map(|(sql, _)| sql))
            .finish()
    }
}

impl Writes {
    /// Adds a statement.
    pub fn push(&mut self, sql: String, params: Vec<Param>) {
        self.statements.push((sql, params));
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Runs every statement on `client` (a transaction), sent back to back
    /// without waiting for each answer. The statements are prepared once
    /// per connection: each is an upsert from arrays, whose plan does not
    /// depend on the values or on the size of the table.
    pub async fn execute(&self, client: &impl GenericClient) -> Result<(), StoreError> {
        let mut prepared = Vec::with_capacity(self.statements.len());
        for (sql, _) in &self.statements {
            prepared.push(client.prepare_cached(sql).await?);
        }
        try_join_all(
            self.statements
                .iter()
                .zip(&prepared)
                .map(|((_, params), statement)| {
                    client.execute_raw(
                        statement,
                        params.iter().map(|p| &**p as &(dyn ToSql + Sync)),
                    )
                }),
        )
        .await?;
        Ok(())
    }
}
