//! A VM's console: bytes from CONSOLE_WRITE become lines `vm<i>> <text>`.
//!
//! Bytes are buffered up to a newline or [`LINE_MAX`] bytes. Anything that is not
//! printable ASCII (escape sequences, carriage returns, invalid UTF-8) is shown as `?`,
//! so a guest cannot move the cursor or forge a line of another VM or of the hypervisor.
//!
//! A guest prints as fast as it can make hypercalls, and the serial line is slow and
//! shared, so [`Console`] lets through at most [`BURST_LINES`] lines at once and
//! [`LINES_PER_SEC`] a second after that; lines over the limit are counted and the
//! count is reported (as a line of the hypervisor's) with the next line let through.
#![forbid(unsafe_code)]

use alloc::string::String;

/// Longest line kept before it is printed anyway.
pub const LINE_MAX: usize = 256;

/// One VM's partial line.
#[derive(Debug, Clone)]
pub struct LineBuffer {
    buf: heapless::Vec<u8, LINE_MAX>,
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer { buf: heapless::Vec::new() }
    }
}

impl LineBuffer {
    /// Takes `bytes`; calls `emit` with each finished line (without its newline).
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&str)) {
        for &b in bytes {
            if b == b'\n' {
                self.flush(&mut emit);
                continue;
            }
            let shown = match b {
                b'\t' => b' ',
                0x20..=0x7e => b,
                _ => b'?',
            };
            if self.buf.push(shown).is_err() {
                self.flush(&mut emit);
                let _ = self.buf.push(shown);
            }
        }
    }

    /// Emits the partial line, if any.
    pub fn flush(&mut self, mut emit: impl FnMut(&str)) {
        if !self.buf.is_empty() {
            // Only printable ASCII is ever stored, so this is always UTF-8.
            emit(core::str::from_utf8(&self.buf).unwrap_or("?"));
            self.buf.clear();
        }
    }
}

/// Lines a VM may print at once before the rate limit applies.
pub const BURST_LINES: u32 = 100;
/// Lines a VM may print per second, sustained: at most about 5 KB/s, under half of
/// what a 115200-baud serial line carries.
pub const LINES_PER_SEC: u32 = 20;

/// A token bucket: `burst` events at once, refilled at `per_sec` a second. Time is
/// passed in (monotonic ns); a clock that goes backwards refills nothing.
#[derive(Debug, Clone)]
pub struct RateLimit {
    burst: u64,
    interval_ns: u64,
    tokens: u64,
    last_ns: u64,
    dropped: u64,
}

impl RateLimit {
    /// A full bucket of `burst` (at least 1) refilled at `per_sec` (at least 1) a second.
    pub fn new(burst: u32, per_sec: u32) -> Self {
        let burst = u64::from(burst.max(1));
        RateLimit {
            burst,
            interval_ns: 1_000_000_000 / u64::from(per_sec.max(1)),
            tokens: burst,
            last_ns: 0,
            dropped: 0,
        }
    }

    /// One event at `now_ns`: `Some(n)` when it may go ahead, `n` being the events
    /// refused since the last one let through; `None` when it is refused.
    pub fn admit(&mut self, now_ns: u64) -> Option<u64> {
        let earned = now_ns.saturating_sub(self.last_ns) / self.interval_ns;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(self.burst);
            // `earned * interval_ns` is at most the time elapsed, so this cannot overflow.
            self.last_ns += earned * self.interval_ns;
        }
        if self.tokens == self.burst {
            // A full bucket saves nothing up for later.
            self.last_ns = self.last_ns.max(now_ns);
        }
        if self.tokens == 0 {
            self.dropped = self.dropped.saturating_add(1);
            return None;
        }
        self.tokens -= 1;
        Some(core::mem::take(&mut self.dropped))
    }

    /// Events refused since the last one let through (and forgets them).
    pub fn take_dropped(&mut self) -> u64 {
        core::mem::take(&mut self.dropped)
    }
}

/// What a [`Console`] prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output<'a> {
    /// A line of the guest's.
    Line(&'a str),
    /// This many of the guest's lines were refused by the rate limit.
    Dropped(u64),
}

/// One VM's console: a [`LineBuffer`] behind a [`RateLimit`] on lines.
#[derive(Debug, Clone)]
pub struct Console {
    lines: LineBuffer,
    limit: RateLimit,
}

impl Default for Console {
    fn default() -> Self {
        Console { lines: LineBuffer::default(), limit: RateLimit::new(BURST_LINES, LINES_PER_SEC) }
    }
}

