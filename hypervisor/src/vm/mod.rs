//! Virtual machines above the hardware: the vendor-neutral vCPU state and exit
//! ([`exit`]), the policy that handles exits ([`handler`]), and everything a VM is made
//! of: its memory ([`memory`]), loaded image ([`loader`]), consoles ([`console`]), pod
//! ([`pod`]), clock and random bytes ([`clock`], [`rng`]), its place on the CPUs
//! ([`sched`]), each vCPU's one-shot timer ([`timer`]) and its set-up from the guest
//! module ([`setup`]). All of these are pure and tested on the host.
//!
//! Built only for the kernel target: `services` (one VM's record and the
//! [`handler::Services`] the policy reaches the machine through), `manager` (the per-CPU
//! loop that runs vCPUs under one world lock) and `selftests` (`vmleak`). The VT-x and
//! AMD-V backends (`crate::virt`) turn their raw exits into [`Exit`] and apply the
//! [`Action`] that comes back.

pub mod clock;
pub mod console;
pub mod exit;
pub mod handler;
pub mod loader;
#[cfg(target_os = "none")]
pub mod manager;
pub mod memory;
pub mod pod;
pub mod podlog;
pub mod podspec;
pub mod rng;
pub mod sched;
#[cfg(target_os = "none")]
pub mod selftests;
#[cfg(target_os = "none")]
pub mod services;
pub mod setup;
pub mod timer;

pub use exit::{Access, Action, Exit, ExitKind, GuestRegs, InitialState, NestedFormat, Segment, StopReason};
