//! Files and descriptors: open, read, write, stat, directories, links, pipes and `fcntl`.

use alloc::vec::Vec;

use crx_fs::linux::{o, S_IFCHR, S_IFIFO};
use crx_fs::{Errno, FileType, Ino, Pipe, Stat, Timespec};
use crx_guest::posix::sig;

use super::{gather, iovecs, ok, scatter, try_buf, ucstr, uread, uu64, uwrite, Fail, Sys};
use crate::kernel::exec::PROC_SELF_EXE;
use crate::kernel::fd::{close_entry, desc, FdEntry, Object, PipeEnd};
use crate::kernel::proc::Kernel;

const AT_FDCWD: u64 = (-100i64) as u64;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_EMPTY_PATH: u64 = 0x1000;

/// The directory a `*at` call starts from.
fn dir_of(k: &mut Kernel, dirfd: u64) -> Result<Ino, Fail> {
    if dirfd as u32 as i32 == -100 || dirfd == AT_FDCWD {
        return Ok(k.cur().cwd);
    }
    let d = k.cur().fds.desc(dirfd)?;
    let b = d.borrow();
    match &b.obj {
        Object::File(f) => Ok(f.ino),
        _ => Err(Fail::E(Errno::ENOTDIR)),
    }
}

/// Devices the kernel provides by path.
fn device(path: &[u8]) -> Option<Object> {
    match path {
        b"/dev/null" | b"/dev/stdin" => Some(Object::Null),
        b"/dev/zero" => Some(Object::Zero),
        b"/dev/urandom" | b"/dev/random" => Some(Object::Random),
        b"/dev/stdout" => Some(Object::Log { stream: 1 }),
        b"/dev/stderr" => Some(Object::Log { stream: 2 }),
        _ => None,
    }
}

fn open_at(k: &mut Kernel, dirfd: u64, path: &[u8], flags: u32, mode: u32) -> Sys {
    let cloexec = flags & o::CLOEXEC != 0;
    let d = if let Some(obj) = device(path) {
        desc(obj, flags & !o::CLOEXEC)
    } else if let Some(data) = super::procfs::generate(k, path) {
        if flags & o::ACCMODE != o::RDONLY {
            return Err(Errno::EACCES.into());
        }
        desc(Object::Generated { data, pos: 0 }, flags & !o::CLOEXEC)
    } else if path.starts_with(b"/proc/") || path.starts_with(b"/sys/") {
        return Err(Errno::ENOENT.into());
    } else {
        let dir = dir_of(k, dirfd)?;
        let umask = k.cur().umask;
        let f = k.fs.open(dir, path, flags, mode & !umask & 0o7777)?;
        desc(Object::File(f), flags & !o::CLOEXEC)
    };
    let fd = k.cur().fds.install(FdEntry { desc: d.clone(), cloexec }, 0);
    match fd {
        Ok(fd) => Ok(fd),
        Err(e) => {
            close_entry(&mut k.fs, FdEntry { desc: d, cloexec });
            Err(e.into())
        }
    }
}

pub(super) fn sys_open(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[0])?;
    open_at(k, AT_FDCWD, &path, a[1] as u32, a[2] as u32)
}

pub(super) fn sys_openat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[1])?;
    open_at(k, a[0], &path, a[2] as u32, a[3] as u32)
}

pub(super) fn sys_creat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[0])?;
    open_at(k, AT_FDCWD, &path, o::CREAT | o::WRONLY | o::TRUNC, a[1] as u32)
}

pub(super) fn sys_close(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let e = k.cur().fds.take(a[0])?;
    close_entry(&mut k.fs, e);
    Ok(0)
}

/// Reads from a description into a kernel buffer of `len` bytes.
fn read_desc(k: &mut Kernel, fdn: u64, len: usize, at: Option<u64>) -> Result<Vec<u8>, Fail> {
    read_desc_with(k, fdn, len, at, false)
}

