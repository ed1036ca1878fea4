//! The vCPU scheduler's policy: pure, with time passed in, tested with a fake clock.
//!
//! * Each online CPU has a run queue. A vCPU is placed once, on the least-loaded CPU, and
//!   stays there (a VT-x VMCS is bound to one CPU).
//! * Round robin with [`SLICE_NS`] slices: a vCPU whose slice ran out goes to the tail,
//!   so a busy guest cannot starve the others on its CPU.
//! * Blocked vCPUs (HLT: until the next tick, or the guest timer's deadline when that is
//!   sooner; SLEEP_UNTIL: until a time) rejoin the head of the queue when their time comes;
//!   a yield goes to the tail at once.
//! * Each VM may have a CPU limit in millicores (1000 = one CPU): in every aligned
//!   [`PERIOD_NS`] period it gets at most `limit x PERIOD_NS / 1000` ns of guest time;
//!   a VM over it is not picked until the next period. Guest time is accounted per VM.
//! * A VM's vCPUs are numbered in the order they are added: vCPU k of the VM is the one
//!   that starts with RSI = k and bit k of `VCPU_KICK`'s mask. [`Scheduler::kick`] wakes a
//!   blocked one at once (to the head of its queue, as any wake-up), or remembers one wake
//!   for a vCPU that is not blocked, which its next [`Scheduler::block`] consumes instead of
//!   blocking; a kick's vector waits in the vCPU's record until its CPU loop takes it
//!   ([`Scheduler::take_kick`]) before the vCPU's next entry. A kick tells which CPUs must
//!   be interrupted for it to be prompt, and never changes slices, queues' order or quotas.
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Longest uninterrupted run of one vCPU.
pub const SLICE_NS: u64 = 10_000_000;
/// Accounting period of the CPU limit.
pub const PERIOD_NS: u64 = 100_000_000;
/// The host timer tick: how long a HLT blocks at most.
pub const TICK_NS: u64 = 10_000_000;

/// A vCPU, by its index in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct VcpuId(pub usize);
/// A VM, by its index in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct VmId(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    Running { slice_end: u64 },
    Blocked { until: u64 },
    Done,
}

#[derive(Debug)]
struct Vcpu {
    vm: usize,
    cpu: usize,
    state: State,
    /// Its index among its VM's vCPUs.
    index: u32,
    /// A kick came while it was not blocked: its next block returns at once.
    wake_kept: bool,
    /// A kick's vector, for its CPU loop to arm before the next entry.
    kick: Option<u8>,
}

#[derive(Debug)]
struct Vm {
    quota_ns: Option<u64>,
    period: u64,
    used_in_period: u64,
    guest_ns: u64,
    ended: bool,
    /// Its vCPUs by index (the order they were added).
    vcpus: Vec<usize>,
}

#[derive(Debug, Default)]
struct Cpu {
    ready: VecDeque<usize>,
    live: usize,
}

/// What a CPU does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Run this vCPU for at most `slice_ns`.
    Run {
        /// The vCPU.
        vcpu: VcpuId,
        /// Its VM.
        vm: VmId,
        /// Time it may run.
        slice_ns: u64,
    },
    /// Nothing to run: wait for an interrupt, or at most until this time.
    Idle {
        /// Next wake-up or period start, if any.
        until_ns: Option<u64>,
    },
    /// No vCPU is left on this CPU.
    Done,
}

/// The scheduler CPUs a kick must interrupt (bit i: CPU i), so that a target running
/// there leaves the guest, or an idle CPU picks the target it woke. Bits of CPUs past 63
/// are not kept: those CPUs see the kick at their next tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuMask(pub u64);

impl CpuMask {
    fn add(&mut self, cpu: usize) {
        if let Some(bit) = u32::try_from(cpu).ok().and_then(|c| 1u64.checked_shl(c)) {
            self.0 |= bit;
        }
    }

    /// The CPUs, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |&c| self.0 & (1 << c) != 0)
    }
}

