//! Layer application: order, whiteouts, opaque directories, links, long names, pax, gzip.

mod common;

use common::{gzip, leak};
use crx_fs::gzip::crc32;
use crx_fs::tar::TarBuilder;
use crx_fs::{Errno, FileType, Fs, Ino, LayerError, LayerKind};

fn read_all(fs: &Fs, path: &[u8]) -> Vec<u8> {
    let ino = fs.lookup(Ino::ROOT, path, true).expect("path exists");
    fs.contents(ino).expect("regular file").to_vec()
}

fn names(fs: &Fs, path: &[u8]) -> Vec<Vec<u8>> {
    let dir = fs.lookup(Ino::ROOT, path, true).expect("dir exists");
    let mut v: Vec<Vec<u8>> =
        fs.readdir(dir, 0, usize::MAX).unwrap().into_iter().map(|e| e.name).skip(2).collect();
    v.sort();
    v
}

#[test]
fn upper_layers_replace_lower_files_and_merge_dirs() {
    let mut fs = Fs::new();
    let l1 = TarBuilder::new()
        .dir(b"etc/", 0o755)
        .file(b"etc/a", 0o644, b"lower a")
        .file(b"etc/b", 0o600, b"lower b")
        .file(b"./bin/sh", 0o755, b"shell")
        .finish();
    let l2 = TarBuilder::new().dir(b"etc/", 0o700).file(b"etc/a", 0o640, b"upper a").finish();
    let s1 = fs.apply_layer(leak(l1), LayerKind::Tar).unwrap();
    assert_eq!((s1.files, s1.dirs), (3, 1));
    fs.apply_layer(leak(l2), LayerKind::Tar).unwrap();
    assert_eq!(read_all(&fs, b"/etc/a"), b"upper a");
    assert_eq!(read_all(&fs, b"/etc/b"), b"lower b");
    let etc = fs.lookup(Ino::ROOT, b"/etc", true).unwrap();
    assert_eq!(fs.stat(etc).unwrap().mode, 0o040700, "directory metadata from the upper layer");
    let a = fs.lookup(Ino::ROOT, b"etc/a", true).unwrap();
    let st = fs.stat(a).unwrap();
    assert_eq!(st.mode, 0o100640);
    assert_eq!(st.size, 7);
    assert_eq!(st.mtime.sec, 1_700_000_000);
    // Parent directory created implicitly.
    assert_eq!(fs.file_type(fs.lookup(Ino::ROOT, b"/bin", true).unwrap()).unwrap(), FileType::Dir);
}

#[test]
fn whiteouts_delete_lower_entries_only() {
    let mut fs = Fs::new();
    let l1 = TarBuilder::new()
        .file(b"a/keep", 0o644, b"k")
        .file(b"a/gone", 0o644, b"g")
        .file(b"a/dir/x", 0o644, b"x")
        .finish();
    // The whiteout for "new" must not delete the file of the same layer.
    let l2 = TarBuilder::new()
        .file(b"a/new", 0o644, b"n")
        .file(b"a/.wh.gone", 0o644, b"")
        .file(b"a/.wh.dir", 0o644, b"")
        .file(b"a/.wh.new", 0o644, b"")
        .finish();
    fs.apply_layer(leak(l1), LayerKind::Tar).unwrap();
    let s = fs.apply_layer(leak(l2), LayerKind::Tar).unwrap();
    assert_eq!(s.whiteouts, 3);
    assert_eq!(names(&fs, b"/a"), vec![b"keep".to_vec(), b"new".to_vec()]);
    assert_eq!(fs.lookup(Ino::ROOT, b"/a/dir/x", true), Err(Errno::ENOENT));
}

#[test]
fn opaque_directory_hides_lower_contents() {
    let mut fs = Fs::new();
    let l1 = TarBuilder::new()
        .file(b"d/old", 0o644, b"o")
        .file(b"d/sub/old", 0o644, b"o")
        .file(b"other/f", 0o644, b"f")
        .finish();
    let l2 = TarBuilder::new()
        .dir(b"d/", 0o755)
        .file(b"d/sub/new", 0o644, b"n")
        .file(b"d/.wh..wh..opq", 0o644, b"")
        .file(b"d/top", 0o644, b"t")
        .finish();
    fs.apply_layer(leak(l1), LayerKind::Tar).unwrap();
    let s = fs.apply_layer(leak(l2), LayerKind::Tar).unwrap();
    assert_eq!(s.opaque_dirs, 1);
    assert_eq!(names(&fs, b"/d"), vec![b"sub".to_vec(), b"top".to_vec()]);
    assert_eq!(names(&fs, b"/d/sub"), vec![b"new".to_vec()]);
    assert_eq!(read_all(&fs, b"/other/f"), b"f");
}

