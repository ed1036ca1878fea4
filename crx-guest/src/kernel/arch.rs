//! Everything that touches the CPU directly: each CPU's GDT with user segments and its TSS,
//! the IDT and its entry stubs, the SYSCALL/SYSRET MSRs, the per-CPU area reached through
//! GS, entering user mode, CR3 and FS base, and the per-process FPU/SSE state. The rest of
//! the kernel uses the safe functions here (physical memory and CR3 through [`super::phys`]).
//!
//! The kernel runs with interrupts off (SYSCALL clears IF through SFMASK, the IDT's gates
//! are interrupt gates): the only interrupt, the slice timer ([`TIMER_VECTOR`], armed
//! through the hypervisor's `TIMER_ARM` or raised by another CPU's `VCPU_KICK`), arrives
//! while user code runs. So every entry into the kernel (a syscall, an exception or the
//! timer) starts at the top of its CPU's kernel stack, and the kernel leaves only by
//! [`enter_user`]: no kernel context survives a return to user mode.
//!
//! Each CPU has its own kernel stack, TSS (RSP0 and the IST stacks), GDT (for its TSS
//! descriptor), exit frame and [`PerCpu`] area. In the kernel, GS's base is the CPU's area;
//! in user mode it is the user's (0: the kernel offers no way to set it), and every entry
//! from user mode and every return to it swaps the two (SWAPGS with `KERNEL_GS_BASE`).

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// User data selector (RPL 3).
pub const USER_DS: u16 = 0x18 | 3;
/// User code selector (RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
const TSS_SEL: u16 = 0x28;

/// The user registers at a kernel entry, in the order the entry stubs push them.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Exception vector, or 0x100 for a syscall.
    pub vector: u64,
    /// The exception's error code (0 when it has none).
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// A frame that starts user code at `rip` with stack `rsp` (all other registers 0,
    /// interrupts flag set as Linux does: the slice timer interrupts user code).
    pub fn user(rip: u64, rsp: u64) -> TrapFrame {
        TrapFrame {
            rip,
            rsp,
            cs: u64::from(USER_CS),
            ss: u64::from(USER_DS),
            rflags: 0x202,
            ..Default::default()
        }
    }

    /// Whether the frame was pushed while running user code.
    pub fn is_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// A cell for state written at boot, or per CPU: each CPU touches only its own slot of the
/// arrays below (at its bring-up and in its entry and exit paths), with interrupts off.
struct BootCell<T>(UnsafeCell<T>);
// SAFETY: the static ones are written by the first CPU before any other starts (the IDT)
// or are arrays whose slot `i` only CPU `i` touches (its TSS, GDT, exit frame and per-CPU
// area), with interrupts off, so there is never concurrent access to one location.
unsafe impl<T> Sync for BootCell<T> {}

/// Most CPUs the kernel runs on (a VM with more vCPUs leaves the rest asleep).
pub const MAX_CPUS: usize = 16;

/// What a CPU's entry stubs reach through GS: its kernel stack top (`gs:[0]`), a scratch
/// slot for the user RSP at SYSCALL (`gs:[8]`) and its index (`gs:[16]`).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct PerCpu {
    kstack_top: u64,
    user_rsp: u64,
    index: u64,
    _pad: u64,
}

static PERCPU: BootCell<[PerCpu; MAX_CPUS]> =
    BootCell(UnsafeCell::new([PerCpu { kstack_top: 0, user_rsp: 0, index: 0, _pad: 0 }; MAX_CPUS]));

/// Bytes of the kernel stack.
pub const KSTACK_SIZE: usize = 256 * 1024;
/// Bytes of the unmapped guard below the kernel stack (the page tables of [`super::mm`]
/// leave it out, so running off the stack faults instead of overwriting other statics).
pub const KSTACK_GUARD: usize = 16 * 1024;
const IST_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack<const N: usize>([u8; N]);

/// The kernel stack with its guard area below it, page-aligned so the guard is whole pages.
#[repr(C, align(4096))]
struct GuardedStack {
    guard: [u8; KSTACK_GUARD],
    stack: [u8; KSTACK_SIZE],
}

