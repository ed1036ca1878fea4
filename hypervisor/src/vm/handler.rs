//! The exit policy, written once for both backends: what happens when a guest leaves.
//!
//! [`handle`] is a pure function of the exit, the vCPU's registers and a [`Services`]
//! object (guest memory, clocks, randomness, console, host CPUID and XCR0), so every
//! decision is tested on the host with synthetic exits. Policy (fixed):
//!
//! * Hypercalls (`crx_abi::nr`): number in `rax`, arguments in `rdi`, `rsi`, `rdx`,
//!   `r10`, result in `rax` (negative [`crx_abi::Error`] on failure). Every pointer and
//!   length is checked against guest memory: a bad one returns `Fault`, never stops the VM.
//! * I/O ports: guests get none; any IN/OUT stops the VM (`ForbiddenIo`).
//! * MSRs that exit: reads of IA32_TSC, IA32_APIC_BASE (0: no APIC), IA32_MISC_ENABLE (0)
//!   and IA32_PAT (power-on default) are answered; everything else, and every WRMSR, gets
//!   #GP(0), as a real CPU answers for an MSR it lacks.
//! * CPUID: the host's, less VMX, SVM, MONITOR, x2APIC, TSC-deadline and the APIC, plus
//!   the hypervisor bit and leaves 0x4000_0000/1; leaf 0xD reports exactly the host XCR0.
//! * HLT blocks until the next timer tick (the CPU loop wakes it sooner for a guest timer
//!   armed earlier); forbidden instructions get #UD; XSETBV may
//!   only set XCR0 to the host's value (#UD otherwise).
//! * Pod hypercalls (`LOG_WRITE`, `CONTAINER_EXIT`, `POD_SPEC`, `LAYER_INFO`,
//!   `POD_CONTROL`, `CONTAINER_ENTRY`) answer `Invalid` in a VM that is not a pod, and for a
//!   container index, stream or layer index that does not exist; bad pointers are `Fault`
//!   as everywhere. `CONTAINER_ENTRY` notes the VM's guest time at its first call.
//! * `TIMER_ARM` (`deadline_ns`, `vector`) gives [`Action::ArmTimer`]: the CPU loop keeps
//!   the deadline with the vCPU and has the backend deliver the interrupt; a vector below
//!   32 or above 255 is `Invalid` and arms nothing.
//! * `VCPU_KICK` (`mask`, `vector`) gives [`Action::Kick`] (`vector` 0: a wake only): the
//!   CPU loop applies it to the VM's vCPUs through the scheduler and interrupts their CPUs;
//!   a vector 1 to 31 or above 255 is `Invalid` and kicks nothing.
//! * Nested page faults (all guest memory is mapped, so only outside it, or a write to the
//!   read-only layer window of a pod), triple faults, failed entries, intercepted
//!   exceptions and unknown exits stop the VM.
//! * An instruction exit (CPUID, HLT, hypercall, RDMSR/WRMSR, XSETBV) whose length is not
//!   1 to 15 stops the VM before anything is done: skipping 0 bytes would run the same
//!   instruction again forever (a console write printed again at every entry), and a
//!   longer skip lands inside other code.
#![forbid(unsafe_code)]

use super::exit::{Access, Action, Exit, ExitKind, GuestRegs, StopReason, MAX_INSTR_LEN};
use super::memory::OutOfRange;
use crx_abi::{
    layout, nr, BootParams, Error, LayerInfo, ABI_VERSION, CONSOLE_WRITE_MAX, CPUID_LEAF, CPUID_SIGNATURE,
    LOG_WRITE_MAX, RANDOM_MAX, TIMER_VECTOR_MIN,
};

/// `VCPU_KICK`'s vector argument: 0 (none), or one `TIMER_ARM` takes; `None` otherwise.
fn kick_vector(raw: u64) -> Option<Option<u8>> {
    match u8::try_from(raw) {
        Ok(0) => Some(None),
        Ok(v) if raw >= TIMER_VECTOR_MIN => Some(Some(v)),
        _ => None,
    }
}

/// #UD.
pub const UD: u8 = 6;
/// #GP.
pub const GP: u8 = 13;

/// MSRs the policy answers.
pub mod msr {
    /// IA32_TIME_STAMP_COUNTER.
    pub const TSC: u32 = 0x10;
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1b;
    /// IA32_MISC_ENABLE.
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_PAT's power-on value (SDM Vol. 3A 13.12.4).
    pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
}

/// What the policy needs from the world, per VM.
pub trait Services {
    /// Copies guest memory at `gpa` into `buf`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange>;
    /// Copies `data` into guest memory at `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange>;
    /// Monotonic nanoseconds since the VM started.
    fn monotonic_ns(&self) -> u64;
    /// Wall-clock nanoseconds since the Unix epoch.
    fn wall_ns(&self) -> u64;
    /// The host's time-stamp counter.
    fn tsc(&self) -> u64;
    /// Fills `buf` with random bytes.
    fn random(&mut self, buf: &mut [u8]);
    /// Takes bytes the guest wrote to its console.
    fn console(&mut self, bytes: &[u8]);
    /// The host's CPUID leaf `leaf`, sub-leaf `sub`: `[eax, ebx, ecx, edx]`.
    fn host_cpuid(&self, leaf: u32, sub: u32) -> [u32; 4];
    /// The host's XCR0 (0 without XSAVE).
    fn host_xcr0(&self) -> u64;
    /// This VM's boot parameters.
    fn boot_params(&self) -> BootParams;
    /// Whether `container` and `stream` name a container's stdout or stderr of this pod
    /// (false in a VM that is not a pod).
    fn pod_log_ok(&self, _container: u64, _stream: u64) -> bool {
        false
    }
    /// Takes output of a container (called only after [`Services::pod_log_ok`]).
    fn pod_log(&mut self, _container: u64, _stream: u64, _bytes: &[u8]) {}
    /// Records a container's end (and whether the guest's out-of-memory killer ended one of
    /// its processes); false for an unknown container or a second report.
    fn container_exit(&mut self, _container: u64, _code: i32, _oom_killed: bool) -> bool {
        false
    }
    /// The pod spec JSON, in a pod VM.
    fn pod_spec(&self) -> Option<alloc::sync::Arc<[u8]>> {
        None
    }
    /// The next command of a pod VM (0: none); `None` outside a pod.
    fn pod_control(&mut self) -> Option<u64> {
        None
    }
    /// Layer `index`'s record, in a pod VM with such a layer.
    fn layer_info(&self, _index: u64) -> Option<LayerInfo> {
        None
    }
    /// The guest is about to enter user mode in a process of `container`: the first time,
    /// the VM's guest time so far is kept for its figures. False for a container the pod
    /// does not have, and outside a pod.
    fn container_entry(&mut self, _container: u64) -> bool {
        false
    }
}

