//! Linux x86_64 binary layouts the kernel copies to processes: `struct stat` (144 bytes),
//! `struct statx` (256 bytes) and `struct linux_dirent64` records, plus the mode, `open` flag
//! and `d_type` constants they use.

/// File type mask in `st_mode`.
pub const S_IFMT: u32 = 0o170000;
/// FIFO.
pub const S_IFIFO: u32 = 0o010000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;

/// `d_type` values of `linux_dirent64`.
pub mod dt {
    /// FIFO.
    pub const FIFO: u8 = 1;
    /// Character device.
    pub const CHR: u8 = 2;
    /// Directory.
    pub const DIR: u8 = 4;
    /// Regular file.
    pub const REG: u8 = 8;
    /// Symbolic link.
    pub const LNK: u8 = 10;
}

/// `open(2)` flags (x86_64 values).
pub mod o {
    /// Access mode mask.
    pub const ACCMODE: u32 = 0o3;
    /// Read only.
    pub const RDONLY: u32 = 0o0;
    /// Write only.
    pub const WRONLY: u32 = 0o1;
    /// Read and write.
    pub const RDWR: u32 = 0o2;
    /// Create if missing.
    pub const CREAT: u32 = 0o100;
    /// With `CREAT`: fail if it exists.
    pub const EXCL: u32 = 0o200;
    /// Do not become the controlling terminal (ignored).
    pub const NOCTTY: u32 = 0o400;
    /// Truncate a regular file opened for writing.
    pub const TRUNC: u32 = 0o1000;
    /// Every write goes to the end.
    pub const APPEND: u32 = 0o2000;
    /// Non-blocking (meaningful for pipes).
    pub const NONBLOCK: u32 = 0o4000;
    /// Fail unless a directory.
    pub const DIRECTORY: u32 = 0o200000;
    /// Fail with `ELOOP` if the last component is a symbolic link.
    pub const NOFOLLOW: u32 = 0o400000;
    /// Close on exec (kept by the descriptor table, not the description).
    pub const CLOEXEC: u32 = 0o2000000;
    /// A path-only descriptor.
    pub const PATH: u32 = 0o10000000;
}

/// `lseek` whence values.
pub mod seek {
    /// From the start.
    pub const SET: u32 = 0;
    /// From the current offset.
    pub const CUR: u32 = 1;
    /// From the end.
    pub const END: u32 = 2;
}

/// A time stamp (seconds and nanoseconds since the epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds, below 1e9.
    pub nsec: u32,
}

/// What [`crate::Fs::stat`] reports about an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Device number (one device for the whole filesystem).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// File type and permission bits (`S_IF*` | `0o7777`).
    pub mode: u32,
    /// Number of hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number for device files (always 0 here).
    pub rdev: u64,
    /// Size in bytes (a symlink's target length; 4096 for directories).
    pub size: u64,
    /// Preferred I/O block size.
    pub blksize: u32,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Last access.
    pub atime: Timespec,
    /// Last modification.
    pub mtime: Timespec,
    /// Last status change.
    pub ctime: Timespec,
}

/// `STATX_BASIC_STATS`: the fields [`Stat::to_statx_bytes`] fills.
pub const STATX_BASIC_STATS: u32 = 0x7ff;

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

