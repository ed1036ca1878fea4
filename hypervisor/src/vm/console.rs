//! A VM's console: bytes from CONSOLE_WRITE become lines `vm<i>: <text>`.
//!
//! Bytes are buffered up to a newline or [`LINE_MAX`] bytes. Anything that is not
//! printable ASCII (escape sequences, carriage returns, invalid UTF-8) is shown as `?`,
//! so a guest cannot move the cursor or forge a line of another VM or of the hypervisor.
#![deny(unsafe_code)]

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
}
