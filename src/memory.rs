//! One budget for the change bytes held in memory, from the source through
//! the lead stage, the webhooks' queues and requests in flight, to the
//! spool's writer and drainers (`[delivery] memory`). Counts bound memory
//! badly when rows range from 1 kB to 1 MB; bytes do not.
//!
//! A change reserves its size before it is read further; the reservation
//! travels with it and is given back when the last webhook is done with it.
//! When the budget is spent, the source stops reading (it still answers the
//! server's keepalives) until deliveries, or the spool, free some.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes per permit: fine enough for small rows, and 4 TiB fit in a u32.
const UNIT: u64 = 1024;

/// The process's budget; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    permits: Arc<Semaphore>,
    /// Its size in permits: no reservation asks for more, so a change
    /// larger than the whole budget still goes through (alone).
    total: u32,
    gauge: metrics::Gauge,
}

/// Bytes reserved for one change; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    budget: MemoryBudget,
}

impl MemoryBudget {
    pub(crate) fn new(bytes: u64) -> MemoryBudget {
        let total = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        let budget = MemoryBudget {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(total as usize)),
                total,
                gauge: metrics::gauge!("leadhook_memory_bytes"),
            }),
        };
        budget.show();
        budget
    }

    fn units(&self, bytes: usize) -> u32 {
        let units = (bytes as u64).div_ceil(UNIT).max(1);
        u32::try_from(units)
            .unwrap_or(u32::MAX)
            .min(self.inner.total)
    }

    fn show(&self) {
        let held = self.inner.total as usize - self.inner.permits.available_permits();
        self.inner.gauge.set((held as u64 * UNIT) as f64);
    }

    fn wrap(&self, permit: OwnedSemaphorePermit) -> Reservation {
        self.show();
        Reservation {
            permit: Some(permit),
            budget: self.clone(),
        }
    }

    /// Waits until `bytes` are free, and holds them.
    pub(crate) async fn reserve(&self, bytes: usize) -> Reservation {
        let units = self.units(bytes);
        match self.inner.permits.clone().acquire_many_owned(units).await {
            Ok(permit) => self.wrap(permit),
            // The semaphore is never closed.
            Err(_) => self.none(),
        }
    }

    /// Holds `bytes` if they are free now.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let units = self.units(bytes);
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_many_owned(units)
            .ok()?;
        Some(self.wrap(permit))
    }

    /// Whether less than an eighth of the budget is free: the source is
    /// about to wait, or waits.
    pub(crate) fn is_nearly_spent(&self) -> bool {
        self.inner.permits.available_permits() < (self.inner.total / 8) as usize
    }

    /// A reservation of nothing, for what is not counted.
    pub(crate) fn none(&self) -> Reservation {
        Reservation {
            permit: None,
            budget: self.clone(),
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn held(&self) -> u64 {
        (self.inner.total as usize - self.inner.permits.available_permits()) as u64 * UNIT
    }
}

impl Reservation {
    /// Makes this reservation `bytes` large: gives back what is over, or
    /// takes what is missing as far as it is free. It never waits: the
    /// stage growing a change (a payload larger than its row, with large
    /// values read back) holds it while the changes behind it hold the rest
    /// of the budget, so waiting could never end. What could not be taken
    /// is held uncounted until the change is done; the source, which does
    /// wait, sees the budget spent meanwhile.
    pub(crate) fn resize(&mut self, bytes: usize) {
        let budget = self.budget.clone();
        let want = budget.units(bytes);
        let have = self.permit.as_ref().map_or(0, |p| p.num_permits() as u32);
        if want < have {
            if let Some(permit) = self.permit.as_mut() {
                drop(permit.split((have - want) as usize));
            }
        } else if want > have {
            let free = budget.inner.permits.available_permits() as u32;
            let take = (want - have).min(free);
            if take > 0
                && let Ok(extra) = budget.inner.permits.clone().try_acquire_many_owned(take)
            {
                match self.permit.as_mut() {
                    Some(permit) => permit.merge(extra),
                    None => self.permit = Some(extra),
                }
            }
        }
        budget.show();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            self.budget.show();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_hold_bytes_until_dropped_and_resize_both_ways() {
        let budget = MemoryBudget::new(10 * UNIT);
        let mut one = budget.reserve(3000).await;
        assert_eq!(budget.held(), 3 * UNIT);
        one.resize(5 * UNIT as usize);
        assert_eq!(budget.held(), 5 * UNIT);
        one.resize(100);
        assert_eq!(budget.held(), UNIT);
        drop(one);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn growing_takes_only_what_is_free_and_never_waits() {
        let budget = MemoryBudget::new(4 * UNIT);
        let others = budget.reserve(3 * UNIT as usize).await;
        let mut growing = budget.reserve(1).await;
        growing.resize(40 * UNIT as usize);
        assert_eq!(
            budget.held(),
            4 * UNIT,
            "it took nothing more, and did not wait"
        );
        drop(others);
        growing.resize(40 * UNIT as usize);
        assert_eq!(budget.held(), 4 * UNIT, "now it holds the whole budget");
    }

    #[tokio::test]
    async fn a_full_budget_makes_the_next_reservation_wait() {
        let budget = MemoryBudget::new(4 * UNIT);
        let all = budget.reserve(4 * UNIT as usize).await;
        assert!(budget.try_reserve(1).is_none());
        drop(all);
        assert!(budget.try_reserve(1).is_some());
    }

    #[tokio::test]
    async fn a_change_larger_than_the_budget_takes_all_of_it_and_still_goes_through() {
        let budget = MemoryBudget::new(4 * UNIT);
        let huge = budget.reserve(1 << 30).await;
        assert_eq!(budget.held(), 4 * UNIT);
        drop(huge);
        assert_eq!(budget.held(), 0);
    }
}
