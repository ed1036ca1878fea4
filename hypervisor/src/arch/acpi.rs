//! ACPI tables read from firmware memory: the MADT's processors and interrupt controllers.
//!
//! The `acpi` crate finds and checksums the RSDP, the RSDT/XSDT and the MADT through an
//! identity-mapping handler; the MADT's entries are then parsed by [`crate::decode::madt`],
//! which checks every length against the table. Nothing here panics on bad tables: each
//! failure is an [`AcpiError`] and the kernel carries on with the bootstrap CPU alone.

use crate::decode::madt::{self, IoApic, MadtError, MAX_IOAPICS, MAX_LAPICS};
use crate::selftest::{Test, Verdict};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use core::fmt;
use core::ptr::NonNull;
use log::{debug, info, warn};
use spin::Once;

/// What the firmware says about CPUs and interrupt controllers.
#[derive(Debug, Default, Clone)]
pub struct Platform {
    /// Local APIC IDs of usable processors, the bootstrap CPU first.
    pub apic_ids: heapless::Vec<u32, MAX_LAPICS>,
    /// Whether the MADT itself listed the bootstrap CPU.
    pub bsp_listed: bool,
    /// I/O APICs.
    pub ioapics: heapless::Vec<IoApic, MAX_IOAPICS>,
    /// Physical address of the local APIC registers, as the MADT gives it.
    pub local_apic_address: u64,
}

/// Why the MADT could not be read.
#[derive(Debug)]
pub enum AcpiError {
    /// No RSDP from the loader and none found in the BIOS areas.
    NoRsdp(acpi::AcpiError),
    /// The RSDP or the root table is malformed.
    BadRoot(acpi::AcpiError),
    /// No valid MADT among the tables.
    NoMadt(acpi::AcpiError),
    /// The MADT is malformed.
    BadMadt(MadtError),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcpiError::NoRsdp(e) => write!(f, "no RSDP from the loader or the BIOS areas ({e:?})"),
            AcpiError::BadRoot(e) => write!(f, "the RSDP or its root table is invalid ({e:?})"),
            AcpiError::NoMadt(e) => write!(f, "no valid MADT ({e:?})"),
            AcpiError::BadMadt(e) => write!(f, "malformed MADT: {e}"),
        }
    }
}

/// Tables larger than this are taken as corrupt.
const MAX_TABLE_BYTES: usize = 1 << 20;
/// The identity map this handler relies on covers 0..4 GiB.
const IDENTITY_LIMIT: usize = 1 << 32;

#[repr(C, align(4096))]
struct ZeroPage([u8; 4096]);

/// What a mapping of an address outside the identity map reads: zeros, which never pass
/// a signature check.
static ZERO_PAGE: ZeroPage = ZeroPage([0; 4096]);

/// Maps physical memory 1:1 (the kernel identity-maps 0..4 GiB). Requests outside that
/// range, for address 0 or larger than [`MAX_TABLE_BYTES`] get a zero page instead, so a
/// corrupt pointer in a table yields a signature error, not a fault.
#[derive(Debug, Clone, Copy)]
struct IdentityMap;

impl AcpiHandler for IdentityMap {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let inside = phys != 0
            && size <= MAX_TABLE_BYTES
            && phys.checked_add(size).is_some_and(|end| end <= IDENTITY_LIMIT);
        let (virt, len) = if inside {
            (phys as *mut T, size)
        } else {
            debug!("acpi: table access {phys:#x}+{size:#x} is outside the identity map; reading zeros");
            ((&raw const ZERO_PAGE) as *mut T, size.min(ZERO_PAGE.0.len()))
        };
        // SAFETY: `virt` is non-null: either a nonzero identity-mapped address or the
        // zero page. The range [virt, virt + len) is mapped readable: below 4 GiB
        // (identity-mapped) or inside the zero page, and the crate only reads it.
        unsafe { PhysicalMapping::new(phys, NonNull::new_unchecked(virt), len, len, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

static PLATFORM: Once<Platform> = Once::new();

/// Reads the MADT through the RSDP (`rsdp` from the loader, else a BIOS-area search).
pub fn discover(rsdp: Option<u64>) -> Result<Platform, AcpiError> {
    let tables = match rsdp {
        Some(addr) => {
            let addr = usize::try_from(addr).unwrap_or(0);
            // SAFETY: the loader reported an RSDP here; the handler only ever reads
            // identity-mapped memory or its zero page, and the crate validates the
            // signature and checksum before trusting anything.
            unsafe { AcpiTables::from_rsdp(IdentityMap, addr) }.map_err(AcpiError::BadRoot)?
        }
        None => {
            warn!("acpi: the loader gave no RSDP; searching the BIOS areas");
            // SAFETY: the kernel boots through a BIOS-compatible path when the loader
            // gives no RSDP (PVH and Multiboot2 on BIOS); the search only reads the EBDA
            // and 0xE0000..0x100000 through the handler.
            unsafe { AcpiTables::search_for_rsdp_bios(IdentityMap) }.map_err(AcpiError::NoRsdp)?
        }
    };
    let mapping = tables.find_table::<acpi::madt::Madt>().map_err(AcpiError::NoMadt)?;
    let ptr = mapping.virtual_start().as_ptr() as *const u8;
    // SAFETY: the crate validated the MADT's checksum over `region_length` bytes through
    // this very mapping, so that many bytes are mapped and readable.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, mapping.region_length()) };
    let bsp = crate::arch::apic::cpuid_apic_id();
    let m = madt::parse(bytes, bsp).map_err(AcpiError::BadMadt)?;
    info!(
        "acpi: rev {}, MADT: {} usable CPU(s), {} I/O APIC(s), local APIC at {:#x}{}",
        tables.revision(),
        m.apic_ids.len(),
        m.ioapics.len(),
        m.local_apic_address,
        if m.pcat_compat { ", legacy PICs" } else { "" }
    );
    debug!("acpi: APIC IDs {:?} (bootstrap {bsp})", m.apic_ids.as_slice());
    for io in &m.ioapics {
        debug!("acpi: I/O APIC id {} at {:#x}, GSI base {}", io.id, io.address, io.gsi_base);
    }
    if !m.bsp_listed {
        warn!("acpi: the MADT does not list this CPU (APIC ID {bsp})");
    }
    if m.disabled_cpus > 0 {
        info!("acpi: {} disabled processor entries ignored", m.disabled_cpus);
    }
    if m.dropped_cpus > 0 || m.dropped_ioapics > 0 {
        warn!(
            "acpi: {} processors and {} I/O APICs beyond the table limits ignored",
            m.dropped_cpus, m.dropped_ioapics
        );
    }
    let p = Platform {
        apic_ids: m.apic_ids,
        bsp_listed: m.bsp_listed,
        ioapics: m.ioapics,
        local_apic_address: m.local_apic_address,
    };
    Ok(PLATFORM.call_once(|| p).clone())
}

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[Test { name: "acpi", in_all: true, run: selftest_madt }];

/// The MADT listed this CPU's APIC ID.
fn selftest_madt() -> Verdict {
    let Some(p) = PLATFORM.get() else {
        return Err("no MADT was read");
    };
    let me = crate::arch::apic::id();
    if !p.bsp_listed || !p.apic_ids.contains(&me) {
        return Err("the MADT does not list this CPU's APIC ID");
    }
    if p.apic_ids.first() != Some(&me) {
        return Err("this CPU is not first in the platform's CPU list");
    }
    Ok(())
}
