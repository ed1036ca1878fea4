//! Readiness: the pure parts of `poll`, `epoll`, `eventfd` and `timerfd`, tested on the
//! host. The kernel asks each description how ready it is and these types decide what a
//! waiter is told.

/// `POLLIN` / `EPOLLIN`: readable.
pub const POLLIN: u32 = 0x1;
/// `POLLPRI` / `EPOLLPRI`.
pub const POLLPRI: u32 = 0x2;
/// `POLLOUT` / `EPOLLOUT`: writable.
pub const POLLOUT: u32 = 0x4;
/// `POLLERR` / `EPOLLERR` (always reported).
pub const POLLERR: u32 = 0x8;
/// `POLLHUP` / `EPOLLHUP` (always reported).
pub const POLLHUP: u32 = 0x10;
/// `POLLNVAL`: not an open descriptor (`poll` only).
pub const POLLNVAL: u32 = 0x20;
/// `POLLRDNORM`.
pub const POLLRDNORM: u32 = 0x40;
/// `POLLWRNORM`.
pub const POLLWRNORM: u32 = 0x100;
/// `POLLRDHUP` / `EPOLLRDHUP`: the peer closed its end.
pub const POLLRDHUP: u32 = 0x2000;
/// `EPOLLEXCLUSIVE` (accepted; every waiter is told).
pub const EPOLLEXCLUSIVE: u32 = 1 << 28;
/// `EPOLLWAKEUP` (accepted; no suspend here).
pub const EPOLLWAKEUP: u32 = 1 << 29;
/// `EPOLLONESHOT`: reported once, then disabled until `EPOLL_CTL_MOD`.
pub const EPOLLONESHOT: u32 = 1 << 30;
/// `EPOLLET`: edge-triggered.
pub const EPOLLET: u32 = 1 << 31;

/// One descriptor in an epoll set: what it asks for and what it was last told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// The `epoll_event.events` asked for (with `EPOLLET` / `EPOLLONESHOT`).
    pub events: u32,
    /// The `epoll_event.data` handed back.
    pub data: u64,
    /// Bits reported since they last went away (for `EPOLLET`).
    pub reported: u32,
    /// Disabled by `EPOLLONESHOT` after a report.
    pub disabled: bool,
}

impl Interest {
    /// A fresh registration.
    pub fn new(events: u32, data: u64) -> Interest {
        Interest { events, data, reported: 0, disabled: false }
    }

    /// What a wait reports for a descriptor that is `ready` now (None: nothing), and the
    /// bookkeeping for the next wait. Level-triggered: every wait while ready.
    /// Edge-triggered: once per bit that became ready since it was last reported (a bit
    /// that goes away is armed again). `EPOLLERR` and `EPOLLHUP` are always asked for.
    pub fn report(&mut self, ready: u32) -> Option<u32> {
        let asked =
            (self.events & !(EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE | EPOLLWAKEUP)) | POLLERR | POLLHUP;
        let now = ready & asked;
        // Bits no longer ready may be reported again when they come back.
        self.reported &= now;
        if self.disabled {
            return None;
        }
        let fresh = if self.events & EPOLLET != 0 { now & !self.reported } else { now };
        if fresh == 0 {
            return None;
        }
        self.reported |= now;
        if self.events & EPOLLONESHOT != 0 {
            self.disabled = true;
        }
        Some(now)
    }
}

/// An `eventfd` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventCounter {
    /// The count.
    pub count: u64,
    /// `EFD_SEMAPHORE`: a read takes 1, not everything.
    pub semaphore: bool,
}

/// The largest count an eventfd holds.
pub const EVENTFD_MAX: u64 = u64::MAX - 1;

impl EventCounter {
    /// `read`: the value read, or None when it would block (count 0).
    pub fn take(&mut self) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let v = if self.semaphore { 1 } else { self.count };
        self.count -= v;
        Some(v)
    }

    /// `write` of `v`: Err(true) for `EINVAL` (`u64::MAX`), Err(false) when it would block
    /// (the sum past [`EVENTFD_MAX`]).
    pub fn add(&mut self, v: u64) -> Result<(), bool> {
        if v == u64::MAX {
            return Err(true);
        }
        match self.count.checked_add(v) {
            Some(n) if n <= EVENTFD_MAX => {
                self.count = n;
                Ok(())
            }
            _ => Err(false),
        }
    }

    /// `POLLIN` / `POLLOUT` as the counter stands.
    pub fn readiness(&self) -> u32 {
        let mut r = 0;
        if self.count > 0 {
            r |= POLLIN;
        }
        if self.count < EVENTFD_MAX {
            r |= POLLOUT;
        }
        r
    }
}

/// A `timerfd`'s setting on the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timer {
    /// The next expiry (None: disarmed).
    pub next_ns: Option<u64>,
    /// The period (0: one-shot).
    pub interval_ns: u64,
    /// Expirations not read yet.
    pub pending: u64,
}

