//! A tar reader for ustar, GNU (long names `L`/`K`, base-256 numbers) and pax (`x` records
//! `path`, `linkpath`, `size`, `uid`, `gid`, `mtime`; `g` headers are skipped) archives.
//!
//! No-panic contract: [`TarReader::next_entry`] returns a [`TarError`] for any malformed or
//! truncated input and never reads outside the archive; entry data is a sub-slice of the
//! archive (zero-copy). The archive ends at the first all-zero header block; bytes after it are
//! ignored. An archive that ends without such a block is truncated.

use alloc::vec::Vec;
use core::fmt;

/// Size of a tar block.
pub const BLOCK: usize = 512;
/// Longest path or link target accepted from pax or GNU long-name records.
pub const MAX_PATH_BYTES: usize = 4096;
/// Largest pax extended-header or GNU long-name record accepted.
pub const MAX_META_BYTES: usize = 64 * 1024;

/// Why a tar archive could not be read. Offsets are byte offsets into the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarError {
    /// The archive ends inside a header or inside an entry's data, or has no end-of-archive block.
    Truncated {
        /// Offset of the header of the entry that is cut short.
        offset: usize,
    },
    /// A header's checksum does not match its bytes.
    BadChecksum {
        /// Offset of the header.
        offset: usize,
    },
    /// A numeric field (size, mode, uid, gid, mtime, checksum) is not valid octal or base-256.
    BadNumber {
        /// Offset of the header.
        offset: usize,
    },
    /// A pax extended header record is malformed.
    BadPax {
        /// Offset of the header of the pax record.
        offset: usize,
    },
    /// A pax or GNU long-name record is larger than [`MAX_META_BYTES`], or a path longer than
    /// [`MAX_PATH_BYTES`].
    MetadataTooLarge {
        /// Offset of the header.
        offset: usize,
    },
}

impl TarError {
    /// The offset of the header the error is about.
    pub fn offset(&self) -> usize {
        match *self {
            TarError::Truncated { offset }
            | TarError::BadChecksum { offset }
            | TarError::BadNumber { offset }
            | TarError::BadPax { offset }
            | TarError::MetadataTooLarge { offset } => offset,
        }
    }
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TarError::Truncated { offset } => write!(f, "tar archive truncated (entry at byte {offset})"),
            TarError::BadChecksum { offset } => write!(f, "tar header checksum mismatch at byte {offset}"),
            TarError::BadNumber { offset } => write!(f, "bad numeric field in tar header at byte {offset}"),
            TarError::BadPax { offset } => write!(f, "malformed pax extended header at byte {offset}"),
            TarError::MetadataTooLarge { offset } => {
                write!(f, "tar name or extended header too large at byte {offset}")
            }
        }
    }
}

/// What a tar entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (typeflag `0`, NUL or `7`).
    File,
    /// A hard link to an earlier entry (typeflag `1`); the target is [`Entry::link`].
    HardLink,
    /// A symbolic link (typeflag `2`); the target is [`Entry::link`].
    Symlink,
    /// A character device (typeflag `3`).
    CharDevice,
    /// A block device (typeflag `4`).
    BlockDevice,
    /// A directory (typeflag `5`).
    Dir,
    /// A FIFO (typeflag `6`).
    Fifo,
    /// Any other typeflag (e.g. GNU volume labels); its data is skipped.
    Other(u8),
}

/// One archive member, with pax and GNU long-name overrides applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The member's path as stored (not normalised).
    pub path: Vec<u8>,
    /// Link target for hard and symbolic links, empty otherwise.
    pub link: Vec<u8>,
    /// The member's type.
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// The member's data (empty for header-only types).
    pub data: &'a [u8],
    /// Offset of `data` in the archive.
    pub data_offset: usize,
    /// Offset of the member's own header block in the archive.
    pub header_offset: usize,
}

/// Reads entries from an in-memory archive.
pub struct TarReader<'a> {
    archive: &'a [u8],
    pos: usize,
    done: bool,
}

#[derive(Default)]
struct Overrides {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<i64>,
}

fn field(h: &[u8; BLOCK], at: usize, len: usize) -> &[u8] {
    h.get(at..at + len).unwrap_or(&[])
}

/// Bytes of a NUL-terminated field.
fn cstr(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => bytes.get(..n).unwrap_or(&[]),
        None => bytes,
    }
}

