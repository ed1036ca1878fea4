//! The IDT, exception entry stubs and the exception report.
//!
//! Every vector has a 16-byte entry stub (assembled below) that pushes a zero where the
//! CPU pushes no error code, then the vector number and all fifteen general registers, and
//! calls [`hv_interrupt_dispatch`] with a pointer to the resulting [`TrapFrame`]. Gates are
//! interrupt gates (IF cleared on entry). #DF, NMI, #MC and #PF run on their own IST stacks.
//!
//! Exceptions other than #BP print a report with the emergency (lock-free) console and end
//! the run with a failing status.

use super::vectors::{PIC_VECTOR_BASE, SPURIOUS_VECTOR, TIMER_VECTOR, WAKE_VECTOR};
use super::{apic, console, gdt, percpu, power};
use crate::decode::exception::{self, vector, PageFaultCode, GATE_INTERRUPT, MAX_FRAMES};
use crate::selftest::{Test, Verdict};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Once;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

/// The state an entry stub saves, lowest address first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrapFrame {
    /// General registers, as pushed by the common stub.
    pub rax: u64,
    #[allow(missing_docs)]
    pub rbx: u64,
    #[allow(missing_docs)]
    pub rcx: u64,
    #[allow(missing_docs)]
    pub rdx: u64,
    #[allow(missing_docs)]
    pub rsi: u64,
    #[allow(missing_docs)]
    pub rdi: u64,
    #[allow(missing_docs)]
    pub rbp: u64,
    #[allow(missing_docs)]
    pub r8: u64,
    #[allow(missing_docs)]
    pub r9: u64,
    #[allow(missing_docs)]
    pub r10: u64,
    #[allow(missing_docs)]
    pub r11: u64,
    #[allow(missing_docs)]
    pub r12: u64,
    #[allow(missing_docs)]
    pub r13: u64,
    #[allow(missing_docs)]
    pub r14: u64,
    #[allow(missing_docs)]
    pub r15: u64,
    /// Vector number, pushed by the per-vector stub.
    pub vector: u64,
    /// Error code, or 0 where the CPU pushes none.
    pub error_code: u64,
    /// The interrupted instruction (or the next one, for traps).
    pub rip: u64,
    /// Code segment at the interruption.
    pub cs: u64,
    /// Flags at the interruption.
    pub rflags: u64,
    /// Stack pointer at the interruption.
    pub rsp: u64,
    /// Stack segment at the interruption.
    pub ss: u64,
}

// Entry stubs: 256 stubs, 16 bytes apart, starting at `hv_isr_stubs`. The vectors with a
// CPU-pushed error code are 8, 10-14, 17, 21, 29 and 30 (Intel SDM Vol. 3A Table 6-1).
// The CPU aligns RSP to 16 before pushing its frame (SDM Vol. 3A 6.14.2); with the 7
// words of frame plus 15 registers RSP stays 16-aligned at the call.
core::arch::global_asm!(
    r#"
.section .text.hv_isr, "ax"
.balign 16
.global hv_isr_stubs
hv_isr_stubs:
.set hv_vec, 0
.rept 256
.balign 16
.if (hv_vec == 8) || ((hv_vec >= 10) && (hv_vec <= 14)) || (hv_vec == 17) || (hv_vec == 21) || (hv_vec == 29) || (hv_vec == 30)
.else
    pushq $0
.endif
    pushq $hv_vec
    jmp hv_isr_common
.set hv_vec, hv_vec + 1
.endr

.balign 16
hv_isr_common:
    pushq %r15
    pushq %r14
    pushq %r13
    pushq %r12
    pushq %r11
    pushq %r10
    pushq %r9
    pushq %r8
    pushq %rbp
    pushq %rdi
    pushq %rsi
    pushq %rdx
    pushq %rcx
    pushq %rbx
    pushq %rax
    cld
    movq %rsp, %rdi
    call hv_interrupt_dispatch
    popq %rax
    popq %rbx
    popq %rcx
    popq %rdx
    popq %rsi
    popq %rdi
    popq %rbp
    popq %r8
    popq %r9
    popq %r10
    popq %r11
    popq %r12
    popq %r13
    popq %r14
    popq %r15
    addq $16, %rsp
    iretq
"#,
    options(att_syntax)
);

