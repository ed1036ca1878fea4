//! File descriptors: per-process tables of shared open-file descriptions.
#![deny(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;
use core::cell::RefCell;

use crx_guest::poll::{EventCounter, Interest, Timer, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP};

use crx_fs::{Errno, Fs, OpenFile, Pipe};

/// One end of a pipe; dropping the last reference closes the end.
pub struct PipeEnd {
    /// The pipe.
    pub pipe: Rc<RefCell<Pipe>>,
    /// True for the write end.
    pub write: bool,
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut p = self.pipe.borrow_mut();
        if self.write {
            p.close_writer();
        } else {
            p.close_reader();
        }
    }
}

/// What a description refers to.
pub enum Object {
    /// The container's stdout (1) or stderr (2) stream.
    Log {
        /// Stream number.
        stream: u32,
    },
    /// `/dev/null` (also stdin).
    Null,
    /// `/dev/zero`.
    Zero,
    /// A file or directory of the container filesystem.
    File(OpenFile),
    /// A pipe end.
    Pipe(PipeEnd),
    /// `/dev/urandom` and `/dev/random`: the hypervisor's random bytes.
    Random,
    /// An `eventfd` counter.
    EventFd(EventCounter),
    /// A `timerfd` on the monotonic clock.
    TimerFd(Timer),
    /// An epoll set.
    Epoll(EpollSet),
    /// A socket of the pod's loopback network.
    Socket(Socket),
    /// A file of `/proc` or `/sys`, made when it was opened.
    Generated {
        /// Its contents.
        data: Vec<u8>,
        /// The read offset.
        pos: usize,
    },
}

/// An IPv4 address and port.
pub type SockAddr = ([u8; 4], u16);

/// A TCP socket of the pod's loopback network (127.0.0.0/8, shared by the pod's
/// containers as a pod's network namespace is). A connection is two pipes, one per
/// direction: closing an end is the peer's end of file (or `EPIPE`).
pub enum Socket {
    /// Made, maybe bound (`bind`), neither listening nor connected.
    Fresh {
        /// The bound address.
        bound: Option<SockAddr>,
    },
    /// Listening: connections wait in the queue until `accept`.
    Listening {
        /// Its address.
        addr: SockAddr,
        /// Most connections waiting.
        backlog: usize,
        /// Connections not accepted yet.
        queue: alloc::collections::VecDeque<Stream>,
    },
    /// A connection.
    Stream(Stream),
}

impl Socket {
    /// The connection, if connected.
    pub fn stream_mut(&mut self) -> Option<&mut Stream> {
        match self {
            Socket::Stream(s) => Some(s),
            _ => None,
        }
    }
}

/// One end of a connection.
pub struct Stream {
    /// What the peer sends (None once shut down for reading).
    pub rx: Option<PipeEnd>,
    /// What this end sends (None once shut down for writing).
    pub tx: Option<PipeEnd>,
    /// This end's address.
    pub local: SockAddr,
    /// The peer's address.
    pub peer: SockAddr,
}

impl Stream {
    /// A connected pair: (the connecting end, the accepted end).
    pub fn pair(client: SockAddr, server: SockAddr) -> (Stream, Stream) {
        let up = Rc::new(RefCell::new(Pipe::new()));
        let down = Rc::new(RefCell::new(Pipe::new()));
        let c = Stream {
            rx: Some(PipeEnd { pipe: down.clone(), write: false }),
            tx: Some(PipeEnd { pipe: up.clone(), write: true }),
            local: client,
            peer: server,
        };
        let s = Stream {
            rx: Some(PipeEnd { pipe: up, write: false }),
            tx: Some(PipeEnd { pipe: down, write: true }),
            local: server,
            peer: client,
        };
        (c, s)
    }

