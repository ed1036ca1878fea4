//! Running VMs on the machine: detect the backend, enable it on every CPU, set each VM up
//! from the guest module ([`super::setup`]), then every CPU (the bootstrap CPU too) runs the vCPUs the
//! scheduler placed on it until every VM has ended; then the totals and power-off.
//!
//! Console contract: VM i's console lines are `vm<i>> <text>` (at most
//! [`super::console::BURST_LINES`] at once, then [`super::console::LINES_PER_SEC`] a
//! second; refused lines are counted in `vm<i>: <n> console lines dropped (rate limit)`);
//! its end is exactly one of `vm<i>: exited with code <c>` or `vm<i>: stopped: <reason>`;
//! when all have ended, `vms: <n> exited, <m> stopped`, and the run powers off with
//! success.
//!
//! Pod mode (see [`super::setup`]): one VM, whose pod hypercalls reach a
//! [`super::pod::PodState`] whose console lines are described in [`super::pod`].
//!
//! Node mode ([`serve_node`]): pod VMs come and go, each with
//! `node: pod VM vm<i> for <name> starts: frames_free=<F> kernel_frames=<K>` (the frame
//! counts just before its memory was taken) and, once its last vCPU and its memory are
//! gone, `node: pod VM vm<i> released: frames_free=<F> kernel_frames=<K>` after its
//! accounting line. `kernel_frames` counts the frames the kernel's heap, stacks and MMIO
//! mappings hold (`mm::frame_census`); the heap grows and never shrinks, so
//! `frames_free + kernel_frames` is what a VM that returned everything leaves unchanged.
//! Containers that have not exited when the VM ends are reported before the `vm<i>:` end
//! line.
//!
//! The serial line is slow and waited on byte by byte, so it is never driven under the
//! world lock on behalf of a guest: everything printed while the lock is held (console
//! and pod lines, end lines) is appended to the world's `out` buffer, in order, and one
//! CPU at a time prints it after releasing the lock ([`print_pending`]); the others go on
//! running vCPUs meanwhile.
//!
//! vCPU k of a VM (the k-th the scheduler placed for it) starts like vCPU 0 with `rsi = k`
//! and its stack 64 KiB lower per index (crx-abi 6). Each vCPU is created, run and dropped
//! on its one CPU; the VM's memory is dropped by the CPU that tears down its last vCPU.
//!
//! Kicks (`VCPU_KICK`): the kicking vCPU's CPU applies the kick to the targets in the
//! scheduler under the world lock, then, for each other CPU the scheduler names (a target
//! running there with a new vector, or one it woke), sets that CPU's [`KICK_POSTED`] flag
//! and sends it the wake-up IPI. Before every entry a CPU loop checks its flag with host
//! interrupts off and keeps them off until the entry: a kick that lands after the check
//! leaves its IPI pending, which ends the entry at once (both backends exit on a host
//! interrupt), and the loop sees the kick before the next one. A target's vector is taken
//! from the scheduler before its next entry and arms its timer to fire at once. An idle
//! CPU halts with interrupts off from its pick to `sti; hlt`, so the IPI wakes it.
#![forbid(unsafe_code)]

use super::console::bound_backlog;
use super::exit::{Action, StopReason};
use super::handler;
use super::loader;
use super::pod::VmEnd;
use super::sched::{CpuMask, Pick, Scheduler, VcpuId, VmId, TICK_NS};
use super::services::{console_line, set_wall_clock, End, Svc, VmRec};
use super::setup::{self, Guests, Target};
use super::timer::GuestTimer;
use crate::arch::{fpu, percpu, power, rtc, smp, time};
use crate::cmdline::Options;
use crate::kprintln;
use crate::mm::direct::{self, KernelFrames};
use crate::virt::{self, Backend, Vcpu, VirtError};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use boot::BootInfo;
use core::fmt::Write;
use core::sync::atomic::AtomicBool;
use core::sync::atomic::{AtomicU64, Ordering};
use log::{error, info, warn};
use spin::Mutex;
use x86_64::instructions::interrupts;
use x86_64::instructions::interrupts::without_interrupts;

