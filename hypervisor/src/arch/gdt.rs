//! GDT and TSS per CPU, with IST stacks for faults that must not use the current stack.

/// Loads this CPU's GDT and TSS (the bootstrap CPU, before memory is set up).
pub fn init_bsp() {}
