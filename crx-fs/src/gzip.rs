//! gzip (RFC 1952) decoding: the member header is parsed here, the raw deflate stream is
//! inflated by `miniz_oxide`, and the CRC-32 and ISIZE trailer are checked.
//!
//! No-panic contract: [`gunzip`] returns a [`GzipError`] for any input; it never indexes out
//! of bounds and never allocates more than `limit_bytes` of output.

use alloc::vec::Vec;
use core::fmt;

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;
const FRESERVED: u8 = 0xe0;

/// Why a gzip stream could not be decoded. `offset` is a byte offset into the compressed input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GzipError {
    /// The input ends inside a member header or trailer, or the deflate stream is cut short.
    Truncated {
        /// Where the missing bytes were expected.
        offset: usize,
    },
    /// The member does not start with the magic bytes 0x1f 0x8b.
    BadMagic {
        /// Start of the member.
        offset: usize,
    },
    /// The compression method is not 8 (deflate).
    UnsupportedMethod {
        /// The method byte found.
        method: u8,
    },
    /// Reserved flag bits are set.
    ReservedFlags {
        /// The flag byte found.
        flags: u8,
    },
    /// The header CRC-16 (FHCRC) does not match.
    HeaderCrc,
    /// The deflate data is invalid.
    Inflate {
        /// Offset of the member's deflate data.
        offset: usize,
    },
    /// The CRC-32 of the decompressed data does not match the trailer.
    CrcMismatch {
        /// CRC-32 stored in the trailer.
        expected: u32,
        /// CRC-32 of the data produced.
        actual: u32,
    },
    /// The decompressed length modulo 2^32 does not match the trailer's ISIZE.
    SizeMismatch {
        /// ISIZE stored in the trailer.
        expected: u32,
        /// Length produced, modulo 2^32.
        actual: u32,
    },
    /// Bytes after the last member are neither another member nor zero padding.
    TrailingGarbage {
        /// Offset of the unexpected bytes.
        offset: usize,
    },
    /// The decompressed data would exceed the allowed size.
    TooLarge {
        /// The limit in bytes.
        limit_bytes: usize,
    },
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GzipError::Truncated { offset } => write!(f, "gzip data truncated at byte {offset}"),
            GzipError::BadMagic { offset } => write!(f, "not gzip data (bad magic at byte {offset})"),
            GzipError::UnsupportedMethod { method } => {
                write!(f, "unsupported gzip compression method {method}")
            }
            GzipError::ReservedFlags { flags } => write!(f, "reserved gzip flags set ({flags:#04x})"),
            GzipError::HeaderCrc => write!(f, "gzip header checksum mismatch"),
            GzipError::Inflate { offset } => write!(f, "corrupt deflate data in member at byte {offset}"),
            GzipError::CrcMismatch { expected, actual } => {
                write!(f, "gzip CRC-32 mismatch (trailer {expected:#010x}, data {actual:#010x})")
            }
            GzipError::SizeMismatch { expected, actual } => {
                write!(f, "gzip size mismatch (trailer {expected}, data {actual})")
            }
            GzipError::TrailingGarbage { offset } => write!(f, "garbage after gzip data at byte {offset}"),
            GzipError::TooLarge { limit_bytes } => {
                write!(f, "decompressed data exceeds the limit of {limit_bytes} bytes")
            }
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xedb88320) lookup table.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Continues a CRC-32 over `data`; start with `crc = 0`.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// CRC-32 of `data` as gzip stores it.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

fn byte(input: &[u8], at: usize) -> Result<u8, GzipError> {
    input.get(at).copied().ok_or(GzipError::Truncated { offset: at })
}

fn le32(input: &[u8], at: usize) -> Result<u32, GzipError> {
    let end = at.checked_add(4).ok_or(GzipError::Truncated { offset: at })?;
    match input.get(at..end) {
        Some(&[a, b, c, d]) => Ok(u32::from_le_bytes([a, b, c, d])),
        _ => Err(GzipError::Truncated { offset: input.len() }),
    }
}

