//! Ending a run: emulator exit devices, then a halt.

use x86_64::instructions::port::Port;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything asked for passed. QEMU exits with status 33.
    Success = 0x10,
    /// Something failed. QEMU exits with status 35.
    Failure = 0x11,
}

/// Ends the run. Under QEMU the `isa-debug-exit` device (port 0xF4) exits with
/// `(code << 1) | 1`; under Bochs the string "Shutdown" to port 0x8900 stops the emulator.
/// Elsewhere (real hardware) the CPU halts with interrupts off.
pub fn exit(code: ExitCode) -> ! {
    crate::arch::console::write_fmt_emergency(format_args!(""));
    let mut debug_exit = Port::<u32>::new(0xf4);
    // SAFETY: 0xF4 is the debug-exit device in our QEMU configuration; elsewhere the port
    // is unused by any device we drive and the write is dropped.
    unsafe { debug_exit.write(code as u32) };
    let mut bochs = Port::<u8>::new(0x8900);
    for b in b"Shutdown" {
        // SAFETY: 0x8900 is Bochs' shutdown port; nothing else decodes it.
        unsafe { bochs.write(*b) };
    }
    halt_forever()
}

/// Disables interrupts and halts this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