/// Why a placement failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedError {
    /// No such VM.
    NoVm,
    /// The scheduler has no CPU.
    NoCpu,
}

/// Run queues of every CPU and the per-VM accounting.
#[derive(Debug, Default)]
pub struct Scheduler {
    cpus: Vec<Cpu>,
    vcpus: Vec<Vcpu>,
    vms: Vec<Vm>,
}

impl Scheduler {
    /// A scheduler for `cpus` online CPUs.
    pub fn new(cpus: usize) -> Self {
        Scheduler { cpus: (0..cpus).map(|_| Cpu::default()).collect(), vcpus: Vec::new(), vms: Vec::new() }
    }

    /// Adds a VM with an optional CPU limit in millicores.
    pub fn add_vm(&mut self, limit_millicores: Option<u32>) -> VmId {
        let quota_ns = limit_millicores.map(|m| u64::from(m) * (PERIOD_NS / 1000));
        self.vms.push(Vm {
            quota_ns,
            period: 0,
            used_in_period: 0,
            guest_ns: 0,
            ended: false,
            vcpus: Vec::new(),
        });
        VmId(self.vms.len() - 1)
    }

    /// Adds a vCPU of `vm` to the least-loaded CPU (the lowest index among equals); it is
    /// the VM's next vCPU index ([`Scheduler::vcpu_index`]).
    pub fn add_vcpu(&mut self, vm: VmId) -> Result<(VcpuId, usize), SchedError> {
        let Some(m) = self.vms.get(vm.0) else {
            return Err(SchedError::NoVm);
        };
        let index = u32::try_from(m.vcpus.len()).map_err(|_| SchedError::NoVm)?;
        let cpu = (0..self.cpus.len()).min_by_key(|&c| (self.cpus[c].live, c)).ok_or(SchedError::NoCpu)?;
        let id = self.vcpus.len();
        self.vcpus.push(Vcpu { vm: vm.0, cpu, state: State::Ready, index, wake_kept: false, kick: None });
        self.vms[vm.0].vcpus.push(id);
        self.cpus[cpu].ready.push_back(id);
        self.cpus[cpu].live += 1;
        Ok((VcpuId(id), cpu))
    }

    /// A vCPU's index in its VM (0 = the first added): the k its initial state and
    /// `VCPU_KICK`'s mask give it.
    pub fn vcpu_index(&self, v: VcpuId) -> Option<u32> {
        self.vcpus.get(v.0).map(|x| x.index)
    }

    /// The CPU a vCPU lives on.
    pub fn cpu_of(&self, v: VcpuId) -> Option<usize> {
        self.vcpus.get(v.0).map(|x| x.cpu)
    }

    /// The VM of a vCPU.
    pub fn vm_of(&self, v: VcpuId) -> Option<VmId> {
        self.vcpus.get(v.0).map(|x| VmId(x.vm))
    }

    /// Live (not finished) vCPUs on `cpu`.
    pub fn live_on(&self, cpu: usize) -> usize {
        self.cpus.get(cpu).map_or(0, |c| c.live)
    }

    /// Guest nanoseconds `vm` has run.
    pub fn guest_ns(&self, vm: VmId) -> u64 {
        self.vms.get(vm.0).map_or(0, |v| v.guest_ns)
    }

    /// Whether `vm` was ended (its remaining vCPUs are to be torn down).
    pub fn vm_ended(&self, vm: VmId) -> bool {
        self.vms.get(vm.0).is_some_and(|v| v.ended)
    }

    fn quota_left(&mut self, vm: usize, now: u64) -> u64 {
        let Some(v) = self.vms.get_mut(vm) else {
            return 0;
        };
        let period = now / PERIOD_NS;
        if v.period != period {
            v.period = period;
            v.used_in_period = 0;
        }
        match v.quota_ns {
            None => u64::MAX,
            Some(q) => q.saturating_sub(v.used_in_period),
        }
    }