#[no_mangle]
static CRX_KSTACK: BootCell<GuardedStack> =
    BootCell(UnsafeCell::new(GuardedStack { guard: [0; KSTACK_GUARD], stack: [0; KSTACK_SIZE] }));
/// The first CPU's double-fault stack (IST1).
static IST_STACK: BootCell<Stack<IST_SIZE>> = BootCell(UnsafeCell::new(Stack([0; IST_SIZE])));
/// Bytes of a CPU's double-fault stack.
pub const IST_BYTES: usize = IST_SIZE;

const ZERO_FRAME: TrapFrame = TrapFrame {
    r15: 0,
    r14: 0,
    r13: 0,
    r12: 0,
    r11: 0,
    r10: 0,
    r9: 0,
    r8: 0,
    rbp: 0,
    rdi: 0,
    rsi: 0,
    rdx: 0,
    rcx: 0,
    rbx: 0,
    rax: 0,
    vector: 0,
    error: 0,
    rip: 0,
    cs: 0,
    rflags: 0,
    rsp: 0,
    ss: 0,
};

/// The frame [`enter_user`] returns through, one per CPU.
static EXIT_FRAMES: BootCell<[TrapFrame; MAX_CPUS]> = BootCell(UnsafeCell::new([ZERO_FRAME; MAX_CPUS]));

#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Tss {
    _r0: u32,
    rsp: [u64; 3],
    _r1: u64,
    ist: [u64; 7],
    _r2: u64,
    _r3: u16,
    iomap: u16,
}

static TSS: BootCell<[Tss; MAX_CPUS]> = BootCell(UnsafeCell::new(
    [Tss { _r0: 0, rsp: [0; 3], _r1: 0, ist: [0; 7], _r2: 0, _r3: 0, iomap: 104 }; MAX_CPUS],
));
static GDT: BootCell<[[u64; 7]; MAX_CPUS]> = BootCell(UnsafeCell::new([[0; 7]; MAX_CPUS]));

#[derive(Clone, Copy)]
#[repr(C)]
struct IdtEntry {
    off_lo: u16,
    sel: u16,
    ist: u8,
    attr: u8,
    off_mid: u16,
    off_hi: u32,
    _z: u32,
}
/// The slice timer's vector: the IDT's one entry above the exceptions.
pub const TIMER_VECTOR: u8 = crx_abi::TIMER_VECTOR_DEFAULT;
// The timer stub below pushes this number.
const _: () = assert!(TIMER_VECTOR == 0x20);
/// IDT entries: the 32 exceptions and the timer.
const IDT_ENTRIES: usize = TIMER_VECTOR as usize + 1;
static IDT: BootCell<[IdtEntry; IDT_ENTRIES]> = BootCell(UnsafeCell::new(
    [IdtEntry { off_lo: 0, sel: 0, ist: 0, attr: 0, off_mid: 0, off_hi: 0, _z: 0 }; IDT_ENTRIES],
));

#[repr(C, packed)]
struct DescPtr {
    limit: u16,
    base: u64,
}

extern "C" {
    static crx_trap_stubs: [u64; 32];
    fn crx_syscall_entry();
    fn crx_timer_entry();
}

