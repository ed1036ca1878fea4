//! Running VMs on the machine: detect the backend, enable it on every CPU, load the guest
//! module into each VM, then every CPU (the bootstrap CPU too) runs the vCPUs the
//! scheduler placed on it until every VM has ended; then the totals and power-off.
//!
//! Console contract: VM i's console lines are `vm<i>> <text>` (at most
//! [`super::console::BURST_LINES`] at once, then [`super::console::LINES_PER_SEC`] a
//! second; refused lines are counted in `vm<i>: <n> console lines dropped (rate limit)`);
//! its end is exactly one of `vm<i>: exited with code <c>` or `vm<i>: stopped: <reason>`;
//! when all have ended, `vms: <n> exited, <m> stopped`, and the run powers off with
//! success.
//!
//! Pod mode: when the module is a pod bundle (`crx_abi::pod::bundle`), one VM runs the
//! bundle's crx-guest image with `vm.mem` MiB (default
//! [`crate::cmdline::POD_MEM_DEFAULT_MIB`]); the image's layers are mapped read-only at
//! `crx_abi::layout::LAYERS_BASE..` straight onto the boot module's frames (never copied,
//! never freed: they belong to the module), and the pod hypercalls reach a
//! [`PodState`] whose console lines are described in [`super::pod`]. Containers that
//! have not exited when the VM ends are reported before the `vm<i>:` end line.
//!
//! vCPU k of a VM starts like vCPU 0 with `rsi = k` and its stack 64 KiB lower per index.
//! Each vCPU is created, run and dropped on its one CPU; the VM's memory is dropped by the
//! CPU that tears down its last vCPU.

use super::clock;
use super::console::{Console, Output};
use super::exit::{Action, InitialState, StopReason};
use super::handler::{self, Services};
use super::loader::{self, LoadSpec};
use super::memory::{self, FrameSource, GuestMemory, OutOfRange, FRAMES_PER_LARGE, LARGE_BYTES, PAGE_SIZE};
use super::pod::{PodState, VmEnd};
use super::sched::{Pick, Scheduler, VcpuId, VmId, SLICE_NS};
use crate::arch::{fpu, percpu, power, smp, time};
use crate::cmdline::Options;
use crate::kprintln;
use crate::selftest::Verdict;
use crate::virt::{self, Backend, Vcpu, VirtError};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use boot::BootInfo;
use core::sync::atomic::{AtomicU64, Ordering};
use crx_abi::pod::bundle::PodBundle;
use crx_abi::pod::PodSpec;
use crx_abi::{BootParams, LayerInfo};
use log::{error, info, warn};
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

/// Frames from the kernel's allocator, reached through the identity map.
pub struct KernelFrames;

impl FrameSource for KernelFrames {
    fn alloc_frame(&mut self) -> Option<u64> {
        crate::mm::alloc_frame().ok()
    }
    fn alloc_large(&mut self) -> Option<u64> {
        crate::mm::alloc_run(FRAMES_PER_LARGE, LARGE_BYTES).ok()
    }
    fn free_frame(&mut self, hpa: u64) {
        if let Err(e) = crate::mm::free_frame(hpa) {
            warn!("vm: returning frame {hpa:#x}: {e}");
        }
    }
    unsafe fn read(&self, hpa: u64, buf: &mut [u8]) {
        // SAFETY: the caller guarantees the range is inside a frame we hold; all RAM is
        // identity-mapped read-write, so `hpa` is also its kernel address.
        unsafe { core::ptr::copy_nonoverlapping(hpa as *const u8, buf.as_mut_ptr(), buf.len()) };
    }
    unsafe fn write(&mut self, hpa: u64, data: &[u8]) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), hpa as *mut u8, data.len()) };
    }
    unsafe fn fill(&mut self, hpa: u64, len: usize, byte: u8) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_bytes(hpa as *mut u8, byte, len) };
    }
}

/// How a VM ended.
#[derive(Debug, Clone, Copy)]
enum End {
    Exited(i32),
    Stopped(StopReason),
}

