//! The Multiple APIC Description Table (ACPI 6.5 section 5.2.12), parsed from its bytes.
//!
//! No-panic contract: [`parse`] takes any byte slice (the whole table, header included) and
//! returns either the processors and I/O APICs it lists or a [`MadtError`] saying which
//! entry is malformed. It never reads outside the slice.

use core::fmt;

/// Most local APIC IDs kept; more are counted in [`Madt::dropped_cpus`].
pub const MAX_LAPICS: usize = 256;
/// Most I/O APICs kept; more are counted in [`Madt::dropped_ioapics`].
pub const MAX_IOAPICS: usize = 16;

/// Length of the standard ACPI table header.
const SDT_HEADER_LEN: usize = 36;
/// Offset of the first interrupt controller structure.
const ENTRIES_OFFSET: usize = SDT_HEADER_LEN + 8;

/// Processor Local APIC structure (type 0).
const TYPE_LOCAL_APIC: u8 = 0;
/// I/O APIC structure (type 1).
const TYPE_IO_APIC: u8 = 1;
/// Local APIC Address Override structure (type 5).
const TYPE_LAPIC_OVERRIDE: u8 = 5;
/// Processor Local x2APIC structure (type 9).
const TYPE_LOCAL_X2APIC: u8 = 9;

/// Local APIC flags: the processor is usable now.
const FLAG_ENABLED: u32 = 1 << 0;
/// Local APIC flags: the processor can be brought online (ACPI 6.3+).
const FLAG_ONLINE_CAPABLE: u32 = 1 << 1;

/// One I/O APIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApic {
    /// Its APIC ID.
    pub id: u8,
    /// Physical address of its registers.
    pub address: u32,
    /// First global system interrupt it serves.
    pub gsi_base: u32,
}

/// What a MADT lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Madt {
    /// Physical address of the local APIC registers (after any override).
    pub local_apic_address: u64,
    /// The legacy 8259 PICs are present (flag PCAT_COMPAT).
    pub pcat_compat: bool,
    /// Usable local APIC IDs (enabled or online-capable), the bootstrap CPU first.
    pub apic_ids: heapless::Vec<u32, MAX_LAPICS>,
    /// Whether the table listed the bootstrap CPU's own APIC ID (it is first either way).
    pub bsp_listed: bool,
    /// I/O APICs in table order.
    pub ioapics: heapless::Vec<IoApic, MAX_IOAPICS>,
    /// Processors marked neither enabled nor online-capable.
    pub disabled_cpus: usize,
    /// Usable processors beyond [`MAX_LAPICS`].
    pub dropped_cpus: usize,
    /// I/O APICs beyond [`MAX_IOAPICS`].
    pub dropped_ioapics: usize,
}

/// Why a MADT could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MadtError {
    /// The table is shorter than its fixed part.
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// The header's length field disagrees with the bytes present.
    LengthMismatch {
        /// The header's length.
        header_len: u32,
        /// Bytes present.
        len: usize,
    },
    /// An entry's length is below 2 or below its type's minimum.
    EntryTooShort {
        /// Offset of the entry in the table.
        offset: usize,
        /// Its entry type.
        entry_type: u8,
        /// Its length field.
        length: u8,
    },
    /// An entry runs past the end of the table.
    EntryOverrun {
        /// Offset of the entry in the table.
        offset: usize,
    },
}

impl fmt::Display for MadtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MadtError::TooShort { len } => {
                write!(f, "MADT is {len} bytes, shorter than its 44-byte fixed part")
            }
            MadtError::LengthMismatch { header_len, len } => {
                write!(f, "MADT header says {header_len} bytes but {len} are mapped")
            }
            MadtError::EntryTooShort { offset, entry_type, length } => {
                write!(f, "MADT entry type {entry_type} at offset {offset} has bad length {length}")
            }
            MadtError::EntryOverrun { offset } => {
                write!(f, "MADT entry at offset {offset} runs past the table")
            }
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let lo = u32_at(b, off)?;
    let hi = u32_at(b, off.checked_add(4)?)?;
    Some(u64::from(lo) | (u64::from(hi) << 32))
}

