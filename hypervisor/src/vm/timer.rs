//! A vCPU's one-shot guest timer (`crx_abi::nr::TIMER_ARM`): pure, with time passed in.
//!
//! The CPU loop keeps one [`GuestTimer`] beside each vCPU it runs. The policy's
//! [`super::Action::ArmTimer`] arms it with a deadline on the VM's monotonic clock, which
//! is turned into host time once (adding the VM's start, as `SLEEP_UNTIL` times are).
//! Before every entry the loop asks [`GuestTimer::before_entry`]: a deadline that has
//! passed gives the vector to queue in the backend (and disarms the timer), one still
//! ahead shortens the entry so that it ends at the deadline. A halted vCPU sleeps no
//! longer than its deadline ([`GuestTimer::wake_by`]). A `VCPU_KICK` with a vector that
//! another vCPU (or this one) aimed at it re-arms it to fire at once ([`GuestTimer::kick`]),
//! as `TIMER_ARM(0, vector)` would.
//!
//! Nothing here can hold a vCPU longer than its slice: the timer only ever shortens an
//! entry, so a guest that arms it in the past again and again still leaves at its slice's
//! end like any other.
#![forbid(unsafe_code)]

/// The timer of one vCPU: disarmed, or a host-time deadline and a vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestTimer {
    armed: Option<(u64, u8)>,
}

impl GuestTimer {
    /// A disarmed timer.
    pub const fn new() -> GuestTimer {
        GuestTimer { armed: None }
    }

    /// Arms the timer for VM time `deadline_ns` of a VM whose clock started at host time
    /// `start_ns`, replacing any deadline; `crx_abi::TIMER_DISARM` (`u64::MAX`) disarms.
    pub fn arm(&mut self, deadline_ns: u64, vector: u8, start_ns: u64) {
        self.armed = if deadline_ns == crx_abi::TIMER_DISARM {
            None
        } else {
            Some((deadline_ns.saturating_add(start_ns), vector))
        };
    }

    /// A kick with `vector` (`VCPU_KICK`): the timer fires at the next entry with `vector`,
    /// replacing any deadline, exactly as `TIMER_ARM(0, vector)` from the vCPU itself.
    pub fn kick(&mut self, vector: u8) {
        self.arm(0, vector, 0);
    }

    /// The armed host-time deadline and vector, if any.
    pub fn armed(&self) -> Option<(u64, u8)> {
        self.armed
    }

    /// Before an entry at host time `now_ns` that may last `slice_ns`: the vector to queue
    /// now if the deadline has come (the timer is then disarmed), and the slice, cut so
    /// that the entry ends at a deadline still ahead (at least 1 ns).
    pub fn before_entry(&mut self, now_ns: u64, slice_ns: u64) -> (Option<u8>, u64) {
        match self.armed {
            Some((at, vector)) if at <= now_ns => {
                self.armed = None;
                (Some(vector), slice_ns)
            }
            Some((at, _)) => (None, slice_ns.min(at - now_ns)),
            None => (None, slice_ns),
        }
    }

    /// When a vCPU that halts until host time `until_ns` is woken at the latest: no later
    /// than its deadline (an interrupt ends a halt).
    pub fn wake_by(&self, until_ns: u64) -> u64 {
        match self.armed {
            Some((at, _)) => until_ns.min(at),
            None => until_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_deadline_ahead_cuts_the_slice_then_fires_once() {
        let mut t = GuestTimer::new();
        assert_eq!(t.before_entry(5 * MS, 10 * MS), (None, 10 * MS), "disarmed: the slice as it is");
        // Armed at VM time 3 ms in a VM that started at host time 1000 ms.
        t.arm(3 * MS, 0x20, 1000 * MS);
        assert_eq!(t.armed(), Some((1003 * MS, 0x20)));
        assert_eq!(t.before_entry(1000 * MS, 10 * MS), (None, 3 * MS), "the entry ends at the deadline");
        assert_eq!(t.before_entry(1000 * MS, MS), (None, MS), "a shorter slice stays");
        assert_eq!(t.before_entry(1003 * MS - 1, 10 * MS), (None, 1));
        assert_eq!(t.before_entry(1003 * MS, 10 * MS), (Some(0x20), 10 * MS), "due: queue it");
        assert_eq!(t.armed(), None, "delivery disarms");
        assert_eq!(t.before_entry(1004 * MS, 10 * MS), (None, 10 * MS), "and it fires once");
    }

    #[test]
    fn arming_again_replaces_and_max_disarms() {
        let mut t = GuestTimer::new();
        t.arm(50 * MS, 0x20, 0);
        t.arm(20 * MS, 0x30, 0);
        assert_eq!(t.armed(), Some((20 * MS, 0x30)));
        assert_eq!(t.before_entry(30 * MS, 10 * MS), (Some(0x30), 10 * MS));
        t.arm(40 * MS, 0x20, 0);
        t.arm(crx_abi::TIMER_DISARM, 0x20, 0);
        assert_eq!(t.armed(), None);
        assert_eq!(t.before_entry(u64::MAX, 10 * MS), (None, 10 * MS));
        // A deadline in the past fires at the next entry; one near the end of time never.
        t.arm(0, 0x21, 7 * MS);
        assert_eq!(t.before_entry(8 * MS, 10 * MS), (Some(0x21), 10 * MS));
        t.arm(u64::MAX - 1, 0x20, 7 * MS);
        assert_eq!(t.armed(), Some((u64::MAX, 0x20)), "saturates");
        assert_eq!(t.before_entry(8 * MS, 10 * MS), (None, 10 * MS));
    }

    #[test]
    fn a_kick_replaces_the_deadline_and_fires_at_the_next_entry() {
        let mut t = GuestTimer::new();
        t.arm(50 * MS, 0x20, 1000 * MS);
        t.kick(0x41);
        assert_eq!(t.wake_by(1010 * MS), 0, "a halted vCPU wakes at once");
        assert_eq!(t.before_entry(1001 * MS, 10 * MS), (Some(0x41), 10 * MS), "due with the kick's vector");
        assert_eq!(t.armed(), None, "the old deadline is gone, as after TIMER_ARM(0, vector)");
        assert_eq!(t.before_entry(1060 * MS, 10 * MS), (None, 10 * MS));
    }

    #[test]
    fn a_halt_ends_at_the_deadline() {
        let mut t = GuestTimer::new();
        assert_eq!(t.wake_by(10 * MS), 10 * MS);
        t.arm(4 * MS, 0x20, 0);
        assert_eq!(t.wake_by(10 * MS), 4 * MS);
        assert_eq!(t.wake_by(2 * MS), 2 * MS);
    }
}