/// One VM's state shared by the CPUs that run its vCPUs.
struct VmRec {
    index: u32,
    mem: Option<GuestMemory<KernelFrames>>,
    params: BootParams,
    init: InitialState,
    console: Console,
    start_ns: u64,
    end: Option<End>,
    exits: u64,
    vcpus_created: u32,
    backend_bytes: u64,
    rng: u64,
    /// The pod this VM runs, in pod mode.
    pod: Option<PodState>,
}

struct World {
    sched: Scheduler,
    vms: Vec<VmRec>,
    /// Scheduler CPU i is kernel CPU `cpus[i]`.
    cpus: Vec<u32>,
    exited: u32,
    stopped: u32,
    finalized: u32,
    total: u32,
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);
static BACKEND: Mutex<Option<&'static dyn Backend>> = Mutex::new(None);
/// Bit i: CPU i could not enable virtualization.
static ENABLE_FAILED: AtomicU64 = AtomicU64::new(0);
/// Wall-clock ns at `WALL_AT` monotonic ns.
static WALL_BASE: AtomicU64 = AtomicU64::new(0);
static WALL_AT: AtomicU64 = AtomicU64::new(0);

fn with_world<R>(f: impl FnOnce(&mut World) -> R) -> Option<R> {
    without_interrupts(|| WORLD.lock().as_mut().map(f))
}

fn backend() -> Option<&'static dyn Backend> {
    *BACKEND.lock()
}

/// Reads the CMOS real-time clock (UTC assumed), in ns since the Unix epoch.
fn read_rtc_ns() -> Option<u64> {
    use x86_64::instructions::port::Port;
    let mut index = Port::<u8>::new(0x70);
    let mut data = Port::<u8>::new(0x71);
    let mut reg = |r: u8| {
        // SAFETY: 0x70/0x71 are the CMOS index and data ports on every PC; reading the
        // clock registers has no side effects (NMI stays enabled: bit 7 clear).
        unsafe {
            index.write(r);
            data.read()
        }
    };
    // Wait while an update is in progress (status A bit 7), a bounded number of times.
    for _ in 0..100_000 {
        if reg(0x0a) & 0x80 == 0 {
            break;
        }
    }
    let (s, mi, h, d, mo, y) = (reg(0), reg(2), reg(4), reg(7), reg(8), reg(9));
    let b = reg(0x0b);
    let bin = |v: u8| if b & 0x04 != 0 { u32::from(v) } else { clock::from_bcd(v) };
    let mut hour = bin(h & 0x7f);
    if b & 0x02 == 0 && h & 0x80 != 0 {
        hour = (hour % 12) + 12; // 12-hour clock, PM
    } else if b & 0x02 == 0 && hour == 12 {
        hour = 0;
    }
    let secs = clock::unix_seconds(2000 + bin(y), bin(mo), bin(d), hour, bin(mi), bin(s))?;
    secs.checked_mul(1_000_000_000)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The exit policy's view of one VM.
struct Svc<'a> {
    vm: &'a mut VmRec,
    /// Console lines to print once the world lock is released.
    out: &'a mut alloc::string::String,
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
        // Mixed with the TSC at every call; not a cryptographic generator.
        self.vm.rng ^= time::rdtsc();
        for chunk in buf.chunks_mut(8) {
            let v = splitmix(&mut self.vm.rng).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn console(&mut self, bytes: &[u8]) {
        let i = self.vm.index;
        let pending = &mut *self.out;
        self.vm.console.push(bytes, time::now_ns(), |out| {
            use core::fmt::Write;
            let _ = match out {
                Output::Line(line) => writeln!(pending, "vm{i}> {line}"),
                Output::Dropped(n) => writeln!(pending, "vm{i}: {n} console lines dropped (rate limit)"),
            };
        });
    }
    fn host_cpuid(&self, leaf: u32, sub: u32) -> [u32; 4] {
        let r = crate::arch::cpu::cpuid(leaf, sub);
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
        if let Some(p) = self.vm.pod.as_mut() {
            let _ = p.log(container, stream, bytes, |line| kprintln!("{line}"));
        }
    }
    fn container_exit(&mut self, container: u64, code: i32) -> bool {
        self.vm.pod.as_mut().is_some_and(|p| p.exit(container, code, |line| kprintln!("{line}")).is_ok())
    }
    fn pod_spec(&self) -> Option<&'static [u8]> {
        self.vm.pod.as_ref().map(|p| p.spec_json)
    }
    fn layer_info(&self, index: u64) -> Option<LayerInfo> {
        self.vm.pod.as_ref().and_then(|p| p.layer(index))
    }
}

