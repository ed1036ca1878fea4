//! Sockets: TCP over the pod's own loopback network, and `socketpair`.
//!
//! A pod has one network namespace for all its containers, as in Kubernetes: a server
//! listening on 127.0.0.1 (or 0.0.0.0) in one container is reached from every container
//! of the pod. There is no interface besides loopback: binding or connecting elsewhere is
//! `EADDRNOTAVAIL` / `ENETUNREACH`, IPv6 and UDP sockets are refused (`EAFNOSUPPORT`,
//! `EPROTONOSUPPORT`), so programs fall back to what they can use. A connection is a pair
//! of pipes ([`Stream`]); `connect` completes at once when a listener has room in its
//! backlog.

use alloc::vec::Vec;

use crx_fs::Errno;

use super::fs::{read_desc_with, write_desc_with};
use super::{uread, uwrite, Fail, Sys};
use crate::kernel::fd::{desc, Desc, FdEntry, Object, SockAddr, Socket, Stream};
use crate::kernel::proc::Kernel;

const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const SOCK_STREAM: u64 = 1;
const SOCK_NONBLOCK: u64 = 0o4000;
const SOCK_CLOEXEC: u64 = 0o2000000;
const MSG_PEEK: u64 = 0x2;
const MSG_DONTWAIT: u64 = 0x40;
const MSG_WAITALL: u64 = 0x100;
const MSG_NOSIGNAL: u64 = 0x4000;
const O_RDWR: u32 = 2;
const O_NONBLOCK: u32 = 0o4000;
/// The first port `bind` to port 0 or an unbound `listen` picks (Linux's default range).
const EPHEMERAL: core::ops::RangeInclusive<u16> = 32768..=60999;

fn new_socket(k: &mut Kernel, obj: Object, nonblock: bool, cloexec: bool) -> Sys {
    let d = desc(obj, O_RDWR | if nonblock { O_NONBLOCK } else { 0 });
    Ok(k.cur().fds.install(FdEntry { desc: d, cloexec }, 0)?)
}