/// [`read_desc`], non-blocking for this call alone when `dontwait` (`MSG_DONTWAIT`).
pub(super) fn read_desc_with(
    k: &mut Kernel,
    fdn: u64,
    len: usize,
    at: Option<u64>,
    dontwait: bool,
) -> Result<Vec<u8>, Fail> {
    let d = k.cur().fds.desc(fdn)?;
    let mut b = d.borrow_mut();
    let nonblock = b.flags & o::NONBLOCK != 0 || dontwait;
    if b.flags & o::ACCMODE == o::WRONLY {
        return Err(Errno::EBADF.into());
    }
    let mut buf = try_buf(len.min(1 << 20))?;
    let n = match &mut b.obj {
        Object::Null => 0,
        Object::Zero => buf.len(),
        Object::Random => {
            let n = buf.len().min(1 << 16);
            k.hv.random(&mut buf[..n]);
            n
        }
        Object::Log { .. } => return Err(Errno::EBADF.into()),
        Object::Epoll(_) => return Err(Errno::EINVAL.into()),
        Object::Generated { data, pos } => {
            let start = match at {
                Some(off) => usize::try_from(off).unwrap_or(usize::MAX),
                None => *pos,
            };
            let src = data.get(start..).unwrap_or(&[]);
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            if at.is_none() {
                *pos = start + n;
            }
            n
        }
        Object::Socket(sock) => match sock.stream_mut() {
            None => return Err(Errno::ENOTCONN.into()),
            Some(st) => match st.recv(&mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) if !nonblock => return Err(Fail::Block),
                Err(e) => return Err(e.into()),
            },
        },
        Object::EventFd(e) => {
            if buf.len() < 8 {
                return Err(Errno::EINVAL.into());
            }
            match e.take() {
                Some(v) => {
                    buf[..8].copy_from_slice(&v.to_le_bytes());
                    8
                }
                None if nonblock => return Err(Errno::EAGAIN.into()),
                None => return Err(Fail::Block),
            }
        }
        Object::TimerFd(t) => {
            if buf.len() < 8 {
                return Err(Errno::EINVAL.into());
            }
            let now = k.hv.monotonic_ns();
            match t.take(now) {
                Some(v) => {
                    buf[..8].copy_from_slice(&v.to_le_bytes());
                    8
                }
                None if nonblock => return Err(Errno::EAGAIN.into()),
                None => {
                    // Woken in time for the expiry.
                    let next = t.next_ns;
                    drop(b);
                    k.cur().sleep_deadline = next;
                    return Err(Fail::Block);
                }
            }
        }
        Object::File(f) => match at {
            Some(off) => f.pread(&k.fs, off, &mut buf)?,
            None => f.read(&k.fs, &mut buf)?,
        },
        Object::Pipe(p) => {
            if at.is_some() {
                return Err(Errno::ESPIPE.into());
            }
            if p.write {
                return Err(Errno::EBADF.into());
            }
            match p.pipe.borrow_mut().read(&mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) if !nonblock => return Err(Fail::Block),
                Err(e) => return Err(e.into()),
            }
        }
    };
    buf.truncate(n);
    Ok(buf)
}

/// Writes a kernel buffer to a description.
fn write_desc(k: &mut Kernel, fdn: u64, data: &[u8], at: Option<u64>) -> Sys {
    write_desc_with(k, fdn, data, at, false, false)
}

/// [`write_desc`], non-blocking for this call when `dontwait`, and without SIGPIPE for a
/// closed peer when `nosignal` (`MSG_NOSIGNAL`).
pub(super) fn write_desc_with(
    k: &mut Kernel,
    fdn: u64,
    data: &[u8],
    at: Option<u64>,
    dontwait: bool,
    nosignal: bool,
) -> Sys {
    let d = k.cur().fds.desc(fdn)?;
    let container = k.cur().container;
    let mut b = d.borrow_mut();
    if b.flags & o::ACCMODE == o::RDONLY && !matches!(b.obj, Object::Log { .. } | Object::Pipe(_)) {
        return Err(Errno::EBADF.into());
    }
    let nonblock = b.flags & o::NONBLOCK != 0 || dontwait;
    let r = match &mut b.obj {
        Object::Socket(sock) => match sock.stream_mut() {
            None => Err(Errno::ENOTCONN),
            Some(st) => match st.send(data) {
                Err(Errno::EAGAIN) if !nonblock => return Err(Fail::Block),
                Err(Errno::EPIPE) if !nosignal => {
                    drop(b);
                    let me = k.current;
                    k.signal(me, sig::SIGPIPE);
                    if k.procs.get(&me).is_none_or(|p| !p.state.is_live()) {
                        return Err(Fail::Gone);
                    }
                    return Err(Errno::EPIPE.into());
                }
                r => r,
            },
        },
        Object::Null | Object::Zero | Object::Random => Ok(data.len()),
        Object::Epoll(_) | Object::TimerFd(_) => Err(Errno::EINVAL),
        Object::Generated { .. } => Err(Errno::EBADF),
        Object::EventFd(e) => {
            let v = data.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
            match v.map(|v| e.add(v)) {
                None | Some(Err(true)) => Err(Errno::EINVAL),
                Some(Err(false)) if nonblock => Err(Errno::EAGAIN),
                Some(Err(false)) => return Err(Fail::Block),
                Some(Ok(())) => Ok(8),
            }
        }
        Object::Log { stream } => {
            let s = *stream;
            k.log_output(container, s, data);
            Ok(data.len())
        }
        Object::File(f) => match at {
            Some(off) => k.fs.write(f.ino, off, data),
            None => f.write(&mut k.fs, data),
        },
        Object::Pipe(p) => {
            if !p.write {
                return Err(Errno::EBADF.into());
            }
            let r = p.pipe.borrow_mut().write(data);
            match r {
                Err(Errno::EAGAIN) if !nonblock => return Err(Fail::Block),
                Err(Errno::EPIPE) => {
                    drop(b);
                    let me = k.current;
                    k.signal(me, sig::SIGPIPE);
                    if k.procs.get(&me).is_none_or(|p| !p.state.is_live()) {
                        return Err(Fail::Gone);
                    }
                    return Err(Errno::EPIPE.into());
                }
                r => r,
            }
        }
    };
    Ok(r? as u64)
}

