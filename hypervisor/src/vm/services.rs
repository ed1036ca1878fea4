//! One VM's record, shared by the CPUs that run its vCPUs, and the [`Services`] the exit
//! policy reaches the machine through while it handles one of the VM's exits.
//!
//! [`Svc`] runs under the manager's world lock, so nothing here drives the serial line:
//! console and pod lines are appended to the caller's `out` buffer, which the manager
//! prints once the lock is released (see `manager`).
#![forbid(unsafe_code)]

use super::console::{Console, Output};
use super::exit::{InitialState, StopReason};
use super::handler::Services;
use super::memory::{GuestMemory, OutOfRange};
use super::pod::PodState;
use super::rng::Rng;
use super::setup::Prepared;
use crate::arch::{cpu, fpu, time};
use crate::mm::direct::KernelFrames;
use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use crx_abi::{BootParams, LayerInfo};

/// How a VM ended.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// It exited with this code.
    Exited(i32),
    /// It was stopped.
    Stopped(StopReason),
}

/// One VM's state.
pub struct VmRec {
    /// Its index (`vm<i>`).
    pub index: u32,
    /// Its memory, until its last vCPU is torn down.
    pub mem: Option<GuestMemory<KernelFrames>>,
    /// What the loader wrote at `BOOT_PARAMS`.
    pub params: BootParams,
    /// vCPU 0's initial state.
    pub init: InitialState,
    /// Its console's line buffer and rate limit.
    pub console: Console,
    /// When it was created (monotonic ns).
    pub start_ns: u64,
    /// How it ended, once it has.
    pub end: Option<End>,
    /// Exits handled.
    pub exits: u64,
    /// Its vCPUs the backend has created so far.
    pub vcpus_made: u32,
    /// The backend's and the FPU areas' bytes for its vCPUs.
    pub backend_bytes: u64,
    /// Its GET_RANDOM stream.
    pub rng: Rng,
    /// The pod this VM runs, in pod mode.
    pub pod: Option<PodState>,
    /// What holds the frames its memory maps read-only (a pulled image's layers): let go
    /// only after the memory is.
    pub holder: Option<alloc::sync::Arc<dyn core::any::Any + Send + Sync>>,
    /// Its guest time when the guest said it first entered a container (`CONTAINER_ENTRY`).
    pub first_container_ns: Option<u64>,
}

impl VmRec {
    /// A VM created at `start_ns` that is running (memory loaded, vCPUs to come).
    pub fn running(index: u32, start_ns: u64, vm: Prepared<KernelFrames>) -> VmRec {
        let Prepared { mem, loaded, pod } = vm;
        VmRec {
            index,
            mem: Some(mem),
            params: loaded.params,
            init: loaded.init,
            console: Console::default(),
            start_ns,
            end: None,
            exits: 0,
            vcpus_made: 0,
            backend_bytes: 0,
            rng: Rng::new(time::rdtsc() ^ (u64::from(index) << 32)),
            pod,
            holder: None,
            first_container_ns: None,
        }
    }

    /// A VM that could not be set up: no memory, ended already.
    pub fn failed(index: u32) -> VmRec {
        VmRec {
            index,
            mem: None,
            params: BootParams {
                magic: 0,
                abi_version: 0,
                hypercall_insn: 0,
                vm_index: index,
                vm_count: 0,
                mem_bytes: 0,
                stack_top: 0,
                free_start: 0,
                cmdline: [0; 256],
                vcpus: 0,
                _pad: 0,
            },
            init: InitialState::default(),
            console: Console::default(),
            start_ns: 0,
            end: Some(End::Stopped(StopReason::Killed)),
            exits: 0,
            vcpus_made: 0,
            backend_bytes: 0,
            rng: Rng::new(0),
            pod: None,
            holder: None,
            first_container_ns: None,
        }
    }
}

/// Wall-clock ns at `WALL_AT` monotonic ns.
static WALL_BASE: AtomicU64 = AtomicU64::new(0);
static WALL_AT: AtomicU64 = AtomicU64::new(0);