/// `socket(domain, type, protocol)`: AF_INET with SOCK_STREAM (TCP) only.
pub(super) fn sys_socket(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (domain, ty, proto) = (a[0], a[1], a[2]);
    if ty & !(0xf | SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    if domain != AF_INET {
        return Err(Errno::EAFNOSUPPORT.into());
    }
    if ty & 0xf != SOCK_STREAM || (proto != 0 && proto != 6) {
        return Err(Errno::EPROTONOSUPPORT.into());
    }
    new_socket(
        k,
        Object::Socket(Socket::Fresh { bound: None }),
        ty & SOCK_NONBLOCK != 0,
        ty & SOCK_CLOEXEC != 0,
    )
}

/// `socketpair(AF_UNIX, SOCK_STREAM, 0, sv)`: a connected pair.
pub(super) fn sys_socketpair(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (domain, ty, proto, sv) = (a[0], a[1], a[2], a[3]);
    if ty & !(0xf | SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    if domain != AF_UNIX {
        return Err(Errno::EAFNOSUPPORT.into());
    }
    if ty & 0xf != SOCK_STREAM || proto != 0 {
        return Err(Errno::EPROTONOSUPPORT.into());
    }
    let (x, y) = Stream::pair(([0; 4], 0), ([0; 4], 0));
    let (nb, ce) = (ty & SOCK_NONBLOCK != 0, ty & SOCK_CLOEXEC != 0);
    let f0 = new_socket(k, Object::Socket(Socket::Stream(x)), nb, ce)?;
    let f1 = match new_socket(k, Object::Socket(Socket::Stream(y)), nb, ce) {
        Ok(f) => f,
        Err(e) => {
            let _ = k.cur().fds.take(f0);
            return Err(e);
        }
    };
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&(f0 as u32).to_le_bytes());
    b[4..].copy_from_slice(&(f1 as u32).to_le_bytes());
    if let Err(e) = uwrite(k, sv, &b) {
        let _ = k.cur().fds.take(f0);
        let _ = k.cur().fds.take(f1);
        return Err(e);
    }
    Ok(0)
}

/// The socket description of `fdn` (`ENOTSOCK` for another kind).
fn socket_of(k: &mut Kernel, fdn: u64) -> Result<Desc, Fail> {
    let d = k.cur().fds.desc(fdn)?;
    if !matches!(d.borrow().obj, Object::Socket(_)) {
        return Err(Errno::ENOTSOCK.into());
    }
    Ok(d)
}

/// Reads a `sockaddr_in` (AF_INET, at least 16 bytes).
fn read_addr(k: &mut Kernel, va: u64, len: u64) -> Result<SockAddr, Fail> {
    if !(16..=128).contains(&len) {
        return Err(Errno::EINVAL.into());
    }
    let b = uread(k, va, 16)?;
    if u16::from_le_bytes([b[0], b[1]]) != AF_INET as u16 {
        return Err(Errno::EAFNOSUPPORT.into());
    }
    Ok(([b[4], b[5], b[6], b[7]], u16::from_be_bytes([b[2], b[3]])))
}

/// Writes `addr` as a `sockaddr_in` to `va`, cut to the caller's `*len_va`, and the full
/// length back to `*len_va`.
fn write_addr(k: &mut Kernel, va: u64, len_va: u64, addr: SockAddr) -> Result<(), Fail> {
    if va == 0 || len_va == 0 {
        return Ok(());
    }
    let lb = uread(k, len_va, 4)?;
    let room = u32::from_le_bytes([lb[0], lb[1], lb[2], lb[3]]) as i32;
    if room < 0 {
        return Err(Errno::EINVAL.into());
    }
    let mut b = [0u8; 16];
    b[..2].copy_from_slice(&(AF_INET as u16).to_le_bytes());
    b[2..4].copy_from_slice(&addr.1.to_be_bytes());
    b[4..8].copy_from_slice(&addr.0);
    let n = (room as usize).min(16);
    uwrite(k, va, &b[..n])?;
    uwrite(k, len_va, &16u32.to_le_bytes())
}

/// Whether `ip` is one of the pod's own addresses: loopback, or "any" (0.0.0.0).
fn is_local(ip: [u8; 4]) -> bool {
    ip[0] == 127 || ip == [0; 4]
}

/// The socket bound to `port`, if one lives.
fn holder(k: &mut Kernel, port: u16) -> Option<Desc> {
    k.ports.retain(|_, w| w.strong_count() > 0);
    k.ports.get(&port).and_then(alloc::rc::Weak::upgrade)
}

/// A free port from the ephemeral range.
fn ephemeral_port(k: &mut Kernel) -> Result<u16, Fail> {
    k.ports.retain(|_, w| w.strong_count() > 0);
    let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
    for _ in 0..span {
        let p = k.next_port.clamp(*EPHEMERAL.start(), *EPHEMERAL.end());
        k.next_port = if p == *EPHEMERAL.end() { *EPHEMERAL.start() } else { p + 1 };
        if !k.ports.contains_key(&p) {
            return Ok(p);
        }
    }
    Err(Errno::EADDRINUSE.into())
}

pub(super) fn sys_bind(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = socket_of(k, a[0])?;
    let (ip, port) = read_addr(k, a[1], a[2])?;
    if !is_local(ip) {
        return Err(Errno::EADDRNOTAVAIL.into());
    }
    if !matches!(d.borrow().obj, Object::Socket(Socket::Fresh { bound: None })) {
        return Err(Errno::EINVAL.into());
    }
    let port = if port == 0 {
        ephemeral_port(k)?
    } else {
        if holder(k, port).is_some() {
            return Err(Errno::EADDRINUSE.into());
        }
        port
    };
    k.ports.insert(port, alloc::rc::Rc::downgrade(&d));
    d.borrow_mut().obj = Object::Socket(Socket::Fresh { bound: Some((ip, port)) });
    Ok(0)
}

pub(super) fn sys_listen(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = socket_of(k, a[0])?;
    let backlog = (a[1] as i32).clamp(1, 4096) as usize;
    let bound = match &mut d.borrow_mut().obj {
        Object::Socket(Socket::Fresh { bound }) => *bound,
        Object::Socket(Socket::Listening { backlog: b, .. }) => {
            *b = backlog;
            return Ok(0);
        }
        _ => return Err(Errno::EINVAL.into()),
    };
    let addr = match bound {
        Some(a) => a,
        None => ([0; 4], ephemeral_port(k)?),
    };
    k.ports.insert(addr.1, alloc::rc::Rc::downgrade(&d));
    d.borrow_mut().obj =
        Object::Socket(Socket::Listening { addr, backlog, queue: alloc::collections::VecDeque::new() });
    Ok(0)
}

/// `connect(fd, addr, len)`: to a listener of the pod; completes at once.
pub(super) fn sys_connect(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = socket_of(k, a[0])?;
    let (ip, port) = read_addr(k, a[1], a[2])?;
    let bound = match &d.borrow().obj {
        Object::Socket(Socket::Fresh { bound }) => *bound,
        Object::Socket(Socket::Stream(_)) => return Err(Errno::EISCONN.into()),
        _ => return Err(Errno::EINVAL.into()),
    };
    if !is_local(ip) {
        return Err(Errno::ENETUNREACH.into());
    }
    let Some(l) = holder(k, port).filter(|l| !alloc::rc::Rc::ptr_eq(l, &d)) else {
        return Err(Errno::ECONNREFUSED.into());
    };
    let local = match bound {
        Some((lip, lport)) => (if lip == [0; 4] { [127, 0, 0, 1] } else { lip }, lport),
        None => ([127, 0, 0, 1], ephemeral_port(k)?),
    };
    let peer = (if ip == [0; 4] { [127, 0, 0, 1] } else { ip }, port);
    {
        let mut lb = l.borrow_mut();
        // Bound but not listening: refused, as on Linux.
        let Object::Socket(Socket::Listening { backlog, queue, addr }) = &mut lb.obj else {
            return Err(Errno::ECONNREFUSED.into());
        };
        if addr.0 != [0; 4] && addr.0 != peer.0 {
            return Err(Errno::ECONNREFUSED.into());
        }
        if queue.len() >= *backlog {
            drop(lb);
            return if d.borrow().flags & O_NONBLOCK != 0 {
                Err(Errno::EAGAIN.into())
            } else {
                Err(Fail::Block)
            };
        }
        let (c, s) = Stream::pair(local, peer);
        queue.push_back(s);
        d.borrow_mut().obj = Object::Socket(Socket::Stream(c));
    }
    if bound.is_none() {
        k.ports.insert(local.1, alloc::rc::Rc::downgrade(&d));
    }
    Ok(0)
}

fn accept(k: &mut Kernel, fdn: u64, addr: u64, addrlen: u64, flags: u64) -> Sys {
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let d = socket_of(k, fdn)?;
    let st = {
        let mut b = d.borrow_mut();
        let nonblock = b.flags & O_NONBLOCK != 0;
        let Object::Socket(Socket::Listening { queue, .. }) = &mut b.obj else {
            return Err(Errno::EINVAL.into());
        };
        match queue.pop_front() {
            Some(s) => s,
            None if nonblock => return Err(Errno::EAGAIN.into()),
            None => return Err(Fail::Block),
        }
    };
    let peer = st.peer;
    let nfd = new_socket(
        k,
        Object::Socket(Socket::Stream(st)),
        flags & SOCK_NONBLOCK != 0,
        flags & SOCK_CLOEXEC != 0,
    )?;
    if let Err(e) = write_addr(k, addr, addrlen, peer) {
        let _ = k.cur().fds.take(nfd);
        return Err(e);
    }
    Ok(nfd)
}

pub(super) fn sys_accept(k: &mut Kernel, a: [u64; 6]) -> Sys {
    accept(k, a[0], a[1], a[2], 0)
}

pub(super) fn sys_accept4(k: &mut Kernel, a: [u64; 6]) -> Sys {
    accept(k, a[0], a[1], a[2], a[3])
}

fn names(k: &mut Kernel, fdn: u64) -> Result<(SockAddr, Option<SockAddr>), Fail> {
    let d = socket_of(k, fdn)?;
    let b = d.borrow();
    Ok(match &b.obj {
        Object::Socket(Socket::Fresh { bound }) => (bound.unwrap_or(([0; 4], 0)), None),
        Object::Socket(Socket::Listening { addr, .. }) => (*addr, None),
        Object::Socket(Socket::Stream(s)) => (s.local, Some(s.peer)),
        _ => return Err(Errno::ENOTSOCK.into()),
    })
}

pub(super) fn sys_getsockname(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (local, _) = names(k, a[0])?;
    write_addr(k, a[1], a[2], local)?;
    Ok(0)
}

pub(super) fn sys_getpeername(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (_, peer) = names(k, a[0])?;
    write_addr(k, a[1], a[2], peer.ok_or(Errno::ENOTCONN)?)?;
    Ok(0)
}

pub(super) fn sys_shutdown(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = socket_of(k, a[0])?;
    let mut b = d.borrow_mut();
    let Object::Socket(Socket::Stream(s)) = &mut b.obj else { return Err(Errno::ENOTCONN.into()) };
    match a[1] {
        0 => s.rx = None,
        1 => s.tx = None,
        2 => {
            s.rx = None;
            s.tx = None;
        }
        _ => return Err(Errno::EINVAL.into()),
    }
    Ok(0)
}

/// Socket options: the common ones are accepted (and have nothing to change on a
/// loopback pipe); `SO_ERROR` reads 0, `SO_TYPE` SOCK_STREAM, the buffer sizes the pipe's.
fn option_value(level: u64, name: u64) -> Result<u32, Errno> {
    match (level, name) {
        (1, 3) => Ok(SOCK_STREAM as u32),                      // SO_TYPE
        (1, 4) => Ok(0),                                       // SO_ERROR
        (1, 7) | (1, 8) => Ok(crx_fs::PIPE_CAPACITY as u32),   // SO_SNDBUF, SO_RCVBUF
        (1, 2 | 9 | 15 | 6 | 13 | 20 | 21 | 30 | 38) => Ok(0), // REUSEADDR, KEEPALIVE, ...
        (6, 1) => Ok(1),                                       // TCP_NODELAY
        (6, 2..=6 | 9 | 12 | 18 | 23) => Ok(0),                // TCP_MAXSEG, KEEP*, ...
        (0, _) => Ok(0),                                       // IPPROTO_IP
        _ => Err(Errno::ENOPROTOOPT),
    }
}

pub(super) fn sys_setsockopt(k: &mut Kernel, a: [u64; 6]) -> Sys {
    socket_of(k, a[0])?;
    option_value(a[1], a[2])?;
    if a[4] > 4096 {
        return Err(Errno::EINVAL.into());
    }
    uread(k, a[3], a[4] as usize)?;
    Ok(0)
}

pub(super) fn sys_getsockopt(k: &mut Kernel, a: [u64; 6]) -> Sys {
    socket_of(k, a[0])?;
    let v = option_value(a[1], a[2])?;
    let lb = uread(k, a[4], 4)?;
    let room = u32::from_le_bytes([lb[0], lb[1], lb[2], lb[3]]) as usize;
    let n = room.min(4);
    uwrite(k, a[3], &v.to_le_bytes()[..n])?;
    uwrite(k, a[4], &(n as u32).to_le_bytes())?;
    Ok(0)
}

fn check_flags(flags: u64) -> Result<(), Fail> {
    if flags & MSG_PEEK != 0 {
        return Err(Errno::EOPNOTSUPP.into());
    }
    Ok(())
}

/// `sendto(fd, buf, len, flags, addr, addrlen)`: a connected socket ignores the address.
pub(super) fn sys_sendto(k: &mut Kernel, a: [u64; 6]) -> Sys {
    socket_of(k, a[0])?;
    check_flags(a[3])?;
    let data = uread(k, a[1], (a[2] as usize).min(1 << 20))?;
    write_desc_with(k, a[0], &data, None, a[3] & MSG_DONTWAIT != 0, a[3] & MSG_NOSIGNAL != 0)
}

/// `recvfrom(fd, buf, len, flags, addr, addrlen)`: `MSG_DONTWAIT`; `MSG_WAITALL` returns
/// what is there, as a short read.
pub(super) fn sys_recvfrom(k: &mut Kernel, a: [u64; 6]) -> Sys {
    socket_of(k, a[0])?;
    check_flags(a[3] & !MSG_WAITALL)?;
    let buf = read_desc_with(k, a[0], a[2] as usize, None, a[3] & MSG_DONTWAIT != 0)?;
    uwrite(k, a[1], &buf)?;
    if a[4] != 0 {
        let (_, peer) = names(k, a[0])?;
        write_addr(k, a[4], a[5], peer.unwrap_or(([0; 4], 0)))?;
    }
    Ok(buf.len() as u64)
}

/// The iovecs of a `struct msghdr` (ancillary data is not supported: `msg_controllen` is
/// answered 0).
fn msghdr_iov(k: &mut Kernel, va: u64) -> Result<Vec<(u64, u64)>, Fail> {
    let h = uread(k, va, 56)?;
    let w = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or_default());
    super::iovecs(k, w(16), w(24))
}

