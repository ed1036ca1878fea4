//! The in-memory filesystem: an inode table built from image layers, then changed by the
//! container.
//!
//! Regular files of a layer keep their bytes in the layer itself: a plain tar layer is
//! borrowed (`&'static [u8]`, typically a read-only mapping shared by several VMs), a gzip
//! layer is inflated once into a buffer the [`Fs`] owns. The first write to such a file copies
//! it into owned memory (copy-on-write); the layer bytes are never written.
//!
//! Owned memory (inflated layers, written file data and a fixed cost per inode) is counted
//! against a limit ([`Fs::with_limit`]); an operation that would pass it fails with
//! [`Errno::ENOSPC`] (or [`LayerError::NoSpace`] while applying a layer).
//!
//! Everything runs as root: read and write permission bits are not checked, but executing
//! needs an execute bit ([`Fs::check_exec`]).
//!
//! No-panic contract: every method checks its inputs (inode numbers, names, offsets, layer
//! bytes) and answers with an [`Errno`] or a [`LayerError`].

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use crate::gzip::{gunzip, GzipError};
use crate::linux::{self, dt, Stat, Timespec};
use crate::tar::{EntryKind, TarError, TarReader};
use crate::Errno;

/// Longest path accepted (`PATH_MAX` including the NUL).
pub const PATH_MAX: usize = 4096;
/// Longest file name (`NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Symbolic links followed during one resolution before [`Errno::ELOOP`] (Linux's limit).
pub const MAX_SYMLINKS: u32 = 40;
/// Bytes charged against the memory limit for each inode.
pub const INODE_COST_BYTES: usize = 256;
/// Default memory limit for owned data (see [`Fs::with_limit`]).
pub const DEFAULT_LIMIT_BYTES: usize = 64 * 1024 * 1024;
/// Largest file size.
pub const MAX_FILE_BYTES: u64 = 1 << 40;
/// The device number reported in `st_dev`.
pub const DEV: u64 = 0x2a;

/// An inode number. [`Ino::ROOT`] is the root directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ino(u32);

impl Ino {
    /// The root directory.
    pub const ROOT: Ino = Ino(1);

    /// The number reported in `st_ino` and `d_ino`.
    pub const fn get(self) -> u64 {
        self.0 as u64
    }

    fn slot(self) -> usize {
        (self.0 as usize).wrapping_sub(1)
    }
}

/// The kind of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

impl FileType {
    /// The `S_IF*` bits of `st_mode`.
    pub const fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => linux::S_IFREG,
            FileType::Dir => linux::S_IFDIR,
            FileType::Symlink => linux::S_IFLNK,
        }
    }

    /// The `d_type` of a `linux_dirent64`.
    pub const fn d_type(self) -> u8 {
        match self {
            FileType::Regular => dt::REG,
            FileType::Dir => dt::DIR,
            FileType::Symlink => dt::LNK,
        }
    }
}

/// How a layer's bytes are encoded: the ABI's own type (`LayerInfo::kind`), so the two cannot
/// drift apart. An uncompressed tar's file data is borrowed from it; a gzip-compressed one is
/// inflated into owned memory.
pub use crx_abi::LayerKind;

/// What applying one layer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Archive members read (after pax and long-name records are folded in).
    pub entries: u32,
    /// Regular files added.
    pub files: u32,
    /// Directories added or updated.
    pub dirs: u32,
    /// Symbolic links added.
    pub symlinks: u32,
    /// Hard links added.
    pub hardlinks: u32,
    /// `.wh.NAME` whiteouts applied.
    pub whiteouts: u32,
    /// `.wh..wh..opq` opaque markers applied.
    pub opaque_dirs: u32,
    /// Members skipped: devices, FIFOs and unknown types.
    pub skipped: u32,
    /// Bytes of regular file data in the layer.
    pub file_bytes: u64,
    /// Size of the inflated archive for a gzip layer (0 for plain tar).
    pub inflated_bytes: u64,
}

/// Why a layer could not be applied. The filesystem may hold part of the layer afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerError {
    /// The gzip stream is corrupt or truncated.
    Gzip(GzipError),
    /// The tar archive is corrupt or truncated.
    Tar(TarError),
    /// A member path has a `..` component or is too long (member header at `offset`).
    UnsafePath {
        /// Offset of the member's header in the (inflated) archive.
        offset: usize,
    },
    /// A parent of a member's path exists and is not a directory (or a symlink to one).
    NotADirectory {
        /// Offset of the member's header.
        offset: usize,
    },
    /// A hard link's target does not exist or is a directory.
    BadHardLink {
        /// Offset of the member's header.
        offset: usize,
    },
    /// The layer does not fit in the memory limit.
    NoSpace {
        /// The limit in bytes.
        limit_bytes: usize,
    },
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerError::Gzip(e) => write!(f, "corrupt layer: {e}"),
            LayerError::Tar(e) => write!(f, "corrupt layer: {e}"),
            LayerError::UnsafePath { offset } => {
                write!(f, "corrupt layer: member at byte {offset} has an unsafe or too long path")
            }
            LayerError::NotADirectory { offset } => {
                write!(f, "corrupt layer: a parent of the member at byte {offset} is not a directory")
            }
            LayerError::BadHardLink { offset } => {
                write!(f, "corrupt layer: hard link at byte {offset} names no earlier file")
            }
            LayerError::NoSpace { limit_bytes } => write!(
                f,
                "the image's files need more than the {limit_bytes} bytes of memory the filesystem may \
                 take: give the pod more memory"
            ),
        }
    }
}

impl From<TarError> for LayerError {
    fn from(e: TarError) -> Self {
        LayerError::Tar(e)
    }
}

impl From<GzipError> for LayerError {
    fn from(e: GzipError) -> Self {
        match e {
            GzipError::TooLarge { limit_bytes } => LayerError::NoSpace { limit_bytes },
            e => LayerError::Gzip(e),
        }
    }
}

