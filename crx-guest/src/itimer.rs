//! Interval timers, the pure parts: the three timers of a process as `setitimer`,
//! `getitimer` and `alarm` see them, and `struct itimerval`.
//!
//! `ITIMER_REAL` runs on the monotonic clock and sends SIGALRM; `ITIMER_VIRTUAL` and
//! `ITIMER_PROF` run on the process's CPU time (crx-guest counts all of it as user time, so
//! both count the same) and send SIGVTALRM and SIGPROF. Every time here is nanoseconds and
//! every clock reading is passed in. As on Linux, an expired `ITIMER_REAL` is reloaded
//! when its SIGALRM is taken (delivered or waited for), counted in whole intervals from the
//! expiry that fired, so a blocked or slow handler never piles up expiries; the CPU timers
//! reload by one interval when they fire. Decoding never panics.

/// `ITIMER_REAL`: wall time, SIGALRM.
pub const ITIMER_REAL: u64 = 0;
/// `ITIMER_VIRTUAL`: the process's user CPU time, SIGVTALRM.
pub const ITIMER_VIRTUAL: u64 = 1;
/// `ITIMER_PROF`: the process's CPU time, SIGPROF.
pub const ITIMER_PROF: u64 = 2;

/// Bytes of `struct itimerval`: `it_interval`, then `it_value`, each a `struct timeval`.
pub const ITIMERVAL_SIZE: usize = 32;

/// What a timer shows as left when it is armed but its expiry has passed and not yet been
/// acted on: a microsecond, the least `struct timeval` tells apart from "disarmed".
pub const ABOUT_TO_FIRE_NS: u64 = 1_000;

const NS_PER_SEC: u64 = 1_000_000_000;
const NS_PER_USEC: u64 = 1_000;

/// A `struct timeval` of an `itimerval` that Linux refuses (`EINVAL`): negative seconds, or
/// microseconds outside `0..1_000_000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTimeval;

/// An `itimerval` in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Setting {
    /// `it_value`: time to the next expiry (0: disarmed).
    pub value_ns: u64,
    /// `it_interval`: the reload (0: one shot).
    pub interval_ns: u64,
}

fn timeval_ns(b: &[u8]) -> Result<u64, BadTimeval> {
    let word =
        |i: usize| i64::from_le_bytes(b.get(i..i + 8).and_then(|s| s.try_into().ok()).unwrap_or([0; 8]));
    let (sec, usec) = (word(0), word(8));
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return Err(BadTimeval);
    }
    Ok((sec as u64).saturating_mul(NS_PER_SEC).saturating_add(usec as u64 * NS_PER_USEC))
}

fn timeval_bytes(ns: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&(ns / NS_PER_SEC).to_le_bytes());
    // Microseconds truncated, as Linux's `put_itimerval`.
    out[8..16].copy_from_slice(&((ns % NS_PER_SEC) / NS_PER_USEC).to_le_bytes());
}

impl Setting {
    /// Decodes a user `struct itimerval`, checking both timevals as Linux does.
    pub fn from_bytes(b: &[u8; ITIMERVAL_SIZE]) -> Result<Setting, BadTimeval> {
        let interval_ns = timeval_ns(&b[..16])?;
        let value_ns = timeval_ns(&b[16..])?;
        Ok(Setting { value_ns, interval_ns })
    }

    /// Encodes it as a user `struct itimerval`.
    pub fn to_bytes(&self) -> [u8; ITIMERVAL_SIZE] {
        let mut b = [0u8; ITIMERVAL_SIZE];
        timeval_bytes(self.interval_ns, &mut b[..16]);
        timeval_bytes(self.value_ns, &mut b[16..]);
        b
    }
}

/// One timer; `next_ns` is on the timer's own clock (monotonic or CPU time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ITimer {
    /// Its next expiry, when armed.
    pub next_ns: Option<u64>,
    /// Its reload.
    pub interval_ns: u64,
    /// `ITIMER_REAL` only: the expiry that fired and whose reload waits until its SIGALRM
    /// is taken.
    pub fired_ns: Option<u64>,
}

/// The first expiry after `now` of a periodic timer that expired at `fired` (Linux's
/// `hrtimer_forward`): `fired` plus the fewest whole intervals that pass `now`.
fn forward(fired: u64, now: u64, interval: u64) -> u64 {
    let periods = now.saturating_sub(fired) / interval + 1;
    fired.saturating_add(periods.saturating_mul(interval))
}

impl ITimer {
    /// `ITIMER_REAL` now (monotonic ns): what `getitimer` shows.
    pub fn get_real(&self, now: u64) -> Setting {
        let value_ns = self.next_ns.map_or(0, |t| if t > now { t - now } else { ABOUT_TO_FIRE_NS });
        Setting { value_ns, interval_ns: self.interval_ns }
    }

