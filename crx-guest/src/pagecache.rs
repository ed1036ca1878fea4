//! The pod's page cache: frames holding pages of files, shared by every mapping of the same
//! file page (programs, their interpreter and libraries mapped by every process of the pod),
//! and the handles of the files that mappings show.
//!
//! A cached page is keyed by the file's inode, its [data version](crx_fs::Fs::data_version)
//! and the page's index in the file. A write to a file (or a truncation) gives it a new
//! version, so later faults read the new bytes into new frames while the frames already
//! mapped keep the bytes they were filled with: a mapping is never changed under a process.
//!
//! Reference counts are the frame pool's: the cache holds one reference to each frame it
//! keeps, each page-table entry that maps it one more. A frame only the cache holds is
//! given back by [`PageCache::sweep_pages`], which the kernel runs whenever mappings go away
//! (`munmap`, `exec`, a process's end), and before it gives up on an allocation. The frames
//! are thus bounded by what processes map, and come back to the pool when nothing maps them.
//!
//! Every file some region shows has one [`MappedFile`] handle, which holds one reference to
//! the inode ([`crx_fs::Fs::retain`]), so that an unlinked file stays readable while it is
//! mapped, as on Linux. Regions hold the handle; [`PageCache::sweep_files`] drops the inode
//! reference of a handle no region holds any more.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;

use crx_fs::{Errno, Fs, Ino};

use crate::frames::{FrameError, FramePool};

/// A file shown by some mapping (see the module documentation).
#[derive(Debug, PartialEq, Eq)]
pub struct MappedFile {
    /// Its inode.
    pub ino: Ino,
}

/// What a cached frame holds: page `index` of version `version` of inode `ino`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageKey {
    /// The file.
    pub ino: Ino,
    /// Its data version when the page was read.
    pub version: u64,
    /// The page's index in the file (offset / 4096).
    pub index: u64,
}

/// Counters of the cache, for the kernel's accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Pages found in the cache.
    pub hits: u64,
    /// Pages read from the file into a new frame.
    pub misses: u64,
    /// Frames given back to the pool.
    pub evicted: u64,
}

/// The page cache and the mapped-file handles.
#[derive(Debug, Default)]
pub struct PageCache {
    pages: BTreeMap<PageKey, u64>,
    files: BTreeMap<Ino, Rc<MappedFile>>,
    stats: CacheStats,
}

impl PageCache {
    /// An empty cache.
    pub fn new() -> PageCache {
        PageCache::default()
    }

    /// The handle of `ino` for a new mapping; the first one takes a reference to the inode.
    pub fn file(&mut self, fs: &mut Fs, ino: Ino) -> Result<Rc<MappedFile>, Errno> {
        if let Some(f) = self.files.get(&ino) {
            return Ok(f.clone());
        }
        fs.retain(ino)?;
        let f = Rc::new(MappedFile { ino });
        self.files.insert(ino, f.clone());
        Ok(f)
    }

    /// A frame holding the page `key`, with one reference for the caller (who maps it).
    ///
    /// A page not in the cache is read with `fill(pa)` (which must write the whole frame)
    /// into a frame the cache then keeps. Should the frame take no more references, the
    /// caller gets a private frame filled the same way. When the pool is empty the frames
    /// only the cache holds are given back first.
    pub fn get(
        &mut self,
        pool: &mut FramePool,
        key: PageKey,
        fill: &mut dyn FnMut(u64),
    ) -> Result<u64, FrameError> {
        if let Some(&pa) = self.pages.get(&key) {
            if pool.share(pa) {
                self.stats.hits += 1;
                return Ok(pa);
            }
            let private = self.alloc(pool)?;
            fill(private);
            return Ok(private);
        }
        let pa = self.alloc(pool)?;
        fill(pa);
        self.stats.misses += 1;
        if pool.share(pa) {
            self.pages.insert(key, pa);
        }
        Ok(pa)
    }

    /// A frame from the pool, evicting unused cached pages if it is empty.
    pub fn alloc(&mut self, pool: &mut FramePool) -> Result<u64, FrameError> {
        match pool.alloc() {
            Ok(pa) => Ok(pa),
            Err(_) if self.sweep_pages(pool) > 0 => pool.alloc(),
            Err(e) => Err(e),
        }
    }