extern "C" {
    static hv_isr_stubs: u8;
}

/// Distance between entry stubs.
const STUB_BYTES: u64 = 16;

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);

static IDT: Once<Idt> = Once::new();

/// Breakpoints taken (all CPUs).
static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);
/// Interrupts on vectors nothing claims (all CPUs).
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);
/// Set by the first CPU that starts an exception report.
static REPORTING: AtomicBool = AtomicBool::new(false);

fn ist_for(v: u8) -> u8 {
    match v {
        vector::DOUBLE_FAULT => gdt::IST_DOUBLE_FAULT,
        vector::NMI => gdt::IST_NMI,
        vector::MACHINE_CHECK => gdt::IST_MACHINE_CHECK,
        vector::PAGE_FAULT => gdt::IST_PAGE_FAULT,
        _ => 0,
    }
}

/// Builds the IDT (once) and loads it on this CPU.
pub fn init() {
    let idt = IDT.call_once(|| {
        let base = (&raw const hv_isr_stubs) as u64;
        let mut idt = Idt([[0; 2]; 256]);
        for (v, gate) in (0u8..=255).zip(idt.0.iter_mut()) {
            let handler = base + u64::from(v) * STUB_BYTES;
            *gate = exception::encode_gate(handler, gdt::KERNEL_CODE, ist_for(v), GATE_INTERRUPT, 0);
        }
        idt
    });
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(idt as *const Idt),
    };
    // SAFETY: `idt` is a static that lives for the whole run; every gate is present and
    // points at an entry stub in the kernel code segment (0x08, loaded by `gdt`).
    unsafe { lidt(&ptr) };
}

/// The one Rust entry for every vector, called by the common stub.
#[no_mangle]
extern "C" fn hv_interrupt_dispatch(frame: &mut TrapFrame) {
    let v = frame.vector;
    match v {
        0..=31 => exception_entry(frame),
        _ if v == u64::from(TIMER_VECTOR) => apic::on_timer(),
        _ if v == u64::from(WAKE_VECTOR) => apic::eoi(),
        _ if v == u64::from(SPURIOUS_VECTOR) => {}
        _ if (u64::from(PIC_VECTOR_BASE)..u64::from(PIC_VECTOR_BASE) + 16).contains(&v) => {
            // A spurious IRQ 7 or 15 from the masked PICs needs no EOI.
        }
        _ => {
            UNEXPECTED.fetch_add(1, Ordering::Relaxed);
            apic::eoi();
        }
    }
}

fn exception_entry(frame: &TrapFrame) {
    percpu::current().exceptions.fetch_add(1, Ordering::Relaxed);
    if frame.vector == u64::from(vector::BREAKPOINT) {
        BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
        console::write_fmt_emergency(format_args!(
            "breakpoint (#BP) at rip={:#018x} on cpu{}, continuing\n",
            frame.rip.wrapping_sub(1),
            percpu::cpu_index()
        ));
        return;
    }
    if REPORTING.swap(true, Ordering::AcqRel) {
        console::write_fmt_emergency(format_args!(
            "EXCEPTION: vector {} on cpu{} while another report is printing\n",
            frame.vector,
            percpu::cpu_index()
        ));
        power::exit(power::ExitCode::Failure);
    }
    report(frame);
    power::exit(power::ExitCode::Failure);
}

fn read_cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 at ring 0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

fn read_stack_word(addr: u64) -> Option<u64> {
    if !percpu::on_kernel_stack(addr, 8) {
        return None;
    }
    // SAFETY: `addr` is 8 bytes inside a kernel stack that is mapped for the whole run;
    // reading it may see a stale value, which only affects the printed addresses.
    Some(unsafe { core::ptr::read_volatile(addr as *const u64) })
}