pub(super) fn sys_sendmsg(k: &mut Kernel, a: [u64; 6]) -> Sys {
    socket_of(k, a[0])?;
    check_flags(a[2])?;
    let iov = msghdr_iov(k, a[1])?;
    let data = super::gather(k, &iov)?;
    write_desc_with(k, a[0], &data, None, a[2] & MSG_DONTWAIT != 0, a[2] & MSG_NOSIGNAL != 0)
}

pub(super) fn sys_recvmsg(k: &mut Kernel, a: [u64; 6]) -> Sys {
    socket_of(k, a[0])?;
    check_flags(a[2] & !MSG_WAITALL)?;
    let iov = msghdr_iov(k, a[1])?;
    let total: u64 = iov.iter().map(|x| x.1).sum();
    let buf = read_desc_with(k, a[0], total.min(1 << 20) as usize, None, a[2] & MSG_DONTWAIT != 0)?;
    super::scatter(k, &iov, &buf)?;
    // msg_namelen = 0, msg_controllen = 0, msg_flags = 0.
    uwrite(k, a[1] + 8, &0u32.to_le_bytes())?;
    uwrite(k, a[1] + 40, &0u64.to_le_bytes())?;
    uwrite(k, a[1] + 48, &0u32.to_le_bytes())?;
    Ok(buf.len() as u64)
}
