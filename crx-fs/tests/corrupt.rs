//! Truncated and bit-flipped layers give errors, never panics.

mod common;

use common::{gzip, leak};
use crx_fs::gzip::gunzip;
use crx_fs::tar::TarBuilder;
use crx_fs::{Fs, LayerKind};

fn sample() -> Vec<u8> {
    TarBuilder::new()
        .dir(b"etc/", 0o755)
        .file(b"etc/hostname", 0o644, b"pod\n")
        .symlink(b"etc/link", b"hostname")
        .hardlink(b"etc/hard", b"etc/hostname")
        .pax(&[(b"path", b"etc/pax-name")])
        .file(b"x", 0o600, b"pax")
        .gnu_long_name(b"etc/long")
        .file(b"y", 0o600, b"gnu")
        .file(b"etc/.wh.old", 0o644, b"")
        .finish()
}

#[test]
fn sample_is_valid() {
    let mut fs = Fs::new();
    let s = fs.apply_layer(leak(sample()), LayerKind::Tar).unwrap();
    assert_eq!(s.entries, 7);
}

#[test]
fn truncated_tar_is_an_error_at_every_length() {
    let full = sample();
    // The archive ends with two zero blocks; one is enough, so only cuts before the last
    // block must fail.
    let must_fail = full.len() - 512;
    for len in 0..full.len() {
        let cut = leak(full[..len].to_vec());
        let r = Fs::new().apply_layer(cut, LayerKind::Tar);
        if len < must_fail {
            assert!(r.is_err(), "truncation to {len} bytes was accepted");
        }
    }
}

#[test]
fn bit_flips_in_tar_headers_are_errors_and_never_panic() {
    let full = sample();
    let headers: Vec<usize> = {
        // Header offsets: walk the archive the same way the reader does.
        let mut v = Vec::new();
        let mut r = crx_fs::tar::TarReader::new(&full);
        while let Ok(Some(e)) = r.next_entry() {
            v.push(e.header_offset);
        }
        v
    };
    for at in 0..full.len() {
        for bit in [0u8, 3, 7] {
            let mut bytes = full.clone();
            bytes[at] ^= 1 << bit;
            let r = Fs::new().apply_layer(leak(bytes), LayerKind::Tar);
            let in_header = headers.iter().any(|&h| at >= h && at < h + 512);
            let in_checksum = headers.iter().any(|&h| at >= h + 148 && at < h + 156);
            if in_header && !in_checksum {
                assert!(r.is_err(), "flip of bit {bit} at {at} was accepted");
            }
        }
    }
}

#[test]
fn truncated_and_flipped_gzip_are_errors() {
    let gz = gzip(&sample());
    for len in 0..gz.len() {
        let r = Fs::new().apply_layer(leak(gz[..len].to_vec()), LayerKind::TarGzip);
        assert!(r.is_err(), "gzip cut to {len} bytes was accepted");
    }
    // A flip must be an error unless the data comes out unchanged (FTEXT, MTIME/XFL/OS, the
    // file name, padding bits, or a back-reference moved between identical runs of zeros).
    let tar = sample();
    let mut accepted = 0;
    let mut flips = 0;
    for at in 0..gz.len() {
        for bit in 0..8 {
            let mut bytes = gz.clone();
            bytes[at] ^= 1 << bit;
            flips += 1;
            if Fs::new().apply_layer(leak(bytes.clone()), LayerKind::TarGzip).is_ok() {
                assert_eq!(
                    gunzip(&bytes, usize::MAX).as_deref(),
                    Ok(&tar[..]),
                    "flip at {at} changed the data"
                );
                accepted += 1;
            }
        }
    }
    assert!(accepted * 10 < flips, "{accepted} of {flips} flips accepted");
}

#[test]
fn garbage_is_an_error() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in [0usize, 1, 100, 512, 1024, 1536, 4096] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        assert!(Fs::new().apply_layer(leak(bytes.clone()), LayerKind::Tar).is_err());
        assert!(Fs::new().apply_layer(leak(bytes), LayerKind::TarGzip).is_err());
    }
}
