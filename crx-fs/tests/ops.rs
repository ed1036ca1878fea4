//! Path resolution, inode operations, open files, readdir, encodings, limits.

mod common;

use common::{gzip, leak};
use crx_fs::linux::{o, seek};
use crx_fs::tar::TarBuilder;
use crx_fs::{Errno, Fs, Ino, LayerKind, Timespec};

fn base() -> Fs {
    let layer = TarBuilder::new()
        .dir(b"bin", 0o755)
        .file(b"bin/busybox", 0o755, b"\x7fELF....")
        .symlink(b"bin/sh", b"busybox")
        .symlink(b"bin/abs", b"/bin/busybox")
        .symlink(b"loop1", b"loop2")
        .symlink(b"loop2", b"loop1")
        .symlink(b"self", b"self")
        .symlink(b"dangling", b"/nowhere")
        .symlink(b"updir", b"../../..")
        .file(b"etc/data", 0o644, b"0123456789")
        .file(b"etc/noexec", 0o644, b"#!/bin/sh")
        .dir(b"tmp", 0o1777)
        .finish();
    let mut fs = Fs::new();
    fs.apply_layer(leak(layer), LayerKind::Tar).unwrap();
    fs
}

#[test]
fn symlinks_dots_and_loops() {
    let fs = base();
    let bb = fs.lookup(Ino::ROOT, b"/bin/busybox", true).unwrap();
    assert_eq!(fs.lookup(Ino::ROOT, b"/bin/sh", true), Ok(bb));
    assert_eq!(fs.lookup(Ino::ROOT, b"bin/abs", true), Ok(bb));
    assert_ne!(fs.lookup(Ino::ROOT, b"/bin/sh", false), Ok(bb));
    let bin = fs.lookup(Ino::ROOT, b"/bin", true).unwrap();
    assert_eq!(fs.lookup(bin, b"sh", true), Ok(bb));
    assert_eq!(fs.lookup(bin, b"../bin/./busybox", true), Ok(bb));
    assert_eq!(fs.lookup(Ino::ROOT, b"/../../..", true), Ok(Ino::ROOT));
    assert_eq!(fs.lookup(bin, b"../../../bin/busybox", true), Ok(bb));
    assert_eq!(fs.lookup(Ino::ROOT, b"/updir/bin", true), Ok(bin));
    assert_eq!(fs.lookup(Ino::ROOT, b"/loop1", true), Err(Errno::ELOOP));
    assert_eq!(fs.lookup(Ino::ROOT, b"/self/x", true), Err(Errno::ELOOP));
    assert!(fs.lookup(Ino::ROOT, b"/loop1", false).is_ok());
    assert_eq!(fs.lookup(Ino::ROOT, b"/dangling", true), Err(Errno::ENOENT));
    assert_eq!(fs.lookup(Ino::ROOT, b"/bin/busybox/x", true), Err(Errno::ENOTDIR));
    assert_eq!(fs.lookup(Ino::ROOT, b"/bin/busybox/", true), Err(Errno::ENOTDIR));
    assert_eq!(fs.lookup(Ino::ROOT, b"/bin/", true), Ok(bin));
    assert_eq!(fs.lookup(Ino::ROOT, b"", true), Err(Errno::ENOENT));
    let long = vec![b'a'; 256];
    assert_eq!(fs.lookup(Ino::ROOT, &long, true), Err(Errno::ENAMETOOLONG));
    assert_eq!(fs.lookup(Ino::ROOT, &vec![b'/'; 5000], true), Err(Errno::ENAMETOOLONG));
    // 40 links are allowed, 41 are not.
    let mut fs = base();
    let tmp = fs.lookup(Ino::ROOT, b"/tmp", true).unwrap();
    fs.symlink(tmp, b"l0", b"/bin/busybox").unwrap();
    for i in 1..=40 {
        fs.symlink(tmp, format!("l{i}").as_bytes(), format!("l{}", i - 1).as_bytes()).unwrap();
    }
    assert_eq!(fs.lookup(tmp, b"l39", true), Ok(bb));
    assert_eq!(fs.lookup(tmp, b"l40", true), Err(Errno::ELOOP));
    assert_eq!(fs.path_of(bin).unwrap(), b"/bin");
}

