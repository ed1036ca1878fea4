//! A fixed buffer that one console line is formatted into, so that it reaches the
//! hypervisor in a single hypercall.

use core::fmt;

/// Longest line kept, newline included; the hypervisor buffers up to 256 bytes per line.
pub const LINE_MAX: usize = 240;

/// One line being formatted.
pub struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    cut: bool,
}

impl Default for Line {
    fn default() -> Self {
        Line::new()
    }
}

impl Line {
    /// An empty line.
    pub const fn new() -> Line {
        Line { buf: [0; LINE_MAX], len: 0, cut: false }
    }

    /// The text with a newline at the end; a line that overflowed ends in `...\n`.
    pub fn finish(&mut self) -> &[u8] {
        let tail: &[u8] = if self.cut { b"...\n" } else { b"\n" };
        let len = self.len.min(LINE_MAX - tail.len());
        let end = len + tail.len();
        if let Some(dst) = self.buf.get_mut(len..end) {
            dst.copy_from_slice(tail);
        }
        self.buf.get(..end).unwrap_or_default()
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Room for the newline (and `...` once cut) is kept at the end.
        let room = (LINE_MAX - 4).saturating_sub(self.len);
        let take = s.len().min(room);
        if take < s.len() {
            self.cut = true;
        }
        if let (Some(dst), Some(src)) =
            (self.buf.get_mut(self.len..self.len + take), s.as_bytes().get(..take))
        {
            dst.copy_from_slice(src);
            self.len += take;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn short_lines_end_in_a_newline() {
        let mut l = Line::new();
        write!(l, "hello from vm{} of {}", 2, 8).unwrap();
        assert_eq!(l.finish(), b"hello from vm2 of 8\n");
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let mut l = Line::new();
        for _ in 0..100 {
            write!(l, "abcdef").unwrap();
        }
        let out = l.finish();
        assert_eq!(out.len(), LINE_MAX - 4 + 4);
        assert!(out.ends_with(b"...\n"));
        assert!(out.starts_with(b"abcdefabcdef"));
    }

    #[test]
    fn empty_line_is_a_newline() {
        assert_eq!(Line::new().finish(), b"\n");
    }
}