/// Decides what happens after `exit`, updating `regs` (results of hypercalls, CPUID,
/// RDMSR) as the guest will see them.
pub fn handle(exit: &Exit, regs: &mut GuestRegs, svc: &mut impl Services) -> Action {
    if exit.kind.is_instruction() && !(1..=MAX_INSTR_LEN).contains(&exit.instr_len) {
        return Action::Stop(StopReason::BadInstructionLength { len: exit.instr_len });
    }
    match exit.kind {
        // From guest user mode: the guest kernel let a process through, and the hypervisor
        // does not take calls from it (the guest sees Denied, as from a call that does not
        // exist for it).
        ExitKind::Hypercall { cpl: 1.. } => {
            regs.rax = Error::Denied.to_raw();
            Action::Advance
        }
        ExitKind::Hypercall { cpl: 0 } => hypercall(regs, svc),
        ExitKind::Cpuid => {
            let [a, b, c, d] = guest_cpuid(regs.rax as u32, regs.rcx as u32, svc);
            regs.rax = u64::from(a);
            regs.rbx = u64::from(b);
            regs.rcx = u64::from(c);
            regs.rdx = u64::from(d);
            Action::Advance
        }
        ExitKind::Hlt => Action::Block { until_ns: None },
        ExitKind::Io { port, .. } => Action::Stop(StopReason::ForbiddenIo { port }),
        ExitKind::Msr { write: true } => gp0(),
        ExitKind::Msr { write: false } => {
            let value = match regs.rcx as u32 {
                msr::TSC => svc.tsc(),
                msr::APIC_BASE | msr::MISC_ENABLE => 0,
                msr::PAT => msr::PAT_DEFAULT,
                _ => return gp0(),
            };
            regs.rax = value & 0xffff_ffff;
            regs.rdx = value >> 32;
            Action::Advance
        }
        ExitKind::Xsetbv => {
            let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
            let xcr0 = svc.host_xcr0();
            if regs.rcx as u32 == 0 && xcr0 != 0 && value == xcr0 {
                Action::Advance
            } else {
                ud()
            }
        }
        ExitKind::NestedPageFault { gpa, access: Access::Write }
            if (layout::LAYERS_BASE..layout::LAYERS_BASE + layout::LAYERS_SIZE).contains(&gpa) =>
        {
            Action::Stop(StopReason::LayerWrite { gpa })
        }
        ExitKind::NestedPageFault { gpa, access } => Action::Stop(StopReason::OutsideMemory { gpa, access }),
        ExitKind::Preempted => Action::Resume,
        ExitKind::TripleFault => Action::Stop(StopReason::TripleFault),
        ExitKind::Forbidden(_) => ud(),
        ExitKind::Exception { vector, .. } => Action::Stop(StopReason::Exception { vector }),
        ExitKind::EntryFailed(why) => Action::Stop(StopReason::EntryFailed(why)),
        ExitKind::Unknown { code, info } => Action::Stop(StopReason::UnknownExit { code, info }),
    }
}

fn gp0() -> Action {
    Action::Inject { vector: GP, error_code: Some(0) }
}

fn ud() -> Action {
    Action::Inject { vector: UD, error_code: None }
}

/// A buffer length the guest asked for, capped. The range itself is checked by the
/// memory access that uses it (which touches nothing when any byte is outside).
fn capped(len: u64, cap: u64) -> Result<usize, Error> {
    usize::try_from(len.min(cap)).map_err(|_| Error::Invalid)
}

fn hypercall(regs: &mut GuestRegs, svc: &mut impl Services) -> Action {
    let (a0, a1, a2, a3) = (regs.rdi, regs.rsi, regs.rdx, regs.r10);
    let mut action = Action::Advance;
    let result: Result<u64, Error> = match regs.rax {
        nr::VERSION => Ok(u64::from(ABI_VERSION)),
        nr::CONSOLE_WRITE => capped(a1, CONSOLE_WRITE_MAX).and_then(|n| {
            let mut buf = [0u8; CONSOLE_WRITE_MAX as usize];
            let part = buf.get_mut(..n).ok_or(Error::Invalid)?;
            svc.read(a0, part).map_err(|_| Error::Fault)?;
            svc.console(part);
            Ok(n as u64)
        }),
        nr::EXIT => return Action::Exit(a0 as i32),
        nr::TIME_MONOTONIC => Ok(svc.monotonic_ns()),
        nr::TIME_WALL => Ok(svc.wall_ns()),
        nr::SLEEP_UNTIL => {
            if a0 > svc.monotonic_ns() {
                action = Action::Block { until_ns: Some(a0) };
            }
            Ok(0)
        }
        nr::YIELD => {
            action = Action::Yield;
            Ok(0)
        }
        nr::TIMER_ARM => match u8::try_from(a1) {
            Ok(vector) if a1 >= TIMER_VECTOR_MIN => {
                action = Action::ArmTimer { deadline_ns: a0, vector };
                Ok(0)
            }
            _ => Err(Error::Invalid),
        },
        nr::VCPU_KICK => match kick_vector(a1) {
            Some(vector) => {
                action = Action::Kick { mask: a0, vector };
                Ok(0)
            }
            None => Err(Error::Invalid),
        },
        nr::RANDOM => capped(a1, RANDOM_MAX).and_then(|n| {
            let mut buf = [0u8; RANDOM_MAX as usize];
            let part = buf.get_mut(..n).ok_or(Error::Invalid)?;
            svc.random(part);
            svc.write(a0, part).map_err(|_| Error::Fault)?;
            Ok(n as u64)
        }),
        nr::BOOT_PARAMS => {
            let params = svc.boot_params();
            let bytes = params.as_bytes();
            capped(a1, bytes.len() as u64).and_then(|n| {
                svc.write(a0, bytes.get(..n).ok_or(Error::Invalid)?).map_err(|_| Error::Fault)?;
                Ok(n as u64)
            })
        }
        nr::LOG_WRITE => {
            if svc.pod_log_ok(a0, a1) {
                capped(a3, LOG_WRITE_MAX).and_then(|n| {
                    let mut buf = [0u8; LOG_WRITE_MAX as usize];
                    let part = buf.get_mut(..n).ok_or(Error::Invalid)?;
                    svc.read(a2, part).map_err(|_| Error::Fault)?;
                    svc.pod_log(a0, a1, part);
                    Ok(n as u64)
                })
            } else {
                Err(Error::Invalid)
            }
        }
        nr::CONTAINER_EXIT => {
            if a2 & !crx_abi::EXIT_OOM_KILLED == 0 && svc.container_exit(a0, a1 as i32, a2 != 0) {
                Ok(0)
            } else {
                Err(Error::Invalid)
            }
        }
        nr::POD_SPEC => match svc.pod_spec() {
            Some(spec) => capped(a1, spec.len() as u64).and_then(|n| {
                svc.write(a0, spec.get(..n).ok_or(Error::Invalid)?).map_err(|_| Error::Fault)?;
                Ok(spec.len() as u64)
            }),
            None => Err(Error::Invalid),
        },
        nr::POD_CONTROL => svc.pod_control().ok_or(Error::Invalid),
        nr::CONTAINER_ENTRY => {
            if svc.container_entry(a0) {
                Ok(0)
            } else {
                Err(Error::Invalid)
            }
        }
        nr::LAYER_INFO => match svc.layer_info(a0) {
            Some(info) => svc.write(a1, info.as_bytes()).map(|_| 0).map_err(|_| Error::Fault),
            None => Err(Error::Invalid),
        },
        _ => Err(Error::NoSys),
    };
    regs.rax = match result {
        Ok(v) => v,
        Err(e) => {
            // A refused hypercall does not block or yield.
            action = Action::Advance;
            e.to_raw()
        }
    };
    action
}