#[test]
fn copy_on_write_leaves_layer_bytes_unchanged() {
    let tar = TarBuilder::new().file(b"f", 0o644, b"original").finish();
    let layer = leak(tar.clone());
    let mut fs = Fs::new();
    fs.apply_layer(layer, LayerKind::Tar).unwrap();
    let f = fs.lookup(Ino::ROOT, b"f", true).unwrap();
    let before = fs.used_bytes();
    assert_eq!(fs.contents(f).unwrap().as_ptr(), layer[512..].as_ptr(), "zero-copy until written");
    fs.write(f, 4, b"XY").unwrap();
    fs.write(f, 12, b"!").unwrap();
    assert_eq!(fs.contents(f).unwrap(), b"origXYal\0\0\0\0!");
    assert_eq!(layer, &tar[..], "layer bytes untouched");
    assert!(fs.used_bytes() > before);
    // Truncating a borrowed file keeps borrowing.
    let mut fs2 = Fs::new();
    fs2.apply_layer(layer, LayerKind::Tar).unwrap();
    let g = fs2.lookup(Ino::ROOT, b"f", true).unwrap();
    let used = fs2.used_bytes();
    fs2.truncate(g, 4).unwrap();
    assert_eq!(fs2.contents(g).unwrap(), b"orig");
    assert_eq!(fs2.used_bytes(), used);
    fs2.truncate(g, 6).unwrap();
    assert_eq!(fs2.contents(g).unwrap(), b"orig\0\0");
    // Same for gzip layers.
    let mut fs3 = Fs::new();
    fs3.apply_layer(leak(gzip(&tar)), LayerKind::TarGzip).unwrap();
    let h = fs3.lookup(Ino::ROOT, b"f", true).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(fs3.read(h, 2, &mut buf), Ok(4));
    assert_eq!(&buf, b"igin");
    fs3.write(h, 0, b"O").unwrap();
    assert_eq!(fs3.contents(h).unwrap(), b"Original");
}

#[test]
fn memory_limit_gives_enospc() {
    let mut fs = Fs::with_limit(64 * 1024);
    let f = fs.create(Ino::ROOT, b"big", 0o644).unwrap();
    let chunk = [1u8; 4096];
    let mut off = 0u64;
    let err = loop {
        match fs.write(f, off, &chunk) {
            Ok(n) => off += n as u64,
            Err(e) => break e,
        }
        assert!(off < 1 << 20, "limit not enforced");
    };
    assert_eq!(err, Errno::ENOSPC);
    assert!(fs.used_bytes() <= fs.limit_bytes());
    // Deleting the file gives the memory back.
    fs.unlink(Ino::ROOT, b"big").unwrap();
    let g = fs.create(Ino::ROOT, b"again", 0o644).unwrap();
    assert_eq!(fs.write(g, 0, &chunk), Ok(4096));
}

