//! The kernel's interrupt vectors: which vector each interrupt source is programmed with.
//! A leaf, so that the IDT (`interrupts`) and the interrupt controllers (`apic`) that
//! both need the numbers do not need each other for them.

/// First vector the (remapped, masked) legacy PICs could raise; 16 vectors follow.
pub const PIC_VECTOR_BASE: u8 = 0x20;
/// Local APIC timer.
pub const TIMER_VECTOR: u8 = 0x40;
/// Wake-up IPI: an AP leaves `hlt` and checks its job mailbox.
pub const WAKE_VECTOR: u8 = 0x41;
/// Local APIC spurious interrupts (low nibble all ones, as older APICs require).
pub const SPURIOUS_VECTOR: u8 = 0xff;