    /// Chooses what `cpu` runs at time `now`.
    pub fn pick(&mut self, cpu: usize, now: u64) -> Pick {
        let Some(c) = self.cpus.get(cpu) else {
            return Pick::Done;
        };
        if c.live == 0 {
            return Pick::Done;
        }
        // Wake the blocked vCPUs whose time has come, to the head of the queue: they used
        // less than their share while they slept, and a wake-up then waits at most for
        // the slice in progress.
        let mut next_wake: Option<u64> = None;
        for id in 0..self.vcpus.len() {
            let v = &mut self.vcpus[id];
            if v.cpu != cpu {
                continue;
            }
            if let State::Blocked { until } = v.state {
                if until <= now || self.vms.get(v.vm).is_some_and(|m| m.ended) {
                    v.state = State::Ready;
                    self.cpus[cpu].ready.push_front(id);
                } else {
                    next_wake = Some(next_wake.map_or(until, |w| w.min(until)));
                }
            }
        }
        let n = self.cpus[cpu].ready.len();
        let mut throttled = false;
        for _ in 0..n {
            let Some(id) = self.cpus[cpu].ready.pop_front() else {
                break;
            };
            let vm = self.vcpus[id].vm;
            let ended = self.vms.get(vm).is_some_and(|m| m.ended);
            let left = self.quota_left(vm, now);
            if left == 0 && !ended {
                throttled = true;
                self.cpus[cpu].ready.push_back(id);
                continue;
            }
            let slice_ns = SLICE_NS.min(left);
            self.vcpus[id].state = State::Running { slice_end: now.saturating_add(slice_ns) };
            return Pick::Run { vcpu: VcpuId(id), vm: VmId(vm), slice_ns };
        }
        if throttled {
            let period_end = (now / PERIOD_NS + 1) * PERIOD_NS;
            next_wake = Some(next_wake.map_or(period_end, |w| w.min(period_end)));
        }
        Pick::Idle { until_ns: next_wake }
    }

    /// Charges `guest_ns` of guest time to `v`'s VM.
    pub fn charge(&mut self, v: VcpuId, guest_ns: u64, now: u64) {
        let Some(vm) = self.vcpus.get(v.0).map(|x| x.vm) else {
            return;
        };
        self.quota_left(vm, now);
        if let Some(m) = self.vms.get_mut(vm) {
            m.guest_ns = m.guest_ns.saturating_add(guest_ns);
            m.used_in_period = m.used_in_period.saturating_add(guest_ns);
        }
    }

    /// After an exit that lets `v` go on: the time it may still run, or `None` when its
    /// slice or its VM's quota is used up (it then goes to the tail of its queue).
    pub fn keep_running(&mut self, v: VcpuId, now: u64) -> Option<u64> {
        let x = self.vcpus.get(v.0)?;
        let (vm, State::Running { slice_end }) = (x.vm, x.state) else {
            return None;
        };
        let left = self.quota_left(vm, now).min(slice_end.saturating_sub(now));
        if left > 0 && !self.vm_ended(VmId(vm)) {
            return Some(left);
        }
        self.requeue(v);
        None
    }

    fn requeue(&mut self, v: VcpuId) {
        if let Some(x) = self.vcpus.get_mut(v.0) {
            if matches!(x.state, State::Running { .. }) {
                x.state = State::Ready;
                let cpu = x.cpu;
                self.cpus[cpu].ready.push_back(v.0);
            }
        }
    }

    /// `v` gives its CPU away: to the tail of its queue.
    pub fn yield_now(&mut self, v: VcpuId) {
        self.requeue(v);
    }

    /// `v` blocks until `until_ns`, or for one tick (`None`, HLT); true if it did. A
    /// wake a kick left for it ([`Scheduler::kick`]) is used up instead: it does not block
    /// and goes on running (false).
    pub fn block(&mut self, v: VcpuId, until_ns: Option<u64>, now: u64) -> bool {
        let Some(x) = self.vcpus.get_mut(v.0) else {
            return false;
        };
        if !matches!(x.state, State::Running { .. }) {
            return false;
        }
        if core::mem::take(&mut x.wake_kept) {
            return false;
        }
        x.state = State::Blocked { until: until_ns.unwrap_or(now.saturating_add(TICK_NS)) };
        true
    }