pub(super) fn sys_read(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let buf = read_desc(k, a[0], a[2] as usize, None)?;
    uwrite(k, a[1], &buf)?;
    ok(buf.len())
}

pub(super) fn sys_pread64(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let buf = read_desc(k, a[0], a[2] as usize, Some(a[3]))?;
    uwrite(k, a[1], &buf)?;
    ok(buf.len())
}

pub(super) fn sys_write(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let data = uread(k, a[1], (a[2] as usize).min(1 << 20))?;
    write_desc(k, a[0], &data, None)
}

pub(super) fn sys_pwrite64(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let data = uread(k, a[1], (a[2] as usize).min(1 << 20))?;
    write_desc(k, a[0], &data, Some(a[3]))
}

pub(super) fn sys_writev(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let iov = iovecs(k, a[1], a[2])?;
    let data = gather(k, &iov)?;
    write_desc(k, a[0], &data, None)
}

pub(super) fn sys_sendfile(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let count = (a[3] as usize).min(1 << 20);
    let at = if a[2] != 0 { Some(uu64(k, a[2])?) } else { None };
    let data = read_desc(k, a[1], count, at)?;
    if data.is_empty() {
        return Ok(0);
    }
    let n = write_desc(k, a[0], &data, None)?;
    if let Some(off) = at {
        uwrite(k, a[2], &(off + n).to_le_bytes())?;
    } else if (n as usize) < data.len() {
        // Give back what was read but not written.
        let d = k.cur().fds.desc(a[1])?;
        let mut b = d.borrow_mut();
        if let Object::File(f) = &mut b.obj {
            f.offset -= (data.len() - n as usize) as u64;
        }
    }
    Ok(n)
}

pub(super) fn sys_readv(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let iov = iovecs(k, a[1], a[2])?;
    let total: u64 = iov.iter().map(|x| x.1).sum();
    let buf = read_desc(k, a[0], total as usize, None)?;
    scatter(k, &iov, &buf)?;
    ok(buf.len())
}

pub(super) fn sys_lseek(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let mut b = d.borrow_mut();
    match &mut b.obj {
        Object::File(f) => Ok(f.lseek(&k.fs, a[1] as i64, a[2] as u32)?),
        Object::Null | Object::Zero => Ok(0),
        Object::Generated { data, pos } => {
            let base = match a[2] {
                0 => 0i64,
                1 => *pos as i64,
                2 => data.len() as i64,
                _ => return Err(Errno::EINVAL.into()),
            };
            let new = base.checked_add(a[1] as i64).filter(|&n| n >= 0).ok_or(Errno::EINVAL)?;
            *pos = new as usize;
            Ok(new as u64)
        }
        _ => Err(Errno::ESPIPE.into()),
    }
}

fn dev_stat(mode: u32, rdev: u64) -> Stat {
    Stat {
        dev: 0x5,
        ino: rdev,
        mode,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev,
        size: 0,
        blksize: 4096,
        blocks: 0,
        atime: Timespec::default(),
        mtime: Timespec::default(),
        ctime: Timespec::default(),
    }
}