impl Timer {
    /// Counts the expirations up to `now`.
    pub fn advance(&mut self, now: u64) {
        let Some(next) = self.next_ns else { return };
        if now < next {
            return;
        }
        match (now - next).checked_div(self.interval_ns) {
            None => {
                self.pending = self.pending.saturating_add(1);
                self.next_ns = None;
            }
            Some(periods) => {
                let n = periods + 1;
                self.pending = self.pending.saturating_add(n);
                self.next_ns = next.checked_add(n.saturating_mul(self.interval_ns));
            }
        }
    }

    /// Arms it (`value_ns` 0 disarms); pending expirations are dropped, as on Linux.
    pub fn set(&mut self, first_ns: Option<u64>, interval_ns: u64) {
        self.pending = 0;
        self.next_ns = first_ns;
        self.interval_ns = if first_ns.is_some() { interval_ns } else { 0 };
    }

    /// `read`: the expirations since the last read, or None when there are none.
    pub fn take(&mut self, now: u64) -> Option<u64> {
        self.advance(now);
        if self.pending == 0 {
            return None;
        }
        Some(core::mem::take(&mut self.pending))
    }

    /// Time left to the next expiry and the period (`timerfd_gettime`).
    pub fn left(&mut self, now: u64) -> (u64, u64) {
        self.advance(now);
        (self.next_ns.map_or(0, |n| n.saturating_sub(now)), self.interval_ns)
    }

    /// `POLLIN` when an expiry is waiting.
    pub fn readiness(&mut self, now: u64) -> u32 {
        self.advance(now);
        if self.pending > 0 {
            POLLIN
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_triggered_reports_every_time() {
        let mut i = Interest::new(POLLIN, 7);
        assert_eq!(i.report(POLLIN | POLLOUT), Some(POLLIN));
        assert_eq!(i.report(POLLIN), Some(POLLIN));
        assert_eq!(i.report(POLLOUT), None, "not asked for");
        assert_eq!(i.report(POLLHUP), Some(POLLHUP), "HUP is always reported");
    }

    #[test]
    fn edge_triggered_reports_changes() {
        let mut i = Interest::new(POLLIN | POLLOUT | EPOLLET, 0);
        assert_eq!(i.report(POLLOUT), Some(POLLOUT));
        assert_eq!(i.report(POLLOUT), None, "still writable: no new edge");
        assert_eq!(i.report(POLLOUT | POLLIN), Some(POLLOUT | POLLIN), "readable is new");
        assert_eq!(i.report(POLLOUT | POLLIN), None);
        assert_eq!(i.report(POLLOUT), None, "readable went away");
        assert_eq!(i.report(POLLOUT | POLLIN), Some(POLLOUT | POLLIN), "and came back");
    }

    #[test]
    fn oneshot_disables_until_modified() {
        let mut i = Interest::new(POLLIN | EPOLLONESHOT, 0);
        assert_eq!(i.report(POLLIN), Some(POLLIN));
        assert_eq!(i.report(POLLIN), None);
        i = Interest::new(POLLIN | EPOLLONESHOT, 0);
        assert_eq!(i.report(POLLIN), Some(POLLIN));
    }

    #[test]
    fn eventfd_counts_and_bounds() {
        let mut e = EventCounter::default();
        assert_eq!(e.take(), None);
        assert_eq!(e.readiness(), POLLOUT);
        e.add(3).unwrap();
        e.add(4).unwrap();
        assert_eq!(e.readiness(), POLLIN | POLLOUT);
        assert_eq!(e.take(), Some(7));
        assert_eq!(e.add(u64::MAX), Err(true));
        e.add(EVENTFD_MAX).unwrap();
        assert_eq!(e.add(1), Err(false), "full: would block");
        assert_eq!(e.readiness(), POLLIN);
        let mut s = EventCounter { count: 2, semaphore: true };
        assert_eq!((s.take(), s.take(), s.take()), (Some(1), Some(1), None));
    }

    #[test]
    fn timers_count_expirations() {
        let mut t = Timer::default();
        assert_eq!(t.take(100), None);
        t.set(Some(1000), 0);
        assert_eq!(t.readiness(999), 0);
        assert_eq!(t.take(1500), Some(1));
        assert_eq!(t.take(5000), None, "one-shot");
        t.set(Some(1000), 100);
        assert_eq!(t.take(1250), Some(3), "1000, 1100, 1200");
        assert_eq!(t.left(1250), (50, 100));
        assert_eq!(t.take(1299), None);
        t.set(None, 100);
        assert_eq!((t.left(9999), t.take(9999)), ((0, 0), None), "disarmed");
        let mut huge = Timer::default();
        huge.set(Some(u64::MAX - 1), u64::MAX);
        assert_eq!(huge.take(u64::MAX), Some(1), "no overflow near the end of time");
    }
}
