//! The `vmleak` self-test: VMs created and destroyed in a loop give back every frame.
#![forbid(unsafe_code)]

use super::loader::{self, LoadSpec};
use super::memory::GuestMemory;
use super::sched::SLICE_NS;
use crate::arch::fpu;
use crate::kprintln;
use crate::mm::direct::KernelFrames;
use crate::selftest::{Test, Verdict};
use crate::virt::{self, Backend};

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
pub static SELFTESTS: &[Test] = &[Test { name: "vmleak", in_all: true, run: selftest_vmleak }];
