//! GDT and TSS per CPU, with IST stacks for faults that must not use the current stack.
//!
//! Every CPU gets the same layout: null, kernel code (0x08), kernel data (0x10) and its own
//! TSS (0x18, two slots). The TSS's interrupt stack table gives #DF, NMI, #MC and #PF
//! their own stacks (Intel SDM Vol. 3A 6.14.5), so a kernel stack that overflowed into its
//! guard page still gets a working stack for the report.

use super::percpu::{self, MAX_CPUS};
use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

/// Kernel code selector.
pub const KERNEL_CODE: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DATA: u16 = 0x10;

/// IST slot (1-based, as IDT gates name it) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;
/// IST slot for page faults.
pub const IST_PAGE_FAULT: u8 = 4;
/// IST slots in use.
const IST_SLOTS: u64 = 4;

/// Bytes of one CPU's IST area, split evenly between the IST slots.
pub const IST_AREA_BYTES: u64 = 16 * 4096;

#[repr(C, align(4096))]
struct IstArea([u8; IST_AREA_BYTES as usize]);

/// The bootstrap CPU's IST area: it is set up before the memory allocator exists.
static mut BSP_IST: IstArea = IstArea([0; IST_AREA_BYTES as usize]);

struct Tables {
    gdt: GlobalDescriptorTable<8>,
    tss: SegmentSelector,
}

static TSS: [Once<TaskStateSegment>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
static GDT: [Once<Tables>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

extern "C" {
    static boot_stack_bottom: u8;
    static boot_stack_top: u8;
}

/// Loads this CPU's GDT and TSS (the bootstrap CPU, before memory is set up). Also points
/// GS at per-CPU slot 0.
pub fn init_bsp() {
    percpu::init_current(0, super::apic::cpuid_apic_id());
    let ist_bottom = (&raw const BSP_IST) as u64;
    // Only the addresses of the boot stack's bounds are taken; nothing is read through them.
    let main = ((&raw const boot_stack_bottom) as u64, (&raw const boot_stack_top) as u64);
    if let Some(me) = percpu::get(0) {
        me.set_stacks(main, (ist_bottom, ist_bottom + IST_AREA_BYTES));
    }
    load(0, ist_bottom);
}

/// Loads the GDT and TSS of CPU `index` (an application processor, already pointed at
/// its per-CPU slot) whose IST area starts at `ist_bottom` and is [`IST_AREA_BYTES`] long.
pub fn init_ap(index: u32, ist_bottom: u64) {
    load(index, ist_bottom);
}

fn load(index: u32, ist_bottom: u64) {
    let (Some(tss_cell), Some(gdt_cell)) = (TSS.get(index as usize), GDT.get(index as usize)) else {
        return;
    };
    let tss = tss_cell.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let slot = IST_AREA_BYTES / IST_SLOTS;
        let mut table = tss.interrupt_stack_table;
        for (i, entry) in table.iter_mut().take(IST_SLOTS as usize).enumerate() {
            *entry = VirtAddr::new(ist_bottom + slot * (i as u64 + 1));
        }
        tss.interrupt_stack_table = table;
        tss
    });
    let tables = gdt_cell.call_once(|| {
        let mut gdt = GlobalDescriptorTable::<8>::empty();
        gdt.append(Descriptor::kernel_code_segment());
        gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        Tables { gdt, tss }
    });
    tables.gdt.load();
    let code = SegmentSelector::new(KERNEL_CODE >> 3, PrivilegeLevel::Ring0);
    let data = SegmentSelector::new(KERNEL_DATA >> 3, PrivilegeLevel::Ring0);
    // SAFETY: the GDT just loaded has a 64-bit code segment at 0x08, a data segment at
    // 0x10 and this CPU's TSS (never loaded before, so not busy) at `tables.tss`. FS and
    // GS are left alone so the per-CPU GS base survives.
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tables.tss);
    }
}