    /// `VCPU_KICK` from a vCPU of `vm`: for every vCPU k of the VM whose bit k is set in
    /// `mask` (bits past its vCPUs mean nothing), a blocked one is woken (it joins the head
    /// of its queue at its CPU's next pick); one that is not blocked keeps one wake for its
    /// next [`Scheduler::block`]. With a vector, the vCPU's kick vector is set (a later
    /// kick's replaces it), for [`Scheduler::take_kick`]. Returns the CPUs to interrupt:
    /// those of woken vCPUs (the CPU may be idle), and of vCPUs running with a vector that
    /// had none pending (a vCPU with one pending has had its CPU interrupted already, or
    /// takes it before it runs), so each target costs at most one interruption per entry
    /// or sleep, however often it is kicked.
    pub fn kick(&mut self, vm: VmId, mask: u64, vector: Option<u8>) -> CpuMask {
        let mut cpus = CpuMask::default();
        let Some(m) = self.vms.get(vm.0).filter(|m| !m.ended) else {
            return cpus;
        };
        for (k, &id) in m.vcpus.iter().enumerate().take(64) {
            if mask & (1 << k) == 0 {
                continue;
            }
            let Some(x) = self.vcpus.get_mut(id) else {
                continue;
            };
            match x.state {
                State::Done => continue,
                // Woken already and not picked yet: its CPU was told.
                State::Blocked { until: 0 } => {}
                State::Blocked { .. } => {
                    x.state = State::Blocked { until: 0 };
                    cpus.add(x.cpu);
                }
                State::Ready | State::Running { .. } => x.wake_kept = true,
            }
            if let Some(v) = vector {
                if x.kick.replace(v).is_none() && matches!(x.state, State::Running { .. }) {
                    cpus.add(x.cpu);
                }
            }
        }
        cpus
    }

    /// The vector a kick left for `v`, once: its CPU loop arms the vCPU's timer with it
    /// before the next entry.
    pub fn take_kick(&mut self, v: VcpuId) -> Option<u8> {
        self.vcpus.get_mut(v.0).and_then(|x| x.kick.take())
    }

    /// `v` is gone (its VM ended and it was torn down).
    pub fn finish(&mut self, v: VcpuId) {
        if let Some(x) = self.vcpus.get_mut(v.0) {
            if x.state == State::Done {
                return;
            }
            if x.state == State::Ready {
                let cpu = x.cpu;
                self.cpus[cpu].ready.retain(|&i| i != v.0);
            }
            x.state = State::Done;
            let cpu = x.cpu;
            self.cpus[cpu].live = self.cpus[cpu].live.saturating_sub(1);
        }
    }

    /// Marks `vm` ended: its blocked and throttled vCPUs become runnable so that their
    /// CPUs pick them and tear them down.
    pub fn end_vm(&mut self, vm: VmId) {
        if let Some(m) = self.vms.get_mut(vm.0) {
            m.ended = true;
        }
    }

    /// Wakes `vm`'s blocked vCPUs: their CPUs pick them at the next pass.
    pub fn wake_vm(&mut self, vm: VmId) {
        for v in self.vcpus.iter_mut().filter(|v| v.vm == vm.0) {
            if let State::Blocked { until } = &mut v.state {
                *until = 0;
            }
        }
    }