    /// Gives back every frame that only the cache holds; returns how many.
    pub fn sweep_pages(&mut self, pool: &mut FramePool) -> usize {
        let before = self.pages.len();
        self.pages.retain(|_, pa| {
            if pool.refs(*pa) > 1 {
                return true;
            }
            pool.release(*pa);
            false
        });
        let n = before - self.pages.len();
        self.stats.evicted += n as u64;
        n
    }

    /// Drops the inode reference of every file no region shows any more; returns how many.
    pub fn sweep_files(&mut self, fs: &mut Fs) -> usize {
        let unused: alloc::vec::Vec<Ino> =
            self.files.iter().filter(|(_, f)| Rc::strong_count(f) == 1).map(|(&i, _)| i).collect();
        for ino in &unused {
            self.files.remove(ino);
            fs.release(*ino);
        }
        unused.len()
    }

    /// Both sweeps.
    pub fn sweep(&mut self, pool: &mut FramePool, fs: &mut Fs) {
        self.sweep_pages(pool);
        self.sweep_files(fs);
    }

    /// Frames the cache holds.
    pub fn frames(&self) -> usize {
        self.pages.len()
    }

    /// Cached frames mapped more than once (by two processes, or twice by one).
    pub fn shared_frames(&self, pool: &FramePool) -> usize {
        self.pages.values().filter(|&&pa| pool.refs(pa) > 2).count()
    }

    /// Files with a handle.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::FRAME;
    use alloc::vec::Vec;
    use crx_fs::linux::o;

    /// A filesystem with `/lib/libc.so.6` (three pages and a bit) and a writable `/tmp`.
    fn fs() -> (Fs, Ino) {
        let mut fs = Fs::new();
        let lib = fs.mkdir(Ino::ROOT, b"lib", 0o755).expect("mkdir");
        let libc = fs.create(lib, b"libc.so.6", 0o755).expect("create");
        let bytes: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
        fs.write(libc, 0, &bytes).expect("write");
        fs.mkdir(Ino::ROOT, b"tmp", 0o1777).expect("mkdir");
        (fs, libc)
    }

    fn key(fs: &Fs, ino: Ino, index: u64) -> PageKey {
        PageKey { ino, version: fs.data_version(ino).expect("version"), index }
    }

    /// A process's mapping of a page: the frame it got; unmapping releases it.
    struct Map {
        pa: u64,
    }

    #[test]
    fn two_processes_share_a_librarys_read_only_frames() {
        let (fs, libc) = fs();
        let mut pool = FramePool::new(0, 64 * FRAME);
        let mut cache = PageCache::new();
        let reads = core::cell::Cell::new(0);
        let mut fill = |_pa: u64| reads.set(reads.get() + 1);
        // Process 1 maps the first two pages, process 2 the same two and a third.
        let p1: Vec<Map> = (0..2)
            .map(|i| Map { pa: cache.get(&mut pool, key(&fs, libc, i), &mut fill).expect("frame") })
            .collect();
        let p2: Vec<Map> = (0..3)
            .map(|i| Map { pa: cache.get(&mut pool, key(&fs, libc, i), &mut fill).expect("frame") })
            .collect();
        assert_eq!(reads.get(), 3, "each page is read from the file once");
        assert_eq!(p1[0].pa, p2[0].pa, "the same frame for the same page");
        assert_eq!(p1[1].pa, p2[1].pa);
        assert_ne!(p2[0].pa, p2[1].pa);
        assert_eq!(pool.refs(p1[0].pa), 3, "the cache's reference and one per mapping");
        assert_eq!(cache.frames(), 3);
        assert_eq!(cache.shared_frames(&pool), 2);
        assert_eq!(pool.total_frames() - pool.free_frames(), 3, "three frames for five mappings");
        assert_eq!(cache.stats(), CacheStats { hits: 2, misses: 3, evicted: 0 });
        // Nothing to give back while they are mapped.
        assert_eq!(cache.sweep_pages(&mut pool), 0);
        // Process 1 ends: its frames stay for process 2.
        for m in p1 {
            pool.release(m.pa);
        }
        assert_eq!(cache.sweep_pages(&mut pool), 0);
        assert_eq!(cache.shared_frames(&pool), 0);
        // Process 2 ends: every frame comes back to the pool.
        for m in p2 {
            pool.release(m.pa);
        }
        assert_eq!(cache.sweep_pages(&mut pool), 3);
        assert_eq!(pool.free_frames(), pool.total_frames(), "no frame is left behind");
        assert_eq!(cache.frames(), 0);
        assert_eq!(cache.stats().evicted, 3);
    }

