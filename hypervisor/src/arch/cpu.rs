//! CPU identification.

use core::arch::x86_64::__cpuid;

/// Hardware virtualization a CPU offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Virt {
    /// Intel VT-x.
    Vmx,
    /// AMD-V.
    Svm,
    /// Neither.
    None,
}

impl Virt {
    /// The name in the ready line.
    pub fn name(self) -> &'static str {
        match self {
            Virt::Vmx => "vmx",
            Virt::Svm => "svm",
            Virt::None => "none",
        }
    }
}

/// Reads CPUID leaf `leaf`, sub-leaf `sub`.
pub fn cpuid(leaf: u32, sub: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, sub)
}

/// Which virtualization extension CPUID reports: CPUID.1:ECX bit 5 (VMX, Intel SDM
/// Vol. 3C 23.6) or CPUID.8000_0001h:ECX bit 2 (SVM, AMD APM Vol. 2 15.4).
pub fn virt() -> Virt {
    if __cpuid(1).ecx & (1 << 5) != 0 {
        return Virt::Vmx;
    }
    if __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 2) != 0 {
        return Virt::Svm;
    }
    Virt::None
}

/// The vendor string ("GenuineIntel", "AuthenticAMD", ...).
pub fn vendor() -> [u8; 12] {
    let r = __cpuid(0);
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..12].copy_from_slice(&r.ecx.to_le_bytes());
    v
}
