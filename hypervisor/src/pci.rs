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

/// Reads configuration space.
pub trait ConfigSpace {
    /// Reads the aligned dword at `offset` (0..=252, a multiple of 4) of `bdf`.
    fn read32(&self, bdf: Bdf, offset: u8) -> u32;
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