struct World {
    sched: Scheduler,
    vms: Vec<VmRec>,
    /// Scheduler CPU i is kernel CPU `cpus[i]`.
    cpus: Vec<u32>,
    exited: u32,
    stopped: u32,
    finalized: u32,
    total: u32,
    /// Lines written under the lock, printed by [`with_world`] once it is released.
    out: String,
    /// A node's world: VMs come and go at run time and the CPUs never finish.
    node: bool,
}

impl World {
    /// A world of `cpus` scheduler CPUs, expecting `total` VMs (0 for a node's world).
    fn new(cpus: Vec<u32>, total: u32, node: bool) -> World {
        World {
            sched: Scheduler::new(cpus.len()),
            vms: Vec::new(),
            cpus,
            exited: 0,
            stopped: 0,
            finalized: 0,
            total,
            out: String::new(),
            node,
        }
    }
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);
static BACKEND: Mutex<Option<&'static dyn Backend>> = Mutex::new(None);
/// Bit i: CPU i could not enable virtualization.
static ENABLE_FAILED: AtomicU64 = AtomicU64::new(0);

/// Entry i: a kick may be waiting in the scheduler for the vCPU kernel CPU i runs; set
/// before the IPI is sent, taken by that CPU's loop before its next entry.
static KICK_POSTED: [AtomicBool; percpu::MAX_CPUS] = [const { AtomicBool::new(false) }; percpu::MAX_CPUS];

/// What CPU 0 runs between vCPU slices and when idle: the node's network and agent. Set by
/// `kmain` ([`set_node_services`]), so this module names neither.
static NODE_SERVICES: Mutex<Option<fn()>> = Mutex::new(None);

/// Sets what [`node_services`] runs.
pub fn set_node_services(f: fn()) {
    *NODE_SERVICES.lock() = Some(f);
}

/// Runs the node's services, if set.
fn node_services() {
    let f = *NODE_SERVICES.lock();
    if let Some(f) = f {
        f();
    }
}

/// Held by the one CPU that prints the world's waiting lines.
static PRINTER: Mutex<()> = Mutex::new(());

/// Most bytes of lines waiting for the serial line. Rate limits keep each VM and container
/// far below what the line carries, so only many chatty VMs at once reach this; then the
/// oldest waiting lines are dropped and counted.
const MAX_PENDING: usize = 256 << 10;

/// Runs `f` on the world under its lock; then prints what `f` wrote to `out`.
fn with_world<R>(f: impl FnOnce(&mut World) -> R) -> Option<R> {
    let (r, pending) = with_world_quiet(f)?;
    if pending {
        print_pending(false);
    }
    Some(r)
}

/// Runs `f` on the world under its lock, and says whether lines wait to be printed
/// (for callers that keep host interrupts off afterwards and print later).
fn with_world_quiet<R>(f: impl FnOnce(&mut World) -> R) -> Option<(R, bool)> {
    without_interrupts(|| {
        let mut guard = WORLD.lock();
        let w = guard.as_mut()?;
        let r = f(w);
        bound_backlog(&mut w.out, MAX_PENDING);
        Some((r, !w.out.is_empty()))
    })
}

/// After a kick applied under the world lock: posts it to each other CPU in `cpus`
/// (scheduler CPUs; `ids` maps them to kernel CPUs) and interrupts that CPU, so that its
/// target leaves the guest, or its idle loop picks the vCPU the kick woke, at once.
fn post_kicks(cpus: CpuMask, ids: &[u32], me: u32) {
    for c in cpus.iter() {
        let Some(&id) = ids.get(c).filter(|&&id| id != me) else {
            continue;
        };
        if let Some(flag) = KICK_POSTED.get(id as usize) {
            flag.store(true, Ordering::Release);
        }
        // Without the IPI the kick still lands, at that CPU's next tick.
        if let Err(e) = smp::wake(id) {
            log::debug!("cpu{id}: kick IPI: {e}");
        }
    }
}

