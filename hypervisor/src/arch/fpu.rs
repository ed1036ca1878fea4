//! x87/SSE/AVX state for guests. The kernel itself is soft-float and never touches these
//! registers, so the only state to switch is the vCPUs': each has a save area, restored
//! before it runs on a CPU whose registers hold another vCPU's state (XSAVE/XRSTOR, or
//! FXSAVE/FXRSTOR on CPUs without XSAVE).

use crate::vm::handler::xcr0_for;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

/// CR4.OSFXSR (bit 9), CR4.OSXMMEXCPT (bit 10), CR4.OSXSAVE (bit 18).
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;

/// XCR0 the host runs with (0: no XSAVE), the same on every CPU.
static XCR0: AtomicU64 = AtomicU64::new(0);
/// Save-area bytes for that XCR0 (512 for FXSAVE).
static AREA_BYTES: AtomicU64 = AtomicU64::new(512);

fn has_xsave() -> bool {
    let c = super::cpu::cpuid(0, 0);
    c.eax >= 0xd && super::cpu::cpuid(1, 0).ecx & (1 << 26) != 0
}

/// Enables FXSR and, when the CPU has it, XSAVE with every x87/SSE/AVX component it
/// supports (CPUID.(EAX=0Dh,ECX=0):EAX; SDM Vol. 1 13.3). Runs once on every CPU.
pub fn init_cpu() {
    let xsave = has_xsave();
    // SAFETY: setting OSFXSR/OSXMMEXCPT only lets FXSAVE/SSE work as intended; OSXSAVE
    // is set only when CPUID reports XSAVE (it is reserved otherwise).
    unsafe {
        let mut cr4 = x86_64::registers::control::Cr4::read_raw();
        cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT;
        if xsave {
            cr4 |= CR4_OSXSAVE;
        }
        x86_64::registers::control::Cr4::write_raw(cr4);
    }
    if !xsave {
        return;
    }
    let xcr0 = xcr0_for(super::cpu::cpuid(0xd, 0).eax);
    // SAFETY: CR4.OSXSAVE is set above; `xcr0` holds x87 and only components CPUID lists
    // as supported, with SSE whenever AVX (SDM Vol. 1 13.3: anything else is #GP).
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32,
            options(nomem, nostack));
    }
    // EBX: bytes needed for the components now enabled in XCR0.
    let bytes = u64::from(super::cpu::cpuid(0xd, 0).ebx).max(576);
    XCR0.store(xcr0, Ordering::Relaxed);
    AREA_BYTES.store(bytes, Ordering::Relaxed);
}

/// The host XCR0 (0 without XSAVE).
pub fn host_xcr0() -> u64 {
    XCR0.load(Ordering::Relaxed)
}

/// 64 bytes, 64-byte aligned: the unit of a save area (XSAVE needs 64-byte alignment).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// One vCPU's x87/SSE/AVX state.
pub struct FpuState {
    area: Vec<Line>,
}

impl FpuState {
    /// The reset state: FCW 0x37F, MXCSR 0x1F80, everything else clear (an XSAVE header
    /// of zeros: every component in its initial configuration). `None` without heap.
    pub fn new() -> Option<Self> {
        let lines = AREA_BYTES.load(Ordering::Relaxed).div_ceil(64) as usize;
        let mut area = Vec::new();
        area.try_reserve_exact(lines).ok()?;
        area.resize(lines, Line([0; 64]));
        let first = &mut area.first_mut()?.0;
        first[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        first[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        Some(FpuState { area })
    }

    /// Heap bytes this state takes.
    pub fn bytes(&self) -> usize {
        self.area.len() * 64
    }

    /// Saves this CPU's registers into the area.
    pub fn save(&mut self) {
        let p = self.area.as_mut_ptr().cast::<u8>();
        let xcr0 = host_xcr0();
        if xcr0 != 0 {
            // SAFETY: the area is 64-byte aligned and as large as CPUID.0Dh:EBX said for
            // the XCR0 in force; CR4.OSXSAVE is set on every CPU that runs vCPUs.
            unsafe {
                core::arch::asm!("xsave64 [{}]", in(reg) p, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32,
                    options(nostack));
            }
        } else {
            // SAFETY: the area is at least 512 bytes, 16-byte aligned; CR4.OSFXSR is set.
            unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) p, options(nostack)) };
        }
    }

    /// Loads the area into this CPU's registers.
    pub fn restore(&self) {
        let p = self.area.as_ptr().cast::<u8>();
        let xcr0 = host_xcr0();
        if xcr0 != 0 {
            // SAFETY: as in `save`; the area holds either the reset state above (a valid
            // XSAVE header of zeros, MXCSR with no reserved bits) or what XSAVE wrote.
            unsafe {
                core::arch::asm!("xrstor64 [{}]", in(reg) p, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32,
                    options(nostack, readonly));
            }
        } else {
            // SAFETY: as in `save`, with the reset state or what FXSAVE wrote.
            unsafe { core::arch::asm!("fxrstor64 [{}]", in(reg) p, options(nostack, readonly)) };
        }
    }
}
