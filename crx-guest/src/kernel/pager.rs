//! Filling user pages: zero pages of anonymous regions, file pages through the page cache
//! ([`PageCache`]), copy-on-write of read-only frames, and the pages an exec builds at once.
//!
//! A file page of a private mapping is first mapped read-only to the cache's frame, which
//! every process mapping the same page shares; the first write copies it into a private
//! frame ([`copy_on_write`]). A write fault on a page that is not yet present copies at once.
//! Pages past the end of the file read as zeros (Linux raises SIGBUS there).
#![deny(unsafe_code)]

use crx_fs::Fs;
use crx_guest::elf::{Part, PAGE};
use crx_guest::frames::FramePool;
use crx_guest::pagecache::{PageCache, PageKey};
use crx_guest::vma::Region;

use super::mm::{AddrSpace, Oom, W};
use super::phys;

/// Maps frame `pa` (whose reference the mapping takes) at `page`; when the page tables
/// need a frame and the pool is empty, unused cached pages are given back first. On failure
/// the reference to `pa` is dropped.
fn map(
    aspace: &mut AddrSpace,
    pool: &mut FramePool,
    cache: &mut PageCache,
    page: u64,
    pa: u64,
    flags: u64,
) -> Result<(), Oom> {
    if aspace.map(pool, page, pa, flags).is_ok() {
        return Ok(());
    }
    if cache.sweep_pages(pool) > 0 && aspace.map(pool, page, pa, flags).is_ok() {
        return Ok(());
    }
    pool.release(pa);
    Err(Oom)
}

/// A zeroed frame (unused cached pages are evicted if the pool is empty).
fn zeroed(pool: &mut FramePool, cache: &mut PageCache) -> Result<u64, Oom> {
    let pa = cache.alloc(pool).map_err(|_| Oom)?;
    phys::zero_frame(pa);
    Ok(pa)
}

/// Makes the page at `page` present for `region` (which holds it and allows the access),
/// mapped with `flags` (the region's): a zero page, or the file's page through the cache,
/// read-only until written unless `write` asks for a private copy now.
#[allow(clippy::too_many_arguments)]
pub fn fill(
    aspace: &mut AddrSpace,
    pool: &mut FramePool,
    fs: &Fs,
    cache: &mut PageCache,
    region: &Region,
    page: u64,
    write: bool,
    flags: u64,
) -> Result<u64, Oom> {
    let cached = match (&region.backing, region.file_offset(page)) {
        (Some(b), Some(off)) => {
            let data = fs.contents(b.file.ino).unwrap_or(&[]);
            match usize::try_from(off).ok().filter(|&o| o < data.len()) {
                Some(start) => {
                    let end = data.len().min(start + PAGE as usize);
                    let key = PageKey {
                        ino: b.file.ino,
                        version: fs.data_version(b.file.ino).unwrap_or(0),
                        index: off / PAGE,
                    };
                    let mut read = |pa: u64| {
                        phys::zero_frame(pa);
                        phys::write(pa, data.get(start..end).unwrap_or(&[]));
                    };
                    Some(cache.get(pool, key, &mut read).map_err(|_| Oom)?)
                }
                None => None,
            }
        }
        _ => None,
    };
    let (pa, flags) = match cached {
        None => (zeroed(pool, cache)?, flags),
        Some(shared) if write => {
            let private = match cache.alloc(pool) {
                Ok(p) => p,
                Err(_) => {
                    pool.release(shared);
                    return Err(Oom);
                }
            };
            phys::copy_frame(private, shared);
            pool.release(shared);
            (private, flags)
        }
        Some(shared) => (shared, flags & !W),
    };
    map(aspace, pool, cache, page, pa, flags)?;
    Ok(pa)
}

/// A write to the present read-only page `page` (frame `pa`) of a writable region: a frame
/// someone else also holds (the page cache, a fork relative) is copied into a private one
/// mapped with `flags`; a frame this mapping alone holds just becomes writable.
pub fn copy_on_write(
    aspace: &mut AddrSpace,
    pool: &mut FramePool,
    cache: &mut PageCache,
    page: u64,
    pa: u64,
    flags: u64,
) -> Result<u64, Oom> {
    if pool.refs(pa) == 1 {
        aspace.set_flags(page, flags);
        return Ok(pa);
    }
    let private = cache.alloc(pool).map_err(|_| Oom)?;
    phys::copy_frame(private, pa);
    // Mapping over the shared frame drops this mapping's reference to it.
    map(aspace, pool, cache, page, private, flags)?;
    Ok(private)
}

/// Builds the private page `page` now: zeros with `parts` of `data` (the file) copied in,
/// mapped with `flags`.
pub fn build(
    aspace: &mut AddrSpace,
    pool: &mut FramePool,
    cache: &mut PageCache,
    data: &[u8],
    parts: &[Part],
    page: u64,
    flags: u64,
) -> Result<(), Oom> {
    let pa = zeroed(pool, cache)?;
    for p in parts {
        let bytes = usize::try_from(p.offset)
            .ok()
            .and_then(|o| Some((o, o.checked_add(usize::try_from(p.len).ok()?)?)))
            .and_then(|(o, e)| data.get(o..e));
        if let Some(bytes) = bytes {
            if p.at + p.len <= PAGE {
                phys::write(pa + p.at, bytes);
            }
        }
    }
    map(aspace, pool, cache, page, pa, flags)
}
