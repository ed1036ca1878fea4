//! The kernel proper: boot, then the pod's processes until every container has ended.
//!
//! Boot: the hypervisor enters `_start` in 64-bit mode with RDI = the boot parameters, on
//! every vCPU at once (RSI = the vCPU's index, crx-abi 6). vCPU 0 builds the kernel; the
//! others wait until it releases them ([`smp`]), then set themselves up and join the
//! scheduler. vCPU 0 switches to its own stack, loads its GDT/IDT/SYSCALL MSRs ([`arch`]), carves guest
//! RAM above its image into the heap and the frame pool (the VM's memory budget for page
//! tables and user pages), builds its page tables ([`mm`], loaded through [`phys`]), and starts the pod ([`pod`]).
//! A fault in kernel mode prints a report on the console and ends the VM with
//! [`KERNEL_FAULT_EXIT`].

pub mod arch;
mod exec;
mod fd;
mod hv;
mod itimers;
pub mod mm;
mod pager;
mod phys;
mod pod;
mod proc;
mod sched;
mod signals;
pub mod smp;
mod sys;

use alloc::string::String;
use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;

use crx_abi::{BootParams, HypercallInsn};
use linked_list_allocator::Heap;
use spin::Mutex;

/// Where the direct map of guest-physical memory starts (PML4 entry 256).
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;

/// The guest-physical address of a kernel pointer (direct map or image), for hypercalls.
pub fn gpa_of(ptr: *const u8) -> u64 {
    let va = ptr as u64;
    if va >= PHYS_OFFSET {
        va - PHYS_OFFSET
    } else {
        va
    }
}

/// VM exit code after a kernel fault or panic: distinctive, not a plausible program code.
pub const KERNEL_FAULT_EXIT: i32 = 0xcf;

static HV: Mutex<Option<hv::Hv>> = Mutex::new(None);

/// The hypercall handle (falls back to CPUID's vendor before boot has read the parameters).
pub fn hv() -> hv::Hv {
    if let Some(h) = *HV.lock() {
        return h;
    }
    let leaf0 = core::arch::x86_64::__cpuid(0);
    hv::Hv::new(if leaf0.ebx == u32::from_le_bytes(*b"Auth") {
        HypercallInsn::Vmmcall
    } else {
        HypercallInsn::Vmcall
    })
}

/// Prints a kernel line on the VM console.
pub fn log_line(args: core::fmt::Arguments<'_>) {
    let mut s = String::new();
    let _ = s.write_str("crx: ");
    let _ = s.write_fmt(args);
    s.push('\n');
    hv().console(s.as_bytes());
}

/// `klog!("fmt", args)`: one kernel line on the console.
macro_rules! klog {
    ($($a:tt)*) => { $crate::kernel::log_line(format_args!($($a)*)) };
}
pub(crate) use klog;

struct KernelHeap(Mutex<Heap>);

// SAFETY: allocations come from `linked_list_allocator`, which hands out disjoint blocks of
// the heap range given at boot; the mutex serializes access.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().allocate_first_fit(layout).map(|p| p.as_ptr()).unwrap_or(core::ptr::null_mut())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = core::ptr::NonNull::new(ptr) {
            // SAFETY: the caller passes a block this allocator returned with this layout.
            unsafe { self.0.lock().deallocate(p, layout) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: KernelHeap = KernelHeap(Mutex::new(Heap::empty()));

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

// The entry: RDI = boot parameters, RSI = vCPU index. vCPU 0 switches to the kernel stack
// and calls `kmain`; the others keep the stack the hypervisor gave them and call `ap_main`.
core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".globl _start",
    "_start:",
    "test rsi, rsi",
    "jnz 1f",
    "lea rsp, [rip + CRX_KSTACK + {top}]",
    "call {main}",
    "ud2",
    "1:",
    "and rsp, -16",
    "call {ap}",
    "ud2",
    ".previous",
    main = sym kmain,
    ap = sym ap_main,
    top = const arch::KSTACK_GUARD + arch::KSTACK_SIZE,
);

/// A vCPU other than the first: waits (asleep) until vCPU 0 has built the kernel, then
/// moves to the kernel's tables and its own stack. A vCPU past the ones the kernel uses
/// sleeps for good.
extern "sysv64" fn ap_main(_boot_params_gpa: u64, index: u64) -> ! {
    let hv = hv();
    while !smp::ready() {
        hv.sleep_until(u64::MAX);
    }
    let cpu = index as usize;
    let Some(boot) = smp::ap_boot(cpu) else {
        loop {
            hv.sleep_until(u64::MAX);
        }
    };
    // SAFETY: `boot.cr3` is the kernel's own tables, which map the image as the boot tables
    // do, and `boot.stack_top` the top of a kernel stack vCPU 0 set aside for this CPU
    // alone, in the direct map of those tables.
    unsafe { arch::ap_switch(boot.cr3, boot.stack_top, cpu) }
}

/// A vCPU other than the first, on its own stack and the kernel's tables.
// `no_mangle` (which `unsafe_code` flags): `arch`'s switch stub calls this symbol, and no
// other item has its name.
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn crx_ap_run(cpu: u64) -> ! {
    let cpu = cpu as usize;
    let Some(boot) = smp::ap_boot(cpu) else { hv().exit(KERNEL_FAULT_EXIT) };
    arch::init_cpu(cpu, boot.stack_top, boot.ist_top);
    smp::note_cr3(boot.cr3);
    arch::fpu_reset();
    sched::run_cpu()
}