impl Console {
    /// Takes bytes the guest wrote at `now_ns`; calls `emit` with what is to be printed.
    pub fn push(&mut self, bytes: &[u8], now_ns: u64, mut emit: impl FnMut(Output<'_>)) {
        let limit = &mut self.limit;
        self.lines.push(bytes, |line| pass(limit, now_ns, line, &mut emit));
    }

    /// At the VM's end: the partial line (if the limit lets it through) and the count of
    /// refused lines not reported yet.
    pub fn finish(&mut self, now_ns: u64, mut emit: impl FnMut(Output<'_>)) {
        let limit = &mut self.limit;
        self.lines.flush(|line| pass(limit, now_ns, line, &mut emit));
        let dropped = self.limit.take_dropped();
        if dropped > 0 {
            emit(Output::Dropped(dropped));
        }
    }
}

fn pass(limit: &mut RateLimit, now_ns: u64, line: &str, emit: &mut impl FnMut(Output<'_>)) {
    if let Some(dropped) = limit.admit(now_ns) {
        if dropped > 0 {
            emit(Output::Dropped(dropped));
        }
        emit(Output::Line(line));
    }
}

/// Keeps a backlog of lines waiting for the serial line under `max` bytes: past it, the
/// oldest lines are dropped (down to half of `max`) and a line of the hypervisor's counts
/// them.
pub fn bound_backlog(out: &mut String, max: usize) {
    if out.len() <= max {
        return;
    }
    let excess = out.len() - max / 2;
    let cut = out.get(excess..).and_then(|t| t.find('\n')).map_or(out.len(), |i| excess + i + 1);
    let dropped = out.get(..cut).unwrap_or_default();
    let lines = dropped.matches('\n').count() + usize::from(!dropped.ends_with('\n'));
    out.replace_range(..cut, "");
    out.insert_str(0, &alloc::format!("console: {lines} lines dropped (the serial line is behind)\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut b = LineBuffer::default();
        let mut out = Vec::new();
        for c in chunks {
            b.push(c, |l| out.push(l.to_string()));
        }
        b.flush(|l| out.push(l.to_string()));
        out
    }

    #[test]
    fn splits_on_newlines_across_writes() {
        assert_eq!(lines(&[b"hel", b"lo\nwor", b"ld\n\nx"]), ["hello", "world", "x"]);
        assert_eq!(lines(&[b"\n\n"]), Vec::<String>::new());
    }

    #[test]
    fn long_lines_are_cut_and_controls_replaced() {
        let long = vec![b'a'; 600];
        let out = lines(&[&long]);
        assert_eq!(out.iter().map(|l| l.len()).collect::<Vec<_>>(), [256, 256, 88]);
        assert_eq!(lines(&[b"a\x1b[2Jb\r\tc\xff"]), ["a?[2Jb? c?"]);
    }

    #[test]
    fn a_backlog_keeps_its_newest_whole_lines() {
        let mut out = String::from("short\n");
        bound_backlog(&mut out, 100);
        assert_eq!(out, "short\n", "under the bound nothing changes");
        let mut out: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        bound_backlog(&mut out, 1000);
        assert!(out.len() <= 1000, "{}", out.len());
        let mut lines = out.lines();
        let note = lines.next().unwrap();
        let kept: Vec<&str> = lines.collect();
        assert_eq!(kept.last(), Some(&"line 0999"), "the newest line stays");
        assert!(kept.iter().all(|l| l.len() == 9), "only whole lines stay");
        assert_eq!(note, format!("console: {} lines dropped (the serial line is behind)", 1000 - kept.len()));
        // One huge line without a newline is dropped whole, never split or a panic.
        let mut out = "x".repeat(5000);
        bound_backlog(&mut out, 1000);
        assert_eq!(out, "console: 1 lines dropped (the serial line is behind)\n");
    }

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        const SEC: u64 = 1_000_000_000;
        let mut r = RateLimit::new(3, 2);
        let t0 = 5 * SEC;
        assert_eq!((0..5).map(|_| r.admit(t0)).collect::<Vec<_>>(), [Some(0), Some(0), Some(0), None, None]);
        assert_eq!(r.admit(t0 + SEC / 4), None, "half a token is not a token");
        assert_eq!(r.admit(t0 + SEC / 2), Some(3), "one token after 0.5 s, with the count refused");
        assert_eq!(r.admit(t0 + SEC / 2), None);
        // A long pause refills to the burst, not beyond.
        let t1 = t0 + 3600 * SEC;
        assert_eq!((0..4).filter(|_| r.admit(t1).is_some()).count(), 3);
        assert_eq!(r.take_dropped(), 1);
        // A clock going backwards or wild times never panic nor refill.
        assert_eq!(r.admit(0), None);
        assert_eq!(r.admit(u64::MAX).map(|_| ()), Some(()));
        let mut z = RateLimit::new(0, 0);
        assert_eq!(z.admit(0), Some(0), "a zero burst still lets one through");
    }

    #[test]
    fn a_flooding_guest_is_cut_down_to_the_limit() {
        let mut c = Console::default();
        let mut printed = 0u64;
        let mut dropped = 0u64;
        let mut count = |o: Output<'_>| match o {
            Output::Line(_) => printed += 1,
            Output::Dropped(n) => dropped += n,
        };
        // 10 000 lines within one millisecond.
        for k in 0..10_000u64 {
            c.push(b"spam\n", 1_000_000_000 + k * 100, &mut count);
        }
        c.finish(1_001_000_000, &mut count);
        assert_eq!(printed, u64::from(BURST_LINES));
        assert_eq!(dropped, 10_000 - u64::from(BURST_LINES), "every refused line is counted");
        // A second later the guest may print again, and the count comes first.
        let mut out = Vec::new();
        let mut c = Console::default();
        for _ in 0..BURST_LINES + 5 {
            c.push(b"x\n", 0, |o| out.push(format!("{o:?}")));
        }
        out.clear();
        c.push(b"late\n", 1_000_000_000, |o| out.push(format!("{o:?}")));
        assert_eq!(out, ["Dropped(5)", "Line(\"late\")"]);
    }
}
