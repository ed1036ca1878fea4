//! The 32-bit entry stubs, the boot page tables and the jump into 64-bit Rust.
//!
//! Register contract on entry (both protocols): protected mode, paging off, interrupts
//! off, flat 4 GiB segments. PVH passes `ebx` = `hvm_start_info`; Multiboot2 passes
//! `eax` = magic, `ebx` = MBI. The stub keeps a protocol tag in `ebp` and the pointer in
//! `esi`, zeroes `.bss`, identity-maps 0..4 GiB with 2 MiB pages, turns on PAE, long mode,
//! NX (when the CPU has it) and paging, and calls [`boot_rust_entry`] on the boot stack.

use crate::info::{BootInfo, Protocol};
use crate::{mb2, pvh, PhysRead};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;

core::arch::global_asm!(
    r#"
.section .multiboot2, "a"
.balign 8
mb2_header:
    .long 0xe85250d6
    .long 0
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    .word 0
    .word 0
    .long 8
mb2_header_end:

.section .note.pvh, "a", @note
.balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long pvh_start32

.section .bss.boot, "aw", @nobits
.balign 4096
.global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
.global boot_stack_guard
boot_stack_guard:
    .skip 4096
.global boot_stack_bottom
boot_stack_bottom:
    .skip 64 * 1024
.global boot_stack_top
boot_stack_top:

.section .rodata.boot, "a"
.balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_ptr:
    .word boot_gdt_ptr - boot_gdt - 1
    .quad boot_gdt

.section .text.boot32, "ax"
.code32
.global pvh_start32
pvh_start32:
    mov ebp, 0x336ec578
    mov esi, ebx
    jmp 2f
.global mb2_start32
mb2_start32:
    mov ebp, eax
    mov esi, ebx
2:
    cli
    cld
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd

    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 9f
    mov eax, 0x80000001
    cpuid
    bt edx, 29
    jnc 9f
    xor ebx, ebx
    bt edx, 20
    jnc 3f
    mov ebx, 0x800
3:
    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 8], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 16], eax
    add eax, 4096
    mov dword ptr [boot_pdpt + 24], eax
    mov edi, offset boot_pd
    mov eax, 0x83
    xor edx, edx
    mov ecx, 2048
4:
    mov dword ptr [edi], eax
    mov dword ptr [edi + 4], edx
    add eax, 0x200000
    adc edx, 0
    add edi, 8
    dec ecx
    jnz 4b

    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    or eax, ebx
    wrmsr
    mov eax, cr0
    or eax, 0x80010001
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    .byte 0xea
    .long 5f
    .word 0x08

9:
    mov dx, 0x3f8
    mov al, 0x21
    out dx, al
8:
    hlt
    jmp 8b

.code64
5:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    mov edi, ebp
    mov esi, esi
    xor ebp, ebp
    call boot_rust_entry
    ud2
"#
);

/// Physical memory below 4 GiB, identity-mapped by the boot page tables.
struct Identity;

impl PhysRead for Identity {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = paddr.checked_add(buf.len() as u64) else {
            return false;
        };
        if paddr == 0 || end > 1 << 32 {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: the boot page tables identity-map all of 0..4 GiB, the range was
            // checked to lie inside it, and reading RAM or firmware tables has no effects.
            *b = unsafe { core::ptr::read_volatile((paddr as usize + i) as *const u8) };
        }
        true
    }
}

struct InfoCell(UnsafeCell<MaybeUninit<BootInfo>>);

// SAFETY: written once by the bootstrap CPU before any other CPU runs, read-only after.
unsafe impl Sync for InfoCell {}

static BOOT_INFO: InfoCell = InfoCell(UnsafeCell::new(MaybeUninit::uninit()));

/// Called by the stub in 64-bit mode with the protocol tag and the loader's pointer.
#[no_mangle]
extern "C" fn boot_rust_entry(tag: u32, info_paddr: u32) -> ! {
    let info = match tag {
        pvh::MAGIC => pvh::parse(&Identity, u64::from(info_paddr)),
        // SAFETY: GRUB passed this magic, so `info_paddr` is its 8-byte-aligned MBI below
        // 4 GiB, identity-mapped here, and nothing writes to it.
        mb2::MAGIC if info_paddr.is_multiple_of(8) && info_paddr != 0 => unsafe {
            mb2::parse(u64::from(info_paddr))
        },
        other => BootInfo::empty(Protocol::Unknown(other)),
    };
    // SAFETY: only this CPU runs and this function is entered once, so nothing else
    // holds a reference to the cell.
    let info: &'static BootInfo = unsafe { (*BOOT_INFO.0.get()).write(info) };
    extern "Rust" {
        fn __boot_kernel_main(info: &'static BootInfo) -> !;
    }
    // SAFETY: the kernel defines this symbol with `entry_point!`, which fixes its signature.
    unsafe { __boot_kernel_main(info) }
}
