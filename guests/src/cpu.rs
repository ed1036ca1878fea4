//! The few pieces of CPU control the hostile and state-checking guests need: an IDT that
//! turns #UD and #GP into a recorded result instead of a crash ([`probe!`](crate::probe))
//! and counts timer interrupts ([`TICKS`]), 2 MiB mappings of arbitrary guest-physical
//! addresses, and the SSE registers.
//!
//! All of it is for a guest running at CPL 0 in the hypervisor's initial state (64-bit
//! mode, code selector 0x08, page tables reachable 1:1); none of it is run on the host.

use crate::pattern::XmmState;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use crx_abi::HypercallInsn;

/// Vector of the invalid-opcode exception (#UD).
pub const UD: u8 = 6;
/// Vector of the general-protection exception (#GP).
pub const GP: u8 = 13;
/// [`CAUGHT`] when no exception was caught.
pub const NONE: u8 = 0xff;

/// The vector the last probe caught, or [`NONE`].
pub static CAUGHT: AtomicU8 = AtomicU8::new(NONE);
/// Where the exception handlers resume: the end of the probed instruction, set by [`probe!`](crate::probe).
pub static RECOVER: AtomicU64 = AtomicU64::new(0);

/// The vector of the timer interrupt (`crx_abi::nr::TIMER_ARM`) the trap IDT takes.
pub const TIMER: u8 = crx_abi::TIMER_VECTOR_DEFAULT;
/// Timer interrupts taken so far.
pub static TICKS: AtomicU64 = AtomicU64::new(0);
/// When set, the timer handler arms the timer again at once, with a deadline in the past:
/// an interrupt storm, in which the next interrupt comes right after each IRETQ, so the
/// guest's own code never runs again; the handler itself prints [`STORM_LINE`] at the
/// [`STORM_TICKS`]th interrupt. [`REARM_INSN`] says how to make the hypercalls.
pub static REARM: AtomicBool = AtomicBool::new(false);
/// The hypercall instruction the timer handler uses (a [`HypercallInsn`] number).
pub static REARM_INSN: AtomicU8 = AtomicU8::new(0);
/// What the storming handler prints once (a whole console line).
pub const STORM_LINE: &str = "timer storm\n";
/// After how many interrupts.
pub const STORM_TICKS: u64 = 1000;

/// The timer handler's work: count, and re-arm when [`REARM`] says so.
extern "C" fn timer_tick() {
    let ticks = TICKS.fetch_add(1, Ordering::SeqCst) + 1;
    if REARM.load(Ordering::SeqCst) {
        let insn = if REARM_INSN.load(Ordering::SeqCst) == HypercallInsn::Vmmcall as u8 {
            HypercallInsn::Vmmcall
        } else {
            HypercallInsn::Vmcall
        };
        if ticks == STORM_TICKS {
            let (ptr, len) = (STORM_LINE.as_ptr() as u64, STORM_LINE.len() as u64);
            // SAFETY: we run as a guest of the hypervisor, identity-mapped, so the string's
            // address is its guest-physical address; the hypervisor only reads it.
            let _ = unsafe { crx_abi::call::hypercall(insn, crx_abi::nr::CONSOLE_WRITE, ptr, len, 0, 0) };
        }
        // SAFETY: as above; TIMER_ARM takes no pointer.
        let _ = unsafe { crx_abi::call::hypercall(insn, crx_abi::nr::TIMER_ARM, 0, u64::from(TIMER), 0, 0) };
    }
}

// The handlers record the vector and resume at RECOVER. Both are interrupt gates at CPL 0 in
// 64-bit mode, so the CPU pushes SS, RSP, RFLAGS, CS, RIP (and, for #GP, an error code) on
// the current stack and IRETQ pops them (Intel SDM Vol. 3A 6.14.1-6.14.2).
core::arch::global_asm!(
    ".pushsection .text.guest_traps, \"ax\"",
    ".globl guests_ud_entry",
    "guests_ud_entry:",
    "mov byte ptr [rip + {caught}], 6",
    "jmp 2f",
    ".globl guests_gp_entry",
    "guests_gp_entry:",
    "add rsp, 8", // the error code
    "mov byte ptr [rip + {caught}], 13",
    "2:",
    "push rax",
    "mov rax, qword ptr [rip + {recover}]",
    "mov qword ptr [rsp + 8], rax", // the saved RIP
    "pop rax",
    "iretq",
    // The timer: an external interrupt, no error code. The caller-saved registers are
    // kept around the call (soft-float code uses no vector registers); the CPU left RSP
    // 8 bytes off 16 with its 5-word frame, and 9 pushes align it for the call.
    ".globl guests_timer_entry",
    "guests_timer_entry:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "call {tick}",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
    ".popsection",
    caught = sym CAUGHT,
    recover = sym RECOVER,
    tick = sym timer_tick,
);