#[test]
fn namespace_operations() {
    let mut fs = base();
    let tmp = fs.lookup(Ino::ROOT, b"/tmp", true).unwrap();
    let d = fs.mkdir(tmp, b"d", 0o755).unwrap();
    assert_eq!(fs.mkdir(tmp, b"d", 0o755), Err(Errno::EEXIST));
    assert_eq!(fs.create(tmp, b".", 0o644), Err(Errno::EEXIST));
    assert_eq!(fs.create(tmp, b"a/b", 0o644), Err(Errno::ENOENT));
    assert_eq!(fs.create(tmp, &[b'n'; 256], 0o644), Err(Errno::ENAMETOOLONG));
    let f = fs.create(d, b"f", 0o600).unwrap();
    assert_eq!(fs.stat(tmp).unwrap().nlink, 3);
    assert_eq!(fs.rmdir(tmp, b"d"), Err(Errno::ENOTEMPTY));
    assert_eq!(fs.unlink(tmp, b"d"), Err(Errno::EISDIR));
    assert_eq!(fs.rmdir(d, b"f"), Err(Errno::ENOTDIR));
    assert_eq!(fs.rmdir(d, b"."), Err(Errno::EINVAL));
    // rename: into own subtree, onto a dir, onto a file, replace.
    assert_eq!(fs.rename(tmp, b"d", d, b"sub"), Err(Errno::EINVAL));
    let e = fs.mkdir(tmp, b"e", 0o755).unwrap();
    assert_eq!(fs.rename(d, b"f", tmp, b"e"), Err(Errno::EISDIR));
    let g = fs.create(tmp, b"g", 0o644).unwrap();
    assert_eq!(fs.rename(tmp, b"e", tmp, b"g"), Err(Errno::ENOTDIR));
    fs.rename(d, b"f", tmp, b"g").unwrap();
    assert_eq!(fs.lookup(tmp, b"g", true), Ok(f));
    assert!(fs.stat(g).is_err(), "replaced file is freed");
    fs.rename(tmp, b"d", e, b"moved").unwrap();
    assert_eq!(fs.lookup(Ino::ROOT, b"/tmp/e/moved/..", true), Ok(e));
    assert_eq!(fs.path_of(d).unwrap(), b"/tmp/e/moved");
    assert_eq!(fs.stat(tmp).unwrap().nlink, 3);
    fs.rmdir(e, b"moved").unwrap();
    assert!(fs.stat(d).is_err());
    // Links, readlink, chmod.
    fs.link(f, tmp, b"f2").unwrap();
    assert_eq!(fs.stat(f).unwrap().nlink, 2);
    assert_eq!(fs.link(tmp, tmp, b"dirlink"), Err(Errno::EPERM));
    let sh = fs.lookup(Ino::ROOT, b"/bin/sh", false).unwrap();
    assert_eq!(fs.readlink(sh), Ok(&b"busybox"[..]));
    assert_eq!(fs.readlink(f), Err(Errno::EINVAL));
    fs.set_time(Timespec { sec: 99, nsec: 5 });
    fs.chmod(f, 0o4755).unwrap();
    let st = fs.stat(f).unwrap();
    assert_eq!((st.mode, st.ctime.sec), (0o104755, 99));
}

#[test]
fn exec_permission() {
    let fs = base();
    let bb = fs.lookup(Ino::ROOT, b"/bin/sh", true).unwrap();
    assert!(fs.is_executable(bb));
    let ne = fs.lookup(Ino::ROOT, b"/etc/noexec", true).unwrap();
    assert_eq!(fs.check_exec(ne), Err(Errno::EACCES));
    assert_eq!(fs.check_exec(Ino::ROOT), Err(Errno::EACCES));
    assert_eq!(fs.access(ne, 1), Err(Errno::EACCES));
    assert_eq!(fs.access(ne, 4 | 2), Ok(()));
}

