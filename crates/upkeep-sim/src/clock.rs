//! The simulated clock. Two kinds:
//!
//! - **stepped** ([`SimClock::stepped`]): time moves only when someone moves it
//!   ([`advance`](SimClock::advance), [`advance_to`](SimClock::advance_to)). Tests, the demo and
//!   `upkeep rehearse` use it: the emulators' controllers and upkeep's apply loop are driven step
//!   by step (see `KubeSim::run_for` and `KubeSim::pace`), so a story ends the same on an idle
//!   machine, a loaded one and a slow CI runner. Wall time may bound a test, never decide it.
//! - **running** ([`SimClock::new`]): simulated time runs `speed` times faster than real time
//!   (and can still be moved forward), for the playground (`upkeep sim serve --speed`), where a
//!   human watches. At speed 1 with no jumps it is real time.
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
    /// How fast simulated time runs; `None`: it does not run by itself (stepped).
    speed: Option<f64>,
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
        SimClock::with(start, Some(speed.max(0.001)))
    }

    /// A clock that stands at `start` and moves only when moved.
    pub fn stepped(start: DateTime<Utc>) -> SimClock {
        SimClock::with(start, None)
    }

    fn with(start: DateTime<Utc>, speed: Option<f64>) -> SimClock {
        SimClock {
            state: Arc::new(Mutex::new(State {
                sim: start,
                real: Instant::now(),
                speed,
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

    /// Whether time moves only when moved.
    pub fn is_stepped(&self) -> bool {
        self.lock().speed.is_none()
    }

    /// How fast a running clock runs (0 for a stepped one).
    pub fn speed(&self) -> f64 {
        self.lock().speed.unwrap_or(0.0)
    }

    /// Change a running clock's speed from now on (simulated time does not jump). A stepped
    /// clock stays stepped: nothing a test does may make its outcome depend on wall time.
    pub fn set_speed(&self, speed: f64) {
        let mut s = self.lock();
        if s.speed.is_none() {
            return;
        }
        let now = Instant::now();
        s.sim = sim_at(&s, now);
        s.real = now;
        s.speed = Some(speed.max(0.001));
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
}

fn sim_at(s: &State, now: Instant) -> DateTime<Utc> {
    let Some(speed) = s.speed else {
        return s.sim;
    };
    let real = now.saturating_duration_since(s.real);
    let sim = real.mul_f64(speed);
    s.sim + chrono::Duration::from_std(sim).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn runs_fast_and_jumps() {
        let c = SimClock::new(start(), 1000.0);
        std::thread::sleep(Duration::from_millis(20));
        let t = c.now();
        assert!(t >= start() + chrono::Duration::seconds(19), "{t}");
        c.advance(Duration::from_secs(3600));
        assert!(c.now() >= t + chrono::Duration::seconds(3600));
        let before = c.now();
        c.advance_to(start());
        assert!(c.now() >= before, "never goes back");
    }

    #[test]
    fn a_stepped_clock_moves_only_when_moved() {
        let c = SimClock::stepped(start());
        assert!(c.is_stepped());
        std::thread::sleep(Duration::from_millis(5));
        c.set_speed(1000.0);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), start(), "wall time and set_speed do not move it");
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now(), start() + chrono::Duration::seconds(90));
        c.advance_to(start());
        assert_eq!(c.now(), start() + chrono::Duration::seconds(90));
    }
}
