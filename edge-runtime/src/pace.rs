//! Pacing against absolute deadlines, and the timing figures of a run.
//!
//! Tick `k` is due at `start + k·period`. The pacer sleeps until a short spin margin before the
//! deadline and spins for the rest, so sleep granularity does not become jitter; deadlines are
//! computed from the start, never from the previous wake-up, so nothing drifts. A tick that
//! overruns makes the next start at once (no catch-up burst); deadlines that passed entirely
//! while it ran are dropped and counted (copper-rs's limiter does the same).

use std::time::{Duration, Instant};

/// One tick handed out by the pacer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    pub index: u64,
    pub deadline: Instant,
    /// When the tick actually started.
    pub started: Instant,
    /// Deadlines skipped just before this tick.
    pub dropped: u64,
}

impl Tick {
    /// How late the tick started.
    pub fn lateness(&self) -> Duration {
        self.started.saturating_duration_since(self.deadline)
    }
}

/// The fixed-rate limiter.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    period: Duration,
    spin: Duration,
    next: u64,
}

impl Pacer {
    /// `spin`: how long before each deadline to stop sleeping and spin (1–2 ms covers Linux's
    /// timer slack on a loaded board).
    pub fn new(period: Duration, spin: Duration) -> Self {
        Self { start: Instant::now(), period: period.max(Duration::from_micros(100)), spin, next: 0 }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    fn deadline(&self, k: u64) -> Instant {
        // u32 ticks of ≥ 100 µs is ≥ 5 days; saturate rather than overflow beyond.
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        self.start + self.period * k
    }

    /// Waits for the next tick.
    pub fn wait(&mut self) -> Tick {
        let now = Instant::now();
        let mut dropped = 0;
        let mut deadline = self.deadline(self.next);
        if now > deadline + self.period {
            // Whole periods passed while the last tick ran: skip to the latest deadline.
            let behind = now.duration_since(deadline).as_nanos() / self.period.as_nanos().max(1);
            let behind = u64::try_from(behind).unwrap_or(u64::MAX);
            dropped = behind;
            self.next = self.next.saturating_add(behind);
            deadline = self.deadline(self.next);
        }
        let now = Instant::now();
        if deadline > now + self.spin {
            std::thread::sleep(deadline - now - self.spin);
        }
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
        let tick = Tick { index: self.next, deadline, started: Instant::now(), dropped };
        self.next = self.next.saturating_add(1);
        tick
    }
}

/// A fixed-resolution histogram of durations: O(1) memory for runs of any length, percentiles
/// exact to the bucket width.
#[derive(Debug, Clone)]
pub struct Histogram {
    bucket_ns: u64,
    counts: Vec<u64>,
    /// Samples beyond the last bucket.
    overflow: u64,
    max_ns: u64,
    n: u64,
    sum_ns: u128,
}

impl Histogram {
    /// `bucket`: resolution; `range`: the largest duration resolved (longer ones count as
    /// overflow and report as the maximum).
    pub fn new(bucket: Duration, range: Duration) -> Self {
        let bucket_ns = u64::try_from(bucket.as_nanos()).unwrap_or(u64::MAX).max(1);
        let buckets = usize::try_from(u64::try_from(range.as_nanos()).unwrap_or(u64::MAX) / bucket_ns).unwrap_or(1 << 20).clamp(1, 1 << 20);
        Self { bucket_ns, counts: vec![0; buckets], overflow: 0, max_ns: 0, n: 0, sum_ns: 0 }
    }

    /// For control-loop timing (periods, lateness, work): 10 µs resolution up to 0.5 s.
    pub fn loop_timing() -> Self {
        Self::new(Duration::from_micros(10), Duration::from_millis(500))
    }

    /// For inference latency: 100 µs resolution up to 10 s.
    pub fn latency() -> Self {
        Self::new(Duration::from_micros(100), Duration::from_secs(10))
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let b = usize::try_from(ns / self.bucket_ns).unwrap_or(usize::MAX);
        match self.counts.get_mut(b) {
            Some(c) => *c += 1,
            None => self.overflow += 1,
        }
        self.max_ns = self.max_ns.max(ns);
        self.n += 1;
        self.sum_ns += u128::from(ns);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The `q`-quantile (0..=1) in milliseconds, at the bucket's middle; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // The bucket's middle, but never above the largest sample.
                return Some(((i as f64 + 0.5) * self.bucket_ns as f64).min(self.max_ns as f64) / 1e6);
            }
        }
        Some(self.max_ns as f64 / 1e6)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (self.n > 0).then(|| self.max_ns as f64 / 1e6)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum_ns as f64 / self.n as f64 / 1e6)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_absolute_and_overruns_drop_whole_periods() {
        // Only orderings that hold however loaded the machine is are checked here; the timing
        // figures themselves are measured by the benchmark.
        let period = Duration::from_millis(20);
        let mut p = Pacer::new(period, Duration::from_millis(1));
        let t0 = p.wait();
        assert_eq!(t0.index, 0);
        let t1 = p.wait();
        assert!(t1.index >= 1 && t1.started >= t1.deadline, "never early");
        assert_eq!(t1.deadline, p.start() + period * t1.index as u32, "deadlines sit on the grid");
        // Overrun by 3.5 periods: the deadlines that passed entirely are dropped and the grid
        // is kept.
        std::thread::sleep(Duration::from_millis(70));
        let t = p.wait();
        assert!(t.dropped >= 2, "{t:?}");
        assert_eq!(t.index, t1.index + 1 + t.dropped);
        assert_eq!(t.deadline, p.start() + period * t.index as u32);
        assert!(t.started >= t.deadline);
        assert!(p.wait().index > t.index);
    }

    #[test]
    fn histogram_quantiles_are_exact_to_the_bucket() {
        let mut h = Histogram::new(Duration::from_micros(10), Duration::from_millis(100));
        assert_eq!(h.quantile_ms(0.5), None);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us * 10));
        }
        h.record(Duration::from_secs(3));
        assert_eq!(h.count(), 1001);
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!((p50 - 5.015).abs() < 1e-9, "{p50}");
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p99 - 9.915).abs() < 1e-9, "{p99}");
        assert_eq!(h.quantile_ms(1.0), Some(3000.0), "overflow reports as the maximum");
        assert_eq!(h.max_ms(), Some(3000.0));
        let mut one = Histogram::loop_timing();
        one.record(Duration::from_micros(20_041));
        assert_eq!(one.quantile_ms(0.99), Some(20.041), "a quantile never exceeds the maximum");
    }
}