// Entry stubs: each pushes a zero error code when the CPU did not, then the vector, and
// jumps to the common part, which saves the GPRs and calls `crx_trap` with the frame.
// Vectors with an error code: 8, 10-14, 17, 21, 29, 30 (Intel SDM Vol. 3A, 6.3.1).
global_asm!(
    r#"
.macro STUB n, err
    .p2align 4
crx_trap_\n:
    .if \err == 0
    push 0
    .endif
    push \n
    jmp crx_trap_common
.endm
.section .text.crx_traps, "ax"
STUB 0,0
STUB 1,0
STUB 2,0
STUB 3,0
STUB 4,0
STUB 5,0
STUB 6,0
STUB 7,0
STUB 8,1
STUB 9,0
STUB 10,1
STUB 11,1
STUB 12,1
STUB 13,1
STUB 14,1
STUB 15,0
STUB 16,0
STUB 17,1
STUB 18,0
STUB 19,0
STUB 20,0
STUB 21,1
STUB 22,0
STUB 23,0
STUB 24,0
STUB 25,0
STUB 26,0
STUB 27,0
STUB 28,0
STUB 29,1
STUB 30,1
STUB 31,0
.macro PUSHREGS
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
.endm
.macro POPREGS
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
.endm
// From user mode (CS's RPL, above the vector, the error code and RIP), GS becomes the
// kernel's first.
crx_trap_common:
    test qword ptr [rsp + 24], 3
    jz 1f
    swapgs
1:
    PUSHREGS
    mov rdi, rsp
    and rsp, -16
    call crx_trap
    ud2

// The slice timer (vector 0x20): an external interrupt, no error code, on the current
// stack (no IST: from user mode that is RSP0, the top of the kernel stack). `crx_timer`
// switches processes and does not return when it interrupted user mode; when it finds the
// kernel interrupted (which runs with IF = 0, so only a bug gets here) it returns, and the
// frame is restored in place, back to the interrupted kernel code (GS stays the kernel's).
.global crx_timer_entry
crx_timer_entry:
    push 0
    push 0x20
    test qword ptr [rsp + 24], 3
    jz 1f
    swapgs
1:
    PUSHREGS
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    call crx_timer
    mov rdi, rbx
    mov rsp, rdi
    POPREGS
    add rsp, 16
    iretq

// SYSCALL: RCX = user RIP, R11 = user RFLAGS, RSP still the user's (AMD APM Vol. 2, 6.1.1).
// GS becomes the kernel's, whose area holds this CPU's stack top and a scratch slot.
.global crx_syscall_entry
crx_syscall_entry:
    swapgs
    mov gs:[8], rsp
    mov rsp, gs:[0]
    push 0x1b
    push qword ptr gs:[8]
    push r11
    push 0x23
    push rcx
    push 0
    push 0x100
    PUSHREGS
    mov rdi, rsp
    call crx_syscall
    ud2

// To user mode: GS becomes the user's again right before the IRETQ.
.global crx_enter_user
crx_enter_user:
    mov rsp, rdi
    POPREGS
    add rsp, 16
    swapgs
    iretq

// A CPU other than the first, once the kernel is built: its tables and stack
// (RDI = CR3, RSI = stack top, RDX = CPU index). The code is mapped at the same address
// under the boot tables and the kernel's, so fetching carries on across the switch.
.global crx_ap_switch
crx_ap_switch:
    mov cr3, rdi
    mov rsp, rsi
    mov rdi, rdx
    call crx_ap_run
    ud2

.section .rodata.crx_traps, "a"
.p2align 3
.global crx_trap_stubs
crx_trap_stubs:
    .quad crx_trap_0, crx_trap_1, crx_trap_2, crx_trap_3, crx_trap_4, crx_trap_5, crx_trap_6, crx_trap_7
    .quad crx_trap_8, crx_trap_9, crx_trap_10, crx_trap_11, crx_trap_12, crx_trap_13, crx_trap_14, crx_trap_15
    .quad crx_trap_16, crx_trap_17, crx_trap_18, crx_trap_19, crx_trap_20, crx_trap_21, crx_trap_22, crx_trap_23
    .quad crx_trap_24, crx_trap_25, crx_trap_26, crx_trap_27, crx_trap_28, crx_trap_29, crx_trap_30, crx_trap_31
.previous
"#
);

extern "C" {
    fn crx_enter_user(frame: *const TrapFrame) -> !;
    fn crx_ap_switch(cr3: u64, stack_top: u64, cpu: u64) -> !;
}

const MSR_EFER: u32 = 0xC000_0080;
const MSR_STAR: u32 = 0xC000_0081;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_SFMASK: u32 = 0xC000_0084;
const MSR_FS_BASE: u32 = 0xC000_0100;
const MSR_GS_BASE: u32 = 0xC000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// Writes `v` to model-specific register `msr`.
///
/// # Safety
///
/// `msr` must be an MSR the CPU implements and `v` a value it accepts for it, and the write
/// must keep intact what the kernel relies on: the paging and long-mode bits of EFER, and
/// syscall entry through `crx_syscall_entry` with the kernel's selectors (STAR, LSTAR,
/// SFMASK). MSRs that change how the kernel itself addresses memory (GS base, PAT, ...) must
/// not be written with values it does not expect.
unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller guarantees the MSR and value are acceptable and keep the kernel's
    // state intact; WRMSR itself touches no memory.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack)) };
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading EFER has no side effects.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack, nomem)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The top of the kernel stack.
pub fn kernel_stack_top() -> u64 {
    CRX_KSTACK.0.get() as u64 + (KSTACK_GUARD + KSTACK_SIZE) as u64
}

