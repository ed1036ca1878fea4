//! A container instance's log as `kubectl logs` reads it: its output split into lines, each
//! stamped with the time it ended, both streams in the order they came. Bounded in bytes
//! (the oldest lines go first) and in line length (a longer line is cut into pieces of
//! [`MAX_LINE`], as a CRI runtime cuts them). Bytes are kept as written; invalid UTF-8
//! becomes U+FFFD when a line is made.
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

/// Longest line kept whole.
pub const MAX_LINE: usize = 16 << 10;

/// One line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When it ended, in the VM host's monotonic ns.
    pub at_ns: u64,
    /// 1 stdout, 2 stderr.
    pub stream: u8,
    /// Its text, without the newline.
    pub text: String,
}

/// The lines of one container instance.
#[derive(Debug, Clone)]
pub struct LineLog {
    lines: VecDeque<Line>,
    bytes: usize,
    cap: usize,
    partial: [Vec<u8>; 2],
    dropped: u64,
}

impl LineLog {
    /// An empty log keeping at most `cap` bytes of text.
    pub fn new(cap: usize) -> LineLog {
        LineLog { lines: VecDeque::new(), bytes: 0, cap, partial: [Vec::new(), Vec::new()], dropped: 0 }
    }

    /// Takes output of `stream` (1 or 2; anything else counts as 1) at `now_ns`.
    pub fn push(&mut self, stream: u64, bytes: &[u8], now_ns: u64) {
        let s = if stream == 2 { 1 } else { 0 };
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match piece.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (piece, false),
            };
            let mut rest = body;
            while !rest.is_empty() {
                let room = MAX_LINE - self.partial[s].len();
                let (take, more) = rest.split_at(room.min(rest.len()));
                if self.partial[s].try_reserve(take.len()).is_err() {
                    // Out of memory: the rest of this output is lost, the lines kept stay.
                    return;
                }
                self.partial[s].extend_from_slice(take);
                rest = more;
                if self.partial[s].len() >= MAX_LINE {
                    self.end_line(s, now_ns);
                }
            }
            if ends {
                self.end_line(s, now_ns);
            }
        }
    }

    /// Ends both streams' partial lines (the container ended).
    pub fn flush(&mut self, now_ns: u64) {
        for s in 0..2 {
            if !self.partial[s].is_empty() {
                self.end_line(s, now_ns);
            }
        }
    }

    fn end_line(&mut self, s: usize, now_ns: u64) {
        let bytes = core::mem::take(&mut self.partial[s]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.bytes += text.len();
        self.lines.push_back(Line { at_ns: now_ns, stream: s as u8 + 1, text });
        while self.bytes > self.cap {
            match self.lines.pop_front() {
                Some(old) => {
                    self.bytes -= old.text.len();
                    self.dropped += 1;
                }
                None => break,
            }
        }
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter()
    }

    /// Lines dropped to stay within the bound: the first kept line is line number
    /// `dropped()` of the instance.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn texts(l: &LineLog) -> Vec<(u64, u8, &str)> {
        l.lines().map(|x| (x.at_ns, x.stream, x.text.as_str())).collect()
    }

    #[test]
    fn lines_are_split_per_stream_and_stamped_when_they_end() {
        let mut l = LineLog::new(1 << 10);
        l.push(1, b"hel", 1);
        l.push(2, b"err\n", 2);
        l.push(1, b"lo\nwor", 3);
        l.push(1, b"ld\n\n", 4);
        l.push(1, b"tail", 5);
        l.push(2, b"\xffbad\xfe", 6);
        l.flush(7);
        assert_eq!(
            texts(&l),
            vec![
                (2, 2, "err"),
                (3, 1, "hello"),
                (4, 1, "world"),
                (4, 1, ""),
                (7, 1, "tail"),
                (7, 2, "\u{fffd}bad\u{fffd}")
            ]
        );
    }

    #[test]
    fn bounded_in_bytes_and_line_length() {
        let mut l = LineLog::new(100);
        for i in 0..50u64 {
            l.push(1, b"0123456789\n", i);
        }
        assert_eq!(l.lines().count(), 10);
        assert_eq!(l.lines().next().map(|x| x.at_ns), Some(40));
        assert_eq!(l.dropped(), 40);
        let mut l = LineLog::new(1 << 20);
        l.push(1, &vec![b'x'; MAX_LINE * 2 + 5], 1);
        l.push(1, b"\n", 2);
        let lens: Vec<usize> = l.lines().map(|x| x.text.len()).collect();
        assert_eq!(lens, vec![MAX_LINE, MAX_LINE, 5]);
    }
}
