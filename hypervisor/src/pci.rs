//! PCI enumeration: the scan and the decoding, pure: they read configuration space through
//! [`ConfigSpace`], so they run on the host over a made-up bus. A function whose vendor ID
//! reads 0xFFFF is absent. Bridges are not followed specially: all 256 buses are probed,
//! device 0 function 0 first, other functions only when the header says multi-function.
//! The configuration ports are `crate::arch::pci`'s.
#![forbid(unsafe_code)]

use core::fmt;

/// Most functions recorded; more are counted in [`Scan::more`].
pub const MAX_FUNCTIONS: usize = 128;

/// Bus, device, function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus 0-255.
    pub bus: u8,
    /// Device 0-31.
    pub device: u8,
    /// Function 0-7.
    pub function: u8,
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Reads and writes configuration space.
pub trait ConfigSpace {
    /// Reads the aligned dword at `offset` (0..=252, a multiple of 4) of `bdf`.
    fn read32(&self, bdf: Bdf, offset: u8) -> u32;
    /// Writes the aligned dword at `offset` (0..=252, a multiple of 4) of `bdf`.
    fn write32(&self, bdf: Bdf, offset: u8, value: u32);
}

/// Offset of the command (low half) and status (high half) registers.
pub const COMMAND: u8 = 0x04;
/// Offset of BAR 0; BAR n is at `BAR0 + 4 * n` (n < 6 in a type-0 header).
pub const BAR0: u8 = 0x10;
/// Offset of the interrupt line (low byte) and pin (next byte).
pub const INTERRUPT: u8 = 0x3c;

bitflags::bitflags! {
    /// Bits of the command register.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Command: u16 {
        /// Decode I/O space BARs.
        const IO = 1 << 0;
        /// Decode memory space BARs.
        const MEMORY = 1 << 1;
        /// Let the function master the bus (DMA).
        const BUS_MASTER = 1 << 2;
        /// Do not signal legacy INTx interrupts.
        const INTX_DISABLE = 1 << 10;
    }
}

/// One decoded base address register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar {
    /// A memory window.
    Memory {
        /// Physical base address.
        addr: u64,
        /// Size in bytes (a power of two).
        size: u64,
        /// A 64-bit BAR (it takes this slot and the next).
        wide: bool,
        /// Prefetchable.
        prefetchable: bool,
    },
    /// An I/O port window.
    Io {
        /// First port.
        port: u16,
        /// Size in ports.
        size: u16,
    },
}

/// Why a BAR cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarError {
    /// The index is not 0..6, or it is the upper half of a 64-bit BAR.
    BadIndex,
    /// The BAR is not implemented (reads as zero when sized).
    Absent,
    /// The firmware left it unassigned (base 0).
    Unassigned,
    /// The encoding is reserved or the window wraps the address space.
    Malformed,
}

impl fmt::Display for BarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BarError::BadIndex => "no such BAR",
            BarError::Absent => "BAR not implemented",
            BarError::Unassigned => "BAR not assigned by the firmware",
            BarError::Malformed => "BAR encoding is malformed",
        })
    }
}

/// Decodes a BAR from its value(s) and what it reads back after all-ones is written
/// (the sizing mask); `high`/`high_mask` are the next slot's for a 64-bit BAR.
pub fn decode_bar(low: u32, low_mask: u32, high: u32, high_mask: u32) -> Result<Bar, BarError> {
    if low & 1 == 1 {
        let mask = low_mask & 0xffff_fffc;
        if mask == 0 {
            return Err(BarError::Absent);
        }
        let size = (!mask | 0xffff_0000).wrapping_add(1) & 0xffff;
        let port = low & 0xffff_fffc;
        let (Ok(port), Ok(size)) = (u16::try_from(port), u16::try_from(size)) else {
            return Err(BarError::Malformed);
        };
        if !size.is_power_of_two() || port & (size - 1) != 0 || port.checked_add(size - 1).is_none() {
            return Err(BarError::Malformed);
        }
        if port == 0 {
            return Err(BarError::Unassigned);
        }
        return Ok(Bar::Io { port, size });
    }
    let prefetchable = low & 0x8 != 0;
    let (addr, mask, wide) = match (low >> 1) & 3 {
        0 => (u64::from(low & 0xffff_fff0), u64::from(low_mask & 0xffff_fff0) | 0xffff_ffff_0000_0000, false),
        2 => (
            u64::from(high) << 32 | u64::from(low & 0xffff_fff0),
            u64::from(high_mask) << 32 | u64::from(low_mask & 0xffff_fff0),
            true,
        ),
        _ => return Err(BarError::Malformed),
    };
    if mask == 0xffff_ffff_0000_0000 && !wide || mask == 0 {
        return Err(BarError::Absent);
    }
    let size = (!mask).wrapping_add(1);
    let limit = if wide { u64::MAX } else { u64::from(u32::MAX) };
    if !size.is_power_of_two()
        || addr & (size - 1) != 0
        || addr.checked_add(size - 1).is_none_or(|end| end > limit)
    {
        return Err(BarError::Malformed);
    }
    if addr == 0 {
        return Err(BarError::Unassigned);
    }
    Ok(Bar::Memory { addr, size, wide, prefetchable })
}

