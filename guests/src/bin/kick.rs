//! Two vCPUs and `VCPU_KICK` (crx-abi 6); run with `vm.vcpus=2`. Every vCPU runs `run`:
//! vCPU 0 drives, vCPU 1 is kicked. In order:
//!
//! 1. vCPU 1 checks that it started as vCPU 1 (RSI) on its own stack, one
//!    `VCPU_STACK_BYTES` below vCPU 0's, then sleeps with `SLEEP_UNTIL(u64::MAX)`, [`ROUNDS`]
//!    times. vCPU 0 sees it go to sleep each time, waits (150 ms the first time, when it
//!    also checks that kicks with a bad vector are refused and that bits of vCPUs the VM
//!    lacks wake nobody; then 5 to 15 ms), kicks it with vector 0 and waits for the count
//!    vCPU 1 keeps of its wakes (`kick: vcpu1 woken 20 times`). No sleep may return
//!    before its kick.
//! 2. vCPU 1 installs an IDT and spins with IF = 1, making no hypercall until an interrupt
//!    has come (then it notes the time and kicks vCPU 0 back); vCPU 0 kicks it with the
//!    timer's vector [`ROUNDS`] times, each time waiting for its handler's count
//!    (`kick: vcpu1 interrupted 20 times`).
//! 3. Those kicks found vCPU 1 running, so they left vCPU 1 a wake: vCPU 1's next sleep
//!    (2 s) returns at once. Then vCPU 0 kicks it twice while it runs, before it sleeps:
//!    the next 2 s sleep returns at once, and the one after (200 ms) takes its time (the
//!    two kicks were one wake).
//!
//! vCPU 0 sleeps while it waits (vCPU 1 kicks it back at each step), so that the emulator
//! gives its time to vCPU 1. Promptness: the median time from a kick to the wake, and to
//! the interrupt, must be under [`PROMPT_NS`]. The kicks fall at every point of the host's
//! 10 ms ticks, so without a host IPI each would wait for the target CPU's next tick (a
//! median near 5 ms).
//!
//! vCPU 0 prints the latencies it saw and `kick ok: ...` and exits 0, or says what failed
//! and exits 1 (each wait gives up after 5 s).
//!
//! `kick=self` and `kick=all` make it hostile instead, for good: vCPU 0 kicks itself with
//! the timer's vector in a loop with IF = 1 (an interrupt after every call; it prints
//! `kick: 1000 interrupts from its own kicks`) while vCPU 1 kicks itself with vector 0 and
//! sleeps in a loop (every sleep returns at once); or vCPU 0 kicks every vCPU
//! (`mask = u64::MAX`) with the timer's vector in a loop with IF = 0, while vCPU 1 spins with
//! IF = 1 taking the interrupts (it prints `kick: 1000 interrupts from kicks`).
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use crx_abi::{layout, Error};
use guests::cpu::{install_trap_idt, TICKS, TIMER};
use guests::{gprintln, guest_main, Guest};

guest_main!(run, every_vcpu);

const MS: u64 = 1_000_000;
/// How long vCPU 0 waits for any one step of vCPU 1 (vCPU 1 kicks it at each).
const WAIT_NS: u64 = 5_000 * MS;
/// A sleep that only a kick (or a kept wake) ends early.
const LONG_SLEEP_NS: u64 = 2_000 * MS;
/// What "returns at once" allows.
const AT_ONCE_NS: u64 = 1_000 * MS;
/// A sleep no kick ends.
const SHORT_SLEEP_NS: u64 = 200 * MS;
/// Kicks in steps 1 and 2.
const ROUNDS: usize = 20;
/// The median latency a prompt kick stays under.
const PROMPT_NS: u64 = 2_500_000;
/// Interrupts the hostile modes count before they say so.
const STORM: u64 = 1000;

/// How far vCPU 1 got (one of the step constants below).
static STAGE: AtomicU32 = AtomicU32::new(0);
const STARTED: u32 = 1;
const SPINNING: u32 = 2;
const AWAITING_KICKS: u32 = 3;
const DONE: u32 = 4;
/// Step 1: sleeps vCPU 1 has begun, kicks vCPU 0 has sent it, sleeps that have ended.
static SLEEPS: AtomicU64 = AtomicU64::new(0);
static KICKS: AtomicU64 = AtomicU64::new(0);
static WAKES: AtomicU64 = AtomicU64::new(0);
/// Step 1: sleeps of vCPU 1 that returned before their kick.
static EARLY: AtomicU64 = AtomicU64::new(0);
/// When vCPU 1 woke (step 1) and when it saw each interrupt (step 2), monotonic ns.
static WOKE_AT: [AtomicU64; ROUNDS] = [const { AtomicU64::new(0) }; ROUNDS];
static SEEN_AT: [AtomicU64; ROUNDS] = [const { AtomicU64::new(0) }; ROUNDS];
/// vCPU 1 failed a check of its own (then it prints why and parks).
static FAILED: AtomicBool = AtomicBool::new(false);
/// vCPU 0 has kicked for step 3.
static KICKED: AtomicBool = AtomicBool::new(false);
/// How long vCPU 1's step-3 sleeps took: the kept wake of step 2, the two of step 3.
static SLEPT: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