/// Parses an octal field (leading spaces, digits, ended by NUL or space) or a GNU base-256
/// field (first byte 0x80; 0xff, negative, is refused).
fn number(bytes: &[u8]) -> Option<u64> {
    let first = *bytes.first()?;
    if first & 0x80 != 0 {
        if first != 0x80 {
            return None;
        }
        let mut v: u64 = 0;
        for &b in bytes.get(1..)? {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let mut v: u64 = 0;
    let mut seen_digit = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b' ' && !seen_digit {
            i += 1;
            continue;
        }
        if b == 0 || b == b' ' {
            break;
        }
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        seen_digit = true;
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
        i += 1;
    }
    Some(v)
}

fn decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn checksum_ok(h: &[u8; BLOCK], stored: u64) -> bool {
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    unsigned == stored || signed == stored as i64
}

fn pad(len: u64) -> Option<usize> {
    let len = usize::try_from(len).ok()?;
    len.checked_add(BLOCK - 1).map(|v| v / BLOCK * BLOCK)
}

impl<'a> TarReader<'a> {
    /// A reader positioned at the first header of `archive`.
    pub fn new(archive: &'a [u8]) -> Self {
        TarReader { archive, pos: 0, done: false }
    }

    fn header(&self, at: usize) -> Result<&'a [u8; BLOCK], TarError> {
        let end = at.checked_add(BLOCK).ok_or(TarError::Truncated { offset: at })?;
        self.archive
            .get(at..end)
            .and_then(|s| <&[u8; BLOCK]>::try_from(s).ok())
            .ok_or(TarError::Truncated { offset: at })
    }

    /// The next member, `Ok(None)` at the end-of-archive block, or an error. After an error or
    /// the end, every further call returns `Ok(None)`.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'a>>, TarError> {
        if self.done {
            return Ok(None);
        }
        let r = self.read_entry();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn read_entry(&mut self) -> Result<Option<Entry<'a>>, TarError> {
        let mut ov = Overrides::default();
        loop {
            let at = self.pos;
            let h = self.header(at)?;
            if h.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let stored = number(field(h, 148, 8)).ok_or(TarError::BadNumber { offset: at })?;
            if !checksum_ok(h, stored) {
                return Err(TarError::BadChecksum { offset: at });
            }
            let typeflag = h[156];
            let header_size = number(field(h, 124, 12)).ok_or(TarError::BadNumber { offset: at })?;
            let header_only = matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6');
            let size = match (typeflag, ov.size) {
                (b'x' | b'g' | b'L' | b'K', _) => header_size,
                (_, _) if header_only => 0,
                (_, Some(s)) => s,
                (_, None) => header_size,
            };
            let data_at = at + BLOCK;
            let len = usize::try_from(size).map_err(|_| TarError::Truncated { offset: at })?;
            let data_end = data_at.checked_add(len).ok_or(TarError::Truncated { offset: at })?;
            let data = self.archive.get(data_at..data_end).ok_or(TarError::Truncated { offset: at })?;
            let padded = pad(size).ok_or(TarError::Truncated { offset: at })?;
            let next = data_at.checked_add(padded).ok_or(TarError::Truncated { offset: at })?;
            if next > self.archive.len() {
                return Err(TarError::Truncated { offset: at });
            }
            self.pos = next;
            match typeflag {
                b'L' | b'K' => {
                    if data.len() > MAX_META_BYTES {
                        return Err(TarError::MetadataTooLarge { offset: at });
                    }
                    let name = cstr(data);
                    if name.len() > MAX_PATH_BYTES {
                        return Err(TarError::MetadataTooLarge { offset: at });
                    }
                    if typeflag == b'L' {
                        ov.path = Some(name.to_vec());
                    } else {
                        ov.link = Some(name.to_vec());
                    }
                    continue;
                }
                b'x' => {
                    if data.len() > MAX_META_BYTES {
                        return Err(TarError::MetadataTooLarge { offset: at });
                    }
                    parse_pax(data, &mut ov).ok_or(TarError::BadPax { offset: at })?;
                    continue;
                }
                b'g' => continue,
                _ => {}
            }
            let ustar = field(h, 257, 6) == b"ustar\0";
            let mut path = cstr(field(h, 0, 100)).to_vec();
            if ustar {
                let prefix = cstr(field(h, 345, 155));
                if !prefix.is_empty() {
                    let mut p = prefix.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(&path);
                    path = p;
                }
            }
            let bad = TarError::BadNumber { offset: at };
            let mode = number(field(h, 100, 8)).ok_or(bad)? & 0o7777;
            let uid = number(field(h, 108, 8)).ok_or(bad)?;
            let gid = number(field(h, 116, 8)).ok_or(bad)?;
            let mtime = number(field(h, 136, 12)).ok_or(bad)?;
            let kind = match typeflag {
                b'0' | 0 | b'7' => EntryKind::File,
                b'1' => EntryKind::HardLink,
                b'2' => EntryKind::Symlink,
                b'3' => EntryKind::CharDevice,
                b'4' => EntryKind::BlockDevice,
                b'5' => EntryKind::Dir,
                b'6' => EntryKind::Fifo,
                other => EntryKind::Other(other),
            };
            let link = match ov.link.take() {
                Some(l) => l,
                None => cstr(field(h, 157, 100)).to_vec(),
            };
            if let Some(p) = ov.path.take() {
                path = p;
            }
            return Ok(Some(Entry {
                path,
                link,
                kind,
                mode: mode as u32,
                uid: ov.uid.unwrap_or(u32::try_from(uid).map_err(|_| bad)?),
                gid: ov.gid.unwrap_or(u32::try_from(gid).map_err(|_| bad)?),
                mtime: ov.mtime.unwrap_or(i64::try_from(mtime).map_err(|_| bad)?),
                data,
                data_offset: data_at,
                header_offset: at,
            }));
        }
    }
}