/// Held from inside the world lock until console lines taken under it are printed, and
/// taken by [`end_vm`] before a VM's end line: so the serial line (slow, and waited on
/// byte by byte) is never driven under the world lock on behalf of a guest, and a VM's
/// lines still come before its end line.
static PRINTING: Mutex<()> = Mutex::new(());

/// Prints one line of VM `i`'s console (rate-limited by [`Console`]).
fn print_console(i: u32, out: Output<'_>) {
    match out {
        Output::Line(line) => kprintln!("vm{i}> {line}"),
        Output::Dropped(n) => kprintln!("vm{i}: {n} console lines dropped (rate limit)"),
    }
}

/// A static name for a backend error (the stop reason keeps no formatted text).
fn virt_error_name(e: VirtError) -> &'static str {
    match e {
        VirtError::Unsupported => "no hardware virtualization",
        VirtError::DisabledByFirmware => "disabled by the firmware",
        VirtError::MissingFeature(x) | VirtError::ControlUnavailable(x) | VirtError::Instruction(x) => x,
        VirtError::OutOfMemory => "out of memory",
        VirtError::NoTag => "no free ASID/VPID",
    }
}

/// Records the end of `vm` (once) and prints its line.
fn end_vm(w: &mut World, vm: VmId, end: End) {
    let Some(rec) = w.vms.get_mut(vm.0) else {
        return;
    };
    if rec.end.is_some() {
        return;
    }
    let i = rec.index;
    let _printing = PRINTING.lock();
    rec.console.finish(time::now_ns(), |out| print_console(i, out));
    if let Some(p) = rec.pod.as_mut() {
        let how = match end {
            End::Exited(c) => VmEnd::Exited(c),
            End::Stopped(r) => VmEnd::Stopped(r),
        };
        p.vm_ended(how, |line| kprintln!("{line}"));
    }
    rec.end = Some(end);
    match end {
        End::Exited(c) => {
            w.exited += 1;
            kprintln!("vm{i}: exited with code {c}");
        }
        End::Stopped(r) => {
            w.stopped += 1;
            kprintln!("vm{i}: stopped: {r}");
        }
    }
    w.sched.end_vm(vm);
}

/// Tears down one vCPU's record; frees the VM when it was the last.
fn finish_vcpu(w: &mut World, v: VcpuId, vm: VmId) {
    w.sched.finish(v);
    if w.sched.live_vcpus(vm) > 0 {
        return;
    }
    let guest_ns = w.sched.guest_ns(vm);
    let Some(rec) = w.vms.get_mut(vm.0) else {
        return;
    };
    let Some(mem) = rec.mem.take() else {
        return;
    };
    let (mem_bytes, tables) = (mem.size_bytes(), mem.table_bytes());
    drop(mem);
    kprintln!(
        "vm{}: accounting guest_ns={} exits={} overhead_bytes={}",
        rec.index,
        guest_ns,
        rec.exits,
        tables + rec.backend_bytes
    );
    info!(
        "vm{}: {} ms guest cpu, {} MiB guest memory, {} KiB host overhead ({} KiB nested tables), {} exits",
        rec.index,
        guest_ns / 1_000_000,
        mem_bytes >> 20,
        (tables + rec.backend_bytes) >> 10,
        tables >> 10,
        rec.exits
    );
    w.finalized += 1;
}

/// A vCPU living on this CPU.
struct Local {
    vcpu: Box<dyn Vcpu>,
    fpu: fpu::FpuState,
}