/// Prints the exception report for `f` (the format the emulator tests match).
fn report(f: &TrapFrame) {
    let out = console::write_fmt_emergency;
    let info = exception::info(f.vector);
    let (name, mnemonic) = info.map_or(("unknown exception", "?"), |i| (i.name, i.mnemonic));
    out(format_args!("EXCEPTION: {name} ({mnemonic}, vector {}) on cpu{}\n", f.vector, percpu::cpu_index()));
    if f.vector == u64::from(vector::PAGE_FAULT) {
        out(format_args!("  error code {:#018x} [{}]\n", f.error_code, PageFaultCode(f.error_code)));
    } else if info.is_some_and(|i| i.has_error_code) {
        out(format_args!("  error code {:#018x}\n", f.error_code));
    } else {
        out(format_args!("  error code none\n"));
    }
    out(format_args!(
        "  rip={:#018x} cs={:#x} rflags={:#018x} rsp={:#018x} ss={:#x}\n",
        f.rip, f.cs, f.rflags, f.rsp, f.ss
    ));
    let cr2 = read_cr2();
    out(format_args!("  cr2={:#018x} cr3={:#018x}\n", cr2, read_cr3()));
    if f.vector == u64::from(vector::PAGE_FAULT) {
        if let Some(cpu) = percpu::overflowed_stack(cr2) {
            out(format_args!("  stack overflow: cr2 is in the guard page under cpu{cpu}'s stack\n"));
        }
    }
    let regs = [
        ("rax", f.rax),
        ("rbx", f.rbx),
        ("rcx", f.rcx),
        ("rdx", f.rdx),
        ("rsi", f.rsi),
        ("rdi", f.rdi),
        ("rbp", f.rbp),
        ("r8", f.r8),
        ("r9", f.r9),
        ("r10", f.r10),
        ("r11", f.r11),
        ("r12", f.r12),
        ("r13", f.r13),
        ("r14", f.r14),
        ("r15", f.r15),
    ];
    for line in regs.chunks(4) {
        out(format_args!(" "));
        for (n, val) in line {
            out(format_args!(" {n}={val:#018x}"));
        }
        out(format_args!("\n"));
    }
    let mut frames = [0u64; MAX_FRAMES];
    let n = exception::walk_frames(f.rip, f.rbp, percpu::on_kernel_stack, read_stack_word, &mut frames);
    out(format_args!("  backtrace:\n"));
    for (i, addr) in frames.iter().take(n).enumerate() {
        out(format_args!("    #{i} {addr:#018x}\n"));
    }
}

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[
    Test { name: "interrupts", in_all: true, run: selftest_breakpoint },
    Test { name: "fault", in_all: false, run: selftest_fault },
    Test { name: "overflow", in_all: false, run: selftest_overflow },
];

/// `int3` comes back, and the exception counters move by exactly one.
fn selftest_breakpoint() -> Verdict {
    let me = percpu::current();
    let before = me.exceptions.load(Ordering::Relaxed);
    let bp_before = BREAKPOINTS.load(Ordering::Relaxed);
    x86_64::instructions::interrupts::int3();
    if me.exceptions.load(Ordering::Relaxed) != before + 1 {
        return Err("the per-CPU exception count did not move by one");
    }
    if BREAKPOINTS.load(Ordering::Relaxed) != bp_before + 1 {
        return Err("the breakpoint count did not move by one");
    }
    Ok(())
}

/// Takes a page fault on purpose: the exception report ends the run.
fn selftest_fault() -> Verdict {
    let bad = 0x0dea_dbee_f000_usize as *const u64;
    // SAFETY: deliberately unsound: this reads an address nothing maps, to exercise the
    // page-fault report. The handler never returns here.
    let v = unsafe { core::ptr::read_volatile(bad) };
    crate::kprintln!("read {v:#x} from an unmapped address");
    Err("the page fault did not happen")
}

/// Recurses until the stack runs into its guard page: the report must say so.
fn selftest_overflow() -> Verdict {
    #[inline(never)]
    fn deeper(n: u64) -> u64 {
        let mut frame = [n; 64];
        core::hint::black_box(&mut frame);
        // Far deeper than any kernel stack: the guard page is reached long before.
        if n > 1 << 40 {
            return n;
        }
        deeper(n + 1).wrapping_add(frame[(n % 64) as usize])
    }
    let v = deeper(0);
    crate::kprintln!("recursion returned {v}");
    Err("the stack overflow did not fault")
}
