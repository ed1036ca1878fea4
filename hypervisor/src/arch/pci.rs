//! PCI configuration space through configuration mechanism #1 (ports 0xCF8/0xCFC), and
//! the boot-time scan over it; what a scan finds is decided by the pure [`crate::pci`].

use crate::pci::{scan, Bdf, ConfigSpace, Scan};
use crate::selftest::{Test, Verdict};

/// Configuration mechanism #1 through I/O ports.
pub struct PortConfig;

/// Serializes the address/data port pair between CPUs.
static PORTS: spin::Mutex<()> = spin::Mutex::new(());

fn address(bdf: Bdf, offset: u8) -> u32 {
    0x8000_0000u32
        | u32::from(bdf.bus) << 16
        | u32::from(bdf.device & 0x1f) << 11
        | u32::from(bdf.function & 0x7) << 8
        | u32::from(offset & 0xfc)
}

impl ConfigSpace for PortConfig {
    fn read32(&self, bdf: Bdf, offset: u8) -> u32 {
        use x86_64::instructions::port::Port;
        let mut addr = Port::<u32>::new(0xcf8);
        let mut data = Port::<u32>::new(0xcfc);
        x86_64::instructions::interrupts::without_interrupts(|| {
            let _held = PORTS.lock();
            // SAFETY: 0xCF8/0xCFC are the PCI configuration ports on every PC chipset; the
            // pair is used under a lock with interrupts off so no other access interleaves,
            // and reading configuration registers has no side effects.
            unsafe {
                addr.write(address(bdf, offset));
                data.read()
            }
        })
    }

    fn write32(&self, bdf: Bdf, offset: u8, value: u32) {
        use x86_64::instructions::port::Port;
        let mut addr = Port::<u32>::new(0xcf8);
        let mut data = Port::<u32>::new(0xcfc);
        x86_64::instructions::interrupts::without_interrupts(|| {
            let _held = PORTS.lock();
            // SAFETY: as in `read32`; the callers (`crate::pci`'s BAR sizing and command
            // register helpers, the NIC drivers) write only registers of a function they
            // own, and memory decoding is off while a BAR holds a sizing pattern.
            unsafe {
                addr.write(address(bdf, offset));
                data.write(value);
            }
        })
    }
}

static FOUND: spin::Once<Scan> = spin::Once::new();

/// Scans the PCI buses and logs every function found.
pub fn enumerate() -> &'static Scan {
    FOUND.call_once(|| {
        let s = scan(&PortConfig);
        for f in &s.functions {
            log::info!("{f}");
        }
        if s.more > 0 {
            log::warn!("{} more functions not recorded", s.more);
        }
        log::info!("{} functions", s.functions.len() + s.more);
        s
    })
}

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[Test { name: "pci", in_all: true, run: selftest_pci }];

fn selftest_pci() -> Verdict {
    let s = scan(&PortConfig);
    let Some(first) = s.functions.first() else { return Err("no PCI function answered") };
    if first.bdf != (Bdf { bus: 0, device: 0, function: 0 }) || (first.class, first.subclass) != (0x06, 0x00)
    {
        return Err("00:00.0 is not a host bridge");
    }
    if enumerate().functions.len() != s.functions.len() {
        return Err("a second scan found a different number of functions");
    }
    Ok(())
}