    /// `setitimer(ITIMER_REAL)` at `now`: arms it `s.value_ns` from now (a value of 0
    /// disarms it and forgets the interval); returns what it showed before.
    pub fn set_real(&mut self, now: u64, s: Setting) -> Setting {
        let old = self.get_real(now);
        *self = if s.value_ns == 0 {
            ITimer::default()
        } else {
            ITimer {
                next_ns: Some(now.saturating_add(s.value_ns)),
                interval_ns: s.interval_ns,
                fired_ns: None,
            }
        };
        old
    }

    /// `ITIMER_REAL` at `now`: whether it expires (SIGALRM is then due); it stays disarmed
    /// until [`ITimer::reload_real`].
    pub fn expire_real(&mut self, now: u64) -> bool {
        match self.next_ns {
            Some(t) if t <= now => {
                self.next_ns = None;
                self.fired_ns = Some(t);
                true
            }
            _ => false,
        }
    }

    /// Its SIGALRM was taken at `now`: a periodic timer that fired is armed again at its next
    /// period after `now`.
    pub fn reload_real(&mut self, now: u64) {
        if let Some(fired) = self.fired_ns.take() {
            if self.next_ns.is_none() && self.interval_ns != 0 {
                self.next_ns = Some(forward(fired, now, self.interval_ns));
            }
        }
    }

    /// A CPU-time timer when the process has had `cpu` ns: what `getitimer` shows.
    pub fn get_cpu(&self, cpu: u64) -> Setting {
        let value_ns = self.next_ns.map_or(0, |t| if t < cpu { ABOUT_TO_FIRE_NS } else { t - cpu });
        Setting { value_ns, interval_ns: self.interval_ns }
    }

    /// `setitimer(ITIMER_VIRTUAL or ITIMER_PROF)` when the process has had `cpu` ns; the
    /// interval is kept even when the value disarms it, as on Linux. Returns the old setting.
    pub fn set_cpu(&mut self, cpu: u64, s: Setting) -> Setting {
        let old = self.get_cpu(cpu);
        self.next_ns = (s.value_ns != 0).then(|| cpu.saturating_add(s.value_ns));
        self.interval_ns = s.interval_ns;
        old
    }

    /// A CPU-time timer when the process has had `cpu` ns: whether it expires (its signal
    /// is then due); a periodic one moves on by one interval.
    pub fn expire_cpu(&mut self, cpu: u64) -> bool {
        match self.next_ns {
            Some(t) if t <= cpu => {
                self.next_ns = (self.interval_ns != 0).then(|| t.saturating_add(self.interval_ns));
                true
            }
            _ => false,
        }
    }
}

/// The interval timers of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ITimers {
    /// `ITIMER_REAL`.
    pub real: ITimer,
    /// `ITIMER_VIRTUAL`.
    pub virt: ITimer,
    /// `ITIMER_PROF`.
    pub prof: ITimer,
}

impl ITimers {
    /// Whether nothing is set (the process need not be kept track of).
    pub fn is_idle(&self) -> bool {
        *self == ITimers::default()
    }

    /// Whether a CPU-time timer is armed.
    pub fn cpu_armed(&self) -> bool {
        self.virt.next_ns.is_some() || self.prof.next_ns.is_some()
    }
}

/// What `alarm` returns for an `ITIMER_REAL` that had `left_ns` left: whole seconds, rounded
/// up when the rest is half a second or more and never 0 for a timer still armed (Linux's
/// `alarm_setitimer`).
pub fn alarm_seconds(left_ns: u64) -> u64 {
    let (sec, rest) = (left_ns / NS_PER_SEC, left_ns % NS_PER_SEC);
    if (sec == 0 && rest != 0) || rest >= NS_PER_SEC / 2 {
        sec + 1
    } else {
        sec
    }
}