    /// Receives into `buf`: 0 at the peer's end of file, `EAGAIN` when nothing is there.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        match &self.rx {
            None => Ok(0),
            Some(r) => r.pipe.borrow_mut().read(buf),
        }
    }

    /// Sends `data`: `EPIPE` when the peer has gone or this end was shut down.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, Errno> {
        match &self.tx {
            None => Err(Errno::EPIPE),
            Some(t) => t.pipe.borrow_mut().write(data),
        }
    }

    /// `POLL*` readiness.
    pub fn readiness(&self) -> u32 {
        let mut r = 0;
        match &self.rx {
            None => r |= POLLIN | POLLRDHUP,
            Some(e) => {
                let p = e.pipe.borrow();
                if !p.is_empty() {
                    r |= POLLIN;
                }
                if p.writers() == 0 {
                    r |= POLLIN | POLLRDHUP;
                }
            }
        }
        match &self.tx {
            None => r |= POLLHUP,
            Some(e) => {
                let p = e.pipe.borrow();
                if p.readers() == 0 {
                    r |= POLLERR | POLLHUP;
                } else if p.space() > 0 {
                    r |= POLLOUT;
                }
            }
        }
        r
    }
}

/// An epoll set: its descriptors by number, each with the description it was added with
/// (weakly: closing the last descriptor of a description takes it out of every set, as
/// on Linux) and its [`Interest`].
#[derive(Default)]
pub struct EpollSet {
    /// The registrations.
    pub items: BTreeMap<u64, (Weak<RefCell<Description>>, Interest)>,
    /// Where the next wait starts looking (after the descriptor reported last), so that
    /// a short `maxevents` does not starve the rest.
    pub cursor: u64,
}

/// A description flag of this kernel's own (past the `O_*` bits Linux uses): a timerfd
/// made on CLOCK_REALTIME.
pub const TIMERFD_REALTIME: u32 = 1 << 30;

/// Most descriptors one epoll set watches.
pub const EPOLL_MAX_ITEMS: usize = MAX_FDS;

/// How ready a description is now (`POLL*` bits), at monotonic time `now_ns`; a set's
/// readiness looks `depth` levels into the sets it holds.
pub fn readiness(d: &Desc, now_ns: u64, depth: u32) -> u32 {
    let items: Vec<Weak<RefCell<Description>>> = {
        let mut b = d.borrow_mut();
        match &mut b.obj {
            Object::Null | Object::Zero | Object::Random | Object::File(_) | Object::Generated { .. } => {
                return POLLIN | POLLOUT
            }
            Object::Log { .. } => return POLLOUT,
            Object::Pipe(p) => {
                let pipe = p.pipe.borrow();
                return if p.write {
                    let mut r = if pipe.space() > 0 { POLLOUT } else { 0 };
                    if pipe.readers() == 0 {
                        r |= POLLERR;
                    }
                    r
                } else {
                    let mut r = if pipe.is_empty() { 0 } else { POLLIN };
                    if pipe.writers() == 0 {
                        r |= POLLHUP;
                    }
                    r
                };
            }
            Object::EventFd(e) => return e.readiness(),
            Object::Socket(Socket::Stream(st)) => return st.readiness(),
            Object::Socket(Socket::Listening { queue, .. }) => {
                return if queue.is_empty() { 0 } else { POLLIN }
            }
            Object::Socket(Socket::Fresh { .. }) => return POLLOUT | POLLHUP,
            Object::TimerFd(t) => return t.readiness(now_ns),
            Object::Epoll(set) => {
                if depth == 0 {
                    return 0;
                }
                set.items.values().filter(|(_, i)| !i.disabled).map(|(w, _)| w.clone()).collect()
            }
        }
    };
    let any = items.iter().filter_map(Weak::upgrade).any(|d| readiness(&d, now_ns, depth - 1) != 0);
    if any {
        POLLIN
    } else {
        0
    }
}

/// The earliest expiry of a timer behind `d` (to wake a waiter in time).
pub fn next_timer(d: &Desc) -> Option<u64> {
    match &d.borrow().obj {
        Object::TimerFd(t) if t.pending == 0 => t.next_ns,
        Object::TimerFd(_) => Some(0),
        _ => None,
    }
}

