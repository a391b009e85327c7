//! The simulated clock: simulated time runs `speed` times faster than real time and can be moved
//! forward at will, so that tests and the demo live through hours of schedule in seconds. At speed
//! 1 with no jumps it is real time.
//!
//! Everything in the simulators that stamps or waits on time reads this clock; nothing in them
//! reads the system clock directly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

#[derive(Debug)]
struct State {
    /// Simulated time at `real`.
    sim: DateTime<Utc>,
    real: Instant,
    speed: f64,
}

/// A shared, cheap-to-clone simulated clock.
#[derive(Debug, Clone)]
pub struct SimClock {
    state: Arc<Mutex<State>>,
}

impl SimClock {
    /// A clock that starts at `start` and runs `speed` times faster than real time (speed is
    /// clamped to at least 0.001).
    pub fn new(start: DateTime<Utc>, speed: f64) -> SimClock {
        SimClock {
            state: Arc::new(Mutex::new(State {
                sim: start,
                real: Instant::now(),
                speed: speed.max(0.001),
            })),
        }
    }

    /// Real time: now, at speed 1.
    pub fn real() -> SimClock {
        SimClock::new(Utc::now(), 1.0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now(&self) -> DateTime<Utc> {
        let s = self.lock();
        sim_at(&s, Instant::now())
    }

    pub fn speed(&self) -> f64 {
        self.lock().speed
    }

    /// Change the speed from now on (simulated time does not jump).
    pub fn set_speed(&self, speed: f64) {
        let mut s = self.lock();
        let now = Instant::now();
        s.sim = sim_at(&s, now);
        s.real = now;
        s.speed = speed.max(0.001);
    }

    /// Jump forward by `d` of simulated time.
    pub fn advance(&self, d: Duration) {
        let mut s = self.lock();
        let now = Instant::now();
        s.sim = sim_at(&s, now) + chrono::Duration::from_std(d).unwrap_or_default();
        s.real = now;
    }

    /// Jump to `t` if it is later than now.
    pub fn advance_to(&self, t: DateTime<Utc>) {
        let mut s = self.lock();
        let now = Instant::now();
        let cur = sim_at(&s, now);
        s.sim = cur.max(t);
        s.real = now;
    }

    /// The real duration that `d` of simulated time takes at the current speed.
    pub fn real_duration(&self, d: Duration) -> Duration {
        d.div_f64(self.speed())
    }

    /// Sleep for `d` of simulated time (at the speed in force when called; jumps made meanwhile
    /// do not wake the sleeper early).
    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep(self.real_duration(d)).await;
    }
}

fn sim_at(s: &State, now: Instant) -> DateTime<Utc> {
    let real = now.saturating_duration_since(s.real);
    let sim = real.mul_f64(s.speed);
    s.sim + chrono::Duration::from_std(sim).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_fast_and_jumps() {
        let start = DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let c = SimClock::new(start, 1000.0);
        std::thread::sleep(Duration::from_millis(20));
        let t = c.now();
        assert!(t >= start + chrono::Duration::seconds(19), "{t}");
        c.advance(Duration::from_secs(3600));
        assert!(c.now() >= t + chrono::Duration::seconds(3600));
        let before = c.now();
        c.advance_to(start);
        assert!(c.now() >= before, "never goes back");
        assert_eq!(
            c.real_duration(Duration::from_secs(10)),
            Duration::from_millis(10)
        );
    }
}