/// The unmapped guard area `[start, end)` right below the kernel stack.
pub fn kernel_stack_guard() -> (u64, u64) {
    let start = CRX_KSTACK.0.get() as u64;
    (start, start + KSTACK_GUARD as u64)
}

/// Whether `addr` lies in the kernel stack's guard area (a kernel stack overflow).
pub fn in_kernel_stack_guard(addr: u64) -> bool {
    let (start, end) = kernel_stack_guard();
    (start..end).contains(&addr)
}

/// Loads the first CPU's GDT (kernel and user segments, TSS with RSP0, IST1 and IST2), the
/// IDT, its per-CPU area and the SYSCALL MSRs. Call once at boot, on the kernel stack.
///
/// Stacks of the exceptions (Intel SDM Vol. 3A, 6.14.5): the double fault runs on IST1, its
/// own stack. Every other exception runs on IST2, which is the top of the CPU's kernel
/// stack: from user mode that is where RSP0 points anyway (every kernel entry starts
/// there), and from kernel mode every exception is fatal (it is reported and the VM ends),
/// so starting over at the top loses nothing and still works when the kernel stack is
/// exhausted: a kernel stack overflow faults on the guard page and is reported as such
/// instead of becoming a double or triple fault. The timer ([`TIMER_VECTOR`]) uses no IST
/// (see its stub).
pub fn init() {
    // SAFETY: boot runs once on the first CPU before any other starts; the IDT is written
    // here only and read by every CPU afterwards.
    unsafe {
        let idt = &mut *IDT.0.get();
        // Interrupt gates (type 0xe, DPL 0: user code cannot raise them with INT n).
        let gate = |h: u64, ist: u8| IdtEntry {
            off_lo: h as u16,
            sel: KERNEL_CS,
            ist,
            attr: 0x8e,
            off_mid: (h >> 16) as u16,
            off_hi: (h >> 32) as u32,
            _z: 0,
        };
        for (i, e) in idt.iter_mut().take(32).enumerate() {
            *e = gate(crx_trap_stubs[i], if i == 8 { 1 } else { 2 });
        }
        // The timer runs on the current stack: IST2 would start over at the top of the
        // kernel stack, under the feet of kernel code it might (by a bug) interrupt.
        idt[usize::from(TIMER_VECTOR)] = gate(crx_timer_entry as *const () as u64, 0);
    }
    init_cpu(0, kernel_stack_top(), IST_STACK.0.get() as u64 + IST_SIZE as u64);
}

