//! Liveness answers during one recovery pass.
//!
//! Recovery asks "is the party with this owner id alive?" for every lock, claim and
//! allocation record it looks at; the answer comes from the caller (the std adapter reads the
//! party table and `/proc`, a system call or two per question). [`Memo`] asks the caller at
//! most once per owner id and pass, in a fixed-capacity map (`heapless::LinearMap`, no
//! allocation): a pool with 16 384 records held by four dead parties costs four questions,
//! not 16 384. Owners past the map's capacity are asked every time (correct, only slower).

use core::cell::RefCell;

use heapless::LinearMap;

/// Distinct owners remembered per pass.
const REMEMBERED: usize = 32;

/// Memoizes a liveness callback for one recovery pass.
pub(crate) struct Memo<'a> {
    ask: &'a dyn Fn(u32) -> bool,
    seen: RefCell<LinearMap<u32, bool, REMEMBERED>>,
}

impl<'a> Memo<'a> {
    /// Wraps `ask`.
    pub(crate) fn new(ask: &'a dyn Fn(u32) -> bool) -> Self {
        Self {
            ask,
            seen: RefCell::new(LinearMap::new()),
        }
    }

    /// Whether `owner` is alive, asking the callback only the first time.
    pub(crate) fn is_alive(&self, owner: u32) -> bool {
        if let Some(&alive) = self.seen.borrow().get(&owner) {
            return alive;
        }
        let alive = (self.ask)(owner);
        // A full map just means the next question about this owner is asked again.
        let _ = self.seen.borrow_mut().insert(owner, alive);
        alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn asks_once_per_owner_and_past_capacity_still_answers() {
        let asked = Cell::new(0);
        let ask = |o: u32| {
            asked.set(asked.get() + 1);
            o.is_multiple_of(2)
        };
        let m = Memo::new(&ask);
        for _ in 0..3 {
            assert!(m.is_alive(2));
            assert!(!m.is_alive(3));
        }
        assert_eq!(asked.get(), 2);
        for o in 0..100 {
            assert_eq!(m.is_alive(o), o.is_multiple_of(2));
        }
    }
}