/// The loop every CPU runs: pick, run, handle, until no vCPU is left here.
fn cpu_loop() {
    let me = percpu::cpu_index();
    let Some(sched_cpu) = with_world(|w| w.cpus.iter().position(|&c| c == me)).flatten() else {
        return;
    };
    let Some(backend) = backend() else {
        return;
    };
    let mut locals: BTreeMap<usize, Local> = BTreeMap::new();
    let mut fpu_owner: Option<usize> = None;
    let mut pending = alloc::string::String::new();
    loop {
        let now = time::now_ns();
        let Some(pick) = with_world(|w| w.sched.pick(sched_cpu, now)) else {
            return;
        };
        let (v, vm, mut slice) = match pick {
            Pick::Done => return,
            Pick::Idle { .. } => {
                // The 100 Hz timer (or any interrupt) wakes us.
                x86_64::instructions::interrupts::enable_and_hlt();
                continue;
            }
            Pick::Run { vcpu, vm, slice_ns } => (vcpu, vm, slice_ns),
        };
        if with_world(|w| w.sched.vm_ended(vm)).unwrap_or(true) {
            if locals.remove(&v.0).is_some() && fpu_owner == Some(v.0) {
                fpu_owner = None;
            }
            with_world(|w| finish_vcpu(w, v, vm));
            continue;
        }
        if let alloc::collections::btree_map::Entry::Vacant(slot) = locals.entry(v.0) {
            let spec = with_world(|w| {
                w.vms.get_mut(vm.0).and_then(|r| {
                    let k = r.vcpus_created;
                    r.vcpus_created += 1;
                    r.mem.as_ref().map(|m| (m.nested_root(), loader::vcpu_state(&r.init, k)))
                })
            })
            .flatten();
            let made = match spec {
                None => Err(StopReason::OutOfMemory),
                Some((root, init)) => match (backend.create_vcpu(root, &init), fpu::FpuState::new()) {
                    (Ok(vcpu), Some(fpu)) => Ok(Local { vcpu, fpu }),
                    (Err(VirtError::OutOfMemory), _) | (_, None) => Err(StopReason::OutOfMemory),
                    (Err(e), _) => Err(StopReason::VcpuFailed(virt_error_name(e))),
                },
            };
            match made {
                Ok(l) => {
                    let extra = (l.vcpu.overhead_bytes() + l.fpu.bytes()) as u64;
                    with_world(|w| {
                        if let Some(r) = w.vms.get_mut(vm.0) {
                            r.backend_bytes += extra;
                        }
                    });
                    slot.insert(l);
                }
                Err(reason) => {
                    with_world(|w| {
                        end_vm(w, vm, End::Stopped(reason));
                        finish_vcpu(w, v, vm);
                    });
                    continue;
                }
            }
        }
        if !locals.contains_key(&v.0) {
            continue;
        }
        // The FPU registers hold the state of `fpu_owner`'s vCPU (on this CPU).
        if fpu_owner != Some(v.0) {
            if let Some(prev) = fpu_owner.and_then(|o| locals.get_mut(&o)) {
                prev.fpu.save();
            }
            if let Some(l) = locals.get(&v.0) {
                l.fpu.restore();
            }
            fpu_owner = Some(v.0);
        }
        let Some(l) = locals.get_mut(&v.0) else {
            continue;
        };
        let ended = loop {
            let exit = l.vcpu.run(slice);
            let now = time::now_ns();
            pending.clear();
            let handled = with_world(|w| {
                w.sched.charge(v, exit.guest_ns, now);
                let Some(rec) = w.vms.get_mut(vm.0) else {
                    return (Action::Stop(StopReason::Killed), None);
                };
                rec.exits += 1;
                if rec.end.is_some() {
                    return (Action::Stop(StopReason::Killed), None);
                }
                let action = handler::handle(&exit, l.vcpu.regs(), &mut Svc { vm: rec, out: &mut pending });
                (action, (!pending.is_empty()).then(|| PRINTING.lock()))
            });
            let action = match handled {
                Some((action, printing)) => {
                    for line in pending.lines() {
                        kprintln!("{line}");
                    }
                    drop(printing);
                    action
                }
                None => Action::Stop(StopReason::Killed),
            };
            l.vcpu.apply(&exit, &action);
            let next = with_world(|w| match action {
                Action::Resume | Action::Advance | Action::Inject { .. } => {
                    w.sched.keep_running(v, now).ok_or(false)
                }
                Action::Yield => {
                    w.sched.yield_now(v);
                    Err(false)
                }
                Action::Block { until_ns } => {
                    // SLEEP_UNTIL times are the VM's monotonic clock.
                    let start = w.vms.get(vm.0).map_or(0, |r| r.start_ns);
                    w.sched.block(v, until_ns.map(|t| t.saturating_add(start)), now);
                    Err(false)
                }
                Action::Exit(c) => {
                    end_vm(w, vm, End::Exited(c));
                    Err(true)
                }
                Action::Stop(r) => {
                    end_vm(w, vm, End::Stopped(r));
                    Err(true)
                }
            })
            .unwrap_or(Err(true));
            match next {
                Ok(s) => slice = s,
                Err(ended) => break ended,
            }
        };
        if ended {
            // Save nothing: the state dies with the vCPU, on the CPU that ran it.
            if fpu_owner == Some(v.0) {
                fpu_owner = None;
            }
            locals.remove(&v.0);
            with_world(|w| finish_vcpu(w, v, vm));
        }
    }
}