/// Sets up CPU `cpu` (running on it): its TSS (RSP0 and IST2 = `kstack_top`, IST1 =
/// `ist_top`), its GDT, the shared IDT, GS for its per-CPU area, the SYSCALL MSRs and the
/// SSE bits of CR4. `cpu` is below [`MAX_CPUS`] and each CPU calls this once for itself.
pub fn init_cpu(cpu: usize, kstack_top: u64, ist_top: u64) {
    let cpu = cpu.min(MAX_CPUS - 1);
    // SAFETY: slot `cpu` of these arrays belongs to this CPU alone, which runs this once
    // with interrupts off before it uses them.
    let (tss_addr, gdt_addr, area) = unsafe {
        let tss = &mut (*TSS.0.get())[cpu];
        tss.rsp[0] = kstack_top;
        tss.ist[0] = ist_top;
        tss.ist[1] = kstack_top;
        let tss_addr = tss as *mut Tss as u64;
        let gdt = &mut (*GDT.0.get())[cpu];
        gdt[1] = 0x00af_9a00_0000_ffff; // kernel code: L, P, DPL 0
        gdt[2] = 0x00cf_9200_0000_ffff; // kernel data
        gdt[3] = 0x00cf_f200_0000_ffff; // user data, DPL 3
        gdt[4] = 0x00af_fa00_0000_ffff; // user code, L, DPL 3
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        gdt[5] = (limit & 0xffff)
            | ((tss_addr & 0xff_ffff) << 16)
            | (0x89 << 40)
            | (((tss_addr >> 24) & 0xff) << 56);
        gdt[6] = tss_addr >> 32;
        let area = &mut (*PERCPU.0.get())[cpu];
        *area = PerCpu { kstack_top, user_rsp: 0, index: cpu as u64, _pad: 0 };
        (tss_addr, gdt.as_ptr() as u64, area as *mut PerCpu as u64)
    };
    let _ = tss_addr;
    let gdtr = DescPtr { limit: (7 * 8 - 1) as u16, base: gdt_addr };
    let idtr = DescPtr { limit: (IDT_ENTRIES * 16 - 1) as u16, base: IDT.0.get() as u64 };
    // SAFETY: the GDT keeps the kernel selectors the CPU runs with (0x08 code, 0x10 data), so
    // reloading them is seamless; the far return reloads CS; the TSS descriptor is valid and
    // not busy (each CPU has its own).
    unsafe {
        asm!(
            "lgdt [{g}]",
            "push 0x08",
            "lea {t}, [rip + 2f]",
            "push {t}",
            "retfq",
            "2:",
            "mov ax, 0x10",
            "mov ds, ax",
            "mov es, ax",
            "mov ss, ax",
            "xor eax, eax",
            "mov fs, ax",
            "mov gs, ax",
            "mov ax, 0x28",
            "ltr ax",
            "lidt [{i}]",
            g = in(reg) &gdtr, i = in(reg) &idtr, t = out(reg) _, out("rax") _,
        );
    }
    let _ = TSS_SEL;
    // SAFETY: GS's base becomes this CPU's area (the kernel reads it only through
    // `cpu_index` and the entry stubs, which expect it there), after the selector reload
    // above that zeroed it; the user's GS base starts at 0 in KERNEL_GS_BASE.
    unsafe {
        wrmsr(MSR_GS_BASE, area);
        wrmsr(MSR_KERNEL_GS_BASE, 0);
    }
    GS_READY.store(true, core::sync::atomic::Ordering::Relaxed);
    // SYSCALL enters at CS 0x08/SS 0x10; SYSRET returns to CS 0x20|3 and SS 0x18|3
    // (STAR[63:48] + 16 and + 8, AMD APM Vol. 2, 6.1.1).
    // SAFETY: STAR takes the kernel selectors of the GDT just loaded (0x08 code, 0x10 data)
    // and the user ones right above them; nothing uses SYSCALL or SYSRET before this.
    unsafe { wrmsr(MSR_STAR, (u64::from(KERNEL_CS) << 32) | (0x10u64 << 48)) };
    // SAFETY: LSTAR points at the kernel's syscall entry stub, which switches to the kernel
    // stack before touching memory.
    unsafe { wrmsr(MSR_LSTAR, crx_syscall_entry as *const () as u64) };
    // Clear TF, IF, DF, AC on entry.
    // SAFETY: SFMASK only selects RFLAGS bits cleared on SYSCALL; clearing these is what the
    // entry stub expects.
    unsafe { wrmsr(MSR_SFMASK, 0x4_7700) };
    // SAFETY: the value read back from EFER with only SCE (bit 0, SYSCALL enable) added keeps
    // its long-mode and NX bits as they are.
    unsafe { wrmsr(MSR_EFER, rdmsr(MSR_EFER) | 1) };
    // SSE for user code: CR4.OSFXSR (bit 9) and CR4.OSXMMEXCPT (bit 10), Intel SDM Vol. 3A 13.1.3.
    // SAFETY: enabling FXSAVE/SSE support changes no memory mapping or privilege state.
    unsafe {
        asm!(
            "mov {t}, cr4",
            "or {t}, 0x600",
            "mov cr4, {t}",
            t = out(reg) _,
            options(nostack),
        )
    };
}