/// An open-file description: the object and its status flags (`F_GETFL`).
pub struct Description {
    /// The object.
    pub obj: Object,
    /// `O_*` status flags (access mode, `O_APPEND`, `O_NONBLOCK`).
    pub flags: u32,
}

/// A shared description.
pub type Desc = Rc<RefCell<Description>>;

/// A descriptor slot.
#[derive(Clone)]
pub struct FdEntry {
    /// The description.
    pub desc: Desc,
    /// `FD_CLOEXEC`.
    pub cloexec: bool,
}

/// Most descriptors per process.
pub const MAX_FDS: usize = 256;

/// A process's descriptor table.
#[derive(Clone, Default)]
pub struct FdTable {
    slots: Vec<Option<FdEntry>>,
}

/// Creates a description.
pub fn desc(obj: Object, flags: u32) -> Desc {
    Rc::new(RefCell::new(Description { obj, flags }))
}

impl FdTable {
    /// The entry of `fd`.
    pub fn get(&self, fd: u64) -> Result<&FdEntry, Errno> {
        usize::try_from(fd).ok().and_then(|i| self.slots.get(i)).and_then(Option::as_ref).ok_or(Errno::EBADF)
    }

    /// The description of `fd`.
    pub fn desc(&self, fd: u64) -> Result<Desc, Errno> {
        Ok(self.get(fd)?.desc.clone())
    }

    /// Sets `FD_CLOEXEC` of `fd`.
    pub fn set_cloexec(&mut self, fd: u64, on: bool) -> Result<(), Errno> {
        let e = usize::try_from(fd).ok().and_then(|i| self.slots.get_mut(i)).and_then(Option::as_mut);
        e.ok_or(Errno::EBADF)?.cloexec = on;
        Ok(())
    }

    /// Installs `entry` at the lowest free slot >= `min`.
    pub fn install(&mut self, entry: FdEntry, min: usize) -> Result<u64, Errno> {
        let mut i = min;
        loop {
            if i >= MAX_FDS {
                return Err(Errno::EMFILE);
            }
            if i >= self.slots.len() {
                self.slots.resize(i + 1, None);
            }
            if self.slots[i].is_none() {
                self.slots[i] = Some(entry);
                return Ok(i as u64);
            }
            i += 1;
        }
    }

    /// Puts `entry` at `fd`, returning what was there (to be closed by the caller).
    pub fn replace(&mut self, fd: u64, entry: FdEntry) -> Result<Option<FdEntry>, Errno> {
        let i = usize::try_from(fd).ok().filter(|&i| i < MAX_FDS).ok_or(Errno::EBADF)?;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        Ok(self.slots[i].replace(entry))
    }

    /// Removes `fd`.
    pub fn take(&mut self, fd: u64) -> Result<FdEntry, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .and_then(Option::take)
            .ok_or(Errno::EBADF)
    }

    /// Removes every close-on-exec descriptor.
    pub fn take_cloexec(&mut self) -> Vec<FdEntry> {
        let mut out = Vec::new();
        for s in self.slots.iter_mut() {
            if s.as_ref().is_some_and(|e| e.cloexec) {
                if let Some(e) = s.take() {
                    out.push(e);
                }
            }
        }
        out
    }

    /// Removes every descriptor.
    pub fn take_all(&mut self) -> Vec<FdEntry> {
        self.slots.drain(..).flatten().collect()
    }
}

/// Drops a descriptor; when it held the last reference to a file description, the
/// filesystem's open reference is released too.
pub fn close_entry(fs: &mut Fs, e: FdEntry) {
    let FdEntry { desc, .. } = e;
    if let Ok(cell) = Rc::try_unwrap(desc) {
        if let Object::File(f) = cell.into_inner().obj {
            f.close(fs);
        }
    }
}