const VCPU0: u64 = 0b01;
const VCPU1: u64 = 0b10;

fn run(guest: &Guest) -> i32 {
    let mode = guest.arg("kick").unwrap_or("test");
    if guest.vcpus() < 2 {
        gprintln!(guest, "kick: needs 2 vCPUs, the VM has {}", guest.vcpus());
        return 2;
    }
    match (mode, guest.vcpu()) {
        ("self", 0) => self_storm(guest),
        ("self", 1) => loop {
            let _ = guest.kick(VCPU1, 0);
            let _ = guest.sleep_until(u64::MAX);
        },
        ("all", 0) => loop {
            let _ = guest.kick(u64::MAX, u64::from(TIMER));
        },
        ("all", 1) => storm_target(guest),
        ("test", 0) => match drive(guest) {
            Ok(()) => 0,
            Err(why) => {
                gprintln!(guest, "kick: {why}");
                1
            }
        },
        ("test", 1) => {
            if let Err(why) = kicked(guest) {
                gprintln!(guest, "kick: vcpu1: {why}");
                FAILED.store(true, Ordering::SeqCst);
                let _ = guest.kick(VCPU0, 0);
            }
            guest.park()
        }
        _ => guest.park(),
    }
}

fn now(guest: &Guest) -> u64 {
    guest.monotonic_ns().unwrap_or(0)
}

/// Sleeps `ns` whatever wakes this vCPU meanwhile.
fn sleep_for(guest: &Guest, ns: u64) {
    let end = now(guest).saturating_add(ns);
    while now(guest) < end {
        let _ = guest.sleep_until(end);
    }
}

/// Spins `ns` (keeping the vCPU running).
fn spin_for(guest: &Guest, ns: u64) {
    let end = now(guest).saturating_add(ns);
    while now(guest) < end {
        core::hint::spin_loop();
    }
}

/// Before kick `i`: a sleep of `ns` (so that vCPU 1 is surely asleep or spinning), then a
/// spin of a different 0 to 10 ms each time, so that the kicks fall at every point of the
/// host CPUs' 10 ms ticks (a sleep ends at a tick).
fn before_kick(guest: &Guest, i: u64, ns: u64) {
    sleep_for(guest, ns);
    spin_for(guest, i.wrapping_mul(3_700_000) % (10 * MS));
}

/// vCPU 0 sleeps until `done` (vCPU 1 kicks it when it has done something), at most
/// [`WAIT_NS`]. Sleeping, not spinning, leaves the emulator's time to vCPU 1.
fn wait_kicked(guest: &Guest, what: &str, done: impl Fn() -> bool) -> Result<(), &'static str> {
    let t0 = now(guest);
    while !done() {
        if FAILED.load(Ordering::SeqCst) {
            return Err("vcpu1 failed (see its line)");
        }
        let t = now(guest);
        if t.saturating_sub(t0) > WAIT_NS {
            gprintln!(guest, "kick: gave up waiting for {what}");
            return Err("a step did not happen within 5 s");
        }
        let _ = guest.sleep_until(t0 + WAIT_NS);
    }
    Ok(())
}

fn stage_is(stage: u32) -> impl Fn() -> bool {
    move || STAGE.load(Ordering::SeqCst) >= stage
}

/// The median of the latencies `at[i] - sent[i]`, after printing them (in us) under `what`.
fn median(guest: &Guest, what: &str, sent: &[u64; ROUNDS], at: &[AtomicU64; ROUNDS]) -> u64 {
    let mut lat = [0u64; ROUNDS];
    for ((l, s), a) in lat.iter_mut().zip(sent).zip(at) {
        *l = a.load(Ordering::SeqCst).saturating_sub(*s);
    }
    gprintln!(guest, "kick: {what} latencies {:?} us", lat.map(|l| l / 1000));
    lat.sort_unstable();
    lat[ROUNDS / 2]
}

