//! Local APIC register layout and timer arithmetic (Intel SDM Vol. 3A chapter 11).
//!
//! A register at xAPIC MMIO offset `o` is x2APIC MSR `0x800 + o / 16` (SDM Vol. 3A
//! 11.12.1.2); the interrupt command register is one 64-bit MSR in x2APIC mode and two
//! 32-bit halves in xAPIC mode, with the destination in different bits.

/// Register offsets in the xAPIC MMIO page.
pub mod reg {
    /// Local APIC ID.
    pub const ID: u32 = 0x20;
    /// Task priority.
    pub const TPR: u32 = 0x80;
    /// End of interrupt.
    pub const EOI: u32 = 0xb0;
    /// Spurious-interrupt vector (and the software enable bit).
    pub const SVR: u32 = 0xf0;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// Interrupt command, low half.
    pub const ICR_LOW: u32 = 0x300;
    /// Interrupt command, high half (xAPIC only).
    pub const ICR_HIGH: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count.
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

/// The x2APIC MSR for xAPIC offset `offset`.
pub const fn x2apic_msr(offset: u32) -> u32 {
    0x800 + (offset >> 4)
}

/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// LVT bit 16: masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT timer mode bits 18:17 = 01: periodic.
pub const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// LVT timer mode bits 18:17 = 10: TSC-deadline.
pub const LVT_TIMER_TSC_DEADLINE: u32 = 2 << 17;
/// Divide configuration value for divide-by-16 (SDM Vol. 3A Figure 11-10).
pub const DIVIDE_BY_16: u32 = 0b0011;
/// The divisor [`DIVIDE_BY_16`] selects.
pub const DIVISOR: u64 = 16;

/// ICR delivery status bit (xAPIC only): the previous IPI is still being sent.
pub const ICR_PENDING: u32 = 1 << 12;

/// What an inter-processor interrupt asks of its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipi {
    /// A fixed interrupt with this vector.
    Fixed(u8),
    /// INIT (level assert).
    Init,
    /// Start-up with this vector: the target starts in real mode at `vector * 4096`.
    Startup(u8),
}

impl Ipi {
    /// ICR bits 0..=19 (vector, delivery mode, level), SDM Vol. 3A Figure 11-12.
    pub const fn icr_low(self) -> u32 {
        const ASSERT: u32 = 1 << 14;
        match self {
            Ipi::Fixed(v) => ASSERT | v as u32,
            Ipi::Init => ASSERT | (0b101 << 8),
            Ipi::Startup(v) => ASSERT | (0b110 << 8) | v as u32,
        }
    }

    /// The 64-bit x2APIC ICR value for `dest` (destination in bits 63:32).
    pub const fn x2apic_icr(self, dest: u32) -> u64 {
        ((dest as u64) << 32) | self.icr_low() as u64
    }

    /// The xAPIC ICR high half for `dest`, or `None` when the ID does not fit the
    /// 8-bit physical destination field.
    pub fn xapic_icr_high(dest: u32) -> Option<u32> {
        u8::try_from(dest).ok().map(|d| u32::from(d) << 24)
    }
}

/// Timer input frequency in Hz from a calibration run: the timer counted down `counted`
/// while the TSC advanced `tsc_ticks` at `tsc_hz`. `None` when a value is zero or the
/// result does not fit.
pub fn timer_hz(counted: u64, tsc_ticks: u64, tsc_hz: u64) -> Option<u64> {
    if counted == 0 || tsc_ticks == 0 || tsc_hz == 0 {
        return None;
    }
    u64::try_from(u128::from(counted) * u128::from(tsc_hz) / u128::from(tsc_ticks)).ok()
}

/// Initial count for a periodic timer running at `timer_hz` to fire `tick_hz` times a
/// second, clamped to 1..=u32::MAX. `None` if either rate is zero.
pub fn periodic_count(timer_hz: u64, tick_hz: u64) -> Option<u32> {
    if timer_hz == 0 || tick_hz == 0 {
        return None;
    }
    Some(u32::try_from(timer_hz / tick_hz).unwrap_or(u32::MAX).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x2apic_msrs_follow_the_offsets() {
        assert_eq!(x2apic_msr(reg::ID), 0x802);
        assert_eq!(x2apic_msr(reg::EOI), 0x80b);
        assert_eq!(x2apic_msr(reg::SVR), 0x80f);
        assert_eq!(x2apic_msr(reg::ICR_LOW), 0x830);
        assert_eq!(x2apic_msr(reg::LVT_TIMER), 0x832);
        assert_eq!(x2apic_msr(reg::TIMER_DIVIDE), 0x83e);
    }

    #[test]
    fn ipis_encode() {
        assert_eq!(Ipi::Init.icr_low(), 0x4500);
        assert_eq!(Ipi::Startup(0x08).icr_low(), 0x4608);
        assert_eq!(Ipi::Fixed(0x41).icr_low(), 0x4041);
        assert_eq!(Ipi::Fixed(0x41).x2apic_icr(3), 0x3_0000_4041);
        assert_eq!(Ipi::xapic_icr_high(3), Some(0x0300_0000));
        assert_eq!(Ipi::xapic_icr_high(256), None);
    }

    #[test]
    fn timer_arithmetic() {
        // 10 ms of a 2 GHz TSC while a 62.5 MHz (1 GHz / 16) timer counted 625 000.
        let hz = timer_hz(625_000, 20_000_000, 2_000_000_000);
        assert_eq!(hz, Some(62_500_000));
        assert_eq!(periodic_count(62_500_000, 100), Some(625_000));
        assert_eq!(periodic_count(50, 100), Some(1));
        assert_eq!(periodic_count(u64::MAX, 1), Some(u32::MAX));
        assert_eq!(timer_hz(0, 1, 1), None);
        assert_eq!(timer_hz(1, 0, 1), None);
        assert_eq!(periodic_count(1, 0), None);
    }
}
