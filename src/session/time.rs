//! The session's notion of time: a [`Tick`] is given to it, never read from
//! a clock, so tests and the fuzzer drive it with a fake one.

use std::num::NonZeroU64;
use std::ops::Add;
use std::time::Duration;

/// A point in the loop's time: milliseconds since the loop started, plus
/// one. Eight bytes (an `Option<Tick>` too) instead of an `Instant`'s
/// sixteen: connections hold several, and there may be 100k connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(NonZeroU64);

impl Tick {
    /// The tick `millis` milliseconds after the origin.
    ///
    /// ```
    /// use std::time::Duration;
    /// use wsloop::session::Tick;
    /// let t0 = Tick::from_millis(0);
    /// assert_eq!(t0 + Duration::from_millis(7), Tick::from_millis(7));
    /// ```
    pub fn from_millis(millis: u64) -> Tick {
        Tick(NonZeroU64::MIN.saturating_add(millis.min(u64::MAX - 1)))
    }

    /// Rounds up to the next multiple of `grid` milliseconds, so deadlines
    /// that are close together come due in the same wake-up.
    pub fn round_up(self, grid: u64) -> Tick {
        let t = self.0.get();
        Tick(NonZeroU64::new(t.div_ceil(grid).saturating_mul(grid)).unwrap_or(self.0))
    }

    /// The time from `self` until `later` (zero if `later` is not later).
    pub fn until(self, later: Tick) -> Duration {
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

#[cfg(test)]
#[test]
fn ticks_add_and_measure_durations() {
    let t0 = Tick::from_millis(12_345);
    let t1 = t0 + Duration::from_millis(1500);
    assert!(t1 > t0);
    assert_eq!(t0.until(t1), Duration::from_millis(1500));
    assert_eq!(t1.until(t0), Duration::ZERO);
    assert_eq!(t0 + Duration::MAX, t0 + Duration::from_secs(u64::MAX));
    let rounded = (t0 + Duration::from_millis(5)).round_up(32);
    assert!(rounded >= t0 + Duration::from_millis(5));
    assert!(rounded <= t0 + Duration::from_millis(5 + 31));
    assert_eq!(rounded.round_up(32), rounded);
    assert_eq!(Tick::from_millis(u64::MAX), Tick::from_millis(u64::MAX - 1));
}