unsafe extern "C" {
    fn guests_ud_entry();
    fn guests_gp_entry();
    fn guests_timer_entry();
}

/// Gate descriptors (16 bytes each) for the exceptions and the timer.
const GATES: usize = TIMER as usize + 1;

/// The IDT: [`GATES`] descriptors of two words.
struct Idt(UnsafeCell<[u64; 2 * GATES]>);

// SAFETY: one vCPU of a guest installs the table ([`install_trap_idt`]'s contract), once,
// before LIDT; afterwards it is only read, by the CPU.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([0; 2 * GATES]));

/// A 64-bit interrupt gate to `handler` through code selector 0x08 (SDM Vol. 3A 6.14.1).
fn gate(handler: u64) -> [u64; 2] {
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e << 40) | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads an IDT whose #UD and #GP handlers resume after the probed instruction and whose
/// [`TIMER`] handler counts [`TICKS`] (and re-arms when [`REARM`] is set); every other
/// vector is absent (so any other exception ends in a triple fault).
///
/// # Safety
/// Must run in the guest at CPL 0, once and on one vCPU only, before any
/// [`probe!`](crate::probe).
pub unsafe fn install_trap_idt() {
    let table = IDT.0.get();
    // SAFETY: nothing else references the table yet (see the `Sync` argument).
    let entries = unsafe { &mut *table };
    for (vector, handler) in [
        (UD, guests_ud_entry as *const () as u64),
        (GP, guests_gp_entry as *const () as u64),
        (TIMER, guests_timer_entry as *const () as u64),
    ] {
        let [lo, hi] = gate(handler);
        let i = usize::from(vector) * 2;
        entries[i] = lo;
        entries[i + 1] = hi;
    }
    let ptr = DescriptorPointer { limit: (GATES * 16 - 1) as u16, base: table as u64 };
    // SAFETY: the table is static and complete; LIDT only changes where exceptions go.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack)) };
}

/// Loads an empty IDT (limit 0): the next exception cannot be delivered, which becomes a
/// double fault that cannot be delivered either, which is a triple fault (SDM Vol. 3A 6.15).
///
/// # Safety
/// Any exception afterwards ends the VM.
pub unsafe fn load_empty_idt() {
    let ptr = DescriptorPointer { limit: 0, base: 0 };
    // SAFETY: see the function's contract.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack)) };
}

/// Runs one instruction with the trap IDT armed and evaluates to the vector it raised
/// (`Some(UD)`, `Some(GP)`) or `None` if it completed. The instruction and its operands are
/// given as for `asm!`: `probe!("rdmsr", in("ecx") 0x3a, out("eax") _, out("edx") _)`.
///
/// Needs [`install_trap_idt`](crate::cpu::install_trap_idt) first; must be used in an
/// `unsafe` block, since the instruction can be anything.
#[macro_export]
macro_rules! probe {
    ($insn:literal $(, $($operands:tt)*)?) => {{
        $crate::cpu::CAUGHT.store($crate::cpu::NONE, core::sync::atomic::Ordering::SeqCst);
        core::arch::asm!(
            "lea {tmp}, [rip + 3f]",
            "mov qword ptr [rip + {recover}], {tmp}",
            $insn,
            "3:",
            tmp = out(reg) _,
            recover = sym $crate::cpu::RECOVER,
            $($($operands)*)?
        );
        $crate::cpu::caught()
    }};
}

/// The vector the last [`probe!`](crate::probe) caught.
pub fn caught() -> Option<u8> {
    match CAUGHT.load(Ordering::SeqCst) {
        NONE => None,
        v => Some(v),
    }
}

/// Why [`map_2m`] could not map an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// No free memory left for a page table.
    NoMemory,
    /// A 1 GiB page covers the address already.
    HugePage,
    /// The address is not canonical (above 47 bits).
    NotCanonical,
}

/// Hands out zeroed 4 KiB pages from `[next, end)`.
pub struct PageAlloc {
    /// The next free page.
    pub next: u64,
    /// The end of the free range.
    pub end: u64,
}

