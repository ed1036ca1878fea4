//! Virtual machines above the hardware: the vendor-neutral vCPU state and exit, and the
//! policy that handles exits. Everything here is pure and tested on the host; the VT-x
//! and AMD-V backends (`crate::virt`) turn their raw exits into [`Exit`] and apply the
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
pub mod sched;

pub use exit::{Access, Action, Exit, ExitKind, GuestRegs, InitialState, NestedFormat, Segment, StopReason};