#[test]
fn hard_links_share_the_inode() {
    let mut fs = Fs::new();
    let l1 = TarBuilder::new().file(b"bin/busybox", 0o755, b"BB").finish();
    let l2 =
        TarBuilder::new().hardlink(b"bin/ls", b"bin/busybox").hardlink(b"sbin/init", b"./bin/ls").finish();
    fs.apply_layer(leak(l1), LayerKind::Tar).unwrap();
    let s = fs.apply_layer(leak(l2), LayerKind::Tar).unwrap();
    assert_eq!(s.hardlinks, 2);
    let a = fs.lookup(Ino::ROOT, b"/bin/busybox", false).unwrap();
    let b = fs.lookup(Ino::ROOT, b"/bin/ls", false).unwrap();
    let c = fs.lookup(Ino::ROOT, b"/sbin/init", false).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(fs.stat(a).unwrap().nlink, 3);
    fs.write(b, 0, b"bb").unwrap();
    assert_eq!(read_all(&fs, b"/bin/busybox"), b"bb");
    fs.unlink(fs.lookup(Ino::ROOT, b"/bin", true).unwrap(), b"busybox").unwrap();
    assert_eq!(fs.stat(c).unwrap().nlink, 2);
    assert_eq!(read_all(&fs, b"/sbin/init"), b"bb");

    let bad = TarBuilder::new().hardlink(b"x", b"missing").finish();
    assert!(matches!(fs.apply_layer(leak(bad), LayerKind::Tar), Err(LayerError::BadHardLink { .. })));
    let to_dir = TarBuilder::new().hardlink(b"y", b"bin").finish();
    assert!(matches!(fs.apply_layer(leak(to_dir), LayerKind::Tar), Err(LayerError::BadHardLink { .. })));
}

#[test]
fn gnu_long_names_and_pax_records() {
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "f".repeat(150));
    let long_target = format!("/{long_name}");
    let pax_name = format!("{long_dir}/{}", "p".repeat(200));
    let archive = TarBuilder::new()
        .gnu_long_name(long_name.as_bytes())
        .file(b"truncated-name", 0o644, b"long")
        .gnu_long_name(b"link-with-long-target")
        .gnu_long_link(long_target.as_bytes())
        .symlink(b"ignored", b"ignored")
        .pax(&[(b"path", pax_name.as_bytes()), (b"uid", b"1000"), (b"mtime", b"1234.5")])
        .file(b"pax-ignored", 0o600, b"pax data")
        .pax(&[(b"linkpath", long_target.as_bytes())])
        .symlink(b"paxlink", b"short")
        .finish();
    let mut fs = Fs::new();
    let s = fs.apply_layer(leak(archive), LayerKind::Tar).unwrap();
    assert_eq!(s.entries, 4, "long-name and pax records fold into their member");
    assert_eq!(read_all(&fs, long_name.as_bytes()), b"long");
    assert_eq!(read_all(&fs, b"link-with-long-target"), b"long");
    let l = fs.lookup(Ino::ROOT, b"paxlink", false).unwrap();
    assert_eq!(fs.readlink(l).unwrap(), long_target.as_bytes());
    let p = fs.lookup(Ino::ROOT, pax_name.as_bytes(), true).unwrap();
    let st = fs.stat(p).unwrap();
    assert_eq!((st.uid, st.mtime.sec, st.size), (1000, 1234, 8));
    assert_eq!(fs.lookup(Ino::ROOT, b"truncated-name", true), Err(Errno::ENOENT));
}

#[test]
fn pax_size_overrides_header_size() {
    let mut b = TarBuilder::new();
    b.pax(&[(b"size", b"3")]);
    // Header says 0 bytes; the pax record says 3 and the data block follows.
    b.raw(b'0', b"sized", b"", 0o644, b"");
    let mut archive = b.finish();
    // Put the data where the header's (empty) data would be followed: replace the first zero
    // block after the member header with a data block.
    let header_end = archive.len() - 1024;
    let mut data = vec![0u8; 512];
    data[..3].copy_from_slice(b"abc");
    archive.splice(header_end..header_end, data);
    let mut fs = Fs::new();
    fs.apply_layer(leak(archive), LayerKind::Tar).unwrap();
    assert_eq!(read_all(&fs, b"sized"), b"abc");
}

#[test]
fn base256_size_field() {
    let mut archive = TarBuilder::new().file(b"f", 0o644, b"hello").finish();
    // Rewrite the size as GNU base-256 and fix the checksum.
    let h = &mut archive[..512];
    h[124..136].fill(0);
    h[124] = 0x80;
    h[135] = 5;
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut fs = Fs::new();
    fs.apply_layer(leak(archive), LayerKind::Tar).unwrap();
    assert_eq!(read_all(&fs, b"f"), b"hello");
}

#[test]
fn unsafe_paths_and_skipped_members() {
    let mut fs = Fs::new();
    let bad = TarBuilder::new().file(b"a/../../etc/passwd", 0o644, b"x").finish();
    assert!(matches!(fs.apply_layer(leak(bad), LayerKind::Tar), Err(LayerError::UnsafePath { .. })));
    let devs = TarBuilder::new()
        .raw(b'3', b"dev/null", b"", 0o666, b"")
        .raw(b'6', b"fifo", b"", 0o644, b"")
        .file(b"ok", 0o644, b"ok")
        .finish();
    let s = fs.apply_layer(leak(devs), LayerKind::Tar).unwrap();
    assert_eq!(s.skipped, 2);
    assert_eq!(read_all(&fs, b"ok"), b"ok");
    let through_file = TarBuilder::new().file(b"ok/x", 0o644, b"x").finish();
    assert!(matches!(
        fs.apply_layer(leak(through_file), LayerKind::Tar),
        Err(LayerError::NotADirectory { .. })
    ));
}