/// CPUID as the guest sees it (see the module documentation).
pub fn guest_cpuid(leaf: u32, sub: u32, svc: &impl Services) -> [u32; 4] {
    let xcr0 = svc.host_xcr0();
    match leaf {
        CPUID_LEAF => {
            let w = |i: usize| {
                let b = CPUID_SIGNATURE;
                u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
            };
            [CPUID_LEAF + 1, w(0), w(4), w(8)]
        }
        0x4000_0001 => [ABI_VERSION, 0, 0, 0],
        0x4000_0002..=0x4000_00ff => [0; 4],
        1 => {
            let [a, b, mut c, mut d] = svc.host_cpuid(1, 0);
            // ECX: MONITOR (3), VMX (5), x2APIC (21), TSC-deadline (24), OSXSAVE (27: the
            // guest starts with CR4.OSXSAVE clear); XSAVE (26) and AVX (28) only with a
            // host XCR0. Hypervisor present (31).
            c &= !((1 << 3) | (1 << 5) | (1 << 21) | (1 << 24) | (1 << 27));
            if xcr0 == 0 {
                c &= !((1 << 26) | (1 << 28));
            }
            c |= 1 << 31;
            // EDX: APIC (9).
            d &= !(1 << 9);
            [a, b, c, d]
        }
        5 => [0; 4],
        0xd => {
            if xcr0 == 0 {
                return [0; 4];
            }
            let host = svc.host_cpuid(0xd, sub);
            match sub {
                // Supported components = the host XCR0; sizes for that set (which is
                // the host's current XCR0, so EBX is right for both).
                0 => [xcr0 as u32, host[1], host[1], (xcr0 >> 32) as u32],
                // XSAVEOPT, XSAVEC, XGETBV with ECX=1; no XSAVES (IA32_XSS is not given).
                1 => [host[0] & 0b111, 0, 0, 0],
                s if s < 63 && xcr0 & (1 << s) != 0 => host,
                _ => [0; 4],
            }
        }
        0x8000_0001 => {
            let [a, b, mut c, d] = svc.host_cpuid(0x8000_0001, 0);
            c &= !(1 << 2); // SVM
            [a, b, c, d]
        }
        // SVM features leaf: nothing to offer.
        0x8000_000a => [0; 4],
        _ => svc.host_cpuid(leaf, sub),
    }
}

