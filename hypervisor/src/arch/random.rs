//! Random bytes from the CPU, for key material (TLS) and identifiers: RDSEED (the
//! conditioned entropy source, Intel SDM Vol. 1 7.3.17.2) where the CPU has it, else
//! RDRAND (its DRBG, reseeded by the same source).
//!
//! There is no fallback: a CPU with neither gets `Err` from [`fill`] rather than
//! predictable bytes, and the node then makes no TLS connection and says why.

use x86_64::instructions::random::RdRand;

/// How often one 64-bit RDRAND draw is retried when no value is ready (Intel's guidance
/// is 10).
const RETRIES: usize = 10;
/// RDSEED runs dry under load more often; it is retried longer, then RDRAND is used.
const SEED_RETRIES: usize = 100;

/// Which instructions the CPU offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// RDSEED, with RDRAND behind it.
    RdSeed,
    /// RDRAND alone.
    RdRand,
    /// Neither.
    None,
}

impl Source {
    /// For the console.
    pub fn describe(self) -> &'static str {
        match self {
            Source::RdSeed => "RDSEED (RDRAND behind it)",
            Source::RdRand => "RDRAND (no RDSEED)",
            Source::None => "none: this CPU has neither RDSEED nor RDRAND, so the node makes no keys",
        }
    }
}

fn has_rdseed() -> bool {
    // CPUID.(EAX=07H, ECX=0):EBX bit 18.
    super::cpu::cpuid(0, 0).eax >= 7 && super::cpu::cpuid(7, 0).ebx & (1 << 18) != 0
}

/// What this CPU offers.
pub fn source() -> Source {
    match (RdRand::new().is_some(), has_rdseed()) {
        (true, true) => Source::RdSeed,
        (true, false) => Source::RdRand,
        // RDSEED without RDRAND does not occur on real CPUs; use neither then.
        (false, _) => Source::None,
    }
}

/// Whether the CPU has a random source [`fill`] uses.
pub fn available() -> bool {
    source() != Source::None
}

fn rdseed64() -> Option<u64> {
    let value: u64;
    let ok: u8;
    // SAFETY: only called when CPUID reports RDSEED; the instruction writes the named
    // register and the carry flag, and touches no memory.
    unsafe {
        core::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack));
    }
    (ok == 1).then_some(value)
}

/// Fills `buf` from RDSEED where it answers, else RDRAND; `Err(())` when the CPU has
/// neither or a draw kept failing (the contents of `buf` are then unspecified and must not
/// be used).
#[allow(clippy::result_unit_err)]
pub fn fill(buf: &mut [u8]) -> Result<(), ()> {
    let rd = RdRand::new().ok_or(())?;
    let seed = has_rdseed();
    for chunk in buf.chunks_mut(8) {
        let from_seed = if seed {
            (0..SEED_RETRIES).find_map(|_| {
                let v = rdseed64();
                if v.is_none() {
                    core::hint::spin_loop();
                }
                v
            })
        } else {
            None
        };
        let word = match from_seed {
            Some(w) => w,
            None => (0..RETRIES).find_map(|_| rd.get_u64()).ok_or(())?,
        };
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    Ok(())
}
