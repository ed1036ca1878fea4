//! Hypercalls to the hypervisor (ABI v1, v5's timer and v6's kick from `crx_abi`, the pod calls of v2
//! to v4 from `podabi`).
//! Pointers handed over are guest-physical: kernel buffers are converted with `mm::gpa_of`.

use crx_abi::{call, nr, Error, HypercallInsn, CONSOLE_WRITE_MAX};
use crx_guest::podabi::{self, LayerInfo};

use super::gpa_of;

/// The hypercall instruction of this VM.
#[derive(Clone, Copy)]
pub struct Hv {
    insn: HypercallInsn,
}

impl Hv {
    /// A handle using `insn`.
    pub const fn new(insn: HypercallInsn) -> Hv {
        Hv { insn }
    }

    fn raw(&self, n: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> Result<u64, Error> {
        // SAFETY: we run as a guest of this hypervisor; pointer arguments passed by the
        // methods below are guest-physical addresses of kernel buffers valid for the length
        // given, and the hypervisor writes only into the ones documented as outputs.
        Error::result(unsafe { call::hypercall(self.insn, n, a0, a1, a2, a3) })
    }

    /// Writes to the VM console.
    pub fn console(&self, bytes: &[u8]) {
        for c in bytes.chunks(CONSOLE_WRITE_MAX as usize) {
            let _ = self.raw(nr::CONSOLE_WRITE, gpa_of(c.as_ptr()), c.len() as u64, 0, 0);
        }
    }

    /// Ends the VM.
    pub fn exit(&self, code: i32) -> ! {
        let _ = self.raw(nr::EXIT, i64::from(code) as u64, 0, 0, 0);
        loop {
            // SAFETY: halting has no memory effects.
            unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
        }
    }

    /// Monotonic ns since the VM started.
    pub fn monotonic_ns(&self) -> u64 {
        self.raw(nr::TIME_MONOTONIC, 0, 0, 0, 0).unwrap_or(0)
    }

    /// Wall-clock ns since the epoch.
    pub fn wall_ns(&self) -> u64 {
        self.raw(nr::TIME_WALL, 0, 0, 0, 0).unwrap_or(0)
    }

    /// Blocks until the monotonic clock reaches `deadline_ns`.
    pub fn sleep_until(&self, deadline_ns: u64) {
        let _ = self.raw(nr::SLEEP_UNTIL, deadline_ns, 0, 0, 0);
    }

    /// Arms this vCPU's one-shot timer: interrupt `vector` once the monotonic clock reaches
    /// `deadline_ns` (ABI 5; `Err(NoSys)` from an older hypervisor).
    pub fn timer_arm(&self, deadline_ns: u64, vector: u8) -> Result<u64, Error> {
        self.raw(nr::TIMER_ARM, deadline_ns, u64::from(vector), 0, 0)
    }

    /// Gives this vCPU's physical CPU to another vCPU for a while.
    pub fn yield_now(&self) {
        let _ = self.raw(nr::YIELD, 0, 0, 0, 0);
    }

    /// Wakes the vCPUs of `mask` from `SLEEP_UNTIL` (or makes their next one return at
    /// once) and, with a `vector`, interrupts them as their timer would (ABI 6;
    /// `Err(NoSys)` from an older hypervisor).
    pub fn vcpu_kick(&self, mask: u64, vector: u8) -> Result<u64, Error> {
        self.raw(nr::VCPU_KICK, mask, u64::from(vector), 0, 0)
    }

    /// Fills `buf` with random bytes.
    pub fn random(&self, buf: &mut [u8]) {
        for c in buf.chunks_mut(crx_abi::RANDOM_MAX as usize) {
            let _ = self.raw(nr::RANDOM, gpa_of(c.as_ptr()), c.len() as u64, 0, 0);
        }
    }

    /// Container output; `Err(NoSys)` when the hypervisor has no pod log.
    pub fn log_write(&self, container: u32, stream: u32, bytes: &[u8]) -> Result<u64, Error> {
        self.raw(
            podabi::nr::LOG_WRITE,
            u64::from(container),
            u64::from(stream),
            gpa_of(bytes.as_ptr()),
            bytes.len() as u64,
        )
    }

    /// Reports a container's end, and whether the out-of-memory killer ended one of its
    /// processes.
    pub fn container_exit(&self, container: u32, code: i32, oom_killed: bool) -> Result<u64, Error> {
        let flags = if oom_killed { crx_abi::EXIT_OOM_KILLED } else { 0 };
        self.raw(podabi::nr::CONTAINER_EXIT, u64::from(container), i64::from(code) as u64, flags, 0)
    }

    /// Copies the pod spec into `buf`; returns its total length.
    pub fn pod_spec(&self, buf: &mut [u8]) -> Result<u64, Error> {
        self.raw(podabi::nr::POD_SPEC, gpa_of(buf.as_ptr()), buf.len() as u64, 0, 0)
    }

    /// Says that the kernel is about to enter user mode for the first time, in a process of
    /// container `container`: the hypervisor notes the VM's guest time so far.
    pub fn container_entry(&self, container: u32) -> Result<u64, Error> {
        self.raw(podabi::nr::CONTAINER_ENTRY, u64::from(container), 0, 0, 0)
    }

    /// The node's next command for a managed pod (0: none).
    pub fn pod_control(&self) -> Result<u64, Error> {
        self.raw(podabi::nr::POD_CONTROL, 0, 0, 0, 0)
    }

    /// Layer `index`'s placement.
    pub fn layer_info(&self, index: u32) -> Result<LayerInfo, Error> {
        let mut info = LayerInfo::default();
        self.raw(
            podabi::nr::LAYER_INFO,
            u64::from(index),
            gpa_of((&mut info as *mut LayerInfo).cast()),
            0,
            0,
        )?;
        Ok(info)
    }
}