/// Enables the backend and the FPU on the calling CPU (a `run_on` job).
fn enable_this_cpu() {
    fpu::init_cpu();
    let ok = backend().map(|b| b.enable_cpu());
    if let Some(Err(e)) = ok {
        let me = percpu::cpu_index();
        warn!("cpu{me}: cannot enable virtualization: {e}");
        ENABLE_FAILED.fetch_or(1 << (me % 64), Ordering::Relaxed);
    }
}

/// The guest image: the first boot module.
fn guest_module(boot: &BootInfo) -> Option<&'static [u8]> {
    let m = boot.modules.first()?;
    let len = usize::try_from(m.end.checked_sub(m.start)?).ok()?;
    if m.start == 0 || len == 0 {
        return None;
    }
    if !boot.in_usable_ram(m.start, m.end) {
        error!("vm: the guest module at {:#x}..{:#x} is not in usable RAM; ignored", m.start, m.end);
        return None;
    }
    // SAFETY: the module lies at `start..end` inside usable RAM (checked above), which
    // the kernel identity-maps; the frame allocator reserved that range (it is never
    // handed out) and nothing writes to it, so it stays valid and unchanged for the rest
    // of the run.
    Some(unsafe { core::slice::from_raw_parts(m.start as *const u8, len) })
}

/// The guests to start: one image for all VMs (with `vm.cmdline`), a bundle with an
/// image and a command line per VM, or a pod bundle (one VM).
struct Guests {
    count: u32,
    single: &'static [u8],
    bundle: Option<crx_abi::bundle::Bundle<'static>>,
    pod: Option<PodParts>,
    cmdline: heapless::String<255>,
}

/// A checked pod bundle and its spec.
struct PodParts {
    bundle: PodBundle<'static>,
    spec: PodSpec,
}

/// Why a pod could not be set up.
#[derive(Debug)]
enum PodSetupError {
    /// The bundle is malformed.
    Bundle(crx_abi::pod::bundle::PodBundleError),
    /// The spec is malformed.
    Spec(crx_abi::pod::SpecError),
    /// The boot loader placed a layer off a page boundary, so it cannot be mapped.
    LayerNotPageAligned(usize),
    /// A layer's last page runs past the end of the boot module.
    LayerPastModule(usize),
    /// The layer window could not be mapped.
    Map(usize, super::memory::MemError),
}

impl core::fmt::Display for PodSetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PodSetupError::Bundle(e) => write!(f, "{e}"),
            PodSetupError::Spec(e) => write!(f, "{e}"),
            PodSetupError::LayerNotPageAligned(i) => {
                write!(f, "layer {i} is not page-aligned in host memory (the boot module is not)")
            }
            PodSetupError::LayerPastModule(i) => {
                write!(f, "layer {i}'s last page runs past the boot module (pad the bundle to 4 KiB)")
            }
            PodSetupError::Map(i, e) => write!(f, "mapping layer {i}: {e}"),
        }
    }
}

impl PodParts {
    fn parse(module: &'static [u8]) -> Result<PodParts, PodSetupError> {
        let bundle = PodBundle::parse(module).map_err(PodSetupError::Bundle)?;
        let spec = PodSpec::from_json(bundle.spec()).map_err(PodSetupError::Spec)?;
        Ok(PodParts { bundle, spec })
    }