/// Applies the records of a pax extended header ("LEN KEY=VALUE\n" each) to `ov`.
fn parse_pax(mut data: &[u8], ov: &mut Overrides) -> Option<()> {
    // Trailing NUL padding is tolerated.
    while let Some(&first) = data.first() {
        if first == 0 {
            break;
        }
        let space = data.iter().position(|&b| b == b' ')?;
        let len = usize::try_from(decimal(data.get(..space)?)?).ok()?;
        let record = data.get(..len)?;
        if record.last() != Some(&b'\n') || len <= space + 1 {
            return None;
        }
        let kv = record.get(space + 1..len - 1)?;
        let eq = kv.iter().position(|&b| b == b'=')?;
        let key = kv.get(..eq)?;
        let value = kv.get(eq + 1..)?;
        match key {
            b"path" => {
                if value.len() > MAX_PATH_BYTES {
                    return None;
                }
                ov.path = Some(value.to_vec());
            }
            b"linkpath" => {
                if value.len() > MAX_PATH_BYTES {
                    return None;
                }
                ov.link = Some(value.to_vec());
            }
            b"size" => ov.size = Some(decimal(value)?),
            b"uid" => ov.uid = u32::try_from(decimal(value)?).ok(),
            b"gid" => ov.gid = u32::try_from(decimal(value)?).ok(),
            b"mtime" => {
                // "SECONDS[.FRACTION]"; a negative time is kept as 0.
                let secs = value.split(|&b| b == b'.').next().unwrap_or(&[]);
                ov.mtime = Some(decimal(secs).and_then(|s| i64::try_from(s).ok()).unwrap_or(0));
            }
            _ => {}
        }
        data = data.get(len..)?;
    }
    Some(())
}

/// Builds tar archives in memory (ustar headers, GNU long names and pax records when asked).
/// Used by tests and by tools that assemble image layers.
#[derive(Default)]
pub struct TarBuilder {
    out: Vec<u8>,
}

impl TarBuilder {
    /// An empty archive.
    pub fn new() -> Self {
        TarBuilder { out: Vec::new() }
    }

    /// Appends a raw header + data with the given typeflag; `name` and `link` must fit the
    /// 100-byte fields (use [`TarBuilder::gnu_long_name`] or [`TarBuilder::pax`] before it
    /// otherwise).
    pub fn raw(&mut self, typeflag: u8, name: &[u8], link: &[u8], mode: u32, data: &[u8]) -> &mut Self {
        let mut h = [0u8; BLOCK];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        write_octal(&mut h[100..108], u64::from(mode));
        write_octal(&mut h[108..116], 0);
        write_octal(&mut h[116..124], 0);
        write_octal(&mut h[124..136], data.len() as u64);
        write_octal(&mut h[136..148], 1_700_000_000);
        h[156] = typeflag;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        write_octal(&mut h[148..155], sum);
        h[155] = b' ';
        self.out.extend_from_slice(&h);
        self.out.extend_from_slice(data);
        let padded = data.len().div_ceil(BLOCK) * BLOCK;
        self.out.resize(self.out.len() + (padded - data.len()), 0);
        self
    }

    /// A regular file.
    pub fn file(&mut self, name: &[u8], mode: u32, data: &[u8]) -> &mut Self {
        self.raw(b'0', name, b"", mode, data)
    }

    /// A directory.
    pub fn dir(&mut self, name: &[u8], mode: u32) -> &mut Self {
        self.raw(b'5', name, b"", mode, b"")
    }

    /// A symbolic link.
    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.raw(b'2', name, target, 0o777, b"")
    }

    /// A hard link to an earlier member.
    pub fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.raw(b'1', name, target, 0o644, b"")
    }

    /// A GNU `L` record giving the next member's full name.
    pub fn gnu_long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut data = name.to_vec();
        data.push(0);
        self.raw(b'L', b"././@LongLink", b"", 0o644, &data)
    }

    /// A GNU `K` record giving the next member's full link target.
    pub fn gnu_long_link(&mut self, target: &[u8]) -> &mut Self {
        let mut data = target.to_vec();
        data.push(0);
        self.raw(b'K', b"././@LongLink", b"", 0o644, &data)
    }

    /// A pax `x` header with the given key/value records for the next member.
    pub fn pax(&mut self, records: &[(&[u8], &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut total = body + 1;
            while total != body + decimal_len(total) {
                total = body + decimal_len(total);
            }
            data.extend_from_slice(alloc::format!("{total} ").as_bytes());
            data.extend_from_slice(k);
            data.push(b'=');
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.raw(b'x', b"PaxHeaders/x", b"", 0o644, &data)
    }

    /// Appends the two zero blocks that end an archive and returns the bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = core::mem::take(&mut self.out);
        out.resize(out.len() + 2 * BLOCK, 0);
        out
    }
}

fn decimal_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

fn write_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let mut v = value;
    for i in (0..digits).rev() {
        field[i] = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    field[digits] = 0;
}