fn stat_of_fd(k: &mut Kernel, fdn: u64) -> Result<Stat, Fail> {
    let d = k.cur().fds.desc(fdn)?;
    let b = d.borrow();
    Ok(match &b.obj {
        Object::File(f) => k.fs.stat(f.ino)?,
        Object::Null => dev_stat(S_IFCHR | 0o666, 0x103),
        Object::Zero => dev_stat(S_IFCHR | 0o666, 0x105),
        Object::Log { .. } => dev_stat(S_IFIFO | 0o600, 0x900),
        Object::Pipe(_) => dev_stat(S_IFIFO | 0o600, 0x901),
        Object::Random => dev_stat(S_IFCHR | 0o666, 0x109),
        // Anonymous inodes: no file type, as Linux's anon_inode shows them.
        Object::EventFd(_) | Object::TimerFd(_) | Object::Epoll(_) => dev_stat(0o600, 0xa00),
        Object::Socket(_) => dev_stat(0o140000 | 0o777, 0xb00),
        Object::Generated { .. } => dev_stat(0o100444, 0xc00),
    })
}

fn stat_at(k: &mut Kernel, dirfd: u64, path_va: u64, flags: u64) -> Result<Stat, Fail> {
    let path = ucstr(k, path_va)?;
    if path.is_empty() {
        if flags & AT_EMPTY_PATH != 0 {
            if dirfd as u32 as i32 == -100 {
                let cwd = k.cur().cwd;
                return Ok(k.fs.stat(cwd)?);
            }
            return stat_of_fd(k, dirfd);
        }
        return Err(Errno::ENOENT.into());
    }
    match device(&path) {
        Some(Object::Null) => return Ok(dev_stat(S_IFCHR | 0o666, 0x103)),
        Some(Object::Zero) => return Ok(dev_stat(S_IFCHR | 0o666, 0x105)),
        Some(Object::Random) => return Ok(dev_stat(S_IFCHR | 0o666, 0x109)),
        _ => {}
    }
    let dir = dir_of(k, dirfd)?;
    let ino = k.fs.lookup(dir, &path, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    Ok(k.fs.stat(ino)?)
}

pub(super) fn sys_fstat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = stat_of_fd(k, a[0])?;
    uwrite(k, a[1], &s.to_linux_bytes())?;
    Ok(0)
}

pub(super) fn sys_stat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = stat_at(k, AT_FDCWD, a[0], 0)?;
    uwrite(k, a[1], &s.to_linux_bytes())?;
    Ok(0)
}

pub(super) fn sys_lstat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = stat_at(k, AT_FDCWD, a[0], AT_SYMLINK_NOFOLLOW)?;
    uwrite(k, a[1], &s.to_linux_bytes())?;
    Ok(0)
}

pub(super) fn sys_newfstatat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = stat_at(k, a[0], a[1], a[3])?;
    uwrite(k, a[2], &s.to_linux_bytes())?;
    Ok(0)
}

pub(super) fn sys_statx(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = stat_at(k, a[0], a[1], a[2])?;
    uwrite(k, a[4], &s.to_statx_bytes())?;
    Ok(0)
}

pub(super) fn sys_getdents64(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let mut buf = try_buf((a[2] as usize).min(65536))?;
    let n = {
        let mut b = d.borrow_mut();
        match &mut b.obj {
            Object::File(f) => f.getdents64(&k.fs, &mut buf)?,
            _ => return Err(Errno::ENOTDIR.into()),
        }
    };
    uwrite(k, a[1], &buf[..n])?;
    ok(n)
}

pub(super) fn sys_ioctl(k: &mut Kernel, a: [u64; 6]) -> Sys {
    k.cur().fds.get(a[0])?;
    // Nothing here is a terminal: TCGETS, TIOCGWINSZ and the rest answer ENOTTY.
    Err(Errno::ENOTTY.into())
}