/// One directory entry as [`Fs::readdir`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's inode.
    pub ino: Ino,
    /// The entry's type.
    pub kind: FileType,
    /// The name (`.` and `..` included).
    pub name: Vec<u8>,
    /// The cookie that continues the listing after this entry (`d_off`).
    pub next_cookie: u64,
}

/// Where a regular file's bytes are.
#[derive(Debug)]
enum Data {
    /// Borrowed from a plain tar layer.
    Static(&'static [u8]),
    /// Inside an inflated gzip layer owned by the [`Fs`].
    Inflated { layer: usize, start: usize, len: usize },
    /// Written by the container.
    Owned(Vec<u8>),
}

/// Directory contents. Entries carry a sequence number so readdir cookies stay valid while the
/// directory changes.
#[derive(Debug)]
struct Dir {
    parent: Ino,
    names: BTreeMap<Vec<u8>, (u64, Ino)>,
    order: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
}

/// Cookies 0..3 are: start, after ".", after "..".
const FIRST_SEQ: u64 = 3;

impl Dir {
    fn new(parent: Ino) -> Self {
        Dir { parent, names: BTreeMap::new(), order: BTreeMap::new(), next_seq: FIRST_SEQ }
    }

    fn get(&self, name: &[u8]) -> Option<Ino> {
        self.names.get(name).map(|&(_, ino)| ino)
    }

    fn insert(&mut self, name: &[u8], ino: Ino) {
        if let Some(entry) = self.names.get_mut(name) {
            entry.1 = ino;
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.names.insert(name.to_vec(), (seq, ino));
        self.order.insert(seq, name.to_vec());
    }

    fn remove(&mut self, name: &[u8]) -> Option<Ino> {
        let (seq, ino) = self.names.remove(name)?;
        self.order.remove(&seq);
        Some(ino)
    }
}

#[derive(Debug)]
enum Node {
    File(Data),
    Dir(Dir),
    Symlink(Vec<u8>),
}

#[derive(Debug)]
struct Inode {
    node: Node,
    perm: u32,
    uid: u32,
    gid: u32,
    atime: Timespec,
    mtime: Timespec,
    ctime: Timespec,
    nlink: u32,
    open: u32,
    /// The layer that last created or declared this inode (`u32::MAX` for run-time changes).
    layer: u32,
    /// Changes with every change of the inode (see [`Fs::data_version`]).
    version: u64,
}

impl Inode {
    fn kind(&self) -> FileType {
        match self.node {
            Node::File(_) => FileType::Regular,
            Node::Dir(_) => FileType::Dir,
            Node::Symlink(_) => FileType::Symlink,
        }
    }
}

/// Where tar member data lives while a layer is applied.
#[derive(Clone, Copy)]
enum Source {
    Static(&'static [u8]),
    Inflated(usize),
}

/// The filesystem. See the module documentation.
#[derive(Debug)]
pub struct Fs {
    inodes: Vec<Option<Inode>>,
    free: Vec<u32>,
    inflated: Vec<Box<[u8]>>,
    used_bytes: usize,
    limit_bytes: usize,
    now: Timespec,
    layers: u32,
    /// The next inode version; never handed out twice.
    next_version: u64,
}

impl Default for Fs {
    fn default() -> Self {
        Self::new()
    }
}

fn valid_name(name: &[u8]) -> Result<(), Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Errno::ENOENT);
    }
    Ok(())
}

fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