/// Set once the first CPU's GS points at its area.
static GS_READY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// This CPU's index (from its per-CPU area; 0 before [`init`] has set GS). A CPU other
/// than the first calls it only after its own [`init_cpu`].
pub fn cpu_index() -> usize {
    if !GS_READY.load(core::sync::atomic::Ordering::Relaxed) {
        return 0;
    }
    let v: u64;
    // SAFETY: in the kernel GS's base is this CPU's `PerCpu` (set by `init_cpu`, swapped
    // back at every entry from user mode), whose third quadword is the index.
    unsafe { asm!("mov {}, gs:[16]", out(reg) v, options(nostack, readonly, preserves_flags)) };
    v as usize
}

/// Moves a CPU other than the first from the boot tables and the stack the hypervisor gave
/// it to the kernel's tables (`cr3`) and its own kernel stack, and runs
/// `crx_ap_run(cpu)` there.
///
/// # Safety
///
/// `cr3` must be the kernel's own tables (which map the kernel image at its load address as
/// the boot tables do), and `stack_top` the top of a stack mapped by them that nothing else
/// uses, 16-byte aligned.
pub unsafe fn ap_switch(cr3: u64, stack_top: u64, cpu: usize) -> ! {
    // SAFETY: the caller guarantees the tables and the stack; the stub touches no memory
    // before the switch.
    unsafe { crx_ap_switch(cr3, stack_top, cpu as u64) }
}

/// Returns to user mode with `frame`'s registers. The kernel stack is abandoned.
pub fn enter_user(frame: &TrapFrame) -> ! {
    let mut f = *frame;
    // Never return to kernel privilege or with IOPL/odd flags from a saved frame.
    f.cs = u64::from(USER_CS);
    f.ss = u64::from(USER_DS);
    f.rflags = (f.rflags & 0xcd5) | 0x202;
    let cpu = cpu_index().min(MAX_CPUS - 1);
    // SAFETY: this CPU's exit frame is only written here, by this CPU, right before the stub
    // reads it; the stub restores the registers and IRETQs to ring 3 with user selectors.
    unsafe {
        let slot = &mut (*EXIT_FRAMES.0.get())[cpu];
        *slot = f;
        crx_enter_user(slot)
    }
}

/// Switches to address space `pml4`.
///
/// # Safety
///
/// `pml4` must be the physical address of a page-aligned PML4 whose tables map the kernel
/// image, the kernel stack and the direct map as the loaded tables do (so that execution
/// and every live kernel reference carry on), and its frames must not be freed or reused
/// while it is loaded.
pub unsafe fn load_cr3(pml4: u64) {
    // SAFETY: the caller guarantees the tables keep the kernel mapped as before.
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack)) };
}

/// The loaded CR3 (the current PML4's address and flags).
pub fn cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nostack, nomem)) };
    v
}

/// Flushes the TLB entry for `va`.
pub fn invlpg(va: u64) {
    // SAFETY: invalidating a TLB entry only causes a fresh walk.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack)) };
}

/// The faulting address of the last page fault.
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nostack, nomem)) };
    v
}

/// Sets the user FS base (TLS).
pub fn set_fs_base(v: u64) {
    // SAFETY: the kernel never addresses memory through FS, so no FS base can break it; a
    // non-canonical value makes WRMSR raise #GP, which is reported as a kernel fault.
    unsafe { wrmsr(MSR_FS_BASE, v) };
}

/// The boot-time CPU's `CPUID.1:EDX` (for `AT_HWCAP`).
pub fn hwcap() -> u64 {
    u64::from(core::arch::x86_64::__cpuid(1).edx)
}

/// How FPU/SSE state is saved: FXSAVE (512 bytes) or XSAVE with the XCR0 the host set.
#[derive(Debug, Clone, Copy)]
pub struct FpuFormat {
    /// Bytes of one save area.
    pub size: usize,
    /// XCR0 when XSAVE is used.
    pub xsave_mask: Option<u64>,
}