/// vCPU 0.
fn drive(guest: &Guest) -> Result<(), &'static str> {
    if guest.version() != Ok(u64::from(crx_abi::ABI_VERSION)) || crx_abi::ABI_VERSION < 6 {
        return Err("the hypervisor does not speak crx-abi 6");
    }
    // Step 1: wake it from its sleeps.
    let mut sent = [0u64; ROUNDS];
    for (i, t) in (1..).zip(sent.iter_mut()) {
        wait_kicked(guest, "vcpu1 to sleep", || SLEEPS.load(Ordering::SeqCst) >= i)?;
        if i == 1 {
            // Let it block for good, then try kicks that must not wake it.
            sleep_for(guest, 100 * MS);
            for bad in [1u64, 31, 256, u64::MAX] {
                if guest.kick(VCPU1, bad) != Err(Error::Invalid) {
                    return Err("a kick with a bad vector was not refused");
                }
            }
            if guest.kick(!(VCPU0 | VCPU1), 0) != Ok(0) {
                return Err("a kick naming only vCPUs the VM lacks was refused");
            }
            sleep_for(guest, 50 * MS);
            if WAKES.load(Ordering::SeqCst) != 0 || EARLY.load(Ordering::SeqCst) != 0 {
                return Err("vcpu1 woke from a kick that was refused or not for it");
            }
            gprintln!(guest, "kick: bad vectors refused");
        }
        before_kick(guest, i, 5 * MS);
        KICKS.store(i, Ordering::SeqCst);
        *t = now(guest);
        if guest.kick(VCPU1, 0) != Ok(0) {
            return Err("VCPU_KICK(vcpu1, 0) failed");
        }
        wait_kicked(guest, "vcpu1 to wake", || WAKES.load(Ordering::SeqCst) >= i)?;
    }
    if EARLY.load(Ordering::SeqCst) != 0 {
        return Err("vcpu1's SLEEP_UNTIL(u64::MAX) returned before its kick");
    }
    let wake_ns = median(guest, "wake", &sent, &WOKE_AT);
    // Step 2: interrupt it while it spins.
    wait_kicked(guest, "vcpu1 to spin", stage_is(SPINNING))?;
    sleep_for(guest, 20 * MS);
    if TICKS.load(Ordering::SeqCst) != 0 {
        return Err("vcpu1 was interrupted before its kick");
    }
    for (i, t) in (1..).zip(sent.iter_mut()) {
        before_kick(guest, i, 3 * MS);
        *t = now(guest);
        if guest.kick(VCPU1, u64::from(TIMER)) != Ok(0) {
            return Err("VCPU_KICK(vcpu1, TIMER) failed");
        }
        wait_kicked(guest, "vcpu1's interrupt", || TICKS.load(Ordering::SeqCst) >= i)?;
    }
    wait_kicked(guest, "vcpu1 to see its interrupts", || SEEN_AT[ROUNDS - 1].load(Ordering::SeqCst) != 0)?;
    let irq_ns = median(guest, "interrupt", &sent, &SEEN_AT);
    // Step 3: two kicks before it sleeps.
    wait_kicked(guest, "vcpu1 to wait for the kicks", stage_is(AWAITING_KICKS))?;
    for _ in 0..2 {
        if guest.kick(VCPU1, 0) != Ok(0) {
            return Err("VCPU_KICK(vcpu1, 0) failed");
        }
    }
    KICKED.store(true, Ordering::SeqCst);
    wait_kicked(guest, "vcpu1's last sleeps", stage_is(DONE))?;
    let slept = SLEPT.each_ref().map(|s| s.load(Ordering::SeqCst));
    if slept[0] >= AT_ONCE_NS {
        return Err("the wake the interrupting kicks left did not end vcpu1's next sleep at once");
    }
    if slept[1] >= AT_ONCE_NS {
        return Err("a kick before vcpu1 slept did not end its sleep at once");
    }
    if slept[2] < SHORT_SLEEP_NS {
        return Err("two kicks left more than one wake");
    }
    if TICKS.load(Ordering::SeqCst) != ROUNDS as u64 {
        return Err("vcpu1 took an interrupt no kick asked for");
    }
    if wake_ns >= PROMPT_NS || irq_ns >= PROMPT_NS {
        return Err("kicks were not prompt (median latency of 2.5 ms or more)");
    }
    gprintln!(
        guest,
        "kick ok: median wake {} us, median interrupt {} us, kept wakes {} us and {} us, then slept {} ms",
        wake_ns / 1000,
        irq_ns / 1000,
        slept[0] / 1000,
        slept[1] / 1000,
        slept[2] / MS
    );
    Ok(())
}