pub(super) fn sys_fcntl(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (fdn, cmd, arg) = (a[0], a[1], a[2]);
    let entry = k.cur().fds.get(fdn)?.clone();
    match cmd {
        0 | 1030 => {
            let e = FdEntry { desc: entry.desc, cloexec: cmd == 1030 };
            Ok(k.cur().fds.install(e, arg as usize)?)
        }
        1 => Ok(u64::from(entry.cloexec)),
        2 => {
            k.cur().fds.set_cloexec(fdn, arg & 1 != 0)?;
            Ok(0)
        }
        3 => Ok(u64::from(entry.desc.borrow().flags)),
        4 => {
            let mut b = entry.desc.borrow_mut();
            let settable = o::APPEND | o::NONBLOCK;
            b.flags = (b.flags & !settable) | (arg as u32 & settable);
            let fl = b.flags;
            if let Object::File(f) = &mut b.obj {
                f.flags = (f.flags & !settable) | (fl & settable);
            }
            Ok(0)
        }
        5..=7 => Ok(0), // record locks: nothing else can hold one
        _ => Err(Errno::EINVAL.into()),
    }
}

pub(super) fn sys_dup(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let e = k.cur().fds.get(a[0])?.clone();
    Ok(k.cur().fds.install(FdEntry { desc: e.desc, cloexec: false }, 0)?)
}

fn dup_to(k: &mut Kernel, old: u64, new: u64, cloexec: bool) -> Sys {
    let e = k.cur().fds.get(old)?.clone();
    let prev = k.cur().fds.replace(new, FdEntry { desc: e.desc, cloexec })?;
    if let Some(p) = prev {
        close_entry(&mut k.fs, p);
    }
    Ok(new)
}

pub(super) fn sys_dup2(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[0] == a[1] {
        k.cur().fds.get(a[0])?;
        return Ok(a[1]);
    }
    dup_to(k, a[0], a[1], false)
}

pub(super) fn sys_dup3(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[0] == a[1] || a[2] & !u64::from(o::CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    dup_to(k, a[0], a[1], a[2] & u64::from(o::CLOEXEC) != 0)
}

pub(super) fn sys_pipe2(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let flags = a[1] as u32;
    let cloexec = flags & o::CLOEXEC != 0;
    let pipe = alloc::rc::Rc::new(core::cell::RefCell::new(Pipe::new()));
    let r =
        desc(Object::Pipe(PipeEnd { pipe: pipe.clone(), write: false }), o::RDONLY | (flags & o::NONBLOCK));
    let w = desc(Object::Pipe(PipeEnd { pipe, write: true }), o::WRONLY | (flags & o::NONBLOCK));
    let rfd = k.cur().fds.install(FdEntry { desc: r, cloexec }, 0)?;
    let wfd = match k.cur().fds.install(FdEntry { desc: w, cloexec }, 0) {
        Ok(w) => w,
        Err(e) => {
            let _ = k.cur().fds.take(rfd);
            return Err(e.into());
        }
    };
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&(rfd as u32).to_le_bytes());
    b[4..].copy_from_slice(&(wfd as u32).to_le_bytes());
    if let Err(e) = uwrite(k, a[0], &b) {
        let _ = k.cur().fds.take(rfd);
        let _ = k.cur().fds.take(wfd);
        return Err(e);
    }
    Ok(0)
}

pub(super) fn sys_pipe(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_pipe2(k, [a[0], 0, 0, 0, 0, 0])
}

pub(super) fn sys_getcwd(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let cwd = k.cur().cwd;
    let mut p = k.fs.path_of(cwd)?;
    p.push(0);
    if p.len() as u64 > a[1] {
        return Err(Errno::ERANGE.into());
    }
    uwrite(k, a[0], &p)?;
    ok(p.len())
}

fn set_cwd(k: &mut Kernel, ino: Ino) -> Sys {
    if k.fs.file_type(ino)? != FileType::Dir {
        return Err(Errno::ENOTDIR.into());
    }
    k.cur().cwd = ino;
    Ok(0)
}

pub(super) fn sys_chdir(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[0])?;
    let cwd = k.cur().cwd;
    let ino = k.fs.lookup(cwd, &path, true)?;
    set_cwd(k, ino)
}

pub(super) fn sys_fchdir(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let ino = match &d.borrow().obj {
        Object::File(f) => f.ino,
        _ => return Err(Errno::ENOTDIR.into()),
    };
    set_cwd(k, ino)
}

fn parent_of(k: &mut Kernel, dirfd: u64, path_va: u64) -> Result<(Ino, Vec<u8>), Fail> {
    let path = ucstr(k, path_va)?;
    let dir = dir_of(k, dirfd)?;
    Ok(k.fs.lookup_parent(dir, &path)?)
}

pub(super) fn sys_mkdirat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (dir, name) = parent_of(k, a[0], a[1])?;
    let umask = k.cur().umask;
    k.fs.mkdir(dir, &name, a[2] as u32 & !umask & 0o7777)?;
    Ok(0)
}