/// Picks the save format: XSAVE when CR4.OSXSAVE is on (CPUID.1:ECX bit 27), else FXSAVE.
pub fn fpu_format() -> FpuFormat {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    if leaf1.ecx & (1 << 27) != 0 {
        let (lo, hi): (u32, u32);
        // SAFETY: XGETBV with ECX = 0 is allowed when OSXSAVE is set, which CPUID just said.
        unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nostack, nomem)) };
        let xcr0 = (u64::from(hi) << 32) | u64::from(lo);
        // CPUID.(EAX=0DH, ECX=0):EBX = bytes for the features enabled in XCR0.
        let size = core::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize;
        FpuFormat { size: size.max(576), xsave_mask: Some(xcr0) }
    } else {
        FpuFormat { size: 512, xsave_mask: None }
    }
}

/// A 64-byte-aligned FPU save area.
pub struct FpuArea {
    buf: alloc::vec::Vec<u8>,
}

impl FpuArea {
    /// A zeroed area for `fmt` (call [`FpuArea::save`] or copy a template before loading).
    pub fn new(fmt: &FpuFormat) -> FpuArea {
        FpuArea { buf: alloc::vec![0u8; fmt.size + 64] }
    }

    fn ptr(&mut self) -> *mut u8 {
        let p = self.buf.as_mut_ptr();
        let off = p.align_offset(64);
        p.wrapping_add(off)
    }

    /// Copies another area's contents.
    pub fn copy_from(&mut self, other: &mut FpuArea) {
        let n = self.buf.len().min(other.buf.len()) - 64;
        let src = other.ptr();
        let dst = self.ptr();
        // SAFETY: both pointers are 64-aligned inside buffers of at least n + 64 bytes and
        // belong to distinct areas.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, n) };
    }

    fn legacy_offset(&self) -> usize {
        self.buf.as_ptr().align_offset(64)
    }

    /// The legacy (FXSAVE-format) 512 bytes of the saved state: x87, MXCSR and XMM0-15.
    pub fn legacy(&self) -> [u8; 512] {
        let off = self.legacy_offset();
        let mut out = [0u8; 512];
        if let Some(src) = self.buf.get(off..off + 512) {
            out.copy_from_slice(src);
        }
        out
    }

    /// Replaces the legacy 512 bytes (the caller has made MXCSR valid). With XSAVE, the
    /// header's XSTATE_BV then marks x87 and SSE state as present (limited to `fmt`'s XCR0)
    /// so that XRSTOR loads these bytes instead of the initial state (Intel SDM Vol. 1, 13.8).
    pub fn set_legacy(&mut self, img: &[u8; 512], fmt: &FpuFormat) {
        let off = self.legacy_offset();
        if let Some(dst) = self.buf.get_mut(off..off + 512) {
            dst.copy_from_slice(img);
        }
        if let Some(xcr0) = fmt.xsave_mask {
            if let Some(hdr) = self.buf.get_mut(off + 512..off + 520) {
                let mut b = [0u8; 8];
                b.copy_from_slice(hdr);
                let bv = u64::from_le_bytes(b) | (xcr0 & 3);
                hdr.copy_from_slice(&bv.to_le_bytes());
            }
        }
    }

    /// Saves the CPU's FPU/SSE state here.
    pub fn save(&mut self, fmt: &FpuFormat) {
        let p = self.ptr();
        match fmt.xsave_mask {
            // SAFETY: p is 64-aligned with fmt.size bytes behind it, as XSAVE requires.
            Some(m) => unsafe {
                asm!("xsave64 [{}]", in(reg) p, in("eax") m as u32, in("edx") (m >> 32) as u32, options(nostack))
            },
            // SAFETY: p is 16-aligned with 512 bytes behind it, as FXSAVE requires.
            None => unsafe { asm!("fxsave64 [{}]", in(reg) p, options(nostack)) },
        }
    }

    /// Loads this area into the CPU.
    pub fn load(&mut self, fmt: &FpuFormat) {
        let p = self.ptr();
        match fmt.xsave_mask {
            // SAFETY: the area was filled by `save` (or copied from one), so its header is valid.
            Some(m) => unsafe {
                asm!("xrstor64 [{}]", in(reg) p, in("eax") m as u32, in("edx") (m >> 32) as u32, options(nostack))
            },
            // SAFETY: as above for FXRSTOR; reserved MXCSR bits are zero in a saved image.
            None => unsafe { asm!("fxrstor64 [{}]", in(reg) p, options(nostack)) },
        }
    }
}

