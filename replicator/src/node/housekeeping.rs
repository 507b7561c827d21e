//! Log retention: entries every peer acknowledged are removed once they
//! have been acknowledged by all for `shipping.log_retention`.
//!
//! The task samples the vector acknowledged by every peer (the pointwise
//! minimum of their acknowledged vectors and the head) and truncates up to
//! the newest sample at least `log_retention` old. A peer that falls behind
//! the truncated log later (or a wiped node) is brought up by a snapshot.
//! With no peers, the whole log ages out the same way. Entries a sink has
//! not read yet are kept too (a sink behind the log rescans its table).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_engine::ids::VersionVector;
use tributary_engine::store::LogStore;

use super::core::{Core, lock};

/// Runs until shutdown.
pub async fn retain(core: Arc<Core>) {
    let retention = core.config.shipping.log_retention;
    let every = (retention / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
    let mut samples: VecDeque<(Instant, VersionVector)> = VecDeque::new();
    loop {
        if core.sleep_or_shutdown(every).await {
            return;
        }
        let now = Instant::now();
        let acked_by_all = core
            .links
            .values()
            .fold(core.head.borrow().clone(), |acc, l| {
                acc.meet(lock(&l.state).outbound.acked())
            });
        // Sinks read the log too: keep what they have not read.
        let acked_by_all = core
            .sidecar
            .sink_cursors()
            .iter()
            .fold(acked_by_all, |acc, c| acc.meet(c));
        samples.push_back((now, acked_by_all));
        let mut upto = None;
        while samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= retention)
        {
            upto = samples.pop_front().map(|(_, v)| v);
        }
        let Some(upto) = upto else { continue };
        let store = Arc::clone(&core.store);
        let result = tokio::task::spawn_blocking(move || {
            let before = store.log_start()?;
            store.truncate(&upto)?;
            let after = store.log_start()?;
            Ok::<u64, tributary_engine::store::StoreError>(after.records_ahead_of(&before))
        })
        .await;
        match result {
            Ok(Ok(removed)) if removed > 0 => {
                core.metrics.truncated.inc_by(removed);
                tracing::debug!(removed, "log truncated");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "log truncation failed; retrying later"),
            Err(e) => tracing::warn!(error = %e, "log truncation task failed"),
        }
    }
}