/// The XCR0 the host enables: every x87, SSE and AVX component the CPU reports in
/// CPUID.(EAX=0Dh,ECX=0):EAX (SDM Vol. 1 13.3). AVX needs SSE, SSE needs x87.
pub fn xcr0_for(supported_low: u32) -> u64 {
    let mut x = 1u64; // x87 is always there
    if supported_low & 0b10 != 0 {
        x |= 0b10;
        if supported_low & 0b100 != 0 {
            x |= 0b100;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::pod::PodState;

    const MEM: u64 = 1 << 20;

    struct Fake {
        mem: Vec<u8>,
        console: Vec<u8>,
        now: u64,
        xcr0: u64,
        random_calls: usize,
        pod: Option<PodState>,
        lines: Vec<String>,
        /// The VM's guest time so far, as the manager charges it before handling an exit.
        guest_ns: u64,
        first_container_ns: Option<u64>,
    }

    impl Fake {
        fn new() -> Self {
            Fake {
                mem: vec![0; MEM as usize],
                console: Vec::new(),
                now: 1000,
                xcr0: 0b111,
                random_calls: 0,
                pod: None,
                lines: Vec::new(),
                guest_ns: 0,
                first_container_ns: None,
            }
        }
        fn pod() -> Self {
            let json: &'static [u8] =
                br#"{"name":"web","containers":[{"name":"app","command":["/bin/sh"]},{"name":"log","command":["x"]}]}"#;
            let spec = crx_abi::pod::PodSpec::from_json(json).unwrap();
            let layers = vec![
                LayerInfo { gpa: layout::LAYERS_BASE, len: 5000, kind: 1, _pad: 0 },
                LayerInfo { gpa: layout::LAYERS_BASE + 0x2000, len: 10, kind: 0, _pad: 0 },
            ];
            Fake { pod: Some(PodState::new(&spec, alloc::sync::Arc::from(json), layers)), ..Fake::new() }
        }
        fn range(&self, gpa: u64, len: usize) -> Result<core::ops::Range<usize>, OutOfRange> {
            let bad = OutOfRange { gpa, len: len as u64 };
            let end = gpa.checked_add(len as u64).filter(|&e| e <= MEM).ok_or(bad)?;
            Ok(gpa as usize..end as usize)
        }
    }

    impl Services for Fake {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
            let r = self.range(gpa, buf.len())?;
            buf.copy_from_slice(&self.mem[r]);
            Ok(())
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
            let r = self.range(gpa, data.len())?;
            self.mem[r].copy_from_slice(data);
            Ok(())
        }
        fn monotonic_ns(&self) -> u64 {
            self.now
        }
        fn wall_ns(&self) -> u64 {
            1_700_000_000_000_000_000
        }
        fn tsc(&self) -> u64 {
            0x1234_5678_9abc
        }
        fn random(&mut self, buf: &mut [u8]) {
            self.random_calls += 1;
            buf.fill(0x5a);
        }
        fn console(&mut self, bytes: &[u8]) {
            self.console.extend_from_slice(bytes);
        }
        fn host_cpuid(&self, leaf: u32, sub: u32) -> [u32; 4] {
            match (leaf, sub) {
                (1, _) => [0x906ea, 0x0102_0800, !(1 << 31), 0xffff_ffff],
                (0xd, 0) => [0x2ff, 0x340, 0xa88, 0],
                (0xd, 1) => [0xf, 0, 0x100, 0],
                (0xd, 2) => [0x100, 0x240, 0, 0],
                (0xd, 3) => [0x40, 0x3c0, 0, 0],
                (0x8000_0001, _) => [0, 0, 0xffff_ffff, 0],
                _ => [leaf, sub, 7, 9],
            }
        }
        fn host_xcr0(&self) -> u64 {
            self.xcr0
        }
        fn pod_log_ok(&self, container: u64, stream: u64) -> bool {
            self.pod.as_ref().is_some_and(|p| p.check_log(container, stream).is_ok())
        }
        fn pod_log(&mut self, container: u64, stream: u64, bytes: &[u8]) {
            if let Some(p) = self.pod.as_mut() {
                let lines = &mut self.lines;
                let _ = p.log(container, stream, bytes, 0, |l| lines.push(l.to_string()));
            }
        }
        fn container_exit(&mut self, container: u64, code: i32, oom_killed: bool) -> bool {
            let lines = &mut self.lines;
            self.pod.as_mut().is_some_and(|p| {
                p.exit(container, code, oom_killed, 0, |l| lines.push(l.to_string())).is_ok()
            })
        }
        fn pod_spec(&self) -> Option<alloc::sync::Arc<[u8]>> {
            self.pod.as_ref().map(|p| p.spec_json.clone())
        }
        fn pod_control(&mut self) -> Option<u64> {
            self.pod.as_mut().map(|p| p.next_command())
        }
        fn layer_info(&self, index: u64) -> Option<LayerInfo> {
            self.pod.as_ref().and_then(|p| p.layer(index))
        }
        fn container_entry(&mut self, container: u64) -> bool {
            let known = self.pod.as_ref().is_some_and(|p| p.has_container(container));
            if known {
                self.first_container_ns.get_or_insert(self.guest_ns);
            }
            known
        }
        fn boot_params(&self) -> BootParams {
            BootParams {
                magic: crx_abi::BOOT_MAGIC,
                abi_version: ABI_VERSION,
                hypercall_insn: 1,
                vm_index: 4,
                vm_count: 5,
                mem_bytes: MEM,
                stack_top: MEM,
                free_start: 0x20_0000,
                cmdline: [0; 256],
                vcpus: 2,
                _pad: 0,
            }
        }
    }

    fn exit(kind: ExitKind) -> Exit {
        Exit { kind, instr_len: 3, guest_ns: 10 }
    }

    fn call(svc: &mut Fake, n: u64, a0: u64, a1: u64) -> (Action, u64) {
        let mut r = GuestRegs { rax: n, rdi: a0, rsi: a1, ..GuestRegs::default() };
        let a = handle(&exit(ExitKind::Hypercall { cpl: 0 }), &mut r, svc);
        (a, r.rax)
    }

    const FAULT: u64 = Error::Fault.to_raw();
    const INVALID: u64 = Error::Invalid.to_raw();

    #[test]
    fn hypercalls_from_guest_user_mode_are_denied() {
        let mut s = Fake::pod();
        for cpl in [1, 3] {
            for n in [
                nr::EXIT,
                nr::CONTAINER_EXIT,
                nr::LOG_WRITE,
                nr::VERSION,
                nr::POD_CONTROL,
                nr::CONTAINER_ENTRY,
                nr::TIMER_ARM,
            ] {
                let mut r = GuestRegs { rax: n, rdi: 0, rsi: 1, ..GuestRegs::default() };
                let a = handle(&exit(ExitKind::Hypercall { cpl }), &mut r, &mut s);
                assert_eq!((a, r.rax), (Action::Advance, Error::Denied.to_raw()), "call {n} at CPL {cpl}");
            }
        }
        assert!(s.pod.as_ref().unwrap().containers.iter().all(|c| c.exit.is_none()), "nothing happened");
        assert_eq!(s.first_container_ns, None, "nothing noted");
        assert_eq!(call(&mut s, nr::VERSION, 0, 0), (Action::Advance, u64::from(ABI_VERSION)));
    }

    fn call4(svc: &mut Fake, n: u64, a: [u64; 4]) -> (Action, u64) {
        let mut r = GuestRegs { rax: n, rdi: a[0], rsi: a[1], rdx: a[2], r10: a[3], ..GuestRegs::default() };
        let act = handle(&exit(ExitKind::Hypercall { cpl: 0 }), &mut r, svc);
        (act, r.rax)
    }

    #[test]
    fn pod_hypercalls_outside_a_pod_are_invalid() {
        let mut s = Fake::new();
        s.mem[0x100..0x103].copy_from_slice(b"hi\n");
        assert_eq!(call4(&mut s, nr::LOG_WRITE, [0, 1, 0x100, 3]), (Action::Advance, INVALID));
        assert_eq!(call4(&mut s, nr::CONTAINER_EXIT, [0, 0, 0, 0]), (Action::Advance, INVALID));
        assert_eq!(call4(&mut s, nr::POD_SPEC, [0x100, 16, 0, 0]), (Action::Advance, INVALID));
        assert_eq!(call4(&mut s, nr::LAYER_INFO, [0, 0x100, 0, 0]), (Action::Advance, INVALID));
        assert_eq!(call4(&mut s, nr::POD_CONTROL, [0, 0, 0, 0]), (Action::Advance, INVALID));
        assert_eq!(call4(&mut s, nr::CONTAINER_ENTRY, [0, 0, 0, 0]), (Action::Advance, INVALID));
        assert_eq!(s.first_container_ns, None);
        assert_eq!(&s.mem[0x100..0x103], b"hi\n", "nothing written");
        assert!(s.lines.is_empty());
    }

    #[test]
    fn log_write_and_container_exit() {
        let mut s = Fake::pod();
        s.mem[0x100..0x10b].copy_from_slice(b"hello\nworld");
        assert_eq!(call4(&mut s, nr::LOG_WRITE, [0, 1, 0x100, 11]), (Action::Advance, 11));
        assert_eq!(call4(&mut s, nr::LOG_WRITE, [1, 2, 0x100, 6]), (Action::Advance, 6));
        assert_eq!(s.lines, ["web/app> hello", "web/log> hello"]);
        // Wild pointers, lengths, containers and streams.
        for (c, st, p, l, want) in [
            (0, 1, MEM - 2, 4, FAULT),
            (0, 1, u64::MAX, 2, FAULT),
            (0, 1, u64::MAX - 1, u64::MAX, FAULT),
            (2, 1, 0x100, 1, INVALID),
            (u64::MAX, 1, 0x100, 1, INVALID),
            (0, 0, 0x100, 1, INVALID),
            (0, 3, u64::MAX, 1, INVALID),
        ] {
            assert_eq!(
                call4(&mut s, nr::LOG_WRITE, [c, st, p, l]),
                (Action::Advance, want),
                "({c}, {st}, {p:#x}, {l})"
            );
        }
        // Capped at LOG_WRITE_MAX.
        assert_eq!(call4(&mut s, nr::LOG_WRITE, [1, 1, 0x1000, u64::MAX]).1, LOG_WRITE_MAX);
        assert_eq!(call4(&mut s, nr::LOG_WRITE, [1, 1, 0, 0]).1, 0);
        let lines_before = s.lines.len();
        assert_eq!(call4(&mut s, nr::CONTAINER_EXIT, [0, 0xffff_ffff_0000_0003, 0, 0]), (Action::Advance, 0));
        assert_eq!(call4(&mut s, nr::CONTAINER_EXIT, [0, 4, 0, 0]), (Action::Advance, INVALID), "twice");
        assert_eq!(
            call4(&mut s, nr::CONTAINER_EXIT, [1, 137, 2, 0]),
            (Action::Advance, INVALID),
            "unknown flag"
        );
        assert_eq!(call4(&mut s, nr::CONTAINER_EXIT, [7, 0, 0, 0]), (Action::Advance, INVALID));
        assert_eq!(s.lines[lines_before..], ["web/app> world", "web/app: exited with code 3"]);
        let app = &s.pod.as_ref().unwrap().containers[0];
        assert!(!app.oom_killed);
        let (a, b) = app.log.contents();
        assert_eq!([a, b].concat(), b"hello\nworld");
        assert_eq!(
            call4(&mut s, nr::CONTAINER_EXIT, [1, 137, crx_abi::EXIT_OOM_KILLED, 0]),
            (Action::Advance, 0)
        );
        assert!(s.pod.as_ref().unwrap().containers[1].oom_killed);
    }

    #[test]
    fn pod_control_hands_out_commands_in_order_then_zero() {
        let mut s = Fake::pod();
        // An unmanaged pod's queue stays empty.
        assert_eq!(call4(&mut s, nr::POD_CONTROL, [0, 0, 0, 0]), (Action::Advance, 0));
        let p = s.pod.as_mut().unwrap();
        p.managed = true;
        p.containers[0].starts = 0;
        assert!(p.command(crx_abi::pod::Command::Start { container: 0 }, 1));
        assert!(p.command(crx_abi::pod::Command::Signal { container: 1, signal: 15 }, 2));
        assert_eq!(call4(&mut s, nr::POD_CONTROL, [7, 7, 7, 7]), (Action::Advance, 1));
        assert_eq!(call4(&mut s, nr::POD_CONTROL, [0, 0, 0, 0]), (Action::Advance, 2 | 1 << 8 | 15 << 16));
        assert_eq!(call4(&mut s, nr::POD_CONTROL, [0, 0, 0, 0]), (Action::Advance, 0));
    }

    #[test]
    fn container_entry_notes_the_guest_time_of_the_first_call() {
        let mut s = Fake::pod();
        s.guest_ns = 1_234;
        for bad in [2, 7, u64::MAX] {
            assert_eq!(call4(&mut s, nr::CONTAINER_ENTRY, [bad, 0, 0, 0]), (Action::Advance, INVALID));
        }
        assert_eq!(s.first_container_ns, None, "an unknown container notes nothing");
        assert_eq!(call4(&mut s, nr::CONTAINER_ENTRY, [1, 9, 9, 9]), (Action::Advance, 0));
        assert_eq!(s.first_container_ns, Some(1_234));
        s.guest_ns = 5_000;
        assert_eq!(call4(&mut s, nr::CONTAINER_ENTRY, [0, 0, 0, 0]), (Action::Advance, 0));
        assert_eq!(s.first_container_ns, Some(1_234), "only the first call counts");
        assert!(s.lines.is_empty() && s.console.is_empty(), "it prints nothing");
    }

    #[test]
    fn pod_spec_copies_what_fits() {
        let mut s = Fake::pod();
        let spec = s.pod.as_ref().unwrap().spec_json.clone();
        let total = spec.len() as u64;
        assert_eq!(call4(&mut s, nr::POD_SPEC, [0, 0, 0, 0]), (Action::Advance, total), "length only");
        assert_eq!(call4(&mut s, nr::POD_SPEC, [0x200, 10, 0, 0]).1, total);
        assert_eq!(&s.mem[0x200..0x20a], &spec[..10]);
        assert_eq!(s.mem[0x20a], 0);
        assert_eq!(call4(&mut s, nr::POD_SPEC, [0x400, u64::MAX, 0, 0]).1, total);
        assert_eq!(&s.mem[0x400..0x400 + spec.len()], &spec[..]);
        assert_eq!(call4(&mut s, nr::POD_SPEC, [MEM - 4, 100, 0, 0]).1, FAULT);
        assert_eq!(call4(&mut s, nr::POD_SPEC, [u64::MAX - 3, 100, 0, 0]).1, FAULT);
        assert_eq!(call4(&mut s, nr::POD_SPEC, [MEM - 4, 4, 0, 0]).1, total, "a short copy that fits");
    }

    #[test]
    fn layer_info_by_index() {
        let mut s = Fake::pod();
        assert_eq!(call4(&mut s, nr::LAYER_INFO, [1, 0x300, 0, 0]), (Action::Advance, 0));
        let want = LayerInfo { gpa: layout::LAYERS_BASE + 0x2000, len: 10, kind: 0, _pad: 0 };
        assert_eq!(&s.mem[0x300..0x318], want.as_bytes());
        assert_eq!(call4(&mut s, nr::LAYER_INFO, [2, 0x300, 0, 0]).1, INVALID, "past the last layer");
        assert_eq!(call4(&mut s, nr::LAYER_INFO, [u64::MAX, 0x300, 0, 0]).1, INVALID);
        assert_eq!(call4(&mut s, nr::LAYER_INFO, [0, MEM - 8, 0, 0]).1, FAULT);
        assert_eq!(call4(&mut s, nr::LAYER_INFO, [0, u64::MAX - 7, 0, 0]).1, FAULT);
        assert_eq!(s.mem[(MEM - 8) as usize], 0, "nothing written on a fault");
    }

    #[test]
    fn writes_to_the_layer_window_stop_the_vm() {
        let mut s = Fake::pod();
        let npf = |gpa, access, s: &mut Fake| {
            handle(&exit(ExitKind::NestedPageFault { gpa, access }), &mut GuestRegs::default(), s)
        };
        let base = layout::LAYERS_BASE;
        assert_eq!(
            npf(base + 8, Access::Write, &mut s),
            Action::Stop(StopReason::LayerWrite { gpa: base + 8 })
        );
        assert_eq!(
            npf(base + 8, Access::Read, &mut s),
            Action::Stop(StopReason::OutsideMemory { gpa: base + 8, access: Access::Read }),
            "a read fault in the window is past the layers"
        );
        let end = base + layout::LAYERS_SIZE;
        assert_eq!(
            npf(end, Access::Write, &mut s),
            Action::Stop(StopReason::OutsideMemory { gpa: end, access: Access::Write })
        );
        assert_eq!(
            npf(base - 1, Access::Write, &mut s),
            Action::Stop(StopReason::OutsideMemory { gpa: base - 1, access: Access::Write })
        );
    }

    #[test]
    fn simple_hypercalls() {
        let mut s = Fake::new();
        assert_eq!(call(&mut s, nr::VERSION, 0, 0), (Action::Advance, u64::from(ABI_VERSION)));
        assert_eq!(call(&mut s, nr::TIME_MONOTONIC, 0, 0), (Action::Advance, 1000));
        assert_eq!(call(&mut s, nr::TIME_WALL, 0, 0).1, 1_700_000_000_000_000_000);
        assert_eq!(call(&mut s, nr::EXIT, 0xffff_ffff_0000_002a, 0).0, Action::Exit(42));
        assert_eq!(call(&mut s, nr::EXIT, u64::MAX, 0).0, Action::Exit(-1));
        assert_eq!(call(&mut s, nr::YIELD, 0, 0), (Action::Yield, 0));
        assert_eq!(call(&mut s, nr::SLEEP_UNTIL, 5000, 0), (Action::Block { until_ns: Some(5000) }, 0));
        assert_eq!(call(&mut s, nr::SLEEP_UNTIL, 999, 0), (Action::Advance, 0), "already past");
        for n in [17, 100, u64::MAX, Error::Fault.to_raw()] {
            assert_eq!(call(&mut s, n, 0, 0), (Action::Advance, Error::NoSys.to_raw()));
        }
    }

    #[test]
    fn timer_arm_takes_a_deadline_and_a_vector_from_32() {
        let mut s = Fake::new();
        let arm = |deadline_ns: u64, vector: u8| Action::ArmTimer { deadline_ns, vector };
        assert_eq!(call(&mut s, nr::TIMER_ARM, 5_000, 0x20), (arm(5_000, 0x20), 0));
        assert_eq!(call(&mut s, nr::TIMER_ARM, 0, 32), (arm(0, 32), 0), "a deadline in the past");
        assert_eq!(call(&mut s, nr::TIMER_ARM, u64::MAX, 255), (arm(u64::MAX, 255), 0), "disarm");
        for bad in [0, 2, 14, 31, 256, 0x120, 1 << 32, u64::MAX] {
            assert_eq!(
                call(&mut s, nr::TIMER_ARM, 5_000, bad),
                (Action::Advance, INVALID),
                "vector {bad:#x}"
            );
        }
        // From guest user mode it is refused like every other call.
        let mut r = GuestRegs { rax: nr::TIMER_ARM, rdi: 5_000, rsi: 0x20, ..GuestRegs::default() };
        let a = handle(&exit(ExitKind::Hypercall { cpl: 3 }), &mut r, &mut s);
        assert_eq!((a, r.rax), (Action::Advance, Error::Denied.to_raw()));
        // An exit that cannot be skipped arms nothing.
        let mut r = GuestRegs { rax: nr::TIMER_ARM, rdi: 5_000, rsi: 0x20, ..GuestRegs::default() };
        let a =
            handle(&Exit { kind: ExitKind::Hypercall { cpl: 0 }, instr_len: 0, guest_ns: 0 }, &mut r, &mut s);
        assert_eq!(a, Action::Stop(StopReason::BadInstructionLength { len: 0 }));
    }

    #[test]
    fn vcpu_kick_takes_any_mask_and_no_vector_or_one_from_32() {
        let mut s = Fake::new();
        let kick = |mask: u64, vector: Option<u8>| Action::Kick { mask, vector };
        assert_eq!(call(&mut s, nr::VCPU_KICK, 0b10, 0), (kick(0b10, None), 0), "a wake only");
        assert_eq!(call(&mut s, nr::VCPU_KICK, 1, 32), (kick(1, Some(32)), 0), "the caller's own bit");
        assert_eq!(call(&mut s, nr::VCPU_KICK, u64::MAX, 255), (kick(u64::MAX, Some(255)), 0));
        assert_eq!(
            call(&mut s, nr::VCPU_KICK, 0, 0x20),
            (kick(0, Some(0x20)), 0),
            "no bit: nothing, no error"
        );
        for bad in [1, 2, 14, 31, 256, 0x120, 1 << 32, u64::MAX] {
            assert_eq!(
                call(&mut s, nr::VCPU_KICK, 0b11, bad),
                (Action::Advance, INVALID),
                "vector {bad:#x} kicks nothing"
            );
        }
        // From guest user mode it is refused like every other call.
        let mut r = GuestRegs { rax: nr::VCPU_KICK, rdi: 0b10, rsi: 0x20, ..GuestRegs::default() };
        let a = handle(&exit(ExitKind::Hypercall { cpl: 3 }), &mut r, &mut s);
        assert_eq!((a, r.rax), (Action::Advance, Error::Denied.to_raw()));
        // An exit that cannot be skipped kicks nothing.
        let mut r = GuestRegs { rax: nr::VCPU_KICK, rdi: 0b10, rsi: 0x20, ..GuestRegs::default() };
        let a =
            handle(&Exit { kind: ExitKind::Hypercall { cpl: 0 }, instr_len: 0, guest_ns: 0 }, &mut r, &mut s);
        assert_eq!(a, Action::Stop(StopReason::BadInstructionLength { len: 0 }));
        assert!(s.console.is_empty() && s.lines.is_empty());
    }

    #[test]
    fn console_write_checks_and_caps() {
        let mut s = Fake::new();
        s.mem[0x100..0x105].copy_from_slice(b"hello");
        assert_eq!(call(&mut s, nr::CONSOLE_WRITE, 0x100, 5), (Action::Advance, 5));
        assert_eq!(s.console, b"hello");
        assert_eq!(call(&mut s, nr::CONSOLE_WRITE, 0x100, 0), (Action::Advance, 0));
        assert_eq!(call(&mut s, nr::CONSOLE_WRITE, 0, 10_000).1, CONSOLE_WRITE_MAX);
        assert_eq!(s.console.len(), 5 + 4096);
        let before = s.console.len();
        for (p, l) in
            [(MEM, 1), (MEM - 1, 2), (u64::MAX, 1), (u64::MAX - 2, 10), (MEM - 100, 200), (1 << 63, 4)]
        {
            assert_eq!(call(&mut s, nr::CONSOLE_WRITE, p, l), (Action::Advance, FAULT), "({p:#x}, {l})");
        }
        // u64::MAX length is capped to 4096 and then fits.
        assert_eq!(call(&mut s, nr::CONSOLE_WRITE, 0, u64::MAX).1, 4096);
        assert_eq!(call(&mut s, nr::CONSOLE_WRITE, MEM - 1, 1).1, 1);
        assert_eq!(s.console.len(), before + 4097);
    }

    #[test]
    fn random_and_boot_params_write_only_inside_memory() {
        let mut s = Fake::new();
        assert_eq!(call(&mut s, nr::RANDOM, 0x200, 16), (Action::Advance, 16));
        assert!(s.mem[0x200..0x210].iter().all(|&b| b == 0x5a));
        assert_eq!(s.mem[0x210], 0);
        assert_eq!(call(&mut s, nr::RANDOM, 0, u64::MAX).1, RANDOM_MAX);
        assert_eq!(call(&mut s, nr::RANDOM, MEM - 8, 16).1, FAULT);
        assert_eq!(call(&mut s, nr::RANDOM, u64::MAX - 3, 8).1, FAULT);
        assert_eq!(s.mem[(MEM - 8) as usize], 0, "nothing written on a fault");
        let full = core::mem::size_of::<BootParams>() as u64;
        assert_eq!(call(&mut s, nr::BOOT_PARAMS, 0x1000, 1 << 20).1, full);
        assert_eq!(&s.mem[0x1000..0x1000 + full as usize], s.boot_params().as_bytes());
        assert_eq!(call(&mut s, nr::BOOT_PARAMS, 0x3000, 8).1, 8);
        assert_eq!(&s.mem[0x3000..0x3008], b"CRXBOOT1");
        assert_eq!(s.mem[0x3008], 0);
        assert_eq!(call(&mut s, nr::BOOT_PARAMS, MEM - 10, 100).1, FAULT);
        assert_eq!(call(&mut s, nr::BOOT_PARAMS, MEM - 10, 10).1, 10);
    }

    #[test]
    fn cpuid_policy() {
        let mut s = Fake::new();
        let q = |leaf: u32, sub: u32, s: &mut Fake| {
            let mut r =
                GuestRegs { rax: leaf as u64 | 0xdead_0000_0000, rcx: sub as u64, ..GuestRegs::default() };
            assert_eq!(handle(&exit(ExitKind::Cpuid), &mut r, s), Action::Advance);
            [r.rax, r.rbx, r.rcx, r.rdx]
        };
        let l1 = q(1, 0, &mut s);
        assert_eq!(l1[2] & (1 << 5), 0, "VMX hidden");
        assert_ne!(l1[2] & (1 << 31), 0, "hypervisor bit");
        assert_eq!(l1[2] & ((1 << 21) | (1 << 24) | (1 << 3)), 0);
        assert_ne!(l1[2] & (1 << 26), 0, "XSAVE kept with a host XCR0");
        assert_eq!(l1[3] & (1 << 9), 0, "no APIC");
        assert_eq!(q(0x8000_0001, 0, &mut s)[2] & 4, 0, "SVM hidden");
        let hv = q(CPUID_LEAF, 0, &mut s);
        assert_eq!(hv[0], 0x4000_0001);
        let mut sig = Vec::new();
        for r in &hv[1..] {
            sig.extend_from_slice(&(*r as u32).to_le_bytes());
        }
        assert_eq!(sig, b"CrxHvCrxHvCr");
        assert_eq!(q(0x4000_0001, 0, &mut s)[0], u64::from(ABI_VERSION));
        assert_eq!(q(0x4000_0010, 0, &mut s), [0; 4]);
        assert_eq!(q(0xd, 0, &mut s), [0b111, 0x340, 0x340, 0], "exactly the host XCR0");
        assert_eq!(q(0xd, 1, &mut s), [0b111, 0, 0, 0], "no XSAVES");
        assert_eq!(q(0xd, 2, &mut s), [0x100, 0x240, 0, 0]);
        assert_eq!(q(0xd, 3, &mut s), [0; 4], "a component outside XCR0");
        assert_eq!(q(0xd, 99, &mut s), [0; 4]);
        assert_eq!(q(0x20, 3, &mut s), [0x20, 3, 7, 9], "others pass through");
        s.xcr0 = 0;
        assert_eq!(q(1, 0, &mut s)[2] & ((1 << 26) | (1 << 28)), 0);
        assert_eq!(q(0xd, 0, &mut s), [0; 4]);
    }

    #[test]
    fn msr_policy() {
        let mut s = Fake::new();
        let rd = |index: u64, s: &mut Fake| {
            let mut r = GuestRegs { rcx: index, rax: 7, rdx: 7, ..GuestRegs::default() };
            let a = handle(&exit(ExitKind::Msr { write: false }), &mut r, s);
            (a, (r.rdx << 32) | r.rax)
        };
        assert_eq!(rd(0x10, &mut s), (Action::Advance, 0x1234_5678_9abc));
        assert_eq!(rd(0x1b, &mut s), (Action::Advance, 0));
        assert_eq!(rd(0x1a0, &mut s), (Action::Advance, 0));
        assert_eq!(rd(0x277, &mut s), (Action::Advance, msr::PAT_DEFAULT));
        let gp = Action::Inject { vector: 13, error_code: Some(0) };
        assert_eq!(rd(0xc000_0080, &mut s).0, gp);
        assert_eq!(rd(0x1_0000_0010, &mut s).0, Action::Advance, "the upper half of rcx is ignored");
        assert_eq!(rd(0xffff_ffff, &mut s).0, gp);
        let mut r = GuestRegs { rcx: 0x277, ..GuestRegs::default() };
        assert_eq!(handle(&exit(ExitKind::Msr { write: true }), &mut r, &mut s), gp);
    }

    #[test]
    fn every_other_exit_kind() {
        let mut s = Fake::new();
        let go = |k: ExitKind, s: &mut Fake| handle(&exit(k), &mut GuestRegs::default(), s);
        assert_eq!(go(ExitKind::Hlt, &mut s), Action::Block { until_ns: None });
        assert_eq!(go(ExitKind::Preempted, &mut s), Action::Resume);
        assert_eq!(
            go(ExitKind::Io { port: 0x3f8, size: 1, write: true, string: false }, &mut s),
            Action::Stop(StopReason::ForbiddenIo { port: 0x3f8 })
        );
        assert_eq!(
            go(ExitKind::NestedPageFault { gpa: u64::MAX, access: Access::Execute }, &mut s),
            Action::Stop(StopReason::OutsideMemory { gpa: u64::MAX, access: Access::Execute })
        );
        assert_eq!(go(ExitKind::TripleFault, &mut s), Action::Stop(StopReason::TripleFault));
        assert_eq!(go(ExitKind::Forbidden("vmxon"), &mut s), Action::Inject { vector: 6, error_code: None });
        assert_eq!(
            go(ExitKind::Exception { vector: 14, error_code: Some(2) }, &mut s),
            Action::Stop(StopReason::Exception { vector: 14 })
        );
        assert_eq!(go(ExitKind::EntryFailed("bad"), &mut s), Action::Stop(StopReason::EntryFailed("bad")));
        assert_eq!(
            go(ExitKind::Unknown { code: 0xfff, info: 1 }, &mut s),
            Action::Stop(StopReason::UnknownExit { code: 0xfff, info: 1 })
        );
        let xs = |rcx: u64, v: u64, s: &mut Fake| {
            let mut r = GuestRegs { rcx, rax: v & 0xffff_ffff, rdx: v >> 32, ..GuestRegs::default() };
            handle(&exit(ExitKind::Xsetbv), &mut r, s)
        };
        assert_eq!(xs(0, 0b111, &mut s), Action::Advance);
        assert_eq!(xs(0, 0b11, &mut s), Action::Inject { vector: 6, error_code: None });
        assert_eq!(xs(1, 0b111, &mut s), Action::Inject { vector: 6, error_code: None });
        assert_eq!(xs(0, 0b111 | (1 << 40), &mut s), Action::Inject { vector: 6, error_code: None });
    }

    #[test]
    fn instruction_exits_without_a_length_stop_the_vm() {
        let mut s = Fake::new();
        s.mem[0..2].copy_from_slice(b"hi");
        for len in [0u8, 16, 255] {
            for kind in [
                ExitKind::Hypercall { cpl: 0 },
                ExitKind::Cpuid,
                ExitKind::Hlt,
                ExitKind::Msr { write: false },
            ] {
                let mut r = GuestRegs { rax: nr::CONSOLE_WRITE, rdi: 0, rsi: 2, ..GuestRegs::default() };
                let a = handle(&Exit { kind, instr_len: len, guest_ns: 0 }, &mut r, &mut s);
                assert_eq!(a, Action::Stop(StopReason::BadInstructionLength { len }), "{kind:?} len {len}");
                assert_eq!(r.rax, nr::CONSOLE_WRITE, "nothing done");
            }
        }
        assert!(s.console.is_empty(), "a write that cannot be skipped is not printed");
        // Exits that are not instructions carry no length.
        let a = handle(
            &Exit { kind: ExitKind::Preempted, instr_len: 0, guest_ns: 0 },
            &mut GuestRegs::default(),
            &mut s,
        );
        assert_eq!(a, Action::Resume);
        let mut r = GuestRegs { rax: nr::VERSION, ..GuestRegs::default() };
        let a = handle(
            &Exit { kind: ExitKind::Hypercall { cpl: 0 }, instr_len: 15, guest_ns: 0 },
            &mut r,
            &mut s,
        );
        assert_eq!(a, Action::Advance);
    }

    #[test]
    fn xcr0_takes_x87_sse_avx_only() {
        assert_eq!(xcr0_for(0x2ff), 0b111);
        assert_eq!(xcr0_for(0b011), 0b011);
        assert_eq!(xcr0_for(0b101), 0b001, "AVX without SSE is not enabled");
        assert_eq!(xcr0_for(0), 1);
    }
}
