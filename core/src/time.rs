//! Time for blocking operations: a caller-supplied monotonic clock and deadlines.
//!
//! The core never reads an OS clock. A blocking call takes a [`Clock`] (a firmware tick
//! counter, `Instant` in the std adapter) and an optional deadline in that clock's ticks,
//! computed once by the caller, and spins with a [`spin::RelaxStrategy`] between tries.

/// A monotonic clock: `now` never goes backwards. The unit is the implementor's choice; the
/// deadlines handed to blocking calls use the same unit.
pub trait Clock {
    /// Current time in ticks.
    fn now(&self) -> u64;
}

impl<F: Fn() -> u64> Clock for F {
    fn now(&self) -> u64 {
        self()
    }
}

/// When a blocking call gives up: `None` waits forever, `Some(t)` gives up once `clock.now()`
/// reaches `t`. A deadline already reached means "try once".
pub type Deadline = Option<u64>;

/// Whether `deadline` has passed at `clock`'s current time.
#[inline]
pub(crate) fn expired<C: Clock + ?Sized>(clock: &C, deadline: Deadline) -> bool {
    matches!(deadline, Some(t) if clock.now() >= t)
}