fn min_len(entry_type: u8) -> usize {
    match entry_type {
        TYPE_LOCAL_APIC => 8,
        TYPE_IO_APIC | TYPE_LAPIC_OVERRIDE => 12,
        TYPE_LOCAL_X2APIC => 16,
        _ => 2,
    }
}

impl Madt {
    fn add_cpu(&mut self, id: u32, flags: u32) {
        if flags & (FLAG_ENABLED | FLAG_ONLINE_CAPABLE) == 0 {
            self.disabled_cpus += 1;
            return;
        }
        if self.apic_ids.contains(&id) {
            return;
        }
        if self.apic_ids.push(id).is_err() {
            self.dropped_cpus += 1;
        }
    }
}

/// Parses a whole MADT (`bytes` starts at its `APIC` signature). `bsp_apic_id` is the
/// APIC ID of the CPU running this code: it is moved (or, if absent, added) to the front.
pub fn parse(bytes: &[u8], bsp_apic_id: u32) -> Result<Madt, MadtError> {
    let len = bytes.len();
    let (Some(header_len), Some(lapic), Some(flags)) =
        (u32_at(bytes, 4), u32_at(bytes, SDT_HEADER_LEN), u32_at(bytes, SDT_HEADER_LEN + 4))
    else {
        return Err(MadtError::TooShort { len });
    };
    if len < ENTRIES_OFFSET {
        return Err(MadtError::TooShort { len });
    }
    if usize::try_from(header_len).ok() != Some(len) {
        return Err(MadtError::LengthMismatch { header_len, len });
    }
    let mut m = Madt { local_apic_address: u64::from(lapic), pcat_compat: flags & 1 != 0, ..Madt::default() };
    let mut off = ENTRIES_OFFSET;
    while off < len {
        let (Some(&entry_type), Some(&length)) = (bytes.get(off), bytes.get(off + 1)) else {
            return Err(MadtError::EntryOverrun { offset: off });
        };
        if usize::from(length) < min_len(entry_type) {
            return Err(MadtError::EntryTooShort { offset: off, entry_type, length });
        }
        let end = off + usize::from(length);
        let Some(e) = bytes.get(off..end) else {
            return Err(MadtError::EntryOverrun { offset: off });
        };
        match entry_type {
            TYPE_LOCAL_APIC => {
                let flags = u32_at(e, 4).unwrap_or(0);
                m.add_cpu(u32::from(e.get(3).copied().unwrap_or(0)), flags);
            }
            TYPE_LOCAL_X2APIC => {
                let id = u32_at(e, 4).unwrap_or(u32::MAX);
                if id != u32::MAX {
                    m.add_cpu(id, u32_at(e, 8).unwrap_or(0));
                }
            }
            TYPE_IO_APIC => {
                let io = IoApic {
                    id: e.get(2).copied().unwrap_or(0),
                    address: u32_at(e, 4).unwrap_or(0),
                    gsi_base: u32_at(e, 8).unwrap_or(0),
                };
                if m.ioapics.push(io).is_err() {
                    m.dropped_ioapics += 1;
                }
            }
            TYPE_LAPIC_OVERRIDE => {
                if let Some(a) = u64_at(e, 4) {
                    m.local_apic_address = a;
                }
            }
            _ => {}
        }
        off = end;
    }
    m.bsp_listed = match m.apic_ids.iter().position(|&id| id == bsp_apic_id) {
        Some(i) => {
            m.apic_ids[..=i].rotate_right(1);
            true
        }
        None => {
            if m.apic_ids.is_full() {
                m.apic_ids.pop();
                m.dropped_cpus += 1;
            }
            // Cannot fail: there is room after the pop above.
            let _ = m.apic_ids.insert(0, bsp_apic_id);
            false
        }
    };
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[&[u8]]) -> Vec<u8> {
        let mut t = b"APIC".to_vec();
        t.extend_from_slice(&[0; 32]);
        t.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        t.extend_from_slice(&1u32.to_le_bytes());
        for e in entries {
            t.extend_from_slice(e);
        }
        let n = t.len() as u32;
        t[4..8].copy_from_slice(&n.to_le_bytes());
        t
    }

    fn lapic(id: u8, flags: u32) -> Vec<u8> {
        let mut e = vec![0, 8, id, id];
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    fn x2apic(id: u32, flags: u32) -> Vec<u8> {
        let mut e = vec![9, 16, 0, 0];
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&id.to_le_bytes());
        e
    }

    #[test]
    fn lists_usable_cpus_bsp_first_and_ioapics() {
        let io = [1u8, 12, 4, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0];
        let t = table(&[
            &lapic(0, 1),
            &lapic(1, 1),
            &lapic(2, 0),
            &lapic(3, 2),
            &io,
            &x2apic(300, 1),
            &x2apic(1, 1),
        ]);
        let m = parse(&t, 3).expect("valid table");
        assert_eq!(m.apic_ids.as_slice(), &[3, 0, 1, 300]);
        assert!(m.bsp_listed);
        assert_eq!(m.disabled_cpus, 1);
        assert_eq!(m.ioapics.as_slice(), &[IoApic { id: 4, address: 0xfec0_0000, gsi_base: 0 }]);
        assert_eq!(m.local_apic_address, 0xfee0_0000);
        assert!(m.pcat_compat);
    }

    #[test]
    fn an_unlisted_bsp_is_put_first() {
        let t = table(&[&lapic(1, 1)]);
        let m = parse(&t, 7).expect("valid table");
        assert_eq!(m.apic_ids.as_slice(), &[7, 1]);
        assert!(!m.bsp_listed);
    }

    #[test]
    fn address_override_wins() {
        let mut o = vec![5, 12, 0, 0];
        o.extend_from_slice(&0x1_2345_6000u64.to_le_bytes());
        let m = parse(&table(&[&o]), 0).expect("valid table");
        assert_eq!(m.local_apic_address, 0x1_2345_6000);
    }

    #[test]
    fn malformed_tables_are_errors_not_panics() {
        assert_eq!(parse(&[], 0), Err(MadtError::TooShort { len: 0 }));
        assert_eq!(parse(&[0; 43], 0), Err(MadtError::TooShort { len: 43 }));
        let mut t = table(&[&lapic(0, 1)]);
        t.push(0);
        assert!(matches!(parse(&t, 0), Err(MadtError::LengthMismatch { .. })));
        let t = table(&[&[0, 0]]);
        assert_eq!(parse(&t, 0), Err(MadtError::EntryTooShort { offset: 44, entry_type: 0, length: 0 }));
        let t = table(&[&[9, 8, 0, 0, 0, 0, 0, 0]]);
        assert!(matches!(parse(&t, 0), Err(MadtError::EntryTooShort { entry_type: 9, .. })));
        let t = table(&[&[0, 40, 0, 0, 1, 0, 0, 0]]);
        assert_eq!(parse(&t, 0), Err(MadtError::EntryOverrun { offset: 44 }));
        let t = table(&[&[0x80]]);
        assert_eq!(parse(&t, 0), Err(MadtError::EntryOverrun { offset: 44 }));
    }

    #[test]
    fn excess_cpus_are_counted() {
        let entries: Vec<Vec<u8>> = (0..300u32).map(|i| x2apic(i + 1, 1)).collect();
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let m = parse(&table(&refs), 0).expect("valid table");
        assert_eq!(m.apic_ids.len(), MAX_LAPICS);
        assert_eq!(m.apic_ids[0], 0);
        assert!(!m.bsp_listed);
        assert_eq!(m.dropped_cpus, 300 - MAX_LAPICS + 1);
    }
}