/// Reads and sizes BAR `index` of `bdf`. Decoding is switched off while the BAR holds the
/// all-ones pattern, and the BAR and command register are restored afterwards.
pub fn read_bar(cs: &impl ConfigSpace, bdf: Bdf, index: u8) -> Result<Bar, BarError> {
    if index >= 6 {
        return Err(BarError::BadIndex);
    }
    let at = BAR0 + 4 * index;
    let low = cs.read32(bdf, at);
    let wide = low & 1 == 0 && (low >> 1) & 3 == 2;
    if wide && index == 5 {
        return Err(BarError::Malformed);
    }
    let command = cs.read32(bdf, COMMAND);
    cs.write32(bdf, COMMAND, command & !u32::from((Command::IO | Command::MEMORY).bits()));
    let size_of = |off: u8, value: u32| {
        cs.write32(bdf, off, 0xffff_ffff);
        let mask = cs.read32(bdf, off);
        cs.write32(bdf, off, value);
        mask
    };
    let low_mask = size_of(at, low);
    let (high, high_mask) = if wide {
        let high = cs.read32(bdf, at + 4);
        (high, size_of(at + 4, high))
    } else {
        (0, 0)
    };
    cs.write32(bdf, COMMAND, command);
    decode_bar(low, low_mask, high, high_mask)
}

/// Sets `bits` in the command register of `bdf`, leaving the others (and the status
/// register, whose bits are cleared by writing one) as they are.
pub fn enable(cs: &impl ConfigSpace, bdf: Bdf, bits: Command) {
    let command = cs.read32(bdf, COMMAND) & 0xffff;
    cs.write32(bdf, COMMAND, command | u32::from(bits.bits()));
}

/// One PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub bdf: Bdf,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Base class.
    pub class: u8,
    /// Subclass.
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
    /// Header type (low 7 bits).
    pub header_type: u8,
}

impl Function {
    /// A readable name for the class.
    pub fn class_name(&self) -> &'static str {
        class_name(self.class, self.subclass)
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} class {:02x}.{:02x}.{:02x} {}",
            self.bdf,
            self.vendor,
            self.device,
            self.class,
            self.subclass,
            self.prog_if,
            self.class_name()
        )
    }
}

/// The result of a scan.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Functions found, in bus order.
    pub functions: heapless::Vec<Function, MAX_FUNCTIONS>,
    /// Functions beyond [`MAX_FUNCTIONS`].
    pub more: usize,
}

fn probe(cs: &impl ConfigSpace, bdf: Bdf) -> Option<(Function, bool)> {
    let id = cs.read32(bdf, 0);
    let vendor = (id & 0xffff) as u16;
    if vendor == 0xffff || vendor == 0 {
        return None;
    }
    let class = cs.read32(bdf, 8);
    let header = (cs.read32(bdf, 0x0c) >> 16) as u8;
    Some((
        Function {
            bdf,
            vendor,
            device: (id >> 16) as u16,
            class: (class >> 24) as u8,
            subclass: (class >> 16) as u8,
            prog_if: (class >> 8) as u8,
            header_type: header & 0x7f,
        },
        header & 0x80 != 0,
    ))
}

/// Probes every bus, device and function.
pub fn scan(cs: &impl ConfigSpace) -> Scan {
    let mut out = Scan::default();
    for bus in 0..=255u8 {
        for device in 0..32u8 {
            let Some((f0, multi)) = probe(cs, Bdf { bus, device, function: 0 }) else { continue };
            let mut record = |f: Function| {
                if out.functions.push(f).is_err() {
                    out.more += 1;
                }
            };
            record(f0);
            if multi {
                for function in 1..8u8 {
                    if let Some((f, _)) = probe(cs, Bdf { bus, device, function }) {
                        record(f);
                    }
                }
            }
        }
    }
    out
}