/// vCPU 1 in the test.
fn kicked(guest: &Guest) -> Result<(), &'static str> {
    let rsp: u64;
    // SAFETY: reading the stack pointer has no effect.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    let top = guest.params().stack_top;
    let own = top - layout::VCPU_STACK_BYTES;
    if guest.vcpu() != 1 || !(own - layout::VCPU_STACK_BYTES..own).contains(&rsp) {
        return Err("vcpu1 did not start with RSI = 1 on the stack below vcpu0's");
    }
    STAGE.store(STARTED, Ordering::SeqCst);
    // Step 1: each sleep ends at vCPU 0's kick, and vCPU 0 is kicked back.
    for (i, at) in (1..).zip(&WOKE_AT) {
        SLEEPS.store(i, Ordering::SeqCst);
        let _ = guest.kick(VCPU0, 0);
        loop {
            guest.sleep_until(u64::MAX).map_err(|_| "SLEEP_UNTIL failed")?;
            if KICKS.load(Ordering::SeqCst) >= i {
                break;
            }
            EARLY.fetch_add(1, Ordering::SeqCst);
        }
        at.store(now(guest), Ordering::SeqCst);
        WAKES.store(i, Ordering::SeqCst);
        let _ = guest.kick(VCPU0, 0);
    }
    gprintln!(guest, "kick: vcpu1 woken {ROUNDS} times");
    // Step 2: interruptible code that makes no hypercall until an interrupt has come.
    // SAFETY: at CPL 0, once, on this vCPU only; nothing else installs an IDT.
    unsafe { install_trap_idt() };
    STAGE.store(SPINNING, Ordering::SeqCst);
    let _ = guest.kick(VCPU0, 0);
    // SAFETY: the IDT just loaded has the timer's gate; this code can be interrupted.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    let mut seen = 0;
    while seen < ROUNDS {
        let ticks = usize::try_from(TICKS.load(Ordering::SeqCst)).unwrap_or(usize::MAX);
        if ticks > seen {
            let t = now(guest);
            for at in SEEN_AT.get(seen..ticks.min(ROUNDS)).unwrap_or_default() {
                at.store(t, Ordering::SeqCst);
            }
            seen = ticks;
            let _ = guest.kick(VCPU0, 0);
        }
        core::hint::spin_loop();
    }
    gprintln!(guest, "kick: vcpu1 interrupted {ROUNDS} times");
    // Step 3.
    let sleep = |i: usize, ns: u64| {
        let t0 = now(guest);
        let _ = guest.sleep_until(t0 + ns);
        SLEPT[i].store(now(guest).saturating_sub(t0), Ordering::SeqCst);
    };
    sleep(0, LONG_SLEEP_NS);
    STAGE.store(AWAITING_KICKS, Ordering::SeqCst);
    let _ = guest.kick(VCPU0, 0);
    while !KICKED.load(Ordering::SeqCst) {
        core::hint::spin_loop();
    }
    sleep(1, LONG_SLEEP_NS);
    sleep(2, SHORT_SLEEP_NS);
    STAGE.store(DONE, Ordering::SeqCst);
    let _ = guest.kick(VCPU0, 0);
    Ok(())
}

/// vCPU 0 with `kick=self`.
fn self_storm(guest: &Guest) -> ! {
    // SAFETY: at CPL 0, once, on this vCPU only.
    unsafe { install_trap_idt() };
    // SAFETY: the IDT has the timer's gate.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    gprintln!(guest, "kick: kicking itself");
    let mut said = false;
    loop {
        let _ = guest.kick(VCPU0, u64::from(TIMER));
        if !said && TICKS.load(Ordering::SeqCst) >= STORM {
            said = true;
            gprintln!(guest, "kick: {STORM} interrupts from its own kicks");
        }
    }
}

/// vCPU 1 with `kick=all`.
fn storm_target(guest: &Guest) -> ! {
    // SAFETY: at CPL 0, once, on this vCPU only (vCPU 0 keeps IF = 0 and no IDT).
    unsafe { install_trap_idt() };
    // SAFETY: the IDT has the timer's gate.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    gprintln!(guest, "kick: taking kicks");
    while TICKS.load(Ordering::SeqCst) < STORM {
        core::hint::spin_loop();
    }
    gprintln!(guest, "kick: {STORM} interrupts from kicks");
    loop {
        core::hint::spin_loop();
    }
}
