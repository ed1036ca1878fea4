//! Open-file descriptions: an inode, an offset and the `open` flags, shared by every
//! descriptor `dup`ed or inherited from it (the kernel keeps them behind a shared reference).

use crate::fs::{FileType, Fs, Ino};
use crate::linux::{o, seek};
use crate::Errno;

/// One open-file description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFile {
    /// The open inode.
    pub ino: Ino,
    /// File offset, or the readdir cookie for directories.
    pub offset: u64,
    /// The `open` flags (access mode, `APPEND`, `NONBLOCK`...; `CLOEXEC` belongs to the
    /// descriptor and is not kept).
    pub flags: u32,
}

impl OpenFile {
    /// True when opened for reading.
    pub fn readable(&self) -> bool {
        self.flags & o::PATH == 0 && matches!(self.flags & o::ACCMODE, o::RDONLY | o::RDWR)
    }

    /// True when opened for writing.
    pub fn writable(&self) -> bool {
        self.flags & o::PATH == 0 && matches!(self.flags & o::ACCMODE, o::WRONLY | o::RDWR)
    }

    /// `read(2)`: `EBADF` if not readable, `EISDIR` on a directory.
    pub fn read(&mut self, fs: &Fs, buf: &mut [u8]) -> Result<usize, Errno> {
        if !self.readable() {
            return Err(Errno::EBADF);
        }
        let n = fs.read(self.ino, self.offset, buf)?;
        self.offset += n as u64;
        Ok(n)
    }

    /// `pread64(2)`: reads at `offset` without moving the file offset.
    pub fn pread(&self, fs: &Fs, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        if !self.readable() {
            return Err(Errno::EBADF);
        }
        fs.read(self.ino, offset, buf)
    }

    /// `write(2)`: `EBADF` if not writable; with `O_APPEND` every write goes to the end.
    pub fn write(&mut self, fs: &mut Fs, data: &[u8]) -> Result<usize, Errno> {
        if !self.writable() {
            return Err(Errno::EBADF);
        }
        if self.flags & o::APPEND != 0 {
            self.offset = fs.stat(self.ino)?.size;
        }
        let n = fs.write(self.ino, self.offset, data)?;
        self.offset += n as u64;
        Ok(n)
    }

    /// `lseek(2)`: `EINVAL` for an unknown `whence` or a negative result.
    pub fn lseek(&mut self, fs: &Fs, offset: i64, whence: u32) -> Result<u64, Errno> {
        let base: i64 = match whence {
            seek::SET => 0,
            seek::CUR => i64::try_from(self.offset).map_err(|_| Errno::EINVAL)?,
            seek::END => {
                if fs.file_type(self.ino)? == FileType::Dir {
                    return Err(Errno::EINVAL);
                }
                i64::try_from(fs.stat(self.ino)?.size).map_err(|_| Errno::EINVAL)?
            }
            _ => return Err(Errno::EINVAL),
        };
        let new = base.checked_add(offset).ok_or(Errno::EINVAL)?;
        let new = u64::try_from(new).map_err(|_| Errno::EINVAL)?;
        self.offset = new;
        Ok(new)
    }

    /// `getdents64(2)` into `buf`; the offset is the directory cookie.
    pub fn getdents64(&mut self, fs: &Fs, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.flags & o::PATH != 0 {
            return Err(Errno::EBADF);
        }
        fs.getdents64(self.ino, &mut self.offset, buf)
    }

    /// Closes the description: drops the reference taken by [`Fs::open`].
    pub fn close(self, fs: &mut Fs) {
        fs.release(self.ino);
    }
}

impl Fs {
    /// `openat(2)` on the filesystem: resolves `path` from `cwd` and applies `O_CREAT`
    /// (with `mode`), `O_EXCL`, `O_TRUNC`, `O_DIRECTORY`, `O_NOFOLLOW`, `O_PATH`. A directory
    /// cannot be opened for writing (`EISDIR`). The returned description holds a reference
    /// ([`Fs::retain`]); give it back with [`OpenFile::close`].
    pub fn open(&mut self, cwd: Ino, path: &[u8], flags: u32, mode: u32) -> Result<OpenFile, Errno> {
        let nofollow = flags & o::NOFOLLOW != 0;
        let ino = if flags & o::CREAT != 0 {
            let (dir, name) = self.lookup_parent(cwd, path)?;
            let must_be_dir = path.last() == Some(&b'/');
            match self.lookup(dir, &name, !(nofollow || flags & o::EXCL != 0)) {
                Ok(_) if flags & o::EXCL != 0 => return Err(Errno::EEXIST),
                Ok(ino) => ino,
                Err(Errno::ENOENT) if self.lookup(dir, &name, false).is_err() => {
                    if must_be_dir {
                        return Err(Errno::EISDIR);
                    }
                    self.create(dir, &name, mode)?
                }
                Err(e) => return Err(e),
            }
        } else {
            self.lookup(cwd, path, !nofollow)?
        };
        let kind = self.file_type(ino)?;
        if flags & o::PATH == 0 {
            if kind == FileType::Symlink {
                return Err(Errno::ELOOP);
            }
            let writes = matches!(flags & o::ACCMODE, o::WRONLY | o::RDWR);
            if kind == FileType::Dir && (writes || flags & o::CREAT != 0) {
                return Err(Errno::EISDIR);
            }
            if flags & o::DIRECTORY != 0 && kind != FileType::Dir {
                return Err(Errno::ENOTDIR);
            }
            if flags & o::TRUNC != 0 && writes && kind == FileType::Regular {
                self.truncate(ino, 0)?;
            }
        } else if flags & o::DIRECTORY != 0 && kind != FileType::Dir {
            return Err(Errno::ENOTDIR);
        }
        self.retain(ino)?;
        Ok(OpenFile { ino, offset: 0, flags: flags & !o::CLOEXEC })
    }
}