extern "sysv64" fn kmain(boot_params_gpa: u64) -> ! {
    // SAFETY: the hypervisor places `BootParams` at this address, identity-mapped; every bit
    // pattern is a valid `BootParams` (integers and bytes).
    let params = unsafe { core::ptr::read_volatile(boot_params_gpa as *const BootParams) };
    let insn = params.insn().unwrap_or(HypercallInsn::Vmcall);
    *HV.lock() = Some(hv::Hv::new(insn));
    arch::init();
    // SAFETY: linker symbols; only their addresses are used.
    let image = unsafe { (&__image_start as *const u8 as u64, &__image_end as *const u8 as u64) };
    let mem_end = params.mem_bytes.min(crx_abi::layout::MEM_MAX);
    // Every vCPU's boot stack stays out of the pool (vCPU k's is k x 64 KiB below the top).
    let vcpus = u64::from(params.vcpus.clamp(1, smp::MAX_CPUS as u32));
    let stack_area =
        params.stack_top.min(mem_end).saturating_sub(vcpus * crx_abi::layout::VCPU_STACK_BYTES) & !0xfff;
    let free = params.free_start.max(image.1).div_ceil(4096) * 4096;
    if image.1 > mm::IMAGE_LIMIT || stack_area <= free + (4 << 20) {
        hv().console(b"crx: not enough guest memory (need at least 8 MiB)\n");
        hv().exit(KERNEL_FAULT_EXIT);
    }
    let total = stack_area - free;
    let heap_bytes =
        (heap_mib(params.cmdline()).map(|m| m << 20).unwrap_or(total * 3 / 8)).clamp(2 << 20, total / 2);
    let heap_bytes = heap_bytes & !0xfff;
    let heap_start = free;
    let tables_start = heap_start + heap_bytes;
    let mut early = (tables_start, tables_start + 64 * 4096);
    // SAFETY: [tables_start, stack_area) is guest RAM above the heap and below the boot
    // stack area, identity-mapped at boot and covered by the direct map built next; nothing
    // else uses it.
    unsafe { phys::set_pool_range(tables_start, stack_area) };
    let kt = match mm::init_kernel_tables(&mut early, mem_end, image) {
        Ok(k) => k,
        Err(_) => {
            hv().console(b"crx: no room for the kernel page tables\n");
            hv().exit(KERNEL_FAULT_EXIT)
        }
    };
    // SAFETY: these tables, in pool frames, map the kernel image (its code, statics and
    // stack, less the stack guard) at its load address as the boot identity map does, and
    // all guest RAM in the direct map; they are never freed.
    unsafe { phys::enter_direct_map(kt.pml4) };
    // SAFETY: [heap_start, heap_start + heap_bytes) is guest RAM above the image that nothing
    // else uses (the pool starts above it), mapped writable in the direct map just built.
    unsafe { ALLOCATOR.0.lock().init(mm::direct(heap_start) as *mut u8, heap_bytes as usize) };
    let pool = crx_guest::frames::FramePool::new(early.0, stack_area);
    klog!(
        "crx-guest: {} MiB RAM, heap {} KiB, {} frames for processes",
        params.mem_bytes >> 20,
        heap_bytes >> 10,
        pool.total_frames()
    );
    sched::start(pod::start(kt, pool, &params, heap_bytes))
}

fn heap_mib(cmdline: &str) -> Option<u64> {
    cmdline.split(' ').find_map(|w| w.strip_prefix("crx.heap_mib=")).and_then(|v| v.parse().ok())
}

/// A fault in kernel mode: report and end the VM.
pub fn kernel_fault(what: &str, tf: &arch::TrapFrame) -> ! {
    // A fault while reporting one ends the VM without a second report.
    if IN_KERNEL_FAULT.swap(true, core::sync::atomic::Ordering::Relaxed) {
        hv().exit(KERNEL_FAULT_EXIT)
    }
    let cr2 = arch::cr2();
    let what = if ((tf.vector == 14 || tf.vector == 8) && arch::in_kernel_stack_guard(cr2))
        || arch::in_kernel_stack_guard(tf.rsp)
    {
        "kernel stack overflow"
    } else {
        what
    };
    let mut b = FixedBuf { buf: [0; 512], len: 0 };
    let _ = writeln!(
        b,
        "crx: KERNEL FAULT: {what} (vector {}, error {:#x}) at rip {:#x} rsp {:#x} cr2 {:#x}",
        tf.vector, tf.error, tf.rip, tf.rsp, cr2
    );
    hv().console(&b.buf[..b.len]);
    hv().exit(KERNEL_FAULT_EXIT)
}

/// Set once a kernel fault is being reported.
static IN_KERNEL_FAULT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A fixed buffer for messages written when the heap may be unusable.
struct FixedBuf {
    buf: [u8; 512],
    len: usize,
}

impl Write for FixedBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut b = FixedBuf { buf: [0; 512], len: 0 };
    let _ = writeln!(b, "crx: KERNEL PANIC: {info}");
    hv().console(&b.buf[..b.len]);
    hv().exit(KERNEL_FAULT_EXIT)
}
