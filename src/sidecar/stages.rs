//! The tasks of a session after its source (delivery workers, the spool's
//! writer, the lead stage, and those beside the source), and how a session
//! learns that one of them ended it.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use super::session::{SessionEnd, SessionError};
use crate::delivery::spool::store::SpoolError;
use crate::lead::LeadError;
use crate::source::SourceError;

/// The tasks of a session after its source. Dropping them aborts what is
/// still in flight; the next session redelivers it.
pub(super) struct Stages {
    /// One delivery worker per webhook.
    pub(super) workers: JoinSet<()>,
    /// Writes the spooling webhooks' changes; ends when the workers do.
    pub(super) writer: JoinHandle<Result<(), SpoolError>>,
    /// Rung when a lagging webhook has drained its queue (only replication
    /// mode sets webhooks lagging).
    pub(super) caught_up: Arc<Notify>,
    /// The lead stage, where both modes' sources hand their changes on.
    pub(super) lead: Option<JoinHandle<Result<(), LeadError>>>,
    /// Replication mode's slot monitor and backfill reader, which stop
    /// with the source.
    pub(super) beside: Vec<JoinHandle<()>>,
}

impl Stages {
    /// Completes when a stage ends the session before the source does.
    pub(super) async fn ended(&mut self) -> Result<SessionEnd, SessionError> {
        let Stages {
            workers,
            caught_up,
            writer,
            lead,
            ..
        } = self;
        tokio::select! {
            Some(result) = async { Some(lead.as_mut()?.await) } => Err(match result {
                Ok(Err(e)) => e.into(),
                _ => SourceError::Downstream.into(),
            }),
            // With no webhooks the set is empty and this branch stays off.
            Some(_) = workers.join_next() => Err(SourceError::Downstream.into()),
            // It ends by itself only without webhooks (nothing feeds it); a
            // writer that failed (the server going away) ends the session.
            Some(failed) = async {
                match writer.await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(SessionError::from(e)),
                    Err(_) => Some(SourceError::Downstream.into()),
                }
            } => Err(failed),
            () = caught_up.notified() => Ok(SessionEnd::CaughtUp),
        }
    }

    /// After the source closed their input: until the stages have finished
    /// what they have.
    pub(super) async fn drained(&mut self) {
        if let Some(lead) = &mut self.lead {
            let _ = lead.await;
        }
        while self.workers.join_next().await.is_some() {}
        let _ = (&mut self.writer).await;
    }

    pub(super) fn stop_beside(&mut self) {
        for task in self.beside.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        if let Some(lead) = &self.lead {
            lead.abort();
        }
        self.stop_beside();
        self.workers.abort_all();
        self.writer.abort();
    }
}