/// Parses one member header starting at `start`; returns the offset of the deflate data.
fn parse_header(input: &[u8], start: usize) -> Result<usize, GzipError> {
    if byte(input, start)? != 0x1f || byte(input, start + 1)? != 0x8b {
        return Err(GzipError::BadMagic { offset: start });
    }
    let method = byte(input, start + 2)?;
    if method != 8 {
        return Err(GzipError::UnsupportedMethod { method });
    }
    let flags = byte(input, start + 3)?;
    if flags & FRESERVED != 0 {
        return Err(GzipError::ReservedFlags { flags });
    }
    // MTIME (4), XFL (1), OS (1).
    let mut at = start + 10;
    if at > input.len() {
        return Err(GzipError::Truncated { offset: input.len() });
    }
    if flags & FEXTRA != 0 {
        let xlen = usize::from(byte(input, at)?) | usize::from(byte(input, at + 1)?) << 8;
        at += 2 + xlen;
        if at > input.len() {
            return Err(GzipError::Truncated { offset: input.len() });
        }
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = input.get(at..).unwrap_or(&[]);
            let nul =
                rest.iter().position(|&b| b == 0).ok_or(GzipError::Truncated { offset: input.len() })?;
            at += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        let stored = u16::from(byte(input, at)?) | u16::from(byte(input, at + 1)?) << 8;
        let header = input.get(start..at).ok_or(GzipError::Truncated { offset: at })?;
        if (crc32(header) & 0xffff) as u16 != stored {
            return Err(GzipError::HeaderCrc);
        }
        at += 2;
    }
    Ok(at)
}

/// Decompresses a gzip stream (one or more members, optionally followed by zero padding).
///
/// At most `limit_bytes` of output are produced; more is [`GzipError::TooLarge`].
pub fn gunzip(input: &[u8], limit_bytes: usize) -> Result<Vec<u8>, GzipError> {
    let mut out: Vec<u8> = Vec::new();
    let mut full = false;
    gunzip_chunks(input, limit_bytes, |chunk| {
        if out.try_reserve(chunk.len()).is_err() {
            full = true;
        } else {
            out.extend_from_slice(chunk);
        }
    })?;
    if full {
        return Err(GzipError::TooLarge { limit_bytes });
    }
    Ok(out)
}

/// Decompresses a gzip stream as [`gunzip`] does, handing the output to `sink` a piece at a
/// time (at most 8 KiB each) instead of holding it: what hashes or unpacks a large layer
/// needs only the compressed bytes in memory. Returns the decompressed length. Output
/// already handed over stays handed over when an error is found later (a bad trailer, say),
/// so a caller must not trust it before the call returns `Ok`.
pub fn gunzip_chunks(
    input: &[u8],
    limit_bytes: usize,
    mut sink: impl FnMut(&[u8]),
) -> Result<usize, GzipError> {
    let mut total = 0usize;
    let mut start = 0usize;
    let mut state = InflateState::new_boxed(DataFormat::Raw);
    let mut chunk = [0u8; 8192];
    loop {
        let data_at = parse_header(input, start)?;
        state.reset(DataFormat::Raw);
        let mut member_crc = 0u32;
        let mut member_len = 0u32;
        let mut at = data_at;
        loop {
            let rest = input.get(at..).unwrap_or(&[]);
            let res = inflate(&mut state, rest, &mut chunk, MZFlush::None);
            at += res.bytes_consumed;
            let produced = chunk.get(..res.bytes_written).unwrap_or(&[]);
            if total.saturating_add(produced.len()) > limit_bytes {
                return Err(GzipError::TooLarge { limit_bytes });
            }
            total += produced.len();
            member_crc = crc32_update(member_crc, produced);
            member_len = member_len.wrapping_add(produced.len() as u32);
            sink(produced);
            match res.status {
                Ok(MZStatus::StreamEnd) => break,
                Ok(_) => {
                    if res.bytes_consumed == 0 && res.bytes_written == 0 {
                        return Err(GzipError::Truncated { offset: at });
                    }
                }
                Err(MZError::Buf) => return Err(GzipError::Truncated { offset: at }),
                Err(_) => return Err(GzipError::Inflate { offset: data_at }),
            }
        }
        let expected_crc = le32(input, at)?;
        let expected_size = le32(input, at + 4)?;
        if member_crc != expected_crc {
            return Err(GzipError::CrcMismatch { expected: expected_crc, actual: member_crc });
        }
        if member_len != expected_size {
            return Err(GzipError::SizeMismatch { expected: expected_size, actual: member_len });
        }
        start = at + 8;
        let rest = input.get(start..).unwrap_or(&[]);
        if rest.is_empty() || rest.iter().all(|&b| b == 0) {
            return Ok(total);
        }
        if rest.first() != Some(&0x1f) {
            return Err(GzipError::TrailingGarbage { offset: start });
        }
    }
}

/// Builds a gzip member around raw deflate data (for tests and for tools that make layers).
pub fn wrap_deflate(deflated: &[u8], original: &[u8], name: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(deflated.len() + 32);
    let flags = if name.is_some() { FNAME } else { 0 };
    out.extend_from_slice(&[0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 255]);
    if let Some(name) = name {
        out.extend_from_slice(name);
        out.push(0);
    }
    out.extend_from_slice(deflated);
    out.extend_from_slice(&crc32(original).to_le_bytes());
    out.extend_from_slice(&(original.len() as u32).to_le_bytes());
    out
}