    /// Maps every layer read-only into `mem` straight from the boot module's frames, and
    /// returns the records the guest reads.
    fn map_layers(&self, mem: &mut GuestMemory<KernelFrames>) -> Result<Vec<LayerInfo>, PodSetupError> {
        let module = self.bundle.bytes();
        let base = module.as_ptr() as u64;
        let mut infos = Vec::new();
        for (i, layer) in self.bundle.layers().enumerate() {
            let hpa = base + layer.offset as u64;
            if !hpa.is_multiple_of(PAGE_SIZE) {
                return Err(PodSetupError::LayerNotPageAligned(i));
            }
            // The whole last page must be the module's, so the guest sees nothing else.
            let end = (layer.offset as u64).checked_add(layer.bytes.len() as u64);
            if end.and_then(|e| e.checked_next_multiple_of(PAGE_SIZE)).is_none_or(|e| e > module.len() as u64)
            {
                return Err(PodSetupError::LayerPastModule(i));
            }
            mem.map_shared_readonly(layer.gpa, hpa, layer.bytes.len() as u64)
                .map_err(|e| PodSetupError::Map(i, e))?;
            infos.push(layer.info());
        }
        Ok(infos)
    }
}

impl Guests {
    fn from_module(module: &'static [u8], opts: &Options<'_>) -> Result<Guests, alloc::string::String> {
        let mut cmdline = heapless::String::new();
        if let Some(enc) = opts.vm_cmdline {
            let mut buf = [0u8; 255];
            let n = crx_abi::bundle::decode_cmdline(enc.as_bytes(), &mut buf).unwrap_or(0);
            for &b in &buf[..n] {
                let _ = cmdline.push(if b.is_ascii() { char::from(b) } else { '?' });
            }
        }
        if crx_abi::pod::bundle::is_pod_bundle(module) {
            let parts = PodParts::parse(module).map_err(|e| alloc::format!("pod bundle: {e}"))?;
            if let Some(asked) = opts.vm_count.filter(|&c| c != 1) {
                log::warn!("vm.count={asked} ignored: a pod bundle runs one VM");
            }
            let single = parts.bundle.guest();
            return Ok(Guests { count: 1, single, bundle: None, pod: Some(parts), cmdline });
        }
        if !crx_abi::bundle::is_bundle(module) {
            let count = opts.vm_count.unwrap_or(1);
            return Ok(Guests { count, single: module, bundle: None, pod: None, cmdline });
        }
        let b = crx_abi::bundle::Bundle::parse(module).map_err(|e| alloc::format!("guest bundle: {e}"))?;
        let count = u32::try_from(b.len()).unwrap_or(u32::MAX);
        if let Some(asked) = opts.vm_count.filter(|&c| c != count) {
            log::warn!("vm.count={asked} ignored: the guest bundle holds {count} guests");
        }
        Ok(Guests { count, single: module, bundle: Some(b), pod: None, cmdline })
    }

    /// VM `i`'s image and command line.
    fn get(&self, i: u32) -> (&'static [u8], &str) {
        match self.bundle.and_then(|b| b.entry(i as usize)) {
            Some((image, cmd)) => (image, core::str::from_utf8(cmd).unwrap_or("")),
            None => (self.single, self.cmdline.as_str()),
        }
    }
}

/// Whether a guest module was given.
pub fn has_guest(boot: &BootInfo) -> bool {
    guest_module(boot).is_some()
}