    #[test]
    fn a_written_file_gets_new_frames_and_old_mappings_keep_theirs() {
        let (mut fs, libc) = fs();
        let mut pool = FramePool::new(0, 16 * FRAME);
        let mut cache = PageCache::new();
        let mut reads = 0;
        let old = cache.get(&mut pool, key(&fs, libc, 0), &mut |_| reads += 1).expect("frame");
        // The file is written (in the pod's scratch space) while mapped.
        let mut f = fs.open(Ino::ROOT, b"/lib/libc.so.6", o::RDWR, 0).expect("open");
        f.write(&mut fs, b"changed").expect("write");
        let new = cache.get(&mut pool, key(&fs, libc, 0), &mut |_| reads += 1).expect("frame");
        assert_eq!(reads, 2, "the new version is read again");
        assert_ne!(old, new, "the old mapping's frame is not reused for the new bytes");
        assert_eq!(pool.refs(old), 2, "the old frame stays mapped and cached");
        // Once the old mapping is gone its frame comes back; the new one stays mapped.
        pool.release(old);
        assert_eq!(cache.sweep_pages(&mut pool), 1);
        assert_eq!(pool.refs(old), 0);
        assert_eq!(pool.refs(new), 2);
        f.close(&mut fs);
    }

    #[test]
    fn a_full_pool_evicts_unused_pages_first() {
        let (fs, libc) = fs();
        let mut pool = FramePool::new(0, 2 * FRAME);
        let mut cache = PageCache::new();
        let a = cache.get(&mut pool, key(&fs, libc, 0), &mut |_| {}).expect("frame");
        let b = cache.get(&mut pool, key(&fs, libc, 1), &mut |_| {}).expect("frame");
        assert_eq!(pool.free_frames(), 0);
        // Page 0 is still mapped, page 1 is not any more: page 2 takes page 1's frame.
        pool.release(b);
        let c = cache.get(&mut pool, key(&fs, libc, 2), &mut |_| {}).expect("an evicted frame");
        assert_eq!(c, b);
        assert_eq!(cache.frames(), 2);
        // Nothing left to evict: the pool's exhaustion is the caller's.
        assert_eq!(cache.get(&mut pool, key(&fs, libc, 3), &mut |_| {}), Err(FrameError::Exhausted));
        assert_eq!(pool.refs(a), 2);
    }

    #[test]
    fn a_frame_that_takes_no_more_references_gives_a_private_copy() {
        let (fs, libc) = fs();
        let mut pool = FramePool::new(0, 8 * FRAME);
        let mut cache = PageCache::new();
        let shared = cache.get(&mut pool, key(&fs, libc, 0), &mut |_| {}).expect("frame");
        while pool.share(shared) {}
        let mut filled = None;
        let private = cache.get(&mut pool, key(&fs, libc, 0), &mut |pa| filled = Some(pa)).expect("frame");
        assert_ne!(private, shared);
        assert_eq!(filled, Some(private), "the copy is filled from the file");
        assert_eq!(pool.refs(private), 1, "not cached");
    }

    #[test]
    fn a_mapped_file_outlives_its_last_name_until_no_region_shows_it() {
        let (mut fs, _) = fs();
        let tmp = fs.lookup(Ino::ROOT, b"/tmp", true).expect("tmp");
        let t = fs.create(tmp, b"scratch", 0o644).expect("create");
        fs.write(t, 0, b"data").expect("write");
        let mut cache = PageCache::new();
        let region_a = cache.file(&mut fs, t).expect("handle");
        let region_b = cache.file(&mut fs, t).expect("the same handle");
        assert!(Rc::ptr_eq(&region_a, &region_b));
        assert_eq!(cache.files(), 1);
        fs.unlink(tmp, b"scratch").expect("unlink");
        assert_eq!(fs.contents(t).expect("still there"), b"data");
        drop(region_a);
        assert_eq!(cache.sweep_files(&mut fs), 0, "one region still shows it");
        assert!(fs.contents(t).is_ok());
        drop(region_b);
        assert_eq!(cache.sweep_files(&mut fs), 1);
        assert_eq!(fs.contents(t), Err(Errno::ENOENT), "freed with its last mapping");
        assert_eq!(cache.files(), 0);
    }
}