/// Puts the FPU in its initial state (FNINIT, MXCSR = 0x1f80) so it can be saved as the
/// template for new processes.
pub fn fpu_reset() {
    let mxcsr: u32 = 0x1f80;
    // SAFETY: resetting x87 and loading the default MXCSR affects only FPU state, which no
    // kernel code uses (the kernel is built soft-float).
    unsafe { asm!("fninit", "ldmxcsr [{}]", in(reg) &mxcsr, options(nostack)) };
}

const NO_OWNER: usize = usize::MAX;

/// Spins a CPU makes for the kernel lock before it sleeps until the holder lets it go.
const LOCK_SPINS: u32 = 2000;

/// CPUs asleep waiting for the kernel lock (kicked awake when it is let go).
static LOCK_SLEEPERS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The big kernel lock: a ticket lock (CPUs get it in the order they asked) around the
/// kernel's state. A CPU that has spun [`LOCK_SPINS`] times for it sleeps in the hypervisor
/// (`SLEEP_UNTIL`, at most a host tick) and is kicked awake (`VCPU_KICK`) when the lock is
/// let go: on a host whose CPUs are taken, a waiting vCPU then gives its physical CPU to the
/// holder instead of spinning it away. Taking it again on the CPU that holds it is a kernel
/// bug and panics instead of hanging.
pub struct BigLock<T> {
    next: core::sync::atomic::AtomicU32,
    serving: core::sync::atomic::AtomicU32,
    owner: AtomicUsize,
    cell: UnsafeCell<T>,
}

// SAFETY: the contents (with their `Rc`s and `RefCell`s, which are neither `Send` nor
// `Sync`) are reached only through a `Guard`, and a guard exists on one CPU at a time (the
// ticket lock); each CPU's accesses are ordered after the previous holder's by the lock's
// SeqCst hand-over, and the kernel keeps no reference into them once it lets the lock go
// (across a return to user mode or a sleep). So sharing them between CPUs this way is as
// safe as using them on one.
unsafe impl<T> Sync for BigLock<T> {}

impl<T> BigLock<T> {
    /// A lock around `v`.
    pub const fn new(v: T) -> BigLock<T> {
        BigLock {
            next: core::sync::atomic::AtomicU32::new(0),
            serving: core::sync::atomic::AtomicU32::new(0),
            owner: AtomicUsize::new(NO_OWNER),
            cell: UnsafeCell::new(v),
        }
    }

    /// Takes the lock, waiting for the CPUs that asked first.
    pub fn lock(&self) -> Guard<'_, T> {
        let me = cpu_index();
        assert!(self.owner.load(SeqCst) != me, "the kernel lock taken twice on cpu {me}");
        let ticket = self.next.fetch_add(1, SeqCst);
        let mut spins = 0u32;
        while self.serving.load(SeqCst) != ticket {
            spins += 1;
            if spins < LOCK_SPINS {
                core::hint::spin_loop();
                continue;
            }
            spins = 0;
            let bit = 1u64 << me.min(63);
            LOCK_SLEEPERS.fetch_or(bit, SeqCst);
            // Let go after the bit was set: the holder kicks this CPU; before: no sleep.
            if self.serving.load(SeqCst) != ticket {
                let hv = super::hv();
                let now = hv.monotonic_ns();
                hv.sleep_until(now.saturating_add(10_000_000));
            }
            LOCK_SLEEPERS.fetch_and(!bit, SeqCst);
        }
        self.owner.store(me, SeqCst);
        Guard { lock: self }
    }
}

/// The held kernel lock.
pub struct Guard<'a, T> {
    lock: &'a BigLock<T>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock, so no other reference to the contents exists
        // on another CPU, and on this one only through this guard.
        unsafe { &*self.lock.cell.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes the reference unique on this CPU.
        unsafe { &mut *self.lock.cell.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.lock.owner.store(NO_OWNER, SeqCst);
        self.lock.serving.fetch_add(1, SeqCst);
        let sleepers = LOCK_SLEEPERS.load(SeqCst);
        if sleepers != 0 {
            let _ = super::hv().vcpu_kick(sleepers, 0);
        }
    }
}
