//! The local APIC (x2APIC where present) and its calibrated timer.
//!
//! x2APIC mode (MSR interface, Intel SDM Vol. 3A 11.12) is used when CPUID.1:ECX[21]
//! reports it, xAPIC MMIO at the IA32_APIC_BASE address otherwise; every CPU uses the mode
//! the bootstrap CPU chose. The timer ticks at [`TICK_HZ`] on every CPU: TSC-deadline mode
//! (SDM Vol. 3A 11.5.4.1) when CPUID.1:ECX[24] reports it and the command line does not
//! ask for `timer=periodic`, else periodic mode with a count calibrated against the TSC.

use super::vectors::{PIC_VECTOR_BASE, SPURIOUS_VECTOR, TIMER_VECTOR};
use super::{percpu, time};
use crate::cmdline::TimerMode;
use crate::decode::apic::{self as regs, reg, Ipi};
use crate::selftest::{Test, Verdict};
use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use log::{info, warn};
use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;

/// Timer interrupts per second on each CPU.
pub const TICK_HZ: u64 = 100;

/// IA32_APIC_BASE (SDM Vol. 3A 11.4.4).
const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_APIC_BASE bit 11: APIC global enable.
const BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE bit 10: x2APIC mode.
const BASE_X2APIC: u64 = 1 << 10;
/// IA32_APIC_BASE bits 51:12: the xAPIC MMIO page.
const BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// IA32_TSC_DEADLINE (SDM Vol. 3A 11.5.4.1).
const IA32_TSC_DEADLINE: u32 = 0x6e0;

const MODE_OFF: u8 = 0;
const MODE_XAPIC: u8 = 1;
const MODE_X2APIC: u8 = 2;

const TIMER_PERIODIC: u8 = 1;
const TIMER_DEADLINE: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(MODE_OFF);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);
static TIMER_KIND: AtomicU8 = AtomicU8::new(0);
/// Periodic initial count for [`TICK_HZ`].
static PERIODIC_COUNT: AtomicU64 = AtomicU64::new(0);
/// TSC ticks between deadline interrupts.
static DEADLINE_STEP: AtomicU64 = AtomicU64::new(0);
/// Calibrated timer input frequency (after the divide-by-16), Hz.
static TIMER_HZ: AtomicU64 = AtomicU64::new(0);

/// Why an IPI was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpiError {
    /// The local APIC has not been enabled on this CPU.
    ApicOff,
    /// An xAPIC cannot address an APIC ID above 255.
    DestinationTooWide(u32),
    /// The previous IPI was still pending after the timeout.
    StillPending,
}

impl fmt::Display for IpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpiError::ApicOff => f.write_str("the local APIC is not enabled"),
            IpiError::DestinationTooWide(id) => write!(f, "APIC ID {id} does not fit an xAPIC destination"),
            IpiError::StillPending => f.write_str("the previous IPI was still pending after 10 ms"),
        }
    }
}

/// This CPU's APIC ID from CPUID (the x2APIC ID of leaf 0Bh where present, else the
/// initial APIC ID in CPUID.1:EBX[31:24]); usable before the APIC is enabled.
pub fn cpuid_apic_id() -> u32 {
    let max = super::cpu::cpuid(0, 0).eax;
    if max >= 0xb {
        let r = super::cpu::cpuid(0xb, 0);
        if r.ebx != 0 {
            return r.edx;
        }
    }
    super::cpu::cpuid(1, 0).ebx >> 24
}

fn has_x2apic() -> bool {
    super::cpu::cpuid(1, 0).ecx & (1 << 21) != 0
}

fn has_tsc_deadline() -> bool {
    super::cpu::cpuid(1, 0).ecx & (1 << 24) != 0
}

fn read(offset: u32) -> u32 {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => {
            // SAFETY: x2APIC mode is on (this CPU enabled it in `enable`), so the x2APIC
            // MSR range exists; reading an APIC register has no side effects.
            unsafe { Msr::new(regs::x2apic_msr(offset)).read() as u32 }
        }
        MODE_XAPIC => {
            let base = XAPIC_BASE.load(Ordering::Relaxed);
            // SAFETY: the xAPIC page is identity-mapped MMIO and `offset` is one of the
            // aligned register offsets in `reg`.
            unsafe { core::ptr::read_volatile((base + u64::from(offset)) as *const u32) }
        }
        _ => 0,
    }
}

fn write(offset: u32, value: u32) {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => {
            let mut msr = Msr::new(regs::x2apic_msr(offset));
            // SAFETY: x2APIC mode is on; the register writes used here (TPR, EOI, SVR,
            // LVTs, timer counts, ICR) only steer interrupts, not memory.
            unsafe { msr.write(u64::from(value)) };
        }
        MODE_XAPIC => {
            let base = XAPIC_BASE.load(Ordering::Relaxed);
            // SAFETY: as in `read`; the registers written only steer interrupts.
            unsafe { core::ptr::write_volatile((base + u64::from(offset)) as *mut u32, value) };
        }
        _ => {}
    }
}

