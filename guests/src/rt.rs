//! The guest runtime: the boot parameters and the hypercalls of `crx_abi`, behind a
//! [`Guest`] handle.
//!
//! Only meaningful inside a VM of the hypervisor: the hypercall instruction faults
//! anywhere else. On the host the code compiles (for checking) but the binaries never call it.

use crate::args;
use crate::gprintln;
use crx_abi::{call, nr, BootParams, Error, HypercallInsn, CONSOLE_WRITE_MAX};

/// A running guest: its boot parameters, the instruction that makes hypercalls and the
/// vCPU this handle runs on.
pub struct Guest {
    params: BootParams,
    insn: HypercallInsn,
    vcpu: u32,
}

/// Which vCPUs run a guest's `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vcpus {
    /// Only the first; the others park in `SLEEP_UNTIL(u64::MAX)` for good.
    First,
    /// Every one (`main` tells them apart by [`Guest::vcpu`]).
    Every,
}

/// Reads the boot parameters at `boot_params_gpa` on vCPU `vcpu` (its RSI at entry), runs
/// `main` (on the vCPUs `which` says) and ends the VM with its result.
pub fn start(boot_params_gpa: u64, vcpu: u64, which: Vcpus, main: fn(&Guest) -> i32) -> ! {
    // SAFETY: the hypervisor places `BootParams` at this guest-physical address, which the
    // initial page tables map 1:1; every bit pattern is a valid `BootParams` (integers and
    // a byte array), so even a wrong address cannot produce an invalid value.
    let params = unsafe { core::ptr::read_volatile(boot_params_gpa as *const BootParams) };
    let mut guest = Guest::new(params);
    guest.vcpu = u32::try_from(vcpu).unwrap_or(u32::MAX);
    if guest.vcpu != 0 && which == Vcpus::First {
        guest.park()
    }
    let code = main(&guest);
    guest.exit(code)
}

/// The panic handler's body: prints the message and exits with code 101.
pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: as in `start`; the boot parameters page is never written by the guests.
    let params = unsafe { core::ptr::read_volatile(crx_abi::layout::BOOT_PARAMS as *const BootParams) };
    let guest = Guest::new(params);
    gprintln!(guest, "panic: {}", info.message());
    guest.exit(101)
}

/// The hypercall instruction of the CPU vendor, for boot parameters that do not say.
fn insn_from_cpuid() -> HypercallInsn {
    // CPUID leaf 0 returns the vendor string in EBX, EDX, ECX; "AuthenticAMD" has EBX = "Auth".
    let leaf0 = core::arch::x86_64::__cpuid(0);
    if leaf0.ebx == u32::from_le_bytes(*b"Auth") {
        HypercallInsn::Vmmcall
    } else {
        HypercallInsn::Vmcall
    }
}

impl Guest {
    /// A handle for these boot parameters.
    pub fn new(params: BootParams) -> Guest {
        let insn = params.insn().unwrap_or_else(insn_from_cpuid);
        Guest { params, insn, vcpu: 0 }
    }

    /// The boot parameters.
    pub fn params(&self) -> &BootParams {
        &self.params
    }

    /// The hypercall instruction in use.
    pub fn insn(&self) -> HypercallInsn {
        self.insn
    }

    /// This VM's index (0-based).
    pub fn index(&self) -> u32 {
        self.params.vm_index
    }

    /// How many VMs were started together.
    pub fn count(&self) -> u32 {
        self.params.vm_count
    }

    /// The vCPU this runs on (0 = the first).
    pub fn vcpu(&self) -> u32 {
        self.vcpu
    }

    /// How many vCPUs the VM has.
    pub fn vcpus(&self) -> u32 {
        self.params.vcpus
    }

    /// Guest memory in bytes.
    pub fn mem_bytes(&self) -> u64 {
        self.params.mem_bytes
    }

    /// The first free guest-physical address above the image.
    pub fn free_start(&self) -> u64 {
        self.params.free_start
    }

    /// The command line.
    pub fn cmdline(&self) -> &str {
        self.params.cmdline()
    }

    /// The value of `key=value` on the command line.
    pub fn arg(&self, key: &str) -> Option<&str> {
        args::get(self.cmdline(), key)
    }