impl Fs {
    /// An empty filesystem (a root directory, mode 0755) with the default memory limit.
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_LIMIT_BYTES)
    }

    /// An empty filesystem whose owned data may use at most `limit_bytes`.
    pub fn with_limit(limit_bytes: usize) -> Self {
        let root = Inode {
            node: Node::Dir(Dir::new(Ino::ROOT)),
            perm: 0o755,
            uid: 0,
            gid: 0,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            nlink: 2,
            open: 0,
            layer: 0,
            version: 1,
        };
        Fs {
            inodes: alloc::vec![Some(root)],
            free: Vec::new(),
            inflated: Vec::new(),
            used_bytes: INODE_COST_BYTES,
            limit_bytes,
            now: Timespec::default(),
            layers: 0,
            next_version: 2,
        }
    }

    /// Sets the clock used for the times of changed inodes (the filesystem reads no clock).
    pub fn set_time(&mut self, now: Timespec) {
        self.now = now;
    }

    /// Owned bytes in use (inflated layers, written data, inodes).
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// The memory limit.
    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    fn charge(&mut self, bytes: usize) -> Result<(), Errno> {
        let total = self.used_bytes.checked_add(bytes).ok_or(Errno::ENOSPC)?;
        if total > self.limit_bytes {
            return Err(Errno::ENOSPC);
        }
        self.used_bytes = total;
        Ok(())
    }

    fn refund(&mut self, bytes: usize) {
        self.used_bytes = self.used_bytes.saturating_sub(bytes);
    }

    fn inode(&self, ino: Ino) -> Result<&Inode, Errno> {
        self.inodes.get(ino.slot()).and_then(Option::as_ref).ok_or(Errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: Ino) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(ino.slot()).and_then(Option::as_mut).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: Ino) -> Result<&Dir, Errno> {
        match &self.inode(ino)?.node {
            Node::Dir(d) => Ok(d),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut Dir, Errno> {
        match &mut self.inode_mut(ino)?.node {
            Node::Dir(d) => Ok(d),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn bump_version(&mut self) -> u64 {
        let v = self.next_version;
        self.next_version = v.wrapping_add(1);
        v
    }

    fn alloc(&mut self, node: Node, perm: u32, layer: u32) -> Result<Ino, Errno> {
        self.charge(INODE_COST_BYTES)?;
        let now = self.now;
        let version = self.bump_version();
        let inode = Inode {
            nlink: if matches!(node, Node::Dir(_)) { 2 } else { 1 },
            node,
            perm: perm & 0o7777,
            uid: 0,
            gid: 0,
            atime: now,
            mtime: now,
            ctime: now,
            open: 0,
            layer,
            version,
        };
        if let Some(slot) = self.free.pop() {
            if let Some(s) = self.inodes.get_mut(slot as usize) {
                *s = Some(inode);
                return Ok(Ino(slot + 1));
            }
        }
        let slot = u32::try_from(self.inodes.len()).map_err(|_| Errno::ENOSPC)?;
        if slot == u32::MAX {
            self.refund(INODE_COST_BYTES);
            return Err(Errno::ENOSPC);
        }
        self.inodes.push(Some(inode));
        Ok(Ino(slot + 1))
    }

    /// Frees an inode that has no links and no open descriptions left.
    fn maybe_free(&mut self, ino: Ino) {
        let Ok(inode) = self.inode(ino) else { return };
        if inode.nlink > 0 || inode.open > 0 || ino == Ino::ROOT {
            return;
        }
        let owned = match &inode.node {
            Node::File(Data::Owned(v)) => v.capacity(),
            _ => 0,
        };
        if let Some(slot) = self.inodes.get_mut(ino.slot()) {
            *slot = None;
        }
        self.free.push(ino.0 - 1);
        self.refund(owned + INODE_COST_BYTES);
    }

    // ----- layers --------------------------------------------------------------------------

    /// Applies one image layer on top of the current tree (layers are applied lowest first).
    ///
    /// Plain tar file data stays in `bytes` (zero-copy); a gzip layer is inflated into a
    /// buffer the filesystem owns and counts against the memory limit. `.wh.NAME` members
    /// delete `NAME` of lower layers, `.wh..wh..opq` hides everything lower in its directory;
    /// a member replaces what a lower layer had at its path (directories merge). Modes, owners
    /// and modification times are kept. On error the tree may hold part of the layer.
    pub fn apply_layer(&mut self, bytes: &'static [u8], kind: LayerKind) -> Result<LayerStats, LayerError> {
        let layer = self.layers.saturating_add(1);
        self.layers = layer;
        let mut stats = LayerStats::default();
        match kind {
            LayerKind::Tar => self.apply_tar(bytes, Source::Static(bytes), layer, &mut stats)?,
            LayerKind::TarGzip => {
                let remaining = self.limit_bytes.saturating_sub(self.used_bytes);
                let inflated = gunzip(bytes, remaining)?;
                let limit_bytes = self.limit_bytes;
                self.charge(inflated.capacity()).map_err(|_| LayerError::NoSpace { limit_bytes })?;
                stats.inflated_bytes = inflated.len() as u64;
                let buf = inflated.into_boxed_slice();
                let index = self.inflated.len();
                let result = self.apply_tar(&buf, Source::Inflated(index), layer, &mut stats);
                // Kept even on error: inodes made before the error refer to it.
                self.inflated.push(buf);
                result?;
            }
        }
        Ok(stats)
    }

    fn apply_tar(
        &mut self,
        archive: &[u8],
        src: Source,
        layer: u32,
        stats: &mut LayerStats,
    ) -> Result<(), LayerError> {
        let limit_bytes = self.limit_bytes;
        // Inode allocation fails only when the memory limit is reached.
        let no_space = |_: Errno| LayerError::NoSpace { limit_bytes };
        let mut reader = TarReader::new(archive);
        while let Some(entry) = reader.next_entry()? {
            stats.entries += 1;
            let offset = entry.header_offset;
            let comps = layer_components(&entry.path).ok_or(LayerError::UnsafePath { offset })?;
            let Some((&last, parents)) = comps.split_last() else {
                // The root itself ("./"): take its metadata.
                if entry.kind == EntryKind::Dir {
                    if let Ok(root) = self.inode_mut(Ino::ROOT) {
                        root.perm = entry.mode;
                        root.uid = entry.uid;
                        root.gid = entry.gid;
                        root.mtime = Timespec { sec: entry.mtime, nsec: 0 };
                    }
                    stats.dirs += 1;
                }
                continue;
            };
            let dir = self.layer_dir(parents, layer, offset)?;
            if last == b".wh..wh..opq" {
                self.prune_lower(dir, layer);
                stats.opaque_dirs += 1;
                continue;
            }
            if let Some(name) = last.strip_prefix(b".wh.") {
                if name.is_empty() || is_dot(name) {
                    return Err(LayerError::UnsafePath { offset });
                }
                let lower = self
                    .dir(dir)
                    .ok()
                    .and_then(|d| d.get(name))
                    .and_then(|i| self.inode(i).ok())
                    .is_some_and(|i| i.layer < layer);
                if lower {
                    self.remove_tree(dir, name);
                }
                stats.whiteouts += 1;
                continue;
            }
            let existing = self.dir(dir).ok().and_then(|d| d.get(last));
            let mtime = Timespec { sec: entry.mtime, nsec: 0 };
            let ino = match entry.kind {
                EntryKind::Dir => {
                    stats.dirs += 1;
                    match existing {
                        Some(e) if self.inode(e).is_ok_and(|i| i.kind() == FileType::Dir) => e,
                        _ => {
                            if existing.is_some() {
                                self.remove_tree(dir, last);
                            }
                            let new =
                                self.alloc(Node::Dir(Dir::new(dir)), entry.mode, layer).map_err(no_space)?;
                            self.link_into(dir, last, new);
                            new
                        }
                    }
                }
                EntryKind::File => {
                    let data = match src {
                        Source::Static(all) => Data::Static(
                            all.get(entry.data_offset..entry.data_offset + entry.data.len()).unwrap_or(&[]),
                        ),
                        Source::Inflated(layer) => {
                            Data::Inflated { layer, start: entry.data_offset, len: entry.data.len() }
                        }
                    };
                    stats.files += 1;
                    stats.file_bytes += entry.data.len() as u64;
                    if existing.is_some() {
                        self.remove_tree(dir, last);
                    }
                    let new = self.alloc(Node::File(data), entry.mode, layer).map_err(no_space)?;
                    self.link_into(dir, last, new);
                    new
                }
                EntryKind::Symlink => {
                    stats.symlinks += 1;
                    if existing.is_some() {
                        self.remove_tree(dir, last);
                    }
                    let new =
                        self.alloc(Node::Symlink(entry.link.clone()), 0o777, layer).map_err(no_space)?;
                    self.link_into(dir, last, new);
                    new
                }
                EntryKind::HardLink => {
                    let target_comps =
                        layer_components(&entry.link).ok_or(LayerError::BadHardLink { offset })?;
                    let target = self.layer_find(&target_comps).ok_or(LayerError::BadHardLink { offset })?;
                    if self.inode(target).map(|i| i.kind() == FileType::Dir).unwrap_or(true) {
                        return Err(LayerError::BadHardLink { offset });
                    }
                    stats.hardlinks += 1;
                    if existing == Some(target) {
                        continue;
                    }
                    if existing.is_some() {
                        self.remove_tree(dir, last);
                    }
                    self.link_into(dir, last, target);
                    if let Ok(i) = self.inode_mut(target) {
                        i.nlink += 1;
                        i.layer = layer;
                    }
                    // A hard link shares the target's metadata; the member's own is ignored.
                    continue;
                }
                EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo | EntryKind::Other(_) => {
                    stats.skipped += 1;
                    continue;
                }
            };
            if let Ok(i) = self.inode_mut(ino) {
                i.perm = if i.kind() == FileType::Symlink { 0o777 } else { entry.mode };
                i.uid = entry.uid;
                i.gid = entry.gid;
                i.mtime = mtime;
                i.ctime = mtime;
                i.atime = mtime;
                i.layer = layer;
            }
        }
        Ok(())
    }

    /// Adds a directory entry (the caller adjusts the target's link count for hard links).
    fn link_into(&mut self, dir: Ino, name: &[u8], ino: Ino) {
        let is_dir = self.inode(ino).is_ok_and(|i| i.kind() == FileType::Dir);
        if let Ok(d) = self.dir_mut(dir) {
            d.insert(name, ino);
        }
        if is_dir {
            if let Ok(d) = self.dir_mut(ino) {
                d.parent = dir;
            }
            if let Ok(p) = self.inode_mut(dir) {
                p.nlink += 1;
            }
        }
    }

    /// Walks (creating missing directories) to the directory that holds a layer member.
    /// Symbolic links among the parents are followed inside the tree.
    fn layer_dir(&mut self, parents: &[&[u8]], layer: u32, offset: usize) -> Result<Ino, LayerError> {
        let mut cur = Ino::ROOT;
        for &comp in parents {
            let child = self.dir(cur).ok().and_then(|d| d.get(comp));
            cur = match child {
                None => {
                    let limit_bytes = self.limit_bytes;
                    let new = self
                        .alloc(Node::Dir(Dir::new(cur)), 0o755, layer)
                        .map_err(|_| LayerError::NoSpace { limit_bytes })?;
                    self.link_into(cur, comp, new);
                    new
                }
                Some(c) => match self.inode(c).map(Inode::kind) {
                    Ok(FileType::Dir) => c,
                    Ok(FileType::Symlink) => match self.lookup(cur, comp, true) {
                        Ok(t) if self.dir(t).is_ok() => t,
                        _ => return Err(LayerError::NotADirectory { offset }),
                    },
                    _ => return Err(LayerError::NotADirectory { offset }),
                },
            };
        }
        Ok(cur)
    }

    /// Finds a hard link's target: parents may be symlinks, the last component is not followed.
    fn layer_find(&self, comps: &[&[u8]]) -> Option<Ino> {
        let (&last, parents) = comps.split_last()?;
        let mut cur = Ino::ROOT;
        for &comp in parents {
            cur = self.lookup(cur, comp, true).ok()?;
        }
        self.dir(cur).ok()?.get(last)
    }

    /// Removes from `dir` everything that came from layers below `layer`, keeping
    /// directories that still hold something of `layer`. Iterative: layer trees can be deep.
    fn prune_lower(&mut self, dir: Ino, layer: u32) {
        // Pre-order list of the directories below `dir`; processed in reverse, every
        // directory is handled after all of its subdirectories.
        let mut dirs = alloc::vec![dir];
        let mut i = 0;
        while let Some(&d) = dirs.get(i) {
            if let Ok(entries) = self.dir(d) {
                let subdirs: Vec<Ino> = entries
                    .names
                    .values()
                    .map(|&(_, c)| c)
                    .filter(|&c| self.inode(c).is_ok_and(|n| n.kind() == FileType::Dir))
                    .collect();
                dirs.extend(subdirs);
            }
            i += 1;
        }
        let mut kept: BTreeMap<Ino, bool> = BTreeMap::new();
        for &d in dirs.iter().rev() {
            let children: Vec<(Vec<u8>, Ino)> = match self.dir(d) {
                Ok(entries) => entries.names.iter().map(|(n, &(_, c))| (n.clone(), c)).collect(),
                Err(_) => continue,
            };
            let mut any = false;
            for (name, child) in children {
                let child_layer = self.inode(child).map(|n| n.layer).unwrap_or(0);
                if kept.get(&child).copied().unwrap_or(false) || child_layer >= layer {
                    any = true;
                } else {
                    self.remove_tree(d, &name);
                }
            }
            kept.insert(d, any);
        }
    }

    /// Unlinks `dir/name`, with everything below it for a directory. Iterative.
    fn remove_tree(&mut self, dir: Ino, name: &[u8]) {
        let Some(child) = self.dir_mut(dir).ok().and_then(|d| d.remove(name)) else { return };
        let is_dir = self.inode(child).is_ok_and(|i| i.kind() == FileType::Dir);
        if !is_dir {
            if let Ok(c) = self.inode_mut(child) {
                c.nlink = c.nlink.saturating_sub(1);
            }
            self.maybe_free(child);
            return;
        }
        if let Ok(p) = self.inode_mut(dir) {
            p.nlink = p.nlink.saturating_sub(1);
        }
        let mut pending = alloc::vec![child];
        while let Some(d) = pending.pop() {
            let entries: Vec<Ino> = match self.dir_mut(d) {
                Ok(entries) => {
                    entries.order.clear();
                    core::mem::take(&mut entries.names).into_values().map(|(_, c)| c).collect()
                }
                Err(_) => Vec::new(),
            };
            for e in entries {
                if self.inode(e).is_ok_and(|i| i.kind() == FileType::Dir) {
                    pending.push(e);
                } else {
                    if let Ok(c) = self.inode_mut(e) {
                        c.nlink = c.nlink.saturating_sub(1);
                    }
                    self.maybe_free(e);
                }
            }
            if let Ok(c) = self.inode_mut(d) {
                c.nlink = 0;
            }
            self.maybe_free(d);
        }
    }

    // ----- path resolution -----------------------------------------------------------------

    /// Resolves `path` relative to `cwd` (absolute paths start at the root). Symbolic links
    /// are followed in every component, and in the last one when `follow_last` (or when the
    /// path ends with `/`, which also requires a directory). `..` of the root is the root.
    ///
    /// Errors: `ENOENT` (missing, empty path, dangling link), `ENOTDIR` (a non-directory used
    /// as one), `ELOOP` (more than [`MAX_SYMLINKS`] links), `ENAMETOOLONG` (path of
    /// [`PATH_MAX`] bytes or more, or a component longer than [`NAME_MAX`]).
    pub fn lookup(&self, cwd: Ino, path: &[u8], follow_last: bool) -> Result<Ino, Errno> {
        if path.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let trailing_slash = path.last() == Some(&b'/');
        let follow_last = follow_last || trailing_slash;
        let mut cur = if path.first() == Some(&b'/') { Ino::ROOT } else { cwd };
        self.dir(cur)?;
        // Pending components, last one first.
        let mut stack: Vec<Vec<u8>> = Vec::new();
        push_components(&mut stack, path)?;
        let mut links = 0u32;
        while let Some(comp) = stack.pop() {
            let dir = self.dir(cur)?;
            if comp == b"." {
                continue;
            }
            if comp == b".." {
                cur = dir.parent;
                continue;
            }
            let child = dir.get(&comp).ok_or(Errno::ENOENT)?;
            let is_last = stack.is_empty();
            if let Node::Symlink(target) = &self.inode(child)?.node {
                if !is_last || follow_last {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::ELOOP);
                    }
                    if target.is_empty() {
                        return Err(Errno::ENOENT);
                    }
                    if target.first() == Some(&b'/') {
                        cur = Ino::ROOT;
                    }
                    push_components(&mut stack, target)?;
                    continue;
                }
            }
            cur = child;
        }
        if trailing_slash {
            self.dir(cur)?;
        }
        Ok(cur)
    }

    /// Splits `path` into the directory that holds its last component (resolved, following
    /// links) and that component's name. `"a/b/"` gives `("a", "b")`; `"/"` gives
    /// `(root, ".")`. Errors as [`Fs::lookup`] for the directory part.
    pub fn lookup_parent(&self, cwd: Ino, path: &[u8]) -> Result<(Ino, Vec<u8>), Errno> {
        if path.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let mut end = path.len();
        while end > 1 && path.get(end - 1) == Some(&b'/') {
            end -= 1;
        }
        let trimmed = path.get(..end).unwrap_or(&[]);
        if trimmed == b"/" {
            return Ok((Ino::ROOT, b".".to_vec()));
        }
        let (dir, name) = match trimmed.iter().rposition(|&b| b == b'/') {
            Some(0) => (Ino::ROOT, trimmed.get(1..).unwrap_or(&[])),
            Some(i) => {
                let d = self.lookup(cwd, trimmed.get(..i).unwrap_or(&[]), true)?;
                (d, trimmed.get(i + 1..).unwrap_or(&[]))
            }
            None => (cwd, trimmed),
        };
        self.dir(dir)?;
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok((dir, name.to_vec()))
    }

    /// The absolute path of a directory (for `getcwd`).
    pub fn path_of(&self, dir: Ino) -> Result<Vec<u8>, Errno> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut cur = dir;
        let mut guard = 0usize;
        while cur != Ino::ROOT {
            let parent = self.dir(cur)?.parent;
            let name = self
                .dir(parent)?
                .names
                .iter()
                .find(|(_, &(_, i))| i == cur)
                .map(|(n, _)| n.clone())
                .ok_or(Errno::ENOENT)?;
            parts.push(name);
            cur = parent;
            guard += 1;
            if guard > PATH_MAX {
                return Err(Errno::ENAMETOOLONG);
            }
        }
        let mut out = Vec::new();
        for p in parts.iter().rev() {
            out.push(b'/');
            out.extend_from_slice(p);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        if out.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(out)
    }

    // ----- inode operations ----------------------------------------------------------------

    /// The inode's type.
    pub fn file_type(&self, ino: Ino) -> Result<FileType, Errno> {
        Ok(self.inode(ino)?.kind())
    }

    /// Status of an inode.
    pub fn stat(&self, ino: Ino) -> Result<Stat, Errno> {
        let i = self.inode(ino)?;
        let size = match &i.node {
            Node::File(d) => self.data(d).len() as u64,
            Node::Dir(_) => 4096,
            Node::Symlink(t) => t.len() as u64,
        };
        Ok(Stat {
            dev: DEV,
            ino: ino.get(),
            mode: i.kind().mode_bits() | i.perm,
            nlink: i.nlink,
            uid: i.uid,
            gid: i.gid,
            rdev: 0,
            size,
            blksize: 4096,
            blocks: size.div_ceil(512),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
        })
    }

    fn data<'s>(&'s self, d: &'s Data) -> &'s [u8] {
        match d {
            Data::Static(s) => s,
            Data::Inflated { layer, start, len } => self
                .inflated
                .get(*layer)
                .and_then(|b| b.get(*start..start.saturating_add(*len)))
                .unwrap_or(&[]),
            Data::Owned(v) => v,
        }
    }

    /// The whole content of a regular file, without copying (for the ELF loader and
    /// file-backed mappings). `EISDIR` for directories, `EINVAL` for symlinks.
    pub fn contents(&self, ino: Ino) -> Result<&[u8], Errno> {
        match &self.inode(ino)?.node {
            Node::File(d) => Ok(self.data(d)),
            Node::Dir(_) => Err(Errno::EISDIR),
            Node::Symlink(_) => Err(Errno::EINVAL),
        }
    }

    /// Reads from a regular file at `offset`; returns the bytes copied (0 at or past the end).
    pub fn read(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let data = self.contents(ino)?;
        let Ok(start) = usize::try_from(offset) else { return Ok(0) };
        let Some(src) = data.get(start..) else { return Ok(0) };
        let n = src.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    /// Makes a file's data owned (copy-on-write) and resizes it to `new_len` if that is
    /// larger. Charges the memory limit.
    fn owned_data(&mut self, ino: Ino, min_len: usize) -> Result<&mut Vec<u8>, Errno> {
        let (cur_len, cur_cap, owned) = match &self.inode(ino)?.node {
            Node::File(Data::Owned(v)) => (v.len(), v.capacity(), true),
            Node::File(d) => (self.data(d).len(), 0, false),
            Node::Dir(_) => return Err(Errno::EISDIR),
            Node::Symlink(_) => return Err(Errno::EINVAL),
        };
        let want = cur_len.max(min_len);
        if !owned || want > cur_cap {
            // Grow geometrically for appends, but never past what the limit allows.
            let new_cap = if owned { want.max(cur_cap.saturating_mul(2)).max(64) } else { want };
            let remaining = self.limit_bytes.saturating_sub(self.used_bytes) + cur_cap;
            let new_cap = new_cap.min(remaining).max(want);
            self.charge(new_cap.saturating_sub(cur_cap))?;
            let mut v: Vec<u8> = Vec::new();
            if v.try_reserve_exact(new_cap).is_err() {
                self.refund(new_cap.saturating_sub(cur_cap));
                return Err(Errno::ENOSPC);
            }
            if let Ok(i) = self.inode(ino) {
                if let Node::File(d) = &i.node {
                    v.extend_from_slice(self.data(d));
                }
            }
            if let Ok(i) = self.inode_mut(ino) {
                i.node = Node::File(Data::Owned(v));
            }
        }
        match &mut self.inode_mut(ino)?.node {
            Node::File(Data::Owned(v)) => {
                if v.len() < min_len {
                    v.resize(min_len, 0);
                }
                Ok(v)
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// Writes `data` at `offset` (a gap before it reads as zeros). The first write copies
    /// layer data into owned memory. `ENOSPC` past the memory limit, `EISDIR` for
    /// directories.
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        if self.inode(ino)?.kind() == FileType::Dir {
            return Err(Errno::EISDIR);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EINVAL)?;
        if end > MAX_FILE_BYTES {
            return Err(Errno::ENOSPC);
        }
        let start = usize::try_from(offset).map_err(|_| Errno::ENOSPC)?;
        let end = usize::try_from(end).map_err(|_| Errno::ENOSPC)?;
        let v = self.owned_data(ino, end)?;
        if let Some(dst) = v.get_mut(start..end) {
            dst.copy_from_slice(data);
        }
        self.touch(ino);
        Ok(data.len())
    }

    /// Sets a regular file's length (zero-filling when it grows).
    pub fn truncate(&mut self, ino: Ino, len: u64) -> Result<(), Errno> {
        if len > MAX_FILE_BYTES {
            return Err(Errno::EINVAL);
        }
        let len = usize::try_from(len).map_err(|_| Errno::EINVAL)?;
        let cur = self.contents(ino)?.len();
        if len == cur {
            return Ok(());
        }
        if len == 0 {
            let freed = match &self.inode(ino)?.node {
                Node::File(Data::Owned(v)) => v.capacity(),
                _ => 0,
            };
            self.refund(freed);
            if let Ok(i) = self.inode_mut(ino) {
                i.node = Node::File(Data::Owned(Vec::new()));
            }
        } else if len < cur {
            let shrink_borrowed = match &self.inode(ino)?.node {
                Node::File(Data::Static(s)) => Some(Data::Static(s.get(..len).unwrap_or(&[]))),
                Node::File(Data::Inflated { layer, start, .. }) => {
                    Some(Data::Inflated { layer: *layer, start: *start, len })
                }
                _ => None,
            };
            match shrink_borrowed {
                Some(d) => self.inode_mut(ino)?.node = Node::File(d),
                None => self.owned_data(ino, 0)?.truncate(len),
            }
        } else {
            self.owned_data(ino, len)?;
        }
        self.touch(ino);
        Ok(())
    }

    fn touch(&mut self, ino: Ino) {
        let now = self.now;
        let version = self.bump_version();
        if let Ok(i) = self.inode_mut(ino) {
            i.mtime = now;
            i.ctime = now;
            i.layer = u32::MAX;
            i.version = version;
        }
    }

    /// A number that names the inode's current contents: it changes with every write,
    /// truncation or other change of the inode, and no two inodes (even one freed and one
    /// created later in its slot) ever have the same one. A cache of file pages keyed by it
    /// can never hand out stale bytes.
    pub fn data_version(&self, ino: Ino) -> Result<u64, Errno> {
        Ok(self.inode(ino)?.version)
    }

    fn check_new(&self, dir: Ino, name: &[u8]) -> Result<(), Errno> {
        if is_dot(name) {
            return Err(Errno::EEXIST);
        }
        valid_name(name)?;
        if self.dir(dir)?.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        Ok(())
    }

    fn add_new(&mut self, dir: Ino, name: &[u8], node: Node, perm: u32) -> Result<Ino, Errno> {
        self.check_new(dir, name)?;
        let ino = self.alloc(node, perm, u32::MAX)?;
        self.link_into(dir, name, ino);
        self.touch(dir);
        Ok(ino)
    }

    /// Creates an empty regular file `dir/name` with permission bits `mode & 0o7777`.
    /// `EEXIST` if the name exists, `ENOTDIR` if `dir` is not a directory.
    pub fn create(&mut self, dir: Ino, name: &[u8], mode: u32) -> Result<Ino, Errno> {
        self.add_new(dir, name, Node::File(Data::Owned(Vec::new())), mode)
    }

    /// Creates a directory `dir/name`.
    pub fn mkdir(&mut self, dir: Ino, name: &[u8], mode: u32) -> Result<Ino, Errno> {
        self.add_new(dir, name, Node::Dir(Dir::new(dir)), mode)
    }

    /// Creates a symbolic link `dir/name` pointing at `target` (not checked).
    pub fn symlink(&mut self, dir: Ino, name: &[u8], target: &[u8]) -> Result<Ino, Errno> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        self.add_new(dir, name, Node::Symlink(target.to_vec()), 0o777)
    }

    /// Adds a hard link `dir/name` to `ino` (`EPERM` for directories).
    pub fn link(&mut self, ino: Ino, dir: Ino, name: &[u8]) -> Result<(), Errno> {
        if self.inode(ino)?.kind() == FileType::Dir {
            return Err(Errno::EPERM);
        }
        self.check_new(dir, name)?;
        self.link_into(dir, name, ino);
        let now = self.now;
        let i = self.inode_mut(ino)?;
        i.nlink += 1;
        i.ctime = now;
        self.touch(dir);
        Ok(())
    }

    /// The target of a symbolic link (`EINVAL` for other inodes).
    pub fn readlink(&self, ino: Ino) -> Result<&[u8], Errno> {
        match &self.inode(ino)?.node {
            Node::Symlink(t) => Ok(t),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Removes the non-directory `dir/name` (`EISDIR` for a directory). The inode lives on
    /// while it is open ([`Fs::retain`]).
    pub fn unlink(&mut self, dir: Ino, name: &[u8]) -> Result<(), Errno> {
        if is_dot(name) {
            return Err(Errno::EISDIR);
        }
        valid_name(name)?;
        let child = self.dir(dir)?.get(name).ok_or(Errno::ENOENT)?;
        if self.inode(child)?.kind() == FileType::Dir {
            return Err(Errno::EISDIR);
        }
        self.remove_tree(dir, name);
        self.touch(dir);
        Ok(())
    }

    /// Removes the empty directory `dir/name`: `ENOTDIR` if it is not a directory,
    /// `ENOTEMPTY` if it has entries, `EINVAL` for `.`, `ENOTEMPTY` for `..`.
    pub fn rmdir(&mut self, dir: Ino, name: &[u8]) -> Result<(), Errno> {
        if name == b"." {
            return Err(Errno::EINVAL);
        }
        if name == b".." {
            return Err(Errno::ENOTEMPTY);
        }
        valid_name(name)?;
        let child = self.dir(dir)?.get(name).ok_or(Errno::ENOENT)?;
        if !self.dir(child)?.names.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        self.remove_tree(dir, name);
        self.touch(dir);
        Ok(())
    }

    /// Renames `odir/oname` to `ndir/nname`, replacing a compatible target: a file replaces a
    /// file (`EISDIR` onto a directory), a directory replaces an empty directory (`ENOTDIR`
    /// onto a file, `ENOTEMPTY` onto a non-empty one). Moving a directory into itself is
    /// `EINVAL`; `.` and `..` are `EINVAL`.
    pub fn rename(&mut self, odir: Ino, oname: &[u8], ndir: Ino, nname: &[u8]) -> Result<(), Errno> {
        if is_dot(oname) || is_dot(nname) {
            return Err(Errno::EINVAL);
        }
        valid_name(oname)?;
        valid_name(nname)?;
        let src = self.dir(odir)?.get(oname).ok_or(Errno::ENOENT)?;
        let dst = self.dir(ndir)?.get(nname);
        if dst == Some(src) {
            return Ok(());
        }
        let src_is_dir = self.inode(src)?.kind() == FileType::Dir;
        if src_is_dir {
            // ndir must not be src or below it.
            let mut cur = ndir;
            loop {
                if cur == src {
                    return Err(Errno::EINVAL);
                }
                if cur == Ino::ROOT {
                    break;
                }
                cur = self.dir(cur)?.parent;
            }
        }
        if let Some(d) = dst {
            let dst_is_dir = self.inode(d)?.kind() == FileType::Dir;
            match (src_is_dir, dst_is_dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !self.dir(d)?.names.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            self.remove_tree(ndir, nname);
        }
        self.dir_mut(odir)?.remove(oname);
        if src_is_dir {
            if let Ok(p) = self.inode_mut(odir) {
                p.nlink = p.nlink.saturating_sub(1);
            }
        }
        self.link_into(ndir, nname, src);
        self.touch(odir);
        self.touch(ndir);
        Ok(())
    }

    /// Sets the permission bits (`mode & 0o7777`).
    pub fn chmod(&mut self, ino: Ino, mode: u32) -> Result<(), Errno> {
        let now = self.now;
        let i = self.inode_mut(ino)?;
        if i.kind() != FileType::Symlink {
            i.perm = mode & 0o7777;
        }
        i.ctime = now;
        Ok(())
    }

    /// Sets owner and group (`None` keeps the current value).
    pub fn chown(&mut self, ino: Ino, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
        let now = self.now;
        let i = self.inode_mut(ino)?;
        if let Some(u) = uid {
            i.uid = u;
        }
        if let Some(g) = gid {
            i.gid = g;
        }
        i.ctime = now;
        Ok(())
    }

    /// Sets access and modification times (`None` keeps the current value).
    pub fn set_times(
        &mut self,
        ino: Ino,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
    ) -> Result<(), Errno> {
        let now = self.now;
        let i = self.inode_mut(ino)?;
        if let Some(a) = atime {
            i.atime = a;
        }
        if let Some(m) = mtime {
            i.mtime = m;
        }
        i.ctime = now;
        Ok(())
    }

    /// `Ok` if `ino` may be executed: a regular file with at least one execute bit.
    /// `EACCES` for directories, symlinks and files without an execute bit (root still needs
    /// one, as on Linux).
    pub fn check_exec(&self, ino: Ino) -> Result<(), Errno> {
        let i = self.inode(ino)?;
        if i.kind() != FileType::Regular || i.perm & 0o111 == 0 {
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    /// True when [`Fs::check_exec`] passes.
    pub fn is_executable(&self, ino: Ino) -> bool {
        self.check_exec(ino).is_ok()
    }

    /// `access(2)` for root: existence, plus an execute bit when `mode & 1` (X_OK) is asked
    /// for a non-directory. `EINVAL` for mode bits other than R_OK|W_OK|X_OK.
    pub fn access(&self, ino: Ino, mode: u32) -> Result<(), Errno> {
        if mode & !7 != 0 {
            return Err(Errno::EINVAL);
        }
        let i = self.inode(ino)?;
        if mode & 1 != 0 && i.kind() == FileType::Regular && i.perm & 0o111 == 0 {
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    /// Notes one more open description of `ino`, which keeps it alive after its last unlink.
    pub fn retain(&mut self, ino: Ino) -> Result<(), Errno> {
        let i = self.inode_mut(ino)?;
        i.open = i.open.saturating_add(1);
        Ok(())
    }

    /// Drops an open description noted by [`Fs::retain`]; frees an unlinked inode.
    pub fn release(&mut self, ino: Ino) {
        if let Ok(i) = self.inode_mut(ino) {
            i.open = i.open.saturating_sub(1);
        }
        self.maybe_free(ino);
    }

    /// Lists a directory from `cookie` (0 = the start): `.`, `..`, then the entries in
    /// creation order. At most `max` entries are returned; each carries the cookie that
    /// continues after it. Cookies stay valid while the directory changes (removed entries
    /// are skipped, entries added later appear at the end).
    pub fn readdir(&self, dir: Ino, cookie: u64, max: usize) -> Result<Vec<DirEntry>, Errno> {
        let d = self.dir(dir)?;
        let mut out = Vec::new();
        if cookie == 0 && out.len() < max {
            out.push(DirEntry { ino: dir, kind: FileType::Dir, name: b".".to_vec(), next_cookie: 1 });
        }
        if cookie <= 1 && out.len() < max {
            out.push(DirEntry { ino: d.parent, kind: FileType::Dir, name: b"..".to_vec(), next_cookie: 2 });
        }
        for (&seq, name) in d.order.range(cookie.max(FIRST_SEQ)..) {
            if out.len() >= max {
                break;
            }
            let Some(ino) = d.get(name) else { continue };
            let kind = self.inode(ino)?.kind();
            out.push(DirEntry { ino, kind, name: name.clone(), next_cookie: seq + 1 });
        }
        Ok(out)
    }

    /// Fills `buf` with `linux_dirent64` records from `*cookie` on and advances `*cookie`
    /// past them. Returns the bytes written (0 at the end); `EINVAL` when `buf` cannot hold
    /// even the next record.
    pub fn getdents64(&self, dir: Ino, cookie: &mut u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut written = 0usize;
        loop {
            let batch = self.readdir(dir, *cookie, 32)?;
            if batch.is_empty() {
                return Ok(written);
            }
            for e in batch {
                let rest = buf.get_mut(written..).unwrap_or(&mut []);
                match linux::encode_dirent64(rest, e.ino.get(), e.next_cookie, e.kind.d_type(), &e.name) {
                    Some(n) => {
                        written += n;
                        *cookie = e.next_cookie;
                    }
                    None if written == 0 => return Err(Errno::EINVAL),
                    None => return Ok(written),
                }
            }
        }
    }
}

/// Pushes the components of `path` onto `stack` so that the first is popped first.
fn push_components(stack: &mut Vec<Vec<u8>>, path: &[u8]) -> Result<(), Errno> {
    let start = stack.len();
    for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if comp.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        stack.push(comp.to_vec());
    }
    if let Some(new) = stack.get_mut(start..) {
        new.reverse();
    }
    Ok(())
}

/// Normalises a layer member path: leading `/` and `./` dropped, `.` and empty components
/// skipped. `None` for a `..` component, an over-long name or path, or a NUL byte.
fn layer_components(path: &[u8]) -> Option<Vec<&[u8]>> {
    if path.len() >= PATH_MAX {
        return None;
    }
    let mut out = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return None,
            c if c.len() > NAME_MAX || c.contains(&0) => return None,
            c => out.push(c),
        }
    }
    Some(out)
}