/// Remaps the legacy 8259 PICs to vectors 0x20..0x30 (so a spurious IRQ cannot look like
/// an exception) and masks every line.
fn mask_pics() {
    let mut m_cmd = Port::<u8>::new(0x20);
    let mut m_data = Port::<u8>::new(0x21);
    let mut s_cmd = Port::<u8>::new(0xa0);
    let mut s_data = Port::<u8>::new(0xa1);
    // SAFETY: ports 0x20/0x21/0xA0/0xA1 are the two 8259s on every PC; this is the
    // standard ICW1-ICW4 sequence followed by masking all lines, which only stops them
    // from raising interrupts.
    unsafe {
        m_cmd.write(0x11);
        s_cmd.write(0x11);
        m_data.write(PIC_VECTOR_BASE);
        s_data.write(PIC_VECTOR_BASE + 8);
        m_data.write(4);
        s_data.write(2);
        m_data.write(1);
        s_data.write(1);
        m_data.write(0xff);
        s_data.write(0xff);
    }
}

/// Turns this CPU's local APIC on in `mode` and sets its spurious vector.
fn enable(mode: u8) {
    let mut base = Msr::new(IA32_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (all x86_64 CPUs). Setting
    // the enable bit, then the x2APIC bit only where CPUID reports x2APIC, follows the
    // legal state transitions of SDM Vol. 3A 11.12.5; the MMIO base is left unchanged.
    unsafe {
        let v = base.read();
        if v & BASE_ENABLE == 0 {
            base.write(v | BASE_ENABLE);
        }
        if mode == MODE_X2APIC {
            base.write(v | BASE_ENABLE | BASE_X2APIC);
        } else {
            XAPIC_BASE.store(v & BASE_ADDR_MASK, Ordering::Relaxed);
        }
    }
    MODE.store(mode, Ordering::Relaxed);
    write(reg::TPR, 0);
    write(reg::LVT_ERROR, regs::LVT_MASKED | u32::from(SPURIOUS_VECTOR));
    write(reg::SVR, regs::SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
}

/// Counts how fast the timer runs (divide-by-16) over about 10 ms of TSC time.
fn calibrate() -> Option<u64> {
    write(reg::TIMER_DIVIDE, regs::DIVIDE_BY_16);
    write(reg::LVT_TIMER, regs::LVT_MASKED | u32::from(TIMER_VECTOR));
    let window = time::tsc_hz() / 100;
    write(reg::TIMER_INITIAL, u32::MAX);
    let t0 = time::rdtsc();
    while time::rdtsc().wrapping_sub(t0) < window {
        core::hint::spin_loop();
    }
    let left = read(reg::TIMER_CURRENT);
    let t1 = time::rdtsc();
    write(reg::TIMER_INITIAL, 0);
    regs::timer_hz(u64::from(u32::MAX - left), t1.wrapping_sub(t0), time::tsc_hz())
}

/// Starts this CPU's tick in the mode chosen on the bootstrap CPU.
fn start_timer() {
    match TIMER_KIND.load(Ordering::Relaxed) {
        TIMER_DEADLINE => {
            write(reg::LVT_TIMER, regs::LVT_TIMER_TSC_DEADLINE | u32::from(TIMER_VECTOR));
            // SDM Vol. 3A 11.5.4.1: order the LVT write before the first deadline.
            // SAFETY: MFENCE only orders memory accesses.
            unsafe { core::arch::asm!("mfence", options(nostack, preserves_flags)) };
            arm_deadline();
        }
        TIMER_PERIODIC => {
            let count = PERIODIC_COUNT.load(Ordering::Relaxed) as u32;
            write(reg::TIMER_DIVIDE, regs::DIVIDE_BY_16);
            write(reg::LVT_TIMER, regs::LVT_TIMER_PERIODIC | u32::from(TIMER_VECTOR));
            write(reg::TIMER_INITIAL, count);
        }
        _ => {}
    }
}

fn arm_deadline() {
    let next = time::rdtsc().wrapping_add(DEADLINE_STEP.load(Ordering::Relaxed));
    let mut msr = Msr::new(IA32_TSC_DEADLINE);
    // SAFETY: only reached in TSC-deadline mode, which CPUID reported; the MSR only
    // schedules this CPU's timer interrupt.
    unsafe { msr.write(next) };
}

/// Masks the PICs, enables the bootstrap CPU's local APIC, calibrates and starts its
/// timer, marks the CPU online and enables interrupts. `timer` is the command line's
/// `timer=` choice.
pub fn init_bsp(timer: Option<TimerMode>) {
    mask_pics();
    let mode = if has_x2apic() { MODE_X2APIC } else { MODE_XAPIC };
    enable(mode);
    let timer_hz = calibrate();
    if let Some(hz) = timer_hz {
        TIMER_HZ.store(hz, Ordering::Relaxed);
        PERIODIC_COUNT
            .store(u64::from(regs::periodic_count(hz, TICK_HZ).unwrap_or(u32::MAX)), Ordering::Relaxed);
    }
    let deadline = match timer {
        Some(TimerMode::Periodic) => false,
        Some(TimerMode::Deadline) if !has_tsc_deadline() => {
            warn!("apic: timer=deadline asked for, but the CPU has no TSC-deadline mode; using periodic");
            false
        }
        _ => has_tsc_deadline(),
    };
    let kind = if deadline || timer_hz.is_none() && has_tsc_deadline() {
        DEADLINE_STEP.store((time::tsc_hz() / TICK_HZ).max(1), Ordering::Relaxed);
        TIMER_DEADLINE
    } else {
        TIMER_PERIODIC
    };
    if kind == TIMER_PERIODIC && timer_hz.is_none() {
        warn!("apic: timer calibration failed (the timer did not count); no timer tick");
    } else {
        TIMER_KIND.store(kind, Ordering::Relaxed);
    }
    let me = percpu::current();
    info!(
        "apic: {} id {} (cpuid {}), timer {} at {} Hz, timer clock {} kHz (bus / {}), tsc {} kHz",
        if mode == MODE_X2APIC { "x2APIC" } else { "xAPIC" },
        id(),
        me.apic_id(),
        if kind == TIMER_DEADLINE { "tsc-deadline" } else { "periodic" },
        TICK_HZ,
        timer_hz.unwrap_or(0) / 1000,
        regs::DIVISOR,
        time::tsc_hz() / 1000
    );
    start_timer();
    me.online.store(true, Ordering::Release);
    x86_64::instructions::interrupts::enable();
}

/// Enables an application processor's local APIC in the bootstrap CPU's mode and starts
/// its timer. Interrupts stay as they are.
pub fn init_ap() {
    let mode =
        if MODE.load(Ordering::Relaxed) == MODE_X2APIC && has_x2apic() { MODE_X2APIC } else { MODE_XAPIC };
    enable(mode);
    start_timer();
}

/// This CPU's APIC ID as its local APIC reports it.
pub fn id() -> u32 {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => read(reg::ID),
        MODE_XAPIC => read(reg::ID) >> 24,
        _ => cpuid_apic_id(),
    }
}

/// Signals the end of the interrupt being handled.
pub fn eoi() {
    write(reg::EOI, 0);
}

/// The timer interrupt: count the tick, re-arm a deadline timer, EOI.
pub fn on_timer() {
    percpu::current().timer_ticks.fetch_add(1, Ordering::Relaxed);
    if TIMER_KIND.load(Ordering::Relaxed) == TIMER_DEADLINE {
        arm_deadline();
    }
    eoi();
}

/// Sends `ipi` to the CPU with APIC ID `dest`.
pub fn send_ipi(dest: u32, ipi: Ipi) -> Result<(), IpiError> {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => {
            let mut icr = Msr::new(regs::x2apic_msr(reg::ICR_LOW));
            // SAFETY: x2APIC mode is on; an IPI interrupts or starts another CPU, which
            // the callers (the SMP start-up code and the job mailbox) are prepared for.
            unsafe { icr.write(ipi.x2apic_icr(dest)) };
            Ok(())
        }
        MODE_XAPIC => {
            let high = Ipi::xapic_icr_high(dest).ok_or(IpiError::DestinationTooWide(dest))?;
            wait_idle()?;
            write(reg::ICR_HIGH, high);
            write(reg::ICR_LOW, ipi.icr_low());
            wait_idle()
        }
        _ => Err(IpiError::ApicOff),
    }
}

