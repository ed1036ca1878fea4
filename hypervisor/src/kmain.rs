//! The kernel's main line: bring the machine up in order, print the ready line, then
//! either run self-tests or idle.

use crate::arch::{acpi, apic, console, cpu, gdt, interrupts, pci, power, smp, time};
use crate::selftest::Verdict;
use crate::{cmdline, kprintln, logger, mm, selftest};
use boot::BootInfo;
use log::{error, info, warn};

/// The 64-bit entry point, called by `boot` with the normalized boot information.
pub fn kmain(boot: &'static BootInfo) -> ! {
    console::init();
    let parsed = cmdline::parse(&boot.cmdline);
    logger::init(parsed.options.log);
    let hz = time::calibrate();
    info!(
        "booted via {} (loader \"{}\"), cmdline \"{}\"",
        boot.protocol.name(),
        boot.loader_name,
        boot.cmdline
    );
    info!("tsc {} MHz", hz / 1_000_000);
    for w in &parsed.warnings {
        warn!("cmdline: {w}");
    }
    if parsed.more_warnings > 0 {
        warn!("cmdline: {} more malformed words ignored", parsed.more_warnings);
    }
    if boot.warnings > 0 {
        warn!("boot: {} malformed or excess loader entries dropped", boot.warnings);
    }
    if boot.memory_map.is_empty() {
        error!("boot: the loader gave no memory map (protocol {:?}); cannot continue", boot.protocol);
        power::exit(power::ExitCode::Failure);
    }
    for r in &boot.memory_map {
        log::debug!("memory {:#012x}-{:#012x} {:?}", r.start, r.end, r.kind);
    }

    gdt::init_bsp();
    interrupts::init();
    apic::init_bsp(parsed.options.timer);
    let mem = match mm::init(boot) {
        Ok(m) => m,
        Err(e) => {
            error!("memory: {e}");
            power::exit(power::ExitCode::Failure);
        }
    };
    let platform = match acpi::discover(boot.rsdp) {
        Ok(p) => p,
        Err(e) => {
            warn!("acpi: {e}; running on the bootstrap CPU only");
            acpi::Platform::default()
        }
    };
    let cpus = smp::start_aps(&platform, parsed.options.max_cpus);
    pci::enumerate();

    let memory_mib = mem.usable_bytes / (1024 * 1024);
    kprintln!("hypervisor ready: cpus={} memory={} MiB virt={}", cpus, memory_mib, cpu::virt().name());

    if let Some(sel) = parsed.options.selftest {
        selftest::run(SELFTESTS, sel);
    }
    crate::vm::manager::set_node_services(crate::agent::poll);
    let cluster = crate::node::config(boot);
    crate::net::node::start(&parsed.options, cluster.as_ref());
    // A node of a cluster runs its pods as VMs, unless the boot modules bring VMs to run.
    let runs_pods =
        cluster.is_some() && !crate::vm::manager::has_guest(boot) && !matches!(cpu::virt(), cpu::Virt::None);
    if let Some(c) = &cluster {
        let store = crate::node::image_store(boot);
        let free_kib = (crate::mm::free_frames() as u64) * 4;
        let cap = crate::agent::Capacity {
            cpus,
            memory_kib: memory_mib * 1024,
            allocatable_kib: free_kib.saturating_sub(crate::vm::memory::HOST_RESERVE_BYTES >> 10),
            pods: if runs_pods { crate::agent::MAX_PODS } else { 0 },
        };
        crate::agent::start(c, cap, store);
    }
    if crate::vm::manager::has_guest(boot) {
        crate::vm::manager::run(boot, &parsed.options);
    }
    if runs_pods {
        let why = crate::vm::manager::serve_node();
        kprintln!("node: cannot run pod VMs: {why}");
    }
    loop {
        crate::agent::poll();
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// Self-tests of the main line.
static KMAIN: &[selftest::Test] = &[
    selftest::Test { name: "cmdline", in_all: true, run: selftest_cmdline },
    selftest::Test { name: "time", in_all: true, run: selftest_time },
];

/// Every module's self-tests, in the order `all` runs them.
static SELFTESTS: &[&[selftest::Test]] = &[
    KMAIN,
    crate::mm::SELFTESTS,
    crate::arch::acpi::SELFTESTS,
    crate::arch::interrupts::SELFTESTS,
    crate::arch::apic::SELFTESTS,
    crate::arch::smp::SELFTESTS,
    crate::arch::pci::SELFTESTS,
    crate::net::virtio::SELFTESTS,
    crate::net::e1000::SELFTESTS,
    crate::virt::vmx::SELFTESTS,
    crate::vm::selftests::SELFTESTS,
    crate::virt::svm::SELFTESTS,
];

/// The panic handler's body: report and end the run with a failing status.
pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::write_fmt_emergency(format_args!(
        "\nKERNEL PANIC on cpu{}: {}\n",
        crate::arch::percpu::cpu_index(),
        info
    ));
    power::exit(power::ExitCode::Failure)
}

/// The command-line parser copes with garbage on the real target too.
pub fn selftest_cmdline() -> Verdict {
    let p = cmdline::parse("log=debug bogus=1 =x selftest=all");
    if p.options.log != cmdline::LogLevel::Debug || p.warnings.len() != 2 {
        return Err("parser verdicts differ from the host's");
    }
    Ok(())
}

/// The TSC is calibrated and monotonic.
pub fn selftest_time() -> Verdict {
    if time::tsc_hz() < 1_000_000 {
        return Err("TSC frequency not calibrated");
    }
    let a = time::now_ns();
    time::spin_ns(1_000_000);
    let b = time::now_ns();
    if b < a + 1_000_000 {
        return Err("1 ms spin took less than 1 ms of TSC time");
    }
    Ok(())
}
