//! Random bytes from the CPU's RDRAND instruction, for key material (TLS).
//!
//! There is no fallback: without RDRAND, or when it keeps failing, [`fill`] fails rather
//! than hand out predictable bytes.

use x86_64::instructions::random::RdRand;

/// How often one 64-bit draw is retried when RDRAND reports no value ready (Intel's
/// guidance is 10).
const RETRIES: usize = 10;

/// Whether the CPU has RDRAND.
pub fn available() -> bool {
    RdRand::new().is_some()
}

/// Fills `buf` from RDRAND; `Err(())` when the CPU has no RDRAND or a draw kept failing
/// (the contents of `buf` are then unspecified and must not be used).
#[allow(clippy::result_unit_err)]
pub fn fill(buf: &mut [u8]) -> Result<(), ()> {
    let rd = RdRand::new().ok_or(())?;
    for chunk in buf.chunks_mut(8) {
        let word = (0..RETRIES).find_map(|_| rd.get_u64()).ok_or(())?;
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    Ok(())
}
