//! Helpers shared by the integration tests.

#![allow(dead_code)]

use crx_fs::gzip::wrap_deflate;

/// Layer bytes live for the whole test process, like the read-only layer window of a VM.
pub fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

/// A gzip member around `data`, made with miniz_oxide's compressor.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, 6);
    wrap_deflate(&deflated, data, Some(b"layer.tar"))
}