/// Names for the base classes and the common subclasses (PCI Code and ID Assignment spec).
pub fn class_name(class: u8, subclass: u8) -> &'static str {
    match (class, subclass) {
        (0x00, _) => "unclassified",
        (0x01, 0x00) => "storage/SCSI",
        (0x01, 0x01) => "storage/IDE",
        (0x01, 0x06) => "storage/SATA",
        (0x01, 0x08) => "storage/NVMe",
        (0x01, _) => "storage",
        (0x02, 0x00) => "network/ethernet",
        (0x02, _) => "network",
        (0x03, 0x00) => "display/VGA",
        (0x03, _) => "display",
        (0x04, _) => "multimedia",
        (0x05, _) => "memory controller",
        (0x06, 0x00) => "bridge/host",
        (0x06, 0x01) => "bridge/ISA",
        (0x06, 0x04) => "bridge/PCI-PCI",
        (0x06, 0x80) => "bridge/other",
        (0x06, _) => "bridge",
        (0x07, _) => "communication",
        (0x08, _) => "system peripheral",
        (0x09, _) => "input",
        (0x0c, 0x03) => "serial bus/USB",
        (0x0c, 0x05) => "serial bus/SMBus",
        (0x0c, _) => "serial bus",
        (0x0d, _) => "wireless",
        (0x10, _) => "encryption",
        (0x11, _) => "signal processing",
        (0x12, _) => "processing accelerator",
        (0xff, _) => "vendor-specific",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A made-up bus: (bdf) -> (id dword, class dword, header byte).
    struct FakeBus(HashMap<Bdf, (u32, u32, u8)>);

    impl ConfigSpace for FakeBus {
        fn read32(&self, bdf: Bdf, offset: u8) -> u32 {
            match (self.0.get(&bdf), offset) {
                (None, _) => 0xffff_ffff,
                (Some(&(id, _, _)), 0) => id,
                (Some(&(_, class, _)), 8) => class,
                (Some(&(_, _, header)), 0x0c) => u32::from(header) << 16,
                _ => 0,
            }
        }
        fn write32(&self, _: Bdf, _: u8, _: u32) {}
    }

    /// One function's configuration space with BARs that answer sizing as hardware does.
    struct FakeDevice {
        regs: std::cell::RefCell<[u32; 64]>,
        /// Per BAR slot: the bits that are writable (the size mask), 0 for absent.
        writable: [u32; 6],
        writes: std::cell::RefCell<Vec<(u8, u32)>>,
    }

    impl FakeDevice {
        fn new(bars: [(u32, u32); 6]) -> FakeDevice {
            let mut regs = [0u32; 64];
            regs[1] = 0x0010_0007;
            let mut writable = [0; 6];
            for (i, (value, mask)) in bars.iter().enumerate() {
                regs[4 + i] = *value;
                writable[i] = *mask;
            }
            FakeDevice { regs: std::cell::RefCell::new(regs), writable, writes: Default::default() }
        }
    }

    impl ConfigSpace for FakeDevice {
        fn read32(&self, _: Bdf, offset: u8) -> u32 {
            self.regs.borrow()[usize::from(offset / 4)]
        }
        fn write32(&self, _: Bdf, offset: u8, value: u32) {
            self.writes.borrow_mut().push((offset, value));
            let i = usize::from(offset / 4);
            let mut regs = self.regs.borrow_mut();
            if (4..10).contains(&i) {
                let w = self.writable[i - 4];
                regs[i] = (regs[i] & !w) | (value & w);
            } else if i == 1 {
                regs[1] = (regs[1] & 0xffff_0000) | (value & 0xffff);
            } else {
                regs[i] = value;
            }
        }
    }

    #[test]
    fn bars_are_sized_and_restored() {
        // BAR0: 128 KiB 32-bit memory at 0xfebc0000; BAR1: 64 ports at 0xc000;
        // BAR2+3: 16 KiB 64-bit prefetchable memory at 0x8_0000_4000; BAR4: absent;
        // BAR5: 4 KiB memory the firmware left at 0.
        let dev = FakeDevice::new([
            (0xfebc_0000, 0xfffe_0000),
            (0x0000_c001, 0xffff_ffc0),
            (0x0000_400c, 0xffff_c000),
            (0x0000_0008, 0xffff_ffff),
            (0, 0),
            (0, 0xffff_f000),
        ]);
        let b = bdf(0, 3, 0);
        assert_eq!(
            read_bar(&dev, b, 0),
            Ok(Bar::Memory { addr: 0xfebc_0000, size: 0x2_0000, wide: false, prefetchable: false })
        );
        assert_eq!(read_bar(&dev, b, 1), Ok(Bar::Io { port: 0xc000, size: 64 }));
        assert_eq!(
            read_bar(&dev, b, 2),
            Ok(Bar::Memory { addr: 0x8_0000_4000, size: 0x4000, wide: true, prefetchable: true })
        );
        assert_eq!(read_bar(&dev, b, 4), Err(BarError::Absent));
        assert_eq!(read_bar(&dev, b, 5), Err(BarError::Unassigned));
        assert_eq!(read_bar(&dev, b, 6), Err(BarError::BadIndex));
        // Everything is as it was, and decoding was off while a BAR held all-ones.
        let regs = dev.regs.borrow();
        assert_eq!(&regs[4..10], &[0xfebc_0000, 0xc001, 0x400c, 0x8, 0, 0]);
        assert_eq!(regs[1] & 0xffff, 7);
        let writes = dev.writes.borrow();
        let mut decoding = true;
        for &(off, value) in writes.iter() {
            if off == COMMAND {
                decoding = value & 3 != 0;
            } else if value == 0xffff_ffff {
                assert!(!decoding, "BAR {off:#x} sized with decoding on");
            }
        }
    }

    #[test]
    fn malformed_bars_are_errors_not_panics() {
        // Reserved memory type 1, a 64-bit BAR in the last slot, and windows that wrap.
        assert_eq!(decode_bar(0x2, 0xffff_f002, 0, 0), Err(BarError::Malformed));
        assert_eq!(decode_bar(0xffff_f000, 0xffff_0000, 0, 0), Err(BarError::Malformed));
        assert_eq!(decode_bar(0xffff_fff1, 0xffff_fff1, 0, 0), Err(BarError::Malformed));
        assert_eq!(decode_bar(0xffff_f004, 0xffff_e004, 0xffff_ffff, 0xffff_ffff), Err(BarError::Malformed));
        assert_eq!(decode_bar(0, 0, 0, 0), Err(BarError::Absent));
        assert_eq!(decode_bar(1, 1, 0, 0), Err(BarError::Absent));
        let dev = FakeDevice::new([(0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (0x4, 0xffff_f000)]);
        assert_eq!(read_bar(&dev, bdf(0, 0, 0), 5), Err(BarError::Malformed));
        // Every pattern decodes to something without panicking.
        for low in [0u32, 1, 2, 3, 4, 5, 6, 7, 8, 0xc, 0xffff_ffff, 0x8000_0004] {
            for mask in [0u32, 1, 0xffff_fff0, 0xffff_ffff, 0x8000_0000] {
                let _ = decode_bar(low, mask, 0xffff_ffff, 0xffff_ffff);
                let _ = decode_bar(low, mask, 0, 0);
            }
        }
    }

    #[test]
    fn enable_keeps_other_command_bits_and_clears_no_status() {
        let dev = FakeDevice::new([(0, 0); 6]);
        dev.regs.borrow_mut()[1] = 0xf900_0400;
        enable(&dev, bdf(0, 0, 0), Command::MEMORY | Command::BUS_MASTER);
        assert_eq!(*dev.writes.borrow(), vec![(COMMAND, 0x0406)]);
    }

    fn bdf(bus: u8, device: u8, function: u8) -> Bdf {
        Bdf { bus, device, function }
    }

    #[test]
    fn finds_functions_and_honours_multifunction() {
        let mut m = HashMap::new();
        m.insert(bdf(0, 0, 0), (0x1237_8086, 0x0600_0000, 0x00));
        m.insert(bdf(0, 1, 0), (0x7000_8086, 0x0601_0000, 0x80));
        m.insert(bdf(0, 1, 1), (0x7010_8086, 0x0101_8000, 0x00));
        // Function 2 of a single-function device is not probed.
        m.insert(bdf(0, 2, 0), (0x1111_1234, 0x0300_0000, 0x00));
        m.insert(bdf(0, 2, 2), (0x2222_1234, 0x0300_0000, 0x00));
        m.insert(bdf(3, 31, 0), (0x10d3_8086, 0x0200_0000, 0x00));
        let s = scan(&FakeBus(m));
        let got: Vec<_> = s.functions.iter().map(|f| (f.bdf, f.vendor, f.device)).collect();
        assert_eq!(
            got,
            vec![
                (bdf(0, 0, 0), 0x8086, 0x1237),
                (bdf(0, 1, 0), 0x8086, 0x7000),
                (bdf(0, 1, 1), 0x8086, 0x7010),
                (bdf(0, 2, 0), 0x1234, 0x1111),
                (bdf(3, 31, 0), 0x8086, 0x10d3),
            ]
        );
        assert_eq!(s.functions[2].class_name(), "storage/IDE");
        assert_eq!(s.functions[2].prog_if, 0x80);
        assert_eq!(s.functions[4].to_string(), "03:1f.0 8086:10d3 class 02.00.00 network/ethernet");
    }

    #[test]
    fn a_bus_full_of_devices_is_bounded() {
        let mut m = HashMap::new();
        for bus in 0..10u8 {
            for device in 0..32u8 {
                m.insert(bdf(bus, device, 0), (0x0001_1af4, 0xff00_0000, 0));
            }
        }
        let s = scan(&FakeBus(m));
        assert_eq!(s.functions.len(), MAX_FUNCTIONS);
        assert_eq!(s.more, 320 - MAX_FUNCTIONS);
    }

    #[test]
    fn empty_bus() {
        let s = scan(&FakeBus(HashMap::new()));
        assert!(s.functions.is_empty());
        assert_eq!(class_name(0x42, 0), "other");
    }
}
