//! Pure x86 formats and arithmetic: exception vectors and their reports, IDT gate
//! encoding, frame-pointer walks, MADT entries, local APIC register encodings and timer
//! arithmetic, the TSC's calibration against the PIT. Nothing here touches the hardware, so all of it is tested on the host; the
//! hardware modules under `arch` feed it values read from the machine.
//!
//! Intel SDM section numbers here and under `arch` follow the editions from 2023 on, where
//! the APIC is chapter 11 and multiple-processor initialization is section 9.4 (chapters 10
//! and 8 in older editions).
//!
//! No-panic contract: every function here accepts any input (firmware bytes, register
//! values, memory a walk reads) and answers with a value or a typed error.
#![forbid(unsafe_code)]

pub mod apic;
pub mod exception;
pub mod madt;
pub mod pit;