    /// Makes hypercall `nr` and returns `rax` as it comes back.
    ///
    /// # Safety
    /// Pointer arguments must be valid for what the hypercall does with them (for
    /// `RANDOM` and `BOOT_PARAMS` the hypervisor writes there), or lie outside guest memory.
    pub unsafe fn raw(&self, nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> u64 {
        // SAFETY: we run as a guest of this hypervisor; the caller vouches for the pointers.
        unsafe { call::hypercall(self.insn, nr, a0, a1, a2, a3) }
    }

    fn call0(&self, nr: u64, a0: u64) -> Result<u64, Error> {
        // SAFETY: used only for hypercalls that take no pointer.
        Error::result(unsafe { self.raw(nr, a0, 0, 0, 0) })
    }

    /// Writes bytes to the console (in pieces of at most `CONSOLE_WRITE_MAX`).
    pub fn write(&self, bytes: &[u8]) {
        for chunk in bytes.chunks(CONSOLE_WRITE_MAX as usize) {
            // SAFETY: the hypervisor only reads the buffer, which is valid for its length.
            let _ = unsafe { self.raw(nr::CONSOLE_WRITE, chunk.as_ptr() as u64, chunk.len() as u64, 0, 0) };
        }
    }

    /// Ends the VM with `code`.
    pub fn exit(&self, code: i32) -> ! {
        // The code travels as the 64-bit sign extension of the i32.
        let _ = self.call0(nr::EXIT, i64::from(code) as u64);
        // EXIT does not return; if it ever did, stay here without using the CPU.
        loop {
            // SAFETY: halting has no memory effects; the guest runs with interrupts off.
            unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
        }
    }

    /// The ABI version the hypervisor speaks.
    pub fn version(&self) -> Result<u64, Error> {
        self.call0(nr::VERSION, 0)
    }

    /// Monotonic nanoseconds since the VM started.
    pub fn monotonic_ns(&self) -> Result<u64, Error> {
        self.call0(nr::TIME_MONOTONIC, 0)
    }

    /// Wall-clock nanoseconds since the Unix epoch.
    pub fn wall_ns(&self) -> Result<u64, Error> {
        self.call0(nr::TIME_WALL, 0)
    }

    /// Blocks until the monotonic clock reaches `deadline_ns`.
    pub fn sleep_until(&self, deadline_ns: u64) -> Result<u64, Error> {
        self.call0(nr::SLEEP_UNTIL, deadline_ns)
    }

    /// Blocks for about `ns` nanoseconds.
    pub fn sleep_ns(&self, ns: u64) -> Result<u64, Error> {
        let now = self.monotonic_ns()?;
        self.sleep_until(now.saturating_add(ns))
    }

    /// Gives the CPU to another vCPU.
    pub fn yield_now(&self) -> Result<u64, Error> {
        self.call0(nr::YIELD, 0)
    }

    /// Arms this vCPU's one-shot timer: interrupt `vector` at monotonic `deadline_ns`.
    pub fn timer_arm(&self, deadline_ns: u64, vector: u64) -> Result<u64, Error> {
        // SAFETY: TIMER_ARM takes no pointer.
        Error::result(unsafe { self.raw(nr::TIMER_ARM, deadline_ns, vector, 0, 0) })
    }

    /// Kicks the vCPUs of this VM named in `mask` (bit k: vCPU k): wakes them, and with a
    /// `vector` other than 0 interrupts them with it (`VCPU_KICK`).
    pub fn kick(&self, mask: u64, vector: u64) -> Result<u64, Error> {
        // SAFETY: VCPU_KICK takes no pointer.
        Error::result(unsafe { self.raw(nr::VCPU_KICK, mask, vector, 0, 0) })
    }

    /// Sleeps on this vCPU for good (woken only to sleep again): for vCPUs with nothing to do.
    pub fn park(&self) -> ! {
        loop {
            let _ = self.sleep_until(u64::MAX);
        }
    }

    /// Fills `buf` with random bytes.
    pub fn random(&self, buf: &mut [u8]) -> Result<u64, Error> {
        // SAFETY: the hypervisor writes at most `buf.len()` bytes into `buf`, which we own.
        Error::result(unsafe { self.raw(nr::RANDOM, buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0) })
    }
}
