//! Deadlines: connection timeouts, accept back-off and the application's
//! timers, grouped in buckets by the tick they come due.
//!
//! Each connection has at most one live entry, for its earliest deadline.
//! Activity that pushes a deadline later (a message resets the ping timer)
//! does not touch the timers: when the entry comes due, the reactor
//! re-evaluates the connection and schedules the next one. An entry whose
//! connection moved to an earlier deadline, or closed, is stale and skipped.
//! So an idle connection costs one entry and part of one wake-up per ping
//! interval, and the poll timeout is always the next real deadline.
//!
//! Connection deadlines lie on a grid (see [`CONN_DEADLINE_GRID`] and
//! [`heartbeat_grid`]), so thousands of connections share a few hundred
//! buckets: scheduling is a push onto a bucket's vector and popping takes
//! from the first bucket, instead of a sift through a heap of cold cache
//! lines per entry (`BinaryHeap::pop` was the largest user-space cost of an
//! idle server with 19,000 connections).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(crate) use crate::session::Tick;

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
        Tick::from_millis(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX))
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

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A connection's next deadline: its slab key and the low 32 bits of
    /// its generation. 32 bits keep an entry at 16 bytes (there is one per
    /// connection); should a stale entry ever match a later connection in
    /// the same slot, that connection's deadlines are merely re-checked
    /// early, which is harmless.
    Conn { key: u32, generation: u32 },
    /// Retry accepting after the process ran out of descriptors.
    ResumeAccept,
    /// An application timer.
    User(u64),
}

impl TimerKind {
    /// The entry for connection `key` of `generation`.
    pub(crate) fn conn(key: usize, generation: u64) -> TimerKind {
        // Slab keys stay far below 2^32: each is an open socket, and a
        // process has fewer descriptors than that.
        TimerKind::Conn {
            key: key as u32,
            generation: generation as u32,
        }
    }
}

/// Pending deadlines, in buckets by tick.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    buckets: BTreeMap<Tick, Vec<TimerKind>>,
    /// Emptied bucket vectors kept for reuse (small ones only).
    spare: Vec<Vec<TimerKind>>,
}

impl Timers {
    /// Spare bucket vectors kept at most.
    const MAX_SPARE: usize = 64;
    /// Bucket vectors with more room than this are freed when emptied: one
    /// burst of connections must not pin its bucket's memory for good.
    const MAX_SPARE_CAPACITY: usize = 1024;

    pub(crate) fn schedule(&mut self, at: Tick, kind: TimerKind) {
        let spare = &mut self.spare;
        self.buckets
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(kind);
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Tick> {
        self.buckets.first_key_value().map(|(at, _)| *at)
    }

    /// Removes and returns one entry due at `now` (within [`SLACK`]).
    /// Entries of one bucket come out in no particular order.
    pub(crate) fn pop_due(&mut self, now: Tick) -> Option<(Tick, TimerKind)> {
        let mut first = self.buckets.first_entry()?;
        let at = *first.key();
        if at > now + SLACK {
            return None;
        }
        let kind = first.get_mut().pop();
        if first.get().is_empty() {
            let emptied = first.remove();
            if emptied.capacity() <= Self::MAX_SPARE_CAPACITY && self.spare.len() < Self::MAX_SPARE
            {
                self.spare.push(emptied);
            }
        }
        kind.map(|kind| (at, kind))
    }

    /// Pending entries, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.values().map(Vec::len).sum()
    }
}

/// The grid for the deadlines of open connections: 1% of the shortest of
/// the ping interval and the idle timeout, between [`CONN_DEADLINE_GRID`]
/// and one second. Pings go out at most that late, and in return every
/// connection that fell silent in the same window is pinged in one wake-up
/// and one burst of writes, which costs far less CPU per ping than a
/// wake-up every few pings (with 19,000 connections and 20 s pings: one
/// wake-up per 200 ms instead of one per 32 ms, and fewer cross-CPU
/// wake-ups of the peers).
pub(crate) fn heartbeat_grid(ping_interval: Option<Duration>, idle: Option<Duration>) -> u64 {
    let shortest = match (ping_interval, idle) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => match a.or(b) {
            Some(d) => d,
            None => return CONN_DEADLINE_GRID,
        },
    };
    let one_percent = u64::try_from(shortest.as_millis() / 100).unwrap_or(u64::MAX);
    one_percent.clamp(CONN_DEADLINE_GRID, 1000)
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

    #[test]
    fn one_bucket_serves_every_entry_due_at_its_tick() {
        let t0 = Clock::new().now();
        let at = t0 + Duration::from_millis(200);
        let mut timers = Timers::default();
        for key in 0..5000 {
            timers.schedule(at, TimerKind::Conn { key, generation: 1 });
        }
        assert_eq!(std::mem::size_of::<TimerKind>(), 16);
        timers.schedule(at + Duration::from_secs(1), TimerKind::ResumeAccept);
        assert_eq!(timers.len(), 5001);
        assert_eq!(timers.next_deadline(), Some(at));
        let mut keys: Vec<u32> = std::iter::from_fn(|| timers.pop_due(at))
            .map(|(when, kind)| match kind {
                TimerKind::Conn { key, .. } if when == at => key,
                other => panic!("unexpected {other:?} at {when:?}"),
            })
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..5000).collect::<Vec<_>>());
        assert_eq!(timers.next_deadline(), Some(at + Duration::from_secs(1)));
        // The 5,000-entry bucket was too big to keep as a spare.
        assert!(timers.spare.is_empty());
    }

    #[test]
    fn heartbeat_grid_is_one_percent_of_the_shortest_interval_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(heartbeat_grid(None, None), CONN_DEADLINE_GRID);
        assert_eq!(heartbeat_grid(Some(s(20)), None), 200);
        assert_eq!(heartbeat_grid(Some(s(20)), Some(s(5))), 50);
        assert_eq!(
            heartbeat_grid(Some(Duration::from_millis(200)), None),
            CONN_DEADLINE_GRID
        );
        assert_eq!(heartbeat_grid(None, Some(s(3600))), 1000);
    }
}