#[test]
fn open_files() {
    let mut fs = base();
    let mut f = fs.open(Ino::ROOT, b"/etc/data", o::RDONLY, 0).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(f.read(&fs, &mut buf), Ok(4));
    assert_eq!(f.read(&fs, &mut buf), Ok(4));
    assert_eq!(&buf, b"4567");
    assert_eq!(f.write(&mut fs, b"x"), Err(Errno::EBADF));
    assert_eq!(f.lseek(&fs, -3, seek::END), Ok(7));
    assert_eq!(f.lseek(&fs, -8, seek::CUR), Err(Errno::EINVAL));
    f.close(&mut fs);

    assert_eq!(
        fs.open(Ino::ROOT, b"/etc/data", o::CREAT | o::EXCL | o::WRONLY, 0o644).err(),
        Some(Errno::EEXIST)
    );
    assert_eq!(fs.open(Ino::ROOT, b"/etc/data", o::DIRECTORY, 0).err(), Some(Errno::ENOTDIR));
    assert_eq!(fs.open(Ino::ROOT, b"/bin", o::WRONLY, 0).err(), Some(Errno::EISDIR));
    assert_eq!(fs.open(Ino::ROOT, b"/bin/sh", o::NOFOLLOW, 0).err(), Some(Errno::ELOOP));
    assert_eq!(fs.open(Ino::ROOT, b"/missing/x", o::CREAT | o::WRONLY, 0o644).err(), Some(Errno::ENOENT));

    let mut w = fs.open(Ino::ROOT, b"/tmp/log", o::CREAT | o::WRONLY | o::APPEND, 0o644).unwrap();
    w.write(&mut fs, b"one\n").unwrap();
    w.lseek(&fs, 0, seek::SET).unwrap();
    w.write(&mut fs, b"two\n").unwrap();
    assert_eq!(fs.contents(w.ino).unwrap(), b"one\ntwo\n");
    let t = fs.open(Ino::ROOT, b"/tmp/log", o::WRONLY | o::TRUNC, 0).unwrap();
    assert_eq!(fs.stat(t.ino).unwrap().size, 0);
    // Unlinked while open: still readable through the description, freed at close.
    let tmp = fs.lookup(Ino::ROOT, b"/tmp", true).unwrap();
    let mut rw = fs.open(tmp, b"log", o::RDWR, 0).unwrap();
    rw.write(&mut fs, b"kept").unwrap();
    fs.unlink(tmp, b"log").unwrap();
    assert_eq!(rw.pread(&fs, 0, &mut buf), Ok(4));
    assert_eq!(&buf, b"kept");
    let ino = rw.ino;
    rw.close(&mut fs);
    w.close(&mut fs);
    assert!(fs.stat(ino).is_ok(), "one description is still open");
    t.close(&mut fs);
    assert_eq!(fs.stat(ino).err(), Some(Errno::ENOENT));
}

#[test]
fn readdir_cookies_survive_calls_and_changes() {
    let mut fs = Fs::new();
    let d = fs.mkdir(Ino::ROOT, b"d", 0o755).unwrap();
    for i in 0..50 {
        fs.create(d, format!("file-{i:02}").as_bytes(), 0o644).unwrap();
    }
    let mut seen = Vec::new();
    let mut cookie = 0;
    let mut buf = [0u8; 200];
    let mut calls = 0;
    loop {
        let n = fs.getdents64(d, &mut cookie, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        calls += 1;
        if calls == 3 {
            // Removing an entry not yet listed and one already listed, and adding one.
            fs.unlink(d, b"file-49").unwrap();
            fs.unlink(d, b"file-00").unwrap();
            fs.create(d, b"late", 0o644).unwrap();
        }
        let mut at = 0;
        while at < n {
            let reclen = u16::from_le_bytes([buf[at + 16], buf[at + 17]]) as usize;
            assert_eq!(reclen % 8, 0);
            let name_end = buf[at + 19..at + reclen].iter().position(|&b| b == 0).unwrap();
            seen.push(buf[at + 19..at + 19 + name_end].to_vec());
            at += reclen;
        }
    }
    assert!(calls > 3);
    assert_eq!(&seen[..2], &[b".".to_vec(), b"..".to_vec()]);
    let mut files: Vec<_> = seen[2..].to_vec();
    let total = files.len();
    files.sort();
    files.dedup();
    assert_eq!(files.len(), total, "no entry listed twice");
    assert!(files.contains(&b"file-00".to_vec()));
    assert!(!files.contains(&b"file-49".to_vec()));
    assert!(files.contains(&b"late".to_vec()));
    assert_eq!(total, 50);
    let mut tiny = [0u8; 8];
    assert_eq!(fs.getdents64(d, &mut 0, &mut tiny), Err(Errno::EINVAL));
    let f = fs.create(Ino::ROOT, b"f", 0o644).unwrap();
    assert_eq!(fs.getdents64(f, &mut 0, &mut buf), Err(Errno::ENOTDIR));
}

#[test]
fn stat_and_dirent_layouts() {
    let fs = base();
    let f = fs.lookup(Ino::ROOT, b"/etc/data", true).unwrap();
    let st = fs.stat(f).unwrap();
    let b = st.to_linux_bytes();
    assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), f.get());
    assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 1);
    assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 0o100644);
    assert_eq!(i64::from_le_bytes(b[48..56].try_into().unwrap()), 10);
    assert_eq!(i64::from_le_bytes(b[56..64].try_into().unwrap()), 4096);
    assert_eq!(i64::from_le_bytes(b[64..72].try_into().unwrap()), 1);
    assert_eq!(i64::from_le_bytes(b[88..96].try_into().unwrap()), 1_700_000_000);
    let x = st.to_statx_bytes();
    assert_eq!(u32::from_le_bytes(x[0..4].try_into().unwrap()), 0x7ff);
    assert_eq!(u16::from_le_bytes(x[28..30].try_into().unwrap()), 0o100644);
    assert_eq!(u64::from_le_bytes(x[32..40].try_into().unwrap()), f.get());
    assert_eq!(u64::from_le_bytes(x[40..48].try_into().unwrap()), 10);
    assert_eq!(i64::from_le_bytes(x[112..120].try_into().unwrap()), 1_700_000_000);

    let mut buf = [0xffu8; 64];
    let n = crx_fs::linux::encode_dirent64(&mut buf, 7, 9, crx_fs::linux::dt::REG, b"hello").unwrap();
    assert_eq!(n, 32);
    assert_eq!(u64::from_le_bytes(buf[0..8].try_into().unwrap()), 7);
    assert_eq!(u64::from_le_bytes(buf[8..16].try_into().unwrap()), 9);
    assert_eq!(u16::from_le_bytes([buf[16], buf[17]]), 32);
    assert_eq!(buf[18], 8);
    assert_eq!(&buf[19..25], b"hello\0");
    assert_eq!(buf[31], 0);
    assert_eq!(buf[32], 0xff, "nothing written past the record");
    assert_eq!(crx_fs::linux::encode_dirent64(&mut buf[..31], 7, 9, 8, b"hello"), None);
}