/// What `alarm(seconds)` sets: a one-shot `ITIMER_REAL`.
pub fn alarm_setting(seconds: u32) -> Setting {
    Setting { value_ns: u64::from(seconds) * NS_PER_SEC, interval_ns: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn itimerval(interval: (i64, i64), value: (i64, i64)) -> [u8; ITIMERVAL_SIZE] {
        let mut b = [0u8; ITIMERVAL_SIZE];
        for (i, v) in [interval.0, interval.1, value.0, value.1].into_iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn itimerval_round_trip_and_its_checks() {
        let s = Setting::from_bytes(&itimerval((0, 20_000), (1, 500_000))).expect("valid");
        assert_eq!(s, Setting { value_ns: 1_500_000_000, interval_ns: 20_000_000 });
        assert_eq!(s.to_bytes(), itimerval((0, 20_000), (1, 500_000)));
        assert_eq!(Setting::from_bytes(&itimerval((0, 0), (0, 1_000_000))), Err(BadTimeval));
        assert_eq!(Setting::from_bytes(&itimerval((0, -1), (0, 0))), Err(BadTimeval));
        assert_eq!(Setting::from_bytes(&itimerval((-1, 0), (0, 0))), Err(BadTimeval));
        assert_eq!(Setting::from_bytes(&itimerval((0, 0), (-5, 0))), Err(BadTimeval));
        // Huge seconds saturate instead of wrapping.
        let big = Setting::from_bytes(&itimerval((0, 0), (i64::MAX, 999_999))).expect("valid");
        assert_eq!(big.value_ns, u64::MAX);
        // Nanoseconds below a microsecond do not show.
        let shown = Setting { value_ns: 1_999, interval_ns: 0 }.to_bytes();
        assert_eq!(shown, itimerval((0, 0), (0, 1)));
    }

    #[test]
    fn real_timer_fires_and_reloads_when_its_signal_is_taken() {
        let mut t = ITimer::default();
        let old = t.set_real(1_000, Setting { value_ns: 20, interval_ns: 10 });
        assert_eq!(old, Setting::default());
        assert_eq!(t.get_real(1_005), Setting { value_ns: 15, interval_ns: 10 });
        assert!(!t.expire_real(1_019));
        // Past its time but not yet looked at: it shows as about to fire.
        assert_eq!(t.get_real(1_025).value_ns, ABOUT_TO_FIRE_NS);
        assert!(t.expire_real(1_025));
        assert!(!t.expire_real(1_026), "it fires once");
        assert_eq!(t.get_real(1_026), Setting { value_ns: 0, interval_ns: 10 }, "disarmed until taken");
        // Taken at 1_047: the next period after it, counted from the expiry at 1_020.
        t.reload_real(1_047);
        assert_eq!(t.next_ns, Some(1_050));
        t.reload_real(1_048);
        assert_eq!(t.next_ns, Some(1_050), "one reload per expiry");
        // Exactly on a period: the next one.
        assert!(t.expire_real(1_050));
        t.reload_real(1_050);
        assert_eq!(t.next_ns, Some(1_060));
    }

    #[test]
    fn real_timer_one_shot_and_disarm() {
        let mut t = ITimer::default();
        t.set_real(0, Setting { value_ns: 100, interval_ns: 0 });
        assert!(t.expire_real(100));
        t.reload_real(150);
        assert_eq!(t.next_ns, None, "a one-shot timer stays disarmed");
        t.set_real(200, Setting { value_ns: 50, interval_ns: 30 });
        let old = t.set_real(210, Setting { value_ns: 0, interval_ns: 99 });
        assert_eq!(old, Setting { value_ns: 40, interval_ns: 30 });
        assert_eq!(t, ITimer::default(), "a value of 0 disarms it and drops the interval");
        // Setting it again after an expiry forgets the reload that waited for the signal.
        t.set_real(300, Setting { value_ns: 10, interval_ns: 10 });
        assert!(t.expire_real(310));
        t.set_real(311, Setting { value_ns: 1_000, interval_ns: 0 });
        t.reload_real(400);
        assert_eq!(t.next_ns, Some(1_311));
    }

    #[test]
    fn cpu_timers_reload_by_an_interval_and_keep_it_when_disarmed() {
        let mut t = ITimer::default();
        assert_eq!(t.set_cpu(500, Setting { value_ns: 30, interval_ns: 10 }), Setting::default());
        assert_eq!(t.get_cpu(510), Setting { value_ns: 20, interval_ns: 10 });
        assert!(!t.expire_cpu(529));
        assert!(t.expire_cpu(530));
        assert_eq!(t.next_ns, Some(540));
        assert_eq!(t.get_cpu(541).value_ns, ABOUT_TO_FIRE_NS);
        let old = t.set_cpu(545, Setting { value_ns: 0, interval_ns: 7 });
        assert_eq!(old, Setting { value_ns: ABOUT_TO_FIRE_NS, interval_ns: 10 });
        assert_eq!(t.get_cpu(600), Setting { value_ns: 0, interval_ns: 7 });
        assert!(!t.expire_cpu(10_000));
        let mut one = ITimer::default();
        one.set_cpu(0, Setting { value_ns: 5, interval_ns: 0 });
        assert!(one.expire_cpu(9));
        assert_eq!(one.next_ns, None);
    }

    #[test]
    fn alarm_rounds_as_linux() {
        assert_eq!(alarm_seconds(0), 0);
        assert_eq!(alarm_seconds(1), 1, "an armed timer never reads as 0");
        assert_eq!(alarm_seconds(1_400_000_000), 1);
        assert_eq!(alarm_seconds(1_500_000_000), 2);
        assert_eq!(alarm_seconds(4_999_000_000), 5);
        assert_eq!(alarm_seconds(3_000_000_000), 3);
        assert_eq!(alarm_setting(3), Setting { value_ns: 3_000_000_000, interval_ns: 0 });
        assert_eq!(alarm_setting(u32::MAX).value_ns, u64::from(u32::MAX) * 1_000_000_000);
    }

    #[test]
    fn idle_and_cpu_armed() {
        let mut t = ITimers::default();
        assert!(t.is_idle() && !t.cpu_armed());
        t.prof.set_cpu(0, Setting { value_ns: 0, interval_ns: 5 });
        assert!(!t.is_idle(), "a kept interval is something to show");
        assert!(!t.cpu_armed());
        t.virt.set_cpu(0, Setting { value_ns: 5, interval_ns: 0 });
        assert!(t.cpu_armed());
    }
}
