//! Deadlines: one min-heap for connection timeouts, accept back-off and the
//! application's timers.
//!
//! Each connection has at most one live entry, for its earliest deadline.
//! Activity that pushes a deadline later (a message resets the ping timer)
//! does not touch the heap: when the entry comes due, the reactor
//! re-evaluates the connection and schedules the next one. An entry whose
//! connection moved to an earlier deadline, or closed, is stale and skipped.
//! So an idle connection costs one heap entry and one wake-up per ping
//! interval, and the poll timeout is always the next real deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;
use std::ops::Add;
use std::time::{Duration, Instant};

/// A point in the loop's time: milliseconds since the loop started, plus
/// one. Eight bytes (an `Option<Tick>` too) instead of an `Instant`'s
/// sixteen: connections hold several, and there may be 100k connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Tick(NonZeroU64);

impl Tick {
    /// Rounds up to the next multiple of `grid` milliseconds, so deadlines
    /// that are close together come due in the same wake-up.
    pub(crate) fn round_up(self, grid: u64) -> Tick {
        let t = self.0.get();
        Tick(NonZeroU64::new(t.div_ceil(grid).saturating_mul(grid)).unwrap_or(self.0))
    }

    /// The time from `self` until `later` (zero if `later` is not later).
    pub(crate) fn until(self, later: Tick) -> Duration {
        Duration::from_millis(later.0.get().saturating_sub(self.0.get()))
    }
}

impl Add<Duration> for Tick {
    type Output = Tick;
    fn add(self, rhs: Duration) -> Tick {
        let millis = u64::try_from(rhs.as_millis()).unwrap_or(u64::MAX);
        Tick(self.0.saturating_add(millis))
    }
}

/// Turns `Instant`s into [`Tick`]s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The current tick, rounded down to the millisecond.
    pub(crate) fn now(&self) -> Tick {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        Tick(NonZeroU64::MIN.saturating_add(millis))
    }
}

/// Deadlines closer together than this are served by one wake-up, so a
/// burst of connections accepted together is swept together.
pub(crate) const SLACK: Duration = Duration::from_millis(2);

/// Connection deadlines (heartbeats, timeouts) are rounded up to this many
/// milliseconds: with thousands of connections, one wake-up then sends a
/// batch of pings instead of a few. Timeouts are seconds long; 32 ms late
/// does not matter.
pub(crate) const CONN_DEADLINE_GRID: u64 = 32;

#[cfg(test)]
#[test]
fn ticks_add_and_measure_durations() {
    let t0 = Clock::new().now();
    let t1 = t0 + Duration::from_millis(1500);
    assert!(t1 > t0);
    assert_eq!(t0.until(t1), Duration::from_millis(1500));
    assert_eq!(t1.until(t0), Duration::ZERO);
    assert_eq!(t0 + Duration::MAX, t0 + Duration::from_secs(u64::MAX));
    let rounded = (t0 + Duration::from_millis(5)).round_up(32);
    assert!(rounded >= t0 + Duration::from_millis(5));
    assert!(rounded <= t0 + Duration::from_millis(5 + 31));
    assert_eq!(rounded.round_up(32), rounded);
}

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A connection's next deadline (slab key and generation).
    Conn { key: usize, generation: u64 },
    /// Retry accepting after the process ran out of descriptors.
    ResumeAccept,
    /// An application timer.
    User(u64),
}

/// A min-heap of deadlines.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Tick, TimerKind)>>,
}

impl Timers {
    pub(crate) fn with_capacity(capacity: usize) -> Timers {
        Timers {
            heap: BinaryHeap::with_capacity(capacity),
        }
    }

    pub(crate) fn schedule(&mut self, at: Tick, kind: TimerKind) {
        self.heap.push(Reverse((at, kind)));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Tick> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one entry due at `now` (within [`SLACK`]).
    pub(crate) fn pop_due(&mut self, now: Tick) -> Option<(Tick, TimerKind)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now + SLACK => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Clock::new().now();
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_secs(3), TimerKind::User(3));
        timers.schedule(t0 + Duration::from_secs(1), TimerKind::User(1));
        timers.schedule(t0 + Duration::from_secs(2), TimerKind::User(2));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let due: Vec<_> = std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_secs(2)))
            .map(|(_, k)| k)
            .collect();
        assert_eq!(due, [TimerKind::User(1), TimerKind::User(2)]);
        assert_eq!(timers.len(), 1);
    }
}