    /// Live vCPUs of `vm`.
    pub fn live_vcpus(&self, vm: VmId) -> usize {
        self.vcpus.iter().filter(|v| v.vm == vm.0 && v.state != State::Done).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn placement_goes_to_the_least_loaded_cpu() {
        let mut s = Scheduler::new(3);
        let a = s.add_vm(None);
        let cpus: Vec<usize> = (0..7).map(|_| s.add_vcpu(a).unwrap().1).collect();
        assert_eq!(cpus, [0, 1, 2, 0, 1, 2, 0]);
        s.finish(VcpuId(1));
        assert_eq!(s.add_vcpu(a).unwrap().1, 1, "cpu1 has the fewest now");
        assert_eq!(s.add_vcpu(VmId(9)), Err(SchedError::NoVm));
        assert_eq!(Scheduler::new(0).add_vcpu(VmId(0)), Err(SchedError::NoVm));
        let mut z = Scheduler::new(0);
        let vm = z.add_vm(None);
        assert_eq!(z.add_vcpu(vm), Err(SchedError::NoCpu));
    }

    /// Simulates one CPU: `busy` vCPUs always use their whole slice; the sleeper runs
    /// 1 ms, then sleeps 5 ms. Returns guest ns per vCPU and the sleeper's worst wait.
    fn simulate(limit: Option<u32>, busy: usize, until: u64) -> (Vec<u64>, u64, Scheduler) {
        let mut s = Scheduler::new(1);
        let hog = s.add_vm(limit);
        let nice = s.add_vm(None);
        let hogs: Vec<VcpuId> = (0..busy).map(|_| s.add_vcpu(hog).unwrap().0).collect();
        let sleeper = s.add_vcpu(nice).unwrap().0;
        let mut ran = vec![0u64; busy + 1];
        let mut now = 0u64;
        let mut wake_at: Option<u64> = None;
        let mut worst_wait = 0u64;
        while now < until {
            match s.pick(0, now) {
                Pick::Run { vcpu, slice_ns, .. } => {
                    if vcpu == sleeper {
                        if let Some(w) = wake_at.take() {
                            worst_wait = worst_wait.max(now - w);
                        }
                        let t = MS.min(slice_ns);
                        now += t;
                        s.charge(vcpu, t, now);
                        ran[busy] += t;
                        s.block(vcpu, Some(now + 5 * MS), now);
                        wake_at = Some(now + 5 * MS);
                    } else {
                        // Exits every 3 ms (a hypercall) until the slice is over.
                        let mut left = slice_ns;
                        loop {
                            let t = left.min(3 * MS);
                            now += t;
                            s.charge(vcpu, t, now);
                            ran[hogs.iter().position(|h| *h == vcpu).unwrap()] += t;
                            match s.keep_running(vcpu, now) {
                                Some(l) => left = l,
                                None => break,
                            }
                        }
                    }
                }
                Pick::Idle { until_ns } => now = until_ns.unwrap_or(now + TICK_NS).max(now + 1),
                Pick::Done => break,
            }
        }
        (ran, worst_wait, s)
    }

    #[test]
    fn a_busy_guest_does_not_starve_a_sleeper() {
        let (ran, worst, _) = simulate(None, 2, 1000 * MS);
        // The sleeper wants 1 ms in every 6: it waits at most for the slice in progress.
        assert!(worst <= SLICE_NS, "worst wait {worst}");
        assert!(ran[2] >= 40 * MS, "sleeper ran {} ms", ran[2] / MS);
        // The hogs share the rest evenly.
        let diff = ran[0].abs_diff(ran[1]);
        assert!(diff <= SLICE_NS, "hogs {} vs {} ms", ran[0] / MS, ran[1] / MS);
        assert!(ran[0] + ran[1] + ran[2] >= 990 * MS, "the CPU was kept busy");
    }

    #[test]
    fn a_woken_vm_runs_before_its_deadline() {
        let mut s = Scheduler::new(1);
        let vm = s.add_vm(None);
        let (v, _) = s.add_vcpu(vm).unwrap();
        assert!(matches!(s.pick(0, 0), Pick::Run { vcpu, .. } if vcpu == v));
        s.block(v, Some(u64::MAX), 0);
        assert_eq!(s.pick(0, 10 * MS), Pick::Idle { until_ns: Some(u64::MAX) });
        s.wake_vm(VmId(5)); // another VM: nothing moves
        assert_eq!(s.pick(0, 10 * MS), Pick::Idle { until_ns: Some(u64::MAX) });
        s.wake_vm(vm);
        assert!(matches!(s.pick(0, 11 * MS), Pick::Run { vcpu, .. } if vcpu == v));
    }

    #[test]
    fn cpu_limit_throttles_per_period() {
        let (ran, _, s) = simulate(Some(250), 2, 1000 * MS);
        let hog_total = ran[0] + ran[1];
        // 250 millicores = 25 ms per 100 ms period, 10 periods.
        assert!(hog_total <= 250 * MS, "hog VM ran {} ms", hog_total / MS);
        assert!(hog_total >= 230 * MS, "hog VM ran only {} ms", hog_total / MS);
        assert_eq!(s.guest_ns(VmId(0)), hog_total);
        assert_eq!(s.guest_ns(VmId(1)), ran[2]);
        // Unlimited, the same hogs take most of the CPU.
        let (free, _, _) = simulate(None, 2, 1000 * MS);
        assert!(free[0] + free[1] > 700 * MS);
    }

    #[test]
    fn halt_blocks_for_a_tick_and_yield_goes_to_the_tail() {
        let mut s = Scheduler::new(1);
        let vm = s.add_vm(None);
        let a = s.add_vcpu(vm).unwrap().0;
        let b = s.add_vcpu(vm).unwrap().0;
        assert!(matches!(s.pick(0, 0), Pick::Run { vcpu, .. } if vcpu == a));
        s.block(a, None, 0);
        assert!(matches!(s.pick(0, 1), Pick::Run { vcpu, .. } if vcpu == b));
        s.yield_now(b);
        assert!(matches!(s.pick(0, 2), Pick::Run { vcpu, .. } if vcpu == b), "a still halted");
        s.block(b, Some(50 * MS), 2);
        assert_eq!(s.pick(0, 3), Pick::Idle { until_ns: Some(TICK_NS) });
        assert!(matches!(s.pick(0, TICK_NS), Pick::Run { vcpu, .. } if vcpu == a));
        s.yield_now(a);
        assert!(matches!(s.pick(0, TICK_NS + 1), Pick::Run { vcpu, .. } if vcpu == a));
        // Ending the VM wakes b at once so it can be torn down.
        s.end_vm(vm);
        assert_eq!(s.keep_running(a, TICK_NS + 2), None);
        s.finish(a);
        assert!(matches!(s.pick(0, TICK_NS + 3), Pick::Run { vcpu, .. } if vcpu == b));
        s.finish(b);
        assert_eq!(s.pick(0, TICK_NS + 4), Pick::Done);
        assert_eq!(s.live_vcpus(vm), 0);
    }

    /// Two CPUs; VM `a` has vCPUs a0 (cpu0) and a1 (cpu1), VM `b` has b0 (cpu0); a0 and
    /// a1 are running.
    fn two_vms() -> (Scheduler, VmId, [VcpuId; 3]) {
        let mut s = Scheduler::new(2);
        let a = s.add_vm(None);
        let b = s.add_vm(None);
        let a0 = s.add_vcpu(a).unwrap().0;
        let a1 = s.add_vcpu(a).unwrap().0;
        let b0 = s.add_vcpu(b).unwrap().0;
        assert_eq!((s.cpu_of(a0), s.cpu_of(a1), s.cpu_of(b0)), (Some(0), Some(1), Some(0)));
        assert!(matches!(s.pick(0, 0), Pick::Run { vcpu, .. } if vcpu == a0));
        assert!(matches!(s.pick(1, 0), Pick::Run { vcpu, .. } if vcpu == a1));
        (s, a, [a0, a1, b0])
    }

    #[test]
    fn vcpu_indexes_follow_the_order_of_adding_per_vm() {
        let (s, _, [a0, a1, b0]) = two_vms();
        assert_eq!((s.vcpu_index(a0), s.vcpu_index(a1), s.vcpu_index(b0)), (Some(0), Some(1), Some(0)));
        assert_eq!(s.vcpu_index(VcpuId(7)), None);
    }

    #[test]
    fn a_kick_to_a_running_vcpu_is_one_remembered_wake() {
        let (mut s, a, [a0, a1, _]) = two_vms();
        // a1 is running: nothing to wake and no vector, so no CPU to interrupt.
        assert_eq!(s.kick(a, 0b10, None), CpuMask(0));
        assert_eq!(s.kick(a, 0b10, None), CpuMask(0), "a second kick is the same one wake");
        assert!(!s.block(a1, Some(u64::MAX), 5 * MS), "its next sleep returns at once");
        assert_eq!(s.keep_running(a1, 5 * MS), Some(5 * MS), "and it goes on running");
        assert!(s.block(a1, Some(u64::MAX), 6 * MS), "only one wake was kept");
        assert_eq!(s.pick(1, 7 * MS), Pick::Idle { until_ns: Some(u64::MAX) });
        // A HLT uses a kept wake up the same way.
        assert_eq!(s.kick(a, 0b01, None), CpuMask(0));
        assert!(!s.block(a0, None, 8 * MS));
        assert!(s.block(a0, None, 8 * MS));
        // A vCPU that is ready (not running yet) keeps its wake too.
        let mut r = Scheduler::new(1);
        let vm = r.add_vm(None);
        let first = r.add_vcpu(vm).unwrap().0;
        let second = r.add_vcpu(vm).unwrap().0;
        assert!(matches!(r.pick(0, 0), Pick::Run { vcpu, .. } if vcpu == first));
        assert_eq!(r.kick(vm, 0b10, None), CpuMask(0), "it waits in the queue: nothing to interrupt");
        assert_eq!(r.keep_running(first, SLICE_NS), None);
        assert!(matches!(r.pick(0, SLICE_NS), Pick::Run { vcpu, .. } if vcpu == second));
        assert!(!r.block(second, Some(u64::MAX), SLICE_NS + 1), "the kick before it ran is kept");
    }

    #[test]
    fn a_kick_wakes_a_blocked_vcpu_at_once_and_names_its_cpu() {
        let (mut s, a, [a0, a1, b0]) = two_vms();
        assert!(s.block(a1, Some(u64::MAX), MS));
        assert!(s.block(a0, None, MS), "a HLT");
        assert_eq!(s.pick(1, 2 * MS), Pick::Idle { until_ns: Some(u64::MAX) });
        assert_eq!(s.kick(a, 0b10, None), CpuMask(0b10), "cpu1 may be idle: interrupt it");
        assert_eq!(s.kick(a, 0b10, Some(0x20)), CpuMask(0), "woken, not picked yet: cpu1 was told");
        assert_eq!(s.take_kick(a1), Some(0x20));
        assert!(matches!(s.pick(1, 2 * MS), Pick::Run { vcpu, .. } if vcpu == a1), "long before u64::MAX");
        assert!(s.block(a1, Some(u64::MAX), 3 * MS), "a woken vCPU keeps no extra wake");
        // The halted a0 is woken before its tick, ahead of b0 in cpu0's queue.
        assert!(matches!(s.pick(0, 2 * MS), Pick::Run { vcpu, .. } if vcpu == b0));
        assert_eq!(s.kick(a, 0b01, None), CpuMask(0b01));
        s.yield_now(b0);
        assert!(matches!(s.pick(0, 2 * MS + 1), Pick::Run { vcpu, .. } if vcpu == a0));
    }

    #[test]
    fn a_kick_reaches_only_the_vms_own_vcpus_named_in_the_mask() {
        let (mut s, a, [a0, a1, b0]) = two_vms();
        assert!(s.block(a1, Some(u64::MAX), MS));
        assert!(matches!(s.pick(1, MS), Pick::Idle { .. }));
        // Kicking a's vCPU 0 (the caller itself) wakes neither a1 nor b0.
        s.yield_now(a0);
        assert!(matches!(s.pick(0, MS), Pick::Run { vcpu, .. } if vcpu == b0));
        assert!(s.block(b0, Some(u64::MAX), MS));
        assert!(matches!(s.pick(0, MS), Pick::Run { vcpu, .. } if vcpu == a0));
        assert_eq!(s.kick(a, 0b01, Some(0x20)), CpuMask(0b01), "its own CPU: the caller's loop skips it");
        assert_eq!(s.take_kick(a0), Some(0x20));
        assert_eq!(s.pick(1, 2 * MS), Pick::Idle { until_ns: Some(u64::MAX) }, "a1 sleeps on");
        assert!(!s.block(a0, Some(u64::MAX), 2 * MS), "the caller kept its own wake");
        // b0 is b's vCPU 0, not a's: a kick from a with every bit set never reaches it.
        assert_eq!(s.kick(a, u64::MAX, Some(0x30)), CpuMask(0b11), "bits past a's two vCPUs mean nothing");
        assert_eq!(s.take_kick(b0), None);
        s.yield_now(a0);
        assert!(matches!(s.pick(0, 3 * MS), Pick::Run { vcpu, .. } if vcpu == a0), "b0 still blocked");
        assert_eq!((s.take_kick(a0), s.take_kick(a1)), (Some(0x30), Some(0x30)));
        // Bits of vCPUs a VM does not have, alone, do nothing at all.
        assert_eq!(s.kick(a, !0b11, Some(0x40)), CpuMask(0));
        assert_eq!((s.take_kick(a0), s.take_kick(a1), s.take_kick(b0)), (None, None, None));
        assert_eq!(s.kick(VmId(9), u64::MAX, Some(0x40)), CpuMask(0), "no such VM");
    }

    #[test]
    fn a_kick_vector_waits_for_its_vcpu_and_interrupts_its_cpu_once() {
        let (mut s, a, [a0, a1, _]) = two_vms();
        assert_eq!(s.kick(a, 0b10, Some(0x20)), CpuMask(0b10), "a1 runs on cpu1: interrupt it");
        assert_eq!(s.kick(a, 0b10, Some(0x21)), CpuMask(0), "one is pending: cpu1 was told already");
        assert_eq!(s.take_kick(a1), Some(0x21), "the last vector wins");
        assert_eq!(s.take_kick(a1), None, "once");
        assert_eq!(s.kick(a, 0b10, Some(0x22)), CpuMask(0b10), "taken: the next one interrupts again");
        assert_eq!(s.take_kick(a1), Some(0x22));
        // A vCPU that is not running takes its vector when it runs: nothing to interrupt.
        assert_eq!(s.keep_running(a0, SLICE_NS), None);
        assert_eq!(s.kick(a, 0b01, Some(0x23)), CpuMask(0));
        assert_eq!(s.take_kick(a0), Some(0x23));
        // An ended VM's vCPUs and finished vCPUs take no kicks.
        s.finish(a1);
        assert_eq!(s.kick(a, 0b10, Some(0x24)), CpuMask(0));
        assert_eq!(s.take_kick(a1), None);
        s.end_vm(a);
        assert_eq!(s.kick(a, 0b01, Some(0x25)), CpuMask(0));
        assert_eq!(s.take_kick(a0), None);
        assert_eq!(CpuMask(0b1001).iter().collect::<Vec<_>>(), [0, 3]);
    }

    #[test]
    fn slices_end_and_rotate() {
        let mut s = Scheduler::new(1);
        let vm = s.add_vm(None);
        let a = s.add_vcpu(vm).unwrap().0;
        let b = s.add_vcpu(vm).unwrap().0;
        assert_eq!(s.pick(0, 0), Pick::Run { vcpu: a, vm, slice_ns: SLICE_NS });
        assert_eq!(s.keep_running(a, 4 * MS), Some(6 * MS));
        assert_eq!(s.keep_running(a, SLICE_NS), None);
        assert_eq!(s.pick(0, SLICE_NS), Pick::Run { vcpu: b, vm, slice_ns: SLICE_NS });
        assert_eq!(s.keep_running(b, 30 * MS), None);
        assert_eq!(s.pick(0, 30 * MS), Pick::Run { vcpu: a, vm, slice_ns: SLICE_NS });
        assert_eq!(s.keep_running(VcpuId(99), 0), None);
    }
}