impl PageAlloc {
    fn alloc(&mut self) -> Result<u64, MapError> {
        let page = (self.next + 0xfff) & !0xfff;
        if page.checked_add(0x1000).is_none_or(|e| e > self.end) {
            return Err(MapError::NoMemory);
        }
        self.next = page + 0x1000;
        // SAFETY: the page is free guest memory, mapped 1:1 by the initial tables.
        unsafe { core::ptr::write_bytes(page as *mut u8, 0, 0x1000) };
        Ok(page)
    }
}

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const HUGE: u64 = 1 << 7;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Maps the 2 MiB page holding `gpa` 1:1 (read/write) in the current page tables, taking
/// page-table pages from `alloc`.
///
/// # Safety
/// The current page tables must be the guest's own, reachable 1:1 (the initial state).
pub unsafe fn map_2m(gpa: u64, alloc: &mut PageAlloc) -> Result<(), MapError> {
    if gpa >= 1 << 47 {
        return Err(MapError::NotCanonical);
    }
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects at CPL 0.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    let mut table = cr3 & ADDR;
    for shift in [39u32, 30] {
        let entry = (table + ((gpa >> shift) & 511) * 8) as *mut u64;
        // SAFETY: `table` is a page-table page, reachable 1:1 (the function's contract).
        let value = unsafe { entry.read_volatile() };
        if value & PRESENT == 0 {
            let page = alloc.alloc()?;
            // SAFETY: as above; the new table is zeroed, so it maps nothing yet.
            unsafe { entry.write_volatile(page | PRESENT | WRITABLE) };
            table = page;
        } else if value & HUGE != 0 {
            return Err(MapError::HugePage);
        } else {
            table = value & ADDR;
        }
    }
    let entry = (table + ((gpa >> 21) & 511) * 8) as *mut u64;
    // SAFETY: as above; then flush the old translation of the page (SDM Vol. 3A 4.10.4.1).
    unsafe {
        entry.write_volatile((gpa & !0x1f_ffff) | PRESENT | WRITABLE | HUGE);
        core::arch::asm!("invlpg [{}]", in(reg) gpa, options(nostack));
    }
    Ok(())
}

/// Loads the 16 XMM registers from `state`.
///
/// # Safety
/// Nothing else may keep values in XMM registers: true for code built for
/// `x86_64-unknown-none` (soft-float), never for the host.
pub unsafe fn load_xmm(state: &XmmState) {
    // SAFETY: reads 256 bytes from `state`; the registers are ours (see the contract).
    unsafe {
        core::arch::asm!(
            "movdqu xmm0, [{p}]", "movdqu xmm1, [{p} + 16]", "movdqu xmm2, [{p} + 32]",
            "movdqu xmm3, [{p} + 48]", "movdqu xmm4, [{p} + 64]", "movdqu xmm5, [{p} + 80]",
            "movdqu xmm6, [{p} + 96]", "movdqu xmm7, [{p} + 112]", "movdqu xmm8, [{p} + 128]",
            "movdqu xmm9, [{p} + 144]", "movdqu xmm10, [{p} + 160]", "movdqu xmm11, [{p} + 176]",
            "movdqu xmm12, [{p} + 192]", "movdqu xmm13, [{p} + 208]", "movdqu xmm14, [{p} + 224]",
            "movdqu xmm15, [{p} + 240]",
            p = in(reg) state.as_ptr(),
            options(readonly, nostack, preserves_flags),
        );
    }
}

/// Stores the 16 XMM registers into `state`.
pub fn store_xmm(state: &mut XmmState) {
    // SAFETY: writes 256 bytes into `state`, which we borrow mutably; reading XMM registers
    // changes nothing else.
    unsafe {
        core::arch::asm!(
            "movdqu [{p}], xmm0", "movdqu [{p} + 16], xmm1", "movdqu [{p} + 32], xmm2",
            "movdqu [{p} + 48], xmm3", "movdqu [{p} + 64], xmm4", "movdqu [{p} + 80], xmm5",
            "movdqu [{p} + 96], xmm6", "movdqu [{p} + 112], xmm7", "movdqu [{p} + 128], xmm8",
            "movdqu [{p} + 144], xmm9", "movdqu [{p} + 160], xmm10", "movdqu [{p} + 176], xmm11",
            "movdqu [{p} + 192], xmm12", "movdqu [{p} + 208], xmm13", "movdqu [{p} + 224], xmm14",
            "movdqu [{p} + 240], xmm15",
            p = in(reg) state.as_mut_ptr(),
            options(nostack, preserves_flags),
        );
    }
}

/// Halts forever with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: disabling interrupts and halting touch no memory; the guest owns its CPU state.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
