//! Wall-clock time for the cache, injected so expiry, refresh and backoff are tested without
//! sleeping: the system clock, and a clock tests set by hand.

use jiff::Timestamp;

/// Wall-clock time, injected so expiry and refresh are tested without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

#[cfg(test)]
pub use manual::ManualClock;

#[cfg(test)]
mod manual {
    use std::sync::{Mutex, PoisonError};

    use jiff::Timestamp;

    use super::Clock;

    /// A clock that moves only when told to (tests).
    #[derive(Debug)]
    pub struct ManualClock {
        now: Mutex<Timestamp>,
    }

    impl ManualClock {
        pub fn new(start: Timestamp) -> Self {
            Self {
                now: Mutex::new(start),
            }
        }

        pub fn set(&self, to: Timestamp) {
            *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Timestamp {
            *self.now.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }
}