#[test]
fn busybox_fixture() {
    let Ok(busybox) = std::fs::read("/bin/busybox") else {
        eprintln!("/bin/busybox not present: skipped");
        return;
    };
    let mut b = TarBuilder::new();
    b.dir(b"bin/", 0o755).file(b"bin/busybox", 0o755, &busybox);
    for applet in ["sh", "ls", "echo", "cat"] {
        b.symlink(format!("bin/{applet}").as_bytes(), b"busybox");
    }
    let tar = b.finish();
    let mut fs = Fs::new();
    let s = fs.apply_layer(leak(gzip(&tar)), LayerKind::TarGzip).unwrap();
    assert_eq!((s.files, s.symlinks), (1, 4));
    let sh = fs.lookup(Ino::ROOT, b"/bin/sh", true).unwrap();
    assert!(fs.is_executable(sh));
    assert_eq!(fs.contents(sh).unwrap(), &busybox[..]);
    assert_eq!(&fs.contents(sh).unwrap()[..4], b"\x7fELF");
}

#[test]
fn the_data_version_changes_with_the_contents_and_is_never_reused() {
    let mut fs = base();
    let data = fs.lookup(Ino::ROOT, b"/etc/data", true).unwrap();
    let v0 = fs.data_version(data).unwrap();
    assert_eq!(fs.data_version(data), Ok(v0), "reading does not change it");
    let mut buf = [0u8; 4];
    fs.read(data, 0, &mut buf).unwrap();
    assert_eq!(fs.data_version(data), Ok(v0));
    fs.write(data, 2, b"xy").unwrap();
    let v1 = fs.data_version(data).unwrap();
    assert_ne!(v1, v0, "a write changes it");
    fs.truncate(data, 3).unwrap();
    let v2 = fs.data_version(data).unwrap();
    assert!(v2 != v1 && v2 != v0, "a truncation changes it");
    // A file freed and another created in its inode slot never share a version.
    let tmp = fs.lookup(Ino::ROOT, b"/tmp", true).unwrap();
    let a = fs.create(tmp, b"a", 0o644).unwrap();
    let va = fs.data_version(a).unwrap();
    fs.unlink(tmp, b"a").unwrap();
    assert_eq!(fs.data_version(a), Err(Errno::ENOENT));
    let b = fs.create(tmp, b"b", 0o644).unwrap();
    assert_eq!(a, b, "the slot is reused");
    assert_ne!(fs.data_version(b).unwrap(), va);
}