fn wait_idle() -> Result<(), IpiError> {
    let start = time::now_ns();
    while read(reg::ICR_LOW) & regs::ICR_PENDING != 0 {
        if time::now_ns().saturating_sub(start) > 10_000_000 {
            return Err(IpiError::StillPending);
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[Test { name: "timer", in_all: true, run: selftest_timer }];

/// Every online CPU takes at least two timer ticks within about 100 ms.
fn selftest_timer() -> Verdict {
    if TIMER_KIND.load(Ordering::Relaxed) == 0 {
        return Err("no timer is running");
    }
    let mut before = [0u64; percpu::MAX_CPUS];
    let cpus = || (0..percpu::MAX_CPUS as u32).filter_map(percpu::get).filter(|c| c.is_online());
    for c in cpus() {
        if let Some(b) = before.get_mut(c.index() as usize) {
            *b = c.timer_ticks.load(Ordering::Relaxed);
        }
    }
    let start = time::now_ns();
    loop {
        let lagging = cpus().any(|c| {
            let b = before.get(c.index() as usize).copied().unwrap_or(0);
            c.timer_ticks.load(Ordering::Relaxed) < b + 2
        });
        if !lagging {
            return Ok(());
        }
        if time::now_ns().saturating_sub(start) > 120_000_000 {
            return Err("an online CPU took fewer than 2 timer ticks in 120 ms");
        }
        core::hint::spin_loop();
    }
}