impl Stat {
    /// The x86_64 `struct stat` (`arch/x86/include/uapi/asm/stat.h`): dev@0, ino@8, nlink@16
    /// (u64), mode@24, uid@28, gid@32 (u32), rdev@40, size@48, blksize@56, blocks@64, then
    /// atime, mtime, ctime as (sec, nsec) i64 pairs at 72, 88, 104; 24 reserved bytes.
    pub fn to_linux_bytes(&self) -> [u8; 144] {
        let mut b = [0u8; 144];
        put(&mut b, 0, &self.dev.to_le_bytes());
        put(&mut b, 8, &self.ino.to_le_bytes());
        put(&mut b, 16, &u64::from(self.nlink).to_le_bytes());
        put(&mut b, 24, &self.mode.to_le_bytes());
        put(&mut b, 28, &self.uid.to_le_bytes());
        put(&mut b, 32, &self.gid.to_le_bytes());
        put(&mut b, 40, &self.rdev.to_le_bytes());
        put(&mut b, 48, &self.size.to_le_bytes());
        put(&mut b, 56, &u64::from(self.blksize).to_le_bytes());
        put(&mut b, 64, &self.blocks.to_le_bytes());
        for (i, t) in [self.atime, self.mtime, self.ctime].iter().enumerate() {
            put(&mut b, 72 + 16 * i, &t.sec.to_le_bytes());
            put(&mut b, 80 + 16 * i, &u64::from(t.nsec).to_le_bytes());
        }
        b
    }

    /// The `struct statx` (`include/uapi/linux/stat.h`): mask@0, blksize@4, attributes@8,
    /// nlink@16, uid@20, gid@24, mode@28 (u16), ino@32, size@40, blocks@48,
    /// attributes_mask@56, atime@64, btime@80, ctime@96, mtime@112 (each i64 sec, u32 nsec,
    /// i32 reserved), rdev major/minor@128/132, dev major/minor@136/140. The mask is
    /// [`STATX_BASIC_STATS`] (no birth time).
    pub fn to_statx_bytes(&self) -> [u8; 256] {
        let mut b = [0u8; 256];
        put(&mut b, 0, &STATX_BASIC_STATS.to_le_bytes());
        put(&mut b, 4, &self.blksize.to_le_bytes());
        put(&mut b, 16, &self.nlink.to_le_bytes());
        put(&mut b, 20, &self.uid.to_le_bytes());
        put(&mut b, 24, &self.gid.to_le_bytes());
        put(&mut b, 28, &(self.mode as u16).to_le_bytes());
        put(&mut b, 32, &self.ino.to_le_bytes());
        put(&mut b, 40, &self.size.to_le_bytes());
        put(&mut b, 48, &self.blocks.to_le_bytes());
        for (at, t) in [(64, self.atime), (96, self.ctime), (112, self.mtime)] {
            put(&mut b, at, &t.sec.to_le_bytes());
            put(&mut b, at + 8, &t.nsec.to_le_bytes());
        }
        put(&mut b, 128, &((self.rdev >> 8) as u32 & 0xfff).to_le_bytes());
        put(&mut b, 132, &(self.rdev as u32 & 0xff).to_le_bytes());
        put(&mut b, 136, &((self.dev >> 8) as u32 & 0xfff).to_le_bytes());
        put(&mut b, 140, &(self.dev as u32 & 0xff).to_le_bytes());
        b
    }
}

/// Length of the `linux_dirent64` record for a name of `name_len` bytes: 19 header bytes,
/// the name, a NUL, rounded up to 8.
pub const fn dirent64_len(name_len: usize) -> usize {
    (19 + name_len + 1 + 7) & !7
}

/// Writes one `linux_dirent64` record (`d_ino` u64 @0, `d_off` i64 @8, `d_reclen` u16 @16,
/// `d_type` u8 @18, name @19, NUL, zero padding to 8 bytes) at the start of `buf`.
/// Returns the record length, or `None` when it does not fit (nothing is written then).
pub fn encode_dirent64(buf: &mut [u8], ino: u64, next_cookie: u64, d_type: u8, name: &[u8]) -> Option<usize> {
    let len = dirent64_len(name.len());
    let rec = buf.get_mut(..len)?;
    rec.fill(0);
    put(rec, 0, &ino.to_le_bytes());
    put(rec, 8, &next_cookie.to_le_bytes());
    put(rec, 16, &u16::try_from(len).ok()?.to_le_bytes());
    put(rec, 18, &[d_type]);
    put(rec, 19, name);
    Some(len)
}