/// Runs the VMs the command line asks for from the guest module, then powers off.
pub fn run(boot: &BootInfo, opts: &Options<'_>) -> ! {
    let Some(module) = guest_module(boot) else {
        error!("vm: no guest module");
        power::exit(power::ExitCode::Failure);
    };
    let guests = match Guests::from_module(module, opts) {
        Ok(g) => g,
        Err(e) => {
            error!("vm: {e}");
            kprintln!("vm0: stopped: {e}");
            kprintln!("vms: 0 exited, 1 stopped");
            power::exit(power::ExitCode::Success);
        }
    };
    let n = guests.count;
    let backend = match virt::detect() {
        Ok(b) => b,
        Err(e) => {
            error!("no usable virtualization backend: {e}");
            for i in 0..n {
                kprintln!("vm{i}: stopped: {e}");
            }
            kprintln!("vms: 0 exited, {n} stopped");
            power::exit(power::ExitCode::Success);
        }
    };
    *BACKEND.lock() = Some(backend);
    let online = smp::online_cpus();
    for c in 0..online {
        if let Err(e) = smp::run_on(c, enable_this_cpu) {
            warn!("cpu{c}: enabling virtualization: {e}");
            ENABLE_FAILED.fetch_or(1 << (c % 64), Ordering::Relaxed);
        }
    }
    let failed = ENABLE_FAILED.load(Ordering::Relaxed);
    let cpus: Vec<u32> = (0..online).filter(|c| failed & (1 << (c % 64)) == 0).collect();
    info!("vm: backend {}, {} CPU(s) run vCPUs", backend.name(), cpus.len());
    if let Some(ns) = read_rtc_ns() {
        WALL_BASE.store(ns, Ordering::Relaxed);
    }
    WALL_AT.store(time::now_ns(), Ordering::Relaxed);

    let mut w = World {
        sched: Scheduler::new(cpus.len()),
        vms: Vec::new(),
        cpus,
        exited: 0,
        stopped: 0,
        finalized: 0,
        total: n,
    };
    let default_mib = if guests.pod.is_some() {
        crate::cmdline::POD_MEM_DEFAULT_MIB
    } else {
        crate::cmdline::VM_MEM_DEFAULT_MIB
    };
    let mem_bytes = u64::from(opts.vm_mem_mib.unwrap_or(default_mib)) << 20;
    for i in 0..n {
        let created_ns = time::now_ns();
        let (image, cmdline) = guests.get(i);
        let free = crate::mm::free_frames() as u64;
        let made = if memory::leaves_host_reserve(free, mem_bytes) {
            Ok(())
        } else {
            Err(alloc::format!(
                "{} MiB of guest memory would leave the host less than {} MiB",
                mem_bytes >> 20,
                memory::HOST_RESERVE_BYTES >> 20
            ))
        };
        let made = made
            .and_then(|()| {
                GuestMemory::new(KernelFrames, mem_bytes, backend.nested_format())
                    .map_err(|e| alloc::format!("{e}"))
            })
            .and_then(|mut mem| {
                let spec = LoadSpec {
                    vm_index: i,
                    vm_count: n,
                    vcpus: opts.vm_vcpus,
                    insn: backend.hypercall_insn(),
                    cmdline,
                };
                loader::load(&mut mem, image, &spec).map(|l| (mem, l)).map_err(|e| alloc::format!("{e}"))
            })
            .and_then(|(mut mem, l)| match &guests.pod {
                None => Ok((mem, l, None)),
                Some(parts) => {
                    let layers = parts.map_layers(&mut mem).map_err(|e| alloc::format!("pod: {e}"))?;
                    info!(
                        "vm{i}: pod {}, {} container(s), {} layer(s), {} KiB shared read-only",
                        parts.spec.name,
                        parts.spec.containers.len(),
                        layers.len(),
                        mem.shared_bytes() >> 10
                    );
                    let pod = PodState::new(&parts.spec, parts.bundle.spec(), layers);
                    Ok((mem, l, Some(pod)))
                }
            });
        let vm = w.sched.add_vm(opts.vm_cpu_millicores);
        let (rec, err) = match made {
            Ok((mem, l, pod)) => (
                VmRec {
                    index: i,
                    mem: Some(mem),
                    params: l.params,
                    init: l.init,
                    console: Console::default(),
                    start_ns: created_ns,
                    end: None,
                    exits: 0,
                    vcpus_created: 0,
                    backend_bytes: 0,
                    rng: time::rdtsc() ^ (u64::from(i) << 32),
                    pod,
                },
                None,
            ),
            Err(e) => (
                VmRec {
                    index: i,
                    mem: None,
                    params: loader_empty_params(),
                    init: InitialState::default(),
                    console: Console::default(),
                    start_ns: 0,
                    end: None,
                    exits: 0,
                    vcpus_created: 0,
                    backend_bytes: 0,
                    rng: 0,
                    pod: None,
                },
                Some(e),
            ),
        };
        w.vms.push(rec);
        match err {
            None => {
                for _ in 0..opts.vm_vcpus {
                    if let Err(e) = w.sched.add_vcpu(vm) {
                        warn!("vm{i}: cannot place a vCPU: {e:?}");
                    }
                }
                if w.sched.live_vcpus(vm) == 0 {
                    end_vm(&mut w, vm, End::Stopped(StopReason::VcpuFailed("no CPU can run vCPUs")));
                    if let Some(r) = w.vms.get_mut(vm.0) {
                        r.mem = None;
                    }
                    w.finalized += 1;
                }
            }
            Some(e) => {
                if let Some(parts) = &guests.pod {
                    for c in &parts.spec.containers {
                        kprintln!("{}/{}: stopped: {e}", parts.spec.name, c.name);
                    }
                }
                kprintln!("vm{i}: stopped: {e}");
                w.stopped += 1;
                w.finalized += 1;
                if let Some(r) = w.vms.get_mut(vm.0) {
                    r.end = Some(End::Stopped(StopReason::Killed));
                }
            }
        }
    }
    let cpus = w.cpus.clone();
    *WORLD.lock() = Some(w);
    let me = percpu::cpu_index();
    for &c in cpus.iter().filter(|&&c| c != me) {
        if let Err(e) = smp::post(c, cpu_loop) {
            error!("cpu{c}: cannot start its vCPU loop: {e}");
        }
    }
    if cpus.contains(&me) {
        cpu_loop();
    }
    loop {
        let done = with_world(|w| (w.finalized >= w.total).then_some((w.exited, w.stopped))).flatten();
        if let Some((exited, stopped)) = done {
            kprintln!("vms: {exited} exited, {stopped} stopped");
            power::exit(power::ExitCode::Success);
        }
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

fn loader_empty_params() -> BootParams {
    BootParams {
        magic: 0,
        abi_version: 0,
        hypercall_insn: 0,
        vm_index: 0,
        vm_count: 0,
        mem_bytes: 0,
        stack_top: 0,
        free_start: 0,
        cmdline: [0; 256],
    }
}

/// VMs the `vmleak` self-test creates and destroys.
const LEAK_ROUNDS: u32 = 1000;

/// One small VM: memory, image, vCPU; runs it until it halts; drops everything.
fn one_small_vm(backend: &'static dyn Backend, image: &[u8]) -> Result<(), &'static str> {
    let mut mem = GuestMemory::new(KernelFrames, crx_abi::layout::MEM_MIN, backend.nested_format())
        .map_err(|_| "no guest memory")?;
    let spec = LoadSpec { vm_index: 0, vm_count: 1, vcpus: 1, insn: backend.hypercall_insn(), cmdline: "" };
    let loaded = loader::load(&mut mem, image, &spec).map_err(|_| "the test image did not load")?;
    let mut vcpu = backend.create_vcpu(mem.nested_root(), &loaded.init).map_err(|_| "no vCPU")?;
    let fpu = fpu::FpuState::new().ok_or("no FPU area")?;
    fpu.restore();
    for _ in 0..4 {
        let exit = vcpu.run(SLICE_NS);
        match exit.kind {
            super::ExitKind::Hlt => return Ok(()),
            super::ExitKind::Preempted => continue,
            _ => return Err("the test guest left with something other than HLT"),
        }
    }
    Err("the test guest never halted")
}

/// Creates and destroys [`LEAK_ROUNDS`] VMs; every frame must come back. Skipped (ok)
/// without a backend.
pub fn selftest_vmleak() -> Verdict {
    let Ok(backend) = virt::detect() else {
        kprintln!("selftest: vmleak: no virtualization backend, skipped");
        return Ok(());
    };
    fpu::init_cpu();
    backend.enable_cpu().map_err(|_| "enable_cpu failed")?;
    // hlt; jmp back to the hlt
    let image = loader::image::code_at_1mib(&[0xf4, 0xeb, 0xfd]);
    // One round first, so heap growth is not counted as a leak.
    one_small_vm(backend, &image)?;
    let before = crate::mm::free_frames();
    for _ in 0..LEAK_ROUNDS {
        one_small_vm(backend, &image)?;
    }
    let after = crate::mm::free_frames();
    if after != before {
        log::error!("vmleak: {before} frames free before, {after} after");
        return Err("frames leaked");
    }
    Ok(())
}

/// Self-tests of this module.
pub static SELFTESTS: &[crate::selftest::Test] =
    &[crate::selftest::Test { name: "vmleak", in_all: true, run: selftest_vmleak }];