#[test]
fn parents_through_symlinks_are_followed() {
    let mut fs = Fs::new();
    let l1 = TarBuilder::new().dir(b"usr/bin", 0o755).symlink(b"bin", b"usr/bin").finish();
    let l2 = TarBuilder::new().file(b"bin/tool", 0o755, b"t").finish();
    fs.apply_layer(leak(l1), LayerKind::Tar).unwrap();
    fs.apply_layer(leak(l2), LayerKind::Tar).unwrap();
    assert_eq!(read_all(&fs, b"/usr/bin/tool"), b"t");
}

#[test]
fn gzip_layer_with_all_header_fields() {
    let tar = TarBuilder::new().file(b"etc/motd", 0o644, b"welcome\n").finish();
    let mut fs = Fs::new();
    let s = fs.apply_layer(leak(gzip(&tar)), LayerKind::TarGzip).unwrap();
    assert_eq!(s.inflated_bytes, tar.len() as u64);
    assert_eq!(read_all(&fs, b"/etc/motd"), b"welcome\n");

    // FEXTRA, FNAME, FCOMMENT and FHCRC all present.
    let deflated = miniz_oxide::deflate::compress_to_vec(&tar, 9);
    let mut gz = vec![0x1f, 0x8b, 8, 4 | 8 | 16 | 2, 0, 0, 0, 0, 0, 3];
    gz.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
    gz.extend_from_slice(b"name\0comment\0");
    let hcrc = (crc32(&gz) & 0xffff) as u16;
    gz.extend_from_slice(&hcrc.to_le_bytes());
    gz.extend_from_slice(&deflated);
    gz.extend_from_slice(&crc32(&tar).to_le_bytes());
    gz.extend_from_slice(&(tar.len() as u32).to_le_bytes());
    let mut fs2 = Fs::new();
    fs2.apply_layer(leak(gz.clone()), LayerKind::TarGzip).unwrap();
    assert_eq!(read_all(&fs2, b"/etc/motd"), b"welcome\n");

    // A wrong header CRC, a wrong data CRC and a wrong ISIZE are corrupt-layer errors.
    let mut bad_hcrc = gz.clone();
    bad_hcrc[28] ^= 1;
    assert!(matches!(Fs::new().apply_layer(leak(bad_hcrc), LayerKind::TarGzip), Err(LayerError::Gzip(_))));
    let n = gz.len();
    let mut bad_crc = gz.clone();
    bad_crc[n - 8] ^= 1;
    assert!(matches!(Fs::new().apply_layer(leak(bad_crc), LayerKind::TarGzip), Err(LayerError::Gzip(_))));
    let mut bad_size = gz;
    bad_size[n - 1] ^= 1;
    assert!(matches!(Fs::new().apply_layer(leak(bad_size), LayerKind::TarGzip), Err(LayerError::Gzip(_))));
}

#[test]
fn gzip_layer_counts_against_the_limit() {
    let tar = TarBuilder::new().file(b"big", 0o644, &vec![b'z'; 200_000]).finish();
    let mut fs = Fs::with_limit(100_000);
    assert!(matches!(fs.apply_layer(leak(gzip(&tar)), LayerKind::TarGzip), Err(LayerError::NoSpace { .. })));
    // The same layer uncompressed is borrowed and fits.
    fs.apply_layer(leak(tar), LayerKind::Tar).unwrap();
    assert_eq!(fs.stat(fs.lookup(Ino::ROOT, b"big", true).unwrap()).unwrap().size, 200_000);
}

#[test]
fn deep_trees_are_removed_without_recursion() {
    let deep = "a/".repeat(2000);
    let l1 = TarBuilder::new()
        .pax(&[(b"path", format!("top/{deep}f").as_bytes())])
        .file(b"x", 0o644, b"deep")
        .file(b"other/g", 0o644, b"g")
        .finish();
    let l2 = TarBuilder::new().file(b".wh.top", 0o644, b"").file(b"other/.wh..wh..opq", 0o644, b"").finish();
    let mut fs = Fs::new();
    fs.apply_layer(leak(l1), LayerKind::Tar).unwrap();
    let used = fs.used_bytes();
    assert_eq!(read_all(&fs, format!("/top/{deep}f").as_bytes()), b"deep");
    fs.apply_layer(leak(l2), LayerKind::Tar).unwrap();
    assert_eq!(fs.lookup(Ino::ROOT, b"/top", true), Err(Errno::ENOENT));
    assert!(names(&fs, b"/other").is_empty());
    assert!(fs.used_bytes() < used - 2000 * crx_fs::INODE_COST_BYTES, "inodes were freed");
}