pub(super) fn sys_mkdir(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_mkdirat(k, [AT_FDCWD, a[0], a[1], 0, 0, 0])
}

pub(super) fn sys_unlinkat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (dir, name) = parent_of(k, a[0], a[1])?;
    if a[2] & AT_REMOVEDIR != 0 {
        k.fs.rmdir(dir, &name)?;
    } else {
        k.fs.unlink(dir, &name)?;
    }
    Ok(0)
}

pub(super) fn sys_unlink(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_unlinkat(k, [AT_FDCWD, a[0], 0, 0, 0, 0])
}

pub(super) fn sys_rmdir(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_unlinkat(k, [AT_FDCWD, a[0], AT_REMOVEDIR, 0, 0, 0])
}

pub(super) fn sys_renameat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (od, on) = parent_of(k, a[0], a[1])?;
    let (nd, nn) = parent_of(k, a[2], a[3])?;
    k.fs.rename(od, &on, nd, &nn)?;
    Ok(0)
}

pub(super) fn sys_renameat2(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[4] != 0 {
        return Err(Errno::EINVAL.into());
    }
    sys_renameat(k, a)
}

pub(super) fn sys_rename(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_renameat(k, [AT_FDCWD, a[0], AT_FDCWD, a[1], 0, 0])
}

pub(super) fn sys_symlinkat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let target = ucstr(k, a[0])?;
    let (dir, name) = parent_of(k, a[1], a[2])?;
    k.fs.symlink(dir, &name, &target)?;
    Ok(0)
}

pub(super) fn sys_symlink(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_symlinkat(k, [a[0], AT_FDCWD, a[1], 0, 0, 0])
}

pub(super) fn sys_linkat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let old = ucstr(k, a[1])?;
    let odir = dir_of(k, a[0])?;
    let ino = k.fs.lookup(odir, &old, a[4] & 0x400 != 0)?;
    let (dir, name) = parent_of(k, a[2], a[3])?;
    k.fs.link(ino, dir, &name)?;
    Ok(0)
}

pub(super) fn sys_link(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_linkat(k, [AT_FDCWD, a[0], AT_FDCWD, a[1], 0, 0])
}

pub(super) fn sys_readlinkat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[1])?;
    if path == PROC_SELF_EXE {
        let exe = k.cur().exe.clone().into_bytes();
        let n = exe.len().min(a[3] as usize);
        uwrite(k, a[2], &exe[..n])?;
        return ok(n);
    }
    let dir = dir_of(k, a[0])?;
    let ino = k.fs.lookup(dir, &path, false)?;
    let target = k.fs.readlink(ino)?.to_vec();
    let n = target.len().min(a[3] as usize);
    uwrite(k, a[2], &target[..n])?;
    ok(n)
}

pub(super) fn sys_readlink(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_readlinkat(k, [AT_FDCWD, a[0], a[1], a[2], 0, 0])
}

pub(super) fn sys_fchmodat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[1])?;
    let dir = dir_of(k, a[0])?;
    let ino = k.fs.lookup(dir, &path, true)?;
    k.fs.chmod(ino, a[2] as u32 & 0o7777)?;
    Ok(0)
}

pub(super) fn sys_chmod(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_fchmodat(k, [AT_FDCWD, a[0], a[1], 0, 0, 0])
}

pub(super) fn sys_fchmod(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let ino = match &d.borrow().obj {
        Object::File(f) => f.ino,
        _ => return Ok(0),
    };
    k.fs.chmod(ino, a[1] as u32 & 0o7777)?;
    Ok(0)
}

pub(super) fn sys_faccessat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[1])?;
    if device(&path).is_some() {
        return Ok(0);
    }
    let dir = dir_of(k, a[0])?;
    let ino = k.fs.lookup(dir, &path, a[3] & AT_SYMLINK_NOFOLLOW == 0)?;
    k.fs.access(ino, a[2] as u32)?;
    Ok(0)
}

pub(super) fn sys_faccessat2(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_faccessat(k, a)
}

pub(super) fn sys_access(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_faccessat(k, [AT_FDCWD, a[0], a[1], 0, 0, 0])
}

pub(super) fn sys_truncate(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[0])?;
    let cwd = k.cur().cwd;
    let ino = k.fs.lookup(cwd, &path, true)?;
    k.fs.truncate(ino, a[1])?;
    Ok(0)
}