/// Prints the lines waiting in the world's buffer, oldest first, outside the world lock.
/// One CPU prints at a time; another that finds the printer busy goes back to its vCPUs,
/// and the printer picks up its lines before it stops. With `wait`, returns only once
/// everything written so far is printed.
fn print_pending(wait: bool) {
    loop {
        let printer = if wait {
            PRINTER.lock()
        } else {
            match PRINTER.try_lock() {
                Some(p) => p,
                None => return,
            }
        };
        loop {
            let text = without_interrupts(|| WORLD.lock().as_mut().map(|w| core::mem::take(&mut w.out)))
                .unwrap_or_default();
            if text.is_empty() {
                break;
            }
            for line in text.lines() {
                kprintln!("{line}");
            }
        }
        drop(printer);
        // Lines written while this CPU released the printer are printed by this CPU.
        if without_interrupts(|| WORLD.lock().as_ref().is_none_or(|w| w.out.is_empty())) {
            return;
        }
    }
}

fn backend() -> Option<&'static dyn Backend> {
    *BACKEND.lock()
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

/// Records the end of `vm` (once) and writes its lines.
fn end_vm(w: &mut World, vm: VmId, end: End) {
    let Some(rec) = w.vms.get_mut(vm.0) else {
        return;
    };
    if rec.end.is_some() {
        return;
    }
    let i = rec.index;
    let now = time::now_ns();
    let out = &mut w.out;
    rec.console.finish(now, |o| console_line(out, i, o));
    if let Some(p) = rec.pod.as_mut() {
        let how = match end {
            End::Exited(c) => VmEnd::Exited(c),
            End::Stopped(r) => VmEnd::Stopped(r),
        };
        p.vm_ended(how, now, |line| {
            let _ = writeln!(out, "{line}");
        });
    }
    rec.end = Some(end);
    let _ = match end {
        End::Exited(c) => {
            w.exited += 1;
            writeln!(w.out, "vm{i}: exited with code {c}")
        }
        End::Stopped(r) => {
            w.stopped += 1;
            writeln!(w.out, "vm{i}: stopped: {r}")
        }
    };
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
    // Nothing maps the image's frames any more.
    rec.holder = None;
    let _ = write!(
        w.out,
        "vm{}: accounting guest_ns={} exits={} overhead_bytes={}",
        rec.index,
        guest_ns,
        rec.exits,
        tables + rec.backend_bytes
    );
    let _ = match rec.first_container_ns {
        Some(ns) => writeln!(w.out, " first_container_ns={ns}"),
        None => writeln!(w.out),
    };
    if w.node {
        // Every vCPU of the VM is gone (each CPU drops its own before it gets here) and so
        // is its memory: what the VM took is back.
        let (free, kernel) = crate::mm::frame_census();
        let _ = writeln!(
            w.out,
            "node: pod VM vm{} released: frames_free={free} kernel_frames={kernel}",
            rec.index
        );
    }
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

/// `vm<i>: memory guest_bytes=<n> overhead_bytes=<n>`: what a VM of a node holds on the host
/// while it runs, its guest memory and the overhead the `accounting` line gives at its end
/// (nested tables, vCPU and FPU state). Written once all of its vCPUs have been created.
fn memory_line(out: &mut String, r: &VmRec) {
    let Some(mem) = r.mem.as_ref() else {
        return;
    };
    let _ = writeln!(
        out,
        "vm{}: memory guest_bytes={} overhead_bytes={}",
        r.index,
        mem.size_bytes(),
        mem.table_bytes() + r.backend_bytes
    );
}

/// A vCPU living on this CPU.
struct Local {
    vcpu: Box<dyn Vcpu>,
    fpu: fpu::FpuState,
    /// Its one-shot timer (`TIMER_ARM`), in host time.
    timer: GuestTimer,
}

/// The loop every CPU runs: pick, run, handle, until no vCPU is left here.
fn cpu_loop() {
    let me = percpu::cpu_index();
    let Some((sched_cpu, node, cpu_ids)) =
        with_world(|w| w.cpus.iter().position(|&c| c == me).map(|i| (i, w.node, w.cpus.clone()))).flatten()
    else {
        return;
    };
    let Some(backend) = backend() else {
        return;
    };
    let Some(kick_posted) = KICK_POSTED.get(me as usize) else {
        return;
    };
    let mut locals: BTreeMap<usize, Local> = BTreeMap::new();
    let mut fpu_owner: Option<usize> = None;
    loop {
        if me == 0 {
            // The node's network and agent move on between slices (leases, connections).
            node_services();
        }
        // Host interrupts stay off from the pick to the halt, so that a kick's IPI sent
        // after the pick wakes the halt instead of being taken before it.
        interrupts::disable();
        let now = time::now_ns();
        let Some((pick, lines)) = with_world_quiet(|w| w.sched.pick(sched_cpu, now)) else {
            interrupts::enable();
            return;
        };
        let (v, vm, mut slice) = match pick {
            Pick::Done if !node => {
                interrupts::enable();
                return;
            }
            Pick::Done | Pick::Idle { .. } if !lines => {
                // The 100 Hz timer, a kick's IPI or any interrupt wakes us (`sti; hlt` as
                // one pair: nothing slips in between).
                interrupts::enable_and_hlt();
                continue;
            }
            Pick::Done | Pick::Idle { .. } => {
                interrupts::enable();
                print_pending(false);
                continue;
            }
            Pick::Run { vcpu, vm, slice_ns } => {
                interrupts::enable();
                if lines {
                    print_pending(false);
                }
                (vcpu, vm, slice_ns)
            }
        };
        // A kick that came while it was not running is armed before its first entry.
        let Some((vm_ended, mut kick)) = with_world(|w| (w.sched.vm_ended(vm), w.sched.take_kick(v))) else {
            return;
        };
        if vm_ended {
            if locals.remove(&v.0).is_some() && fpu_owner == Some(v.0) {
                fpu_owner = None;
            }
            with_world(|w| finish_vcpu(w, v, vm));
            continue;
        }
        if let alloc::collections::btree_map::Entry::Vacant(slot) = locals.entry(v.0) {
            let spec = with_world(|w| {
                let k = w.sched.vcpu_index(v)?;
                w.vms
                    .get_mut(vm.0)
                    .and_then(|r| r.mem.as_ref().map(|m| (m.nested_root(), loader::vcpu_state(&r.init, k))))
            })
            .flatten();
            let made = match spec {
                None => Err(StopReason::OutOfMemory),
                Some((root, init)) => match (backend.create_vcpu(root, &init), fpu::FpuState::new()) {
                    (Ok(vcpu), Some(fpu)) => Ok(Local { vcpu, fpu, timer: GuestTimer::new() }),
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
                            r.vcpus_made += 1;
                            if w.node && r.vcpus_made == r.params.vcpus {
                                memory_line(&mut w.out, r);
                            }
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
            // Host interrupts off from the kick check to the entry: a kick posted after the
            // check leaves its IPI pending, and that ends the entry at once.
            interrupts::disable();
            if kick_posted.swap(false, Ordering::Acquire) {
                if let Some(Some(vector)) = with_world_quiet(|w| w.sched.take_kick(v)).map(|(k, _)| k) {
                    kick = Some(vector);
                }
            }
            // A kick's vector fires at this entry, as TIMER_ARM(0, vector) would.
            if let Some(vector) = kick.take() {
                l.timer.kick(vector);
            }
            // The guest's timer: a deadline that has come queues its interrupt (the backend
            // delivers it once the guest can take it); one ahead ends this entry there.
            // It only ever shortens the slice.
            let (due, bounded) = l.timer.before_entry(time::now_ns(), slice);
            if let Some(vector) = due {
                l.vcpu.queue_interrupt(vector);
            }
            let exit = l.vcpu.run(bounded);
            // A host interrupt that ended the entry is taken here.
            interrupts::enable();
            let now = time::now_ns();
            let action = with_world(|w| {
                w.sched.charge(v, exit.guest_ns, now);
                let guest_ns = w.sched.guest_ns(vm);
                let Some(rec) = w.vms.get_mut(vm.0) else {
                    return Action::Stop(StopReason::Killed);
                };
                rec.exits += 1;
                if rec.end.is_some() {
                    return Action::Stop(StopReason::Killed);
                }
                handler::handle(&exit, l.vcpu.regs(), &mut Svc { vm: rec, out: &mut w.out, guest_ns })
            })
            .unwrap_or(Action::Stop(StopReason::Killed));
            if let Action::Stop(r) = &action {
                let g = l.vcpu.regs();
                warn!("vm vCPU {}: stopped ({r}) at rip {:#x}, rsp {:#x}", v.0, g.rip, g.rsp);
            }
            l.vcpu.apply(&exit, &action);
            let timer = &mut l.timer;
            let mut kicked = CpuMask::default();
            let next = with_world(|w| {
                let next = match action {
                    Action::Resume | Action::Advance | Action::Inject { .. } => {
                        w.sched.keep_running(v, now).ok_or(false)
                    }
                    Action::Kick { mask, vector } => {
                        kicked = w.sched.kick(vm, mask, vector);
                        w.sched.keep_running(v, now).ok_or(false)
                    }
                    Action::ArmTimer { deadline_ns, vector } => {
                        // TIMER_ARM deadlines are the VM's monotonic clock, as SLEEP_UNTIL's.
                        let start = w.vms.get(vm.0).map_or(0, |r| r.start_ns);
                        timer.arm(deadline_ns, vector, start);
                        w.sched.keep_running(v, now).ok_or(false)
                    }
                    Action::Yield => {
                        w.sched.yield_now(v);
                        Err(false)
                    }
                    Action::Block { until_ns } => {
                        let rec = w.vms.get(vm.0);
                        // A command that came while the guest decided to sleep wakes it at once.
                        if rec.and_then(|r| r.pod.as_ref()).is_some_and(|p| !p.commands.is_empty()) {
                            w.sched.keep_running(v, now).ok_or(false)
                        } else {
                            // SLEEP_UNTIL times are the VM's monotonic clock. A HLT (no time)
                            // ends at the next tick, or at the guest's timer if that comes first.
                            let start = rec.map_or(0, |r| r.start_ns);
                            let until = match until_ns {
                                Some(t) => Some(t.saturating_add(start)),
                                None => timer.armed().map(|_| timer.wake_by(now.saturating_add(TICK_NS))),
                            };
                            if w.sched.block(v, until, now) {
                                Err(false)
                            } else {
                                // A kick came before this sleep: it returns at once.
                                w.sched.keep_running(v, now).ok_or(false)
                            }
                        }
                    }
                    Action::Exit(c) => {
                        end_vm(w, vm, End::Exited(c));
                        Err(true)
                    }
                    Action::Stop(r) => {
                        end_vm(w, vm, End::Stopped(r));
                        Err(true)
                    }
                };
                // A kick for this vCPU itself (or one that came meanwhile) fires at its
                // next entry.
                if next.is_ok() {
                    kick = w.sched.take_kick(v);
                }
                next
            })
            .unwrap_or(Err(true));
            post_kicks(kicked, &cpu_ids, me);
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

/// Enables the backend on every CPU that can run vCPUs; the scheduler CPUs.
fn enable_all(backend: &'static dyn Backend) -> Vec<u32> {
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
    set_wall_clock(rtc::read_ns().unwrap_or(0));
    cpus
}

/// A node's pod VMs: enables the backend on every CPU and starts each CPU's vCPU loop with
/// no VM; pods come and go through [`start_pod_vm`] and [`kill_vm`]. On success this CPU
/// runs its loop (and the node's agent between slices) for good; without a usable
/// backend it returns the reason, and the node runs on without pods.
pub fn serve_node() -> String {
    let backend = match virt::detect() {
        Ok(b) => b,
        Err(e) => return alloc::format!("{e}"),
    };
    let cpus = enable_all(backend);
    if cpus.is_empty() {
        return String::from("no CPU could enable virtualization");
    }
    *WORLD.lock() = Some(World::new(cpus.clone(), 0, true));
    let me = percpu::cpu_index();
    for &c in cpus.iter().filter(|&&c| c != me) {
        if let Err(e) = smp::post(c, cpu_loop) {
            error!("cpu{c}: cannot start its vCPU loop: {e}");
        }
    }
    kprintln!("node: pod VMs run on {} CPU(s) ({})", cpus.len(), backend.name());
    loop {
        if cpus.contains(&me) {
            cpu_loop();
        }
        node_services();
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// Where a pod VM's image is: its crx-guest, its layers' frames, and what holds them (kept
/// with the VM's memory and let go after it, so the frames outlive every mapping of them).
pub struct PodImage<'a> {
    pub guest: &'a [u8],
    pub layers: &'a [setup::LayerMap],
    pub holder: alloc::sync::Arc<dyn core::any::Any + Send + Sync>,
}

/// Builds and starts a node's pod VM of `image` for `spec` (a managed spec), with as many
/// vCPUs as its CPU limit `millicores` gives on this node's CPUs
/// (`podspec::pod_vcpus`; all of them without a limit). The error says why the pod cannot
/// run.
pub fn start_pod_vm(
    image: PodImage<'_>,
    spec: &crx_abi::pod::PodSpec,
    mem_bytes: u64,
    millicores: Option<u32>,
) -> Result<VmId, String> {
    let Some(backend) = backend() else {
        return Err(String::from("this node has no usable hardware virtualization"));
    };
    let (index, cpus) = with_world(|w| (w.vms.len(), w.cpus.len()))
        .ok_or_else(|| String::from("the node does not run pod VMs"))?;
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    let created_ns = time::now_ns();
    let (free_before, kernel_before) = crate::mm::frame_census();
    let target = Target {
        format: backend.nested_format(),
        insn: backend.hypercall_insn(),
        free_frames: free_before as u64,
        module_hpa: 0,
        cpus,
    };
    // Built outside the world lock: zeroing guest memory takes a while.
    let size = setup::PodSize { mem_bytes, millicores };
    let prepared = setup::prepare_pod(image.guest, image.layers, spec, index, size, KernelFrames, &target)?;
    let vcpus = prepared.loaded.params.vcpus;
    with_world(|w| {
        let vm = w.sched.add_vm(millicores);
        let mut rec = VmRec::running(index, created_ns, prepared);
        rec.holder = Some(image.holder);
        w.vms.push(rec);
        // Placement fails only on a scheduler without CPUs, so for the first vCPU or none.
        match (0..vcpus).try_for_each(|_| w.sched.add_vcpu(vm).map(|_| ())) {
            Ok(()) => {
                let _ = writeln!(
                    w.out,
                    "node: pod VM vm{index} for {} starts: frames_free={free_before} kernel_frames={kernel_before}",
                    spec.name
                );
                Ok(vm)
            }
            Err(e) => {
                end_vm(w, vm, End::Stopped(StopReason::VcpuFailed("no CPU can run vCPUs")));
                if let Some(r) = w.vms.get_mut(vm.0) {
                    r.mem = None;
                    r.holder = None;
                }
                Err(alloc::format!("cannot place the pod VM's vCPU: {e:?}"))
            }
        }
    })
    .unwrap_or_else(|| Err(String::from("the node does not run pod VMs")))
}

/// Queues `cmd` for a pod VM's guest and wakes it; false if it was refused.
pub fn pod_command(vm: VmId, cmd: crx_abi::pod::Command) -> bool {
    with_world(|w| {
        let now = time::now_ns();
        let ok = w
            .vms
            .get_mut(vm.0)
            .filter(|r| r.end.is_none())
            .and_then(|r| r.pod.as_mut())
            .is_some_and(|p| p.command(cmd, now));
        if ok {
            w.sched.wake_vm(vm);
        }
        ok
    })
    .unwrap_or(false)
}

/// Runs `f` on a pod VM's pod state and how the VM ended (if it has).
pub fn with_pod<R>(vm: VmId, f: impl FnOnce(&super::pod::PodState, Option<End>) -> R) -> Option<R> {
    with_world(|w| {
        let r = w.vms.get(vm.0)?;
        r.pod.as_ref().map(|p| f(p, r.end))
    })
    .flatten()
}

/// Stops a VM (its vCPUs are torn down by their CPUs, and its memory comes back).
pub fn kill_vm(vm: VmId) {
    // The scheduler wakes the vCPUs of an ended VM, so their CPUs tear them down.
    with_world(|w| end_vm(w, vm, End::Stopped(StopReason::Killed)));
}

/// Forgets an ended VM's pod state (its logs).
pub fn release_vm(vm: VmId) {
    with_world(|w| {
        if let Some(r) = w.vms.get_mut(vm.0).filter(|r| r.end.is_some()) {
            r.pod = None;
        }
    });
}

/// Whether a guest module was given.
pub fn has_guest(boot: &BootInfo) -> bool {
    crate::node::guest_module(boot).is_some()
}

/// Runs the VMs the command line asks for from the guest module (the first boot
/// module that is not the node configuration), then powers off.
pub fn run(boot: &BootInfo, opts: &Options<'_>) -> ! {
    let Some(module) = crate::node::guest_module(boot) else {
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
    if let Some(why) = &guests.ignored {
        warn!("{why}");
    }
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
    let cpus = enable_all(backend);

    let mut w = World::new(cpus, n, false);
    for i in 0..n {
        let created_ns = time::now_ns();
        let target = Target {
            format: backend.nested_format(),
            insn: backend.hypercall_insn(),
            free_frames: crate::mm::free_frames() as u64,
            module_hpa: direct::physical(module),
            cpus: w.cpus.len(),
        };
        let made = setup::prepare(&guests, i, opts, KernelFrames, &target);
        let vm = w.sched.add_vm(opts.vm_cpu_millicores);
        match made {
            Ok(prepared) => {
                // As many as the loader set up (`vm.vcpus`, or a pod's CPU limit).
                let vcpus = prepared.loaded.params.vcpus;
                w.vms.push(VmRec::running(i, created_ns, prepared));
                for _ in 0..vcpus {
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
            Err(e) => {
                w.vms.push(VmRec::failed(i));
                if let Some(parts) = &guests.pod {
                    for c in &parts.spec.containers {
                        let _ = writeln!(w.out, "{}/{}: stopped: {e}", parts.spec.name, c.name);
                    }
                }
                let _ = writeln!(w.out, "vm{i}: stopped: {e}");
                w.stopped += 1;
                w.finalized += 1;
            }
        }
    }
    for line in core::mem::take(&mut w.out).lines() {
        kprintln!("{line}");
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
            print_pending(true);
            kprintln!("vms: {exited} exited, {stopped} stopped");
            power::exit(power::ExitCode::Success);
        }
        node_services();
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}
