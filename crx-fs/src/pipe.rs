//! A pipe: a bounded byte ring with reader and writer counts.
//!
//! The kernel keeps one [`Pipe`] per `pipe2` call and counts the descriptions of each end
//! (`dup`, `fork` add one; `close` drops one). Blocking is the kernel's job: this type answers
//! [`Errno::EAGAIN`] where a blocking call would sleep.

use alloc::collections::VecDeque;

use crate::Errno;

/// Capacity of a pipe in bytes (Linux's default, 16 pages).
pub const PIPE_CAPACITY: usize = 64 * 1024;
/// Writes of at most this many bytes are atomic: all or nothing (`PIPE_BUF`).
pub const PIPE_BUF: usize = 4096;

/// A pipe's buffer and the number of open read and write ends.
#[derive(Debug)]
pub struct Pipe {
    buf: VecDeque<u8>,
    readers: u32,
    writers: u32,
}

impl Default for Pipe {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipe {
    /// An empty pipe with one reader and one writer.
    pub fn new() -> Self {
        Pipe { buf: VecDeque::new(), readers: 1, writers: 1 }
    }

    /// Bytes waiting to be read.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no bytes are waiting.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Free space in bytes.
    pub fn space(&self) -> usize {
        PIPE_CAPACITY - self.buf.len()
    }

    /// Open read ends.
    pub fn readers(&self) -> u32 {
        self.readers
    }

    /// Open write ends.
    pub fn writers(&self) -> u32 {
        self.writers
    }

    /// One more read end (dup, fork).
    pub fn add_reader(&mut self) {
        self.readers = self.readers.saturating_add(1);
    }

    /// One more write end (dup, fork).
    pub fn add_writer(&mut self) {
        self.writers = self.writers.saturating_add(1);
    }

    /// A read end was closed.
    pub fn close_reader(&mut self) {
        self.readers = self.readers.saturating_sub(1);
        if self.readers == 0 {
            // Nobody can read what is buffered any more.
            self.buf = VecDeque::new();
        }
    }

    /// A write end was closed.
    pub fn close_writer(&mut self) {
        self.writers = self.writers.saturating_sub(1);
    }

    /// Reads up to `out.len()` bytes. `Ok(0)` is end of file (empty, no writer left, or an
    /// empty `out`); [`Errno::EAGAIN`] means empty with a writer still open (a blocking
    /// reader sleeps and retries).
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, Errno> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.buf.is_empty() {
            return if self.writers == 0 { Ok(0) } else { Err(Errno::EAGAIN) };
        }
        let n = out.len().min(self.buf.len());
        for (dst, src) in out.iter_mut().zip(self.buf.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }

    /// Writes as much of `data` as fits. [`Errno::EPIPE`] when no reader is left (the kernel
    /// also raises SIGPIPE); [`Errno::EAGAIN`] when full, or when `data` is at most
    /// [`PIPE_BUF`] bytes and does not fit whole (such writes are atomic).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, Errno> {
        if self.readers == 0 {
            return Err(Errno::EPIPE);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let space = self.space();
        if space == 0 || (data.len() <= PIPE_BUF && data.len() > space) {
            return Err(Errno::EAGAIN);
        }
        let n = data.len().min(space);
        self.buf.extend(data.iter().take(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_and_closed_ends() {
        let mut p = Pipe::new();
        let mut out = [0u8; 8];
        assert_eq!(p.read(&mut out), Err(Errno::EAGAIN));
        assert_eq!(p.write(b"hello"), Ok(5));
        assert_eq!(p.read(&mut out[..3]), Ok(3));
        assert_eq!(&out[..3], b"hel");
        p.close_writer();
        assert_eq!(p.read(&mut out), Ok(2));
        assert_eq!(&out[..2], b"lo");
        assert_eq!(p.read(&mut out), Ok(0), "EOF once drained with no writer");
        p.close_reader();
        assert_eq!(p.write(b"x"), Err(Errno::EPIPE));
    }

    #[test]
    fn capacity_and_atomic_small_writes() {
        let mut p = Pipe::new();
        let big = alloc::vec![7u8; PIPE_CAPACITY + 100];
        assert_eq!(p.write(&big), Ok(PIPE_CAPACITY));
        assert_eq!(p.write(b"a"), Err(Errno::EAGAIN));
        let mut out = [0u8; 10];
        assert_eq!(p.read(&mut out), Ok(10));
        // 10 bytes free: an 11-byte write is atomic and must not be split.
        assert_eq!(p.write(&[1u8; 11]), Err(Errno::EAGAIN));
        assert_eq!(p.write(&[1u8; 10]), Ok(10));
        assert_eq!(p.space(), 0);
    }

    #[test]
    fn dup_counts_keep_ends_open() {
        let mut p = Pipe::new();
        p.add_writer();
        p.close_writer();
        let mut out = [0u8; 1];
        assert_eq!(p.read(&mut out), Err(Errno::EAGAIN), "one writer is still open");
        p.close_writer();
        assert_eq!(p.read(&mut out), Ok(0));
    }
}