pub(super) fn sys_ftruncate(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let ino = match &d.borrow().obj {
        Object::File(f) if f.writable() => f.ino,
        _ => return Err(Errno::EINVAL.into()),
    };
    k.fs.truncate(ino, a[1])?;
    Ok(0)
}

/// The inode a path-based extended-attribute call names (`follow`: not the `l` variant).
fn xattr_target(k: &mut Kernel, path_va: u64, follow: bool) -> Result<(), Fail> {
    let path = ucstr(k, path_va)?;
    if device(&path).is_some() {
        return Ok(());
    }
    let cwd = k.cur().cwd;
    k.fs.lookup(cwd, &path, follow)?;
    Ok(())
}

/// The filesystem keeps no extended attributes: none is set (`ENODATA`), the list is
/// empty, and setting one is not supported (`EOPNOTSUPP`). `ls -l` asks for SELinux labels
/// and ACLs this way.
pub(super) fn sys_getxattr(k: &mut Kernel, a: [u64; 6]) -> Sys {
    xattr_target(k, a[0], true)?;
    Err(Errno::ENODATA.into())
}

pub(super) fn sys_lgetxattr(k: &mut Kernel, a: [u64; 6]) -> Sys {
    xattr_target(k, a[0], false)?;
    Err(Errno::ENODATA.into())
}

pub(super) fn sys_fgetxattr(k: &mut Kernel, a: [u64; 6]) -> Sys {
    k.cur().fds.get(a[0])?;
    Err(Errno::ENODATA.into())
}

pub(super) fn sys_listxattr(k: &mut Kernel, a: [u64; 6]) -> Sys {
    xattr_target(k, a[0], true)?;
    Ok(0)
}

pub(super) fn sys_llistxattr(k: &mut Kernel, a: [u64; 6]) -> Sys {
    xattr_target(k, a[0], false)?;
    Ok(0)
}

pub(super) fn sys_flistxattr(k: &mut Kernel, a: [u64; 6]) -> Sys {
    k.cur().fds.get(a[0])?;
    Ok(0)
}

pub(super) fn sys_setxattr(k: &mut Kernel, a: [u64; 6]) -> Sys {
    xattr_target(k, a[0], true)?;
    Err(Errno::EOPNOTSUPP.into())
}

pub(super) fn sys_lsetxattr(k: &mut Kernel, a: [u64; 6]) -> Sys {
    xattr_target(k, a[0], false)?;
    Err(Errno::EOPNOTSUPP.into())
}

pub(super) fn sys_fsetxattr(k: &mut Kernel, a: [u64; 6]) -> Sys {
    k.cur().fds.get(a[0])?;
    Err(Errno::EOPNOTSUPP.into())
}

/// `TMPFS_MAGIC`: the filesystem lives in memory.
const TMPFS_MAGIC: u64 = 0x0102_1994;
/// `ST_VALID`: `f_flags` is meaningful.
const ST_VALID: u64 = 0x20;

/// A `struct statfs` of the pod's filesystem: blocks are its memory limit and what is left.
fn statfs_bytes(k: &Kernel) -> [u8; 120] {
    let total = k.fs.limit_bytes() as u64 / 4096;
    let free = (k.fs.limit_bytes().saturating_sub(k.fs.used_bytes())) as u64 / 4096;
    let words: [u64; 11] = [TMPFS_MAGIC, 4096, total, free, free, 0, 0, 0, 255, 4096, ST_VALID];
    let mut b = [0u8; 120];
    for (i, w) in words.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    b
}

pub(super) fn sys_statfs(k: &mut Kernel, a: [u64; 6]) -> Sys {
    xattr_target(k, a[0], true)?;
    let b = statfs_bytes(k);
    uwrite(k, a[1], &b)?;
    Ok(0)
}

pub(super) fn sys_fstatfs(k: &mut Kernel, a: [u64; 6]) -> Sys {
    k.cur().fds.get(a[0])?;
    let b = statfs_bytes(k);
    uwrite(k, a[1], &b)?;
    Ok(0)
}

/// `fadvise64`: advice is taken and ignored (everything is in memory); a pipe is `ESPIPE`.
pub(super) fn sys_fadvise64(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let pipe = matches!(d.borrow().obj, Object::Pipe(_));
    if pipe {
        return Err(Errno::ESPIPE.into());
    }
    Ok(0)
}