/// Sets the wall clock the guests read: `wall_ns` since the Unix epoch now.
pub fn set_wall_clock(wall_ns: u64) {
    WALL_BASE.store(wall_ns, Ordering::Relaxed);
    WALL_AT.store(time::now_ns(), Ordering::Relaxed);
}

/// Writes VM `i`'s console output as lines into `out`.
pub fn console_line(out: &mut String, i: u32, o: Output<'_>) {
    let _ = match o {
        Output::Line(line) => writeln!(out, "vm{i}> {line}"),
        Output::Dropped(n) => writeln!(out, "vm{i}: {n} console lines dropped (rate limit)"),
    };
}

/// The exit policy's view of one VM.
pub struct Svc<'a> {
    /// The VM.
    pub vm: &'a mut VmRec,
    /// Console lines to print once the world lock is released.
    pub out: &'a mut String,
    /// The VM's guest time so far, the exit being handled included.
    pub guest_ns: u64,
}

impl Services for Svc<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        match &self.vm.mem {
            Some(m) => m.read(gpa, buf),
            None => Err(OutOfRange { gpa, len: buf.len() as u64 }),
        }
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
        match &mut self.vm.mem {
            Some(m) => m.write(gpa, data),
            None => Err(OutOfRange { gpa, len: data.len() as u64 }),
        }
    }
    fn monotonic_ns(&self) -> u64 {
        time::now_ns().saturating_sub(self.vm.start_ns)
    }
    fn wall_ns(&self) -> u64 {
        let at = WALL_AT.load(Ordering::Relaxed);
        WALL_BASE.load(Ordering::Relaxed).saturating_add(time::now_ns().saturating_sub(at))
    }
    fn tsc(&self) -> u64 {
        time::rdtsc()
    }
    fn random(&mut self, buf: &mut [u8]) {
        self.vm.rng.fill(time::rdtsc(), buf);
    }
    fn console(&mut self, bytes: &[u8]) {
        let i = self.vm.index;
        let out = &mut *self.out;
        self.vm.console.push(bytes, time::now_ns(), |o| console_line(out, i, o));
    }
    fn host_cpuid(&self, leaf: u32, sub: u32) -> [u32; 4] {
        let r = cpu::cpuid(leaf, sub);
        [r.eax, r.ebx, r.ecx, r.edx]
    }
    fn host_xcr0(&self) -> u64 {
        fpu::host_xcr0()
    }
    fn boot_params(&self) -> BootParams {
        self.vm.params
    }
    fn pod_log_ok(&self, container: u64, stream: u64) -> bool {
        self.vm.pod.as_ref().is_some_and(|p| p.check_log(container, stream).is_ok())
    }
    fn pod_log(&mut self, container: u64, stream: u64, bytes: &[u8]) {
        let out = &mut *self.out;
        if let Some(p) = self.vm.pod.as_mut() {
            let _ = p.log(container, stream, bytes, time::now_ns(), |line| {
                let _ = writeln!(out, "{line}");
            });
        }
    }
    fn container_exit(&mut self, container: u64, code: i32, oom_killed: bool) -> bool {
        let out = &mut *self.out;
        self.vm.pod.as_mut().is_some_and(|p| {
            p.exit(container, code, oom_killed, time::now_ns(), |line| {
                let _ = writeln!(out, "{line}");
            })
            .is_ok()
        })
    }
    fn pod_spec(&self) -> Option<alloc::sync::Arc<[u8]>> {
        self.vm.pod.as_ref().map(|p| p.spec_json.clone())
    }
    fn pod_control(&mut self) -> Option<u64> {
        self.vm.pod.as_mut().map(|p| p.next_command())
    }
    fn layer_info(&self, index: u64) -> Option<LayerInfo> {
        self.vm.pod.as_ref().and_then(|p| p.layer(index))
    }
    fn container_entry(&mut self, container: u64) -> bool {
        let known = self.vm.pod.as_ref().is_some_and(|p| p.has_container(container));
        if known {
            self.vm.first_container_ns.get_or_insert(self.guest_ns);
        }
        known
    }
}
