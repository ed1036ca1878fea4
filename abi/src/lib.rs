//! The ABI between the hypervisor and the kernel of each of its VMs (crx-guest, test
//! guests, anyone's static x86_64 ELF). Both sides build this one crate, so a change here
//! is a change to both; [`ABI_VERSION`] moves with every incompatible change.
//!
//! # The guest's initial state
//!
//! The hypervisor loads the guest ELF (static `ET_EXEC`, `EM_X86_64`, every `PT_LOAD`
//! segment inside guest memory at or above [`layout::KERNEL_MIN`]) at the segments'
//! physical addresses and enters it directly in 64-bit mode; there is no firmware and no
//! real mode:
//!
//! | state | value |
//! |---|---|
//! | CR0 | PE, MP, ET, NE, WP, PG |
//! | CR4 | PAE, OSFXSR, OSXMMEXCPT (SSE usable) |
//! | EFER | LME, LMA, NXE |
//! | CR3 | [`layout::PML4`]: identity map of all guest memory with 2 MiB pages, RWX |
//! | GDT | at [`layout::GDT`]: null, 64-bit code (selector 0x08), data (0x10), TSS (0x18) |
//! | CS / DS, ES, SS, FS, GS | 0x08 / 0x10, bases 0 |
//! | RIP | the ELF entry point |
//! | RSP | [`BootParams::stack_top`] `- k x` [`layout::VCPU_STACK_BYTES`] for vCPU k (the first vCPU's at the top of guest memory; all 16-byte aligned) |
//! | RDI | [`layout::BOOT_PARAMS`], the guest-physical address of [`BootParams`] (the same for every vCPU) |
//! | RSI | k, the vCPU's index (0 = the first, up to [`BootParams::vcpus`] - 1) |
//! | RFLAGS | 0x2 (interrupts off; none is delivered until the guest arms [`nr::TIMER_ARM`]) |
//! | other GPRs | 0 |
//!
//! # Several vCPUs
//!
//! A VM has [`BootParams::vcpus`] vCPUs (at least 1, at most [`VCPUS_MAX`]). Every one of
//! them starts at the ELF entry at the same time, in the state above: the same RDI, its own
//! index k in RSI and its own stack, [`layout::VCPU_STACK_BYTES`] of it per vCPU going down
//! from [`BootParams::stack_top`] (vCPU k's RSP is `stack_top - k x VCPU_STACK_BYTES`). They
//! share guest memory and the initial page tables, GDT and TSS; a guest that enters user
//! mode on several vCPUs gives each one a TSS of its own (RSP0 is per CPU). Each vCPU has
//! its own one-shot timer ([`nr::TIMER_ARM`]); they wake and interrupt one another with
//! [`nr::VCPU_KICK`]. A guest that wants fewer vCPUs parks the others in
//! `SLEEP_UNTIL(u64::MAX)`.
//!
//! Why all at once, with the index in a register: the guest needs no start-up protocol
//! (no INIT and start-up IPIs to an emulated local APIC, no real-mode trampoline, no
//! mailbox): each vCPU arrives in 64-bit mode with a stack and knows which one it is from
//! its first instruction, so it picks its per-CPU data at once; and no vCPU waits in the
//! hypervisor for another to bring it up. The stacks are at fixed places below the first
//! one, as the loader reserves them, so the guest computes nothing to find them and the
//! layout stays the same whatever the number of vCPUs.
//!
//! # Hypercalls
//!
//! `rax` = number ([`nr`]), arguments in `rdi`, `rsi`, `rdx`, `r10`; the result comes back
//! in `rax`: `>= 0` on success, a negative [`Error`] code otherwise. The instruction is
//! `vmcall` on Intel VT-x and `vmmcall` on AMD-V; [`BootParams::hypercall_insn`] says which.
//! Every pointer and length is checked against the VM's memory: a bad one returns
//! [`Error::Fault`] and the VM carries on.
//!
//! # Pods
//!
//! A pod VM runs crx-guest with a pod spec ([`pod::PodSpec`], JSON, read with
//! [`nr::POD_SPEC`]) and the image's layers, mapped read-only into guest-physical space
//! above guest RAM (from [`layout::LAYERS_BASE`], found with [`nr::LAYER_INFO`]). The
//! guest writes each container's output with [`nr::LOG_WRITE`], reports each container's
//! end with [`nr::CONTAINER_EXIT`] and ends the VM with [`nr::EXIT`] once every container
//! has exited. The boot module of a pod is a [`pod::bundle`].
//!
//! A managed pod ([`pod::PodSpec::managed`], a node's pod from the API) starts no container
//! at boot: the guest asks [`nr::POD_CONTROL`] for the node's commands
//! ([`pod::Command`]: start container i, again after it ended; signal its processes)
//! before it sleeps and every so many scheduler passes, reports each end as above (once
//! per start), and stays up when every container has ended; the node tears the VM down.
//!
//! Just before it first runs a container's process in user mode, the guest says so with
//! [`nr::CONTAINER_ENTRY`]: the hypervisor notes the VM's guest time then, which is how
//! long the guest kernel took from the VM's creation to the container's first
//! instruction.
//!
//! # Interrupts: the one-shot timer
//!
//! The only interrupt a guest gets is its own timer: [`nr::TIMER_ARM`] sets a deadline on
//! the VM's monotonic clock (the one [`nr::TIME_MONOTONIC`] reads) and a vector for the
//! calling vCPU; once the clock has passed the deadline the hypervisor delivers that vector
//! as an external interrupt, through the guest's IDT, as soon as the guest can take one
//! (RFLAGS.IF = 1 and no STI or MOV SS interrupt shadow), and the timer is disarmed. A
//! guest kernel uses it to take the CPU back from a process that never makes a syscall
//! (crx-guest slices time between its processes with it, [`TIMER_VECTOR_DEFAULT`]).
//!
//! Why this mechanism and not an emulated local APIC: the hypervisor injects the event
//! itself, through the VM-entry interruption-information field on VT-x (with
//! interrupt-window exiting while the guest cannot take it) and a virtual interrupt
//! (V_IRQ) on AMD-V, driven by a deadline it already keeps per vCPU. So there is no APIC
//! page or register to emulate, no EOI to trap, it works the same on both backends, and it
//! is tickless: nothing happens until a deadline the guest chose. The interrupt comes when
//! the vCPU runs after the deadline: a running vCPU's entry ends at the deadline on VT-x
//! (the VMX-preemption timer) and at the latest at the next host timer tick (10 ms) on
//! AMD-V; a vCPU waiting for its CPU gets it when it runs again; a halted one (HLT) wakes
//! at the deadline.
//!
//! The host's own fairness never depends on the guest: whether a guest keeps IF = 0, never
//! arms the timer, never re-arms it, or arms it in the past over and over, every vCPU is
//! still preempted by the hypervisor's slice timer exactly as before this call existed, and
//! the other VMs run.
//!
//! # Waking and interrupting another vCPU: the kick
//!
//! [`nr::VCPU_KICK`] takes a mask of the VM's vCPUs and a vector. Each vCPU named is woken
//! from [`nr::SLEEP_UNTIL`] (or HLT) at once, or, when it is not sleeping, keeps one wake
//! that ends its next sleep at once; with a vector, its one-shot timer is re-armed to fire
//! at once, exactly as if it had called `TIMER_ARM(0, vector)`, so it takes that interrupt
//! as soon as it can (IF = 1), even in the middle of user code. A guest kernel uses the
//! first to hand a sleeping vCPU new work (a thread made runnable) and the second to take
//! a vCPU back from a process at once (a signal, a reschedule).
//!
//! Why this mechanism and not inter-processor interrupts through an emulated local APIC:
//! it is the timer's, aimed at another vCPU. The hypervisor already keeps a wake-up time
//! and a timer per vCPU and delivers the timer's vector on both backends; a kick sets the
//! one to now and the other to fire now, so there is still no APIC page, ICR or EOI to
//! emulate and nothing new to inject. The remembered wake closes the race every guest
//! scheduler has between "my run queue is empty" and "sleep": a kick that lands in between
//! is not lost, the sleep returns at once (as a futex compares its word before sleeping).
//! It is prompt: a target that is running guest code on another host CPU, or whose host
//! CPU is idle, gets a host IPI that ends its entry (or its halt) at once, so the kick
//! does not wait for that CPU's next 10 ms tick.
//!
//! And it keeps the host's fairness: a kick changes only the target vCPUs' own wake-up
//! time and timer, never the host's slices or CPU limits, and a target costs at most one
//! host IPI per entry into it or sleep of it, however often it is kicked, so a guest
//! kicking in a loop, itself or all its vCPUs, costs itself, not the other VMs.
#![deny(unsafe_code)]
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

/// Version of this ABI: 2 added the pod hypercalls ([`nr::LOG_WRITE`] to
/// [`nr::LAYER_INFO`]) and the layer window; 3 added managed pods ([`nr::POD_CONTROL`]);
/// 4 added [`nr::CONTAINER_ENTRY`]; 5 added the timer interrupt ([`nr::TIMER_ARM`]); 6 added
/// several vCPUs per VM ([`BootParams::vcpus`], RSI = the vCPU's index, a stack each:
/// [`layout::VCPU_STACK_BYTES`]) and [`nr::VCPU_KICK`].
pub const ABI_VERSION: u32 = 6;

/// Most vCPUs a VM has: one bit each in [`nr::VCPU_KICK`]'s mask.
pub const VCPUS_MAX: u32 = 64;

/// The signature CPUID leaf 0x4000_0000 returns in EBX, ECX, EDX: "CrxHvCrxHvCr".
pub const CPUID_SIGNATURE: [u8; 12] = *b"CrxHvCrxHvCr";
/// The hypervisor CPUID leaf.
pub const CPUID_LEAF: u32 = 0x4000_0000;

/// Hypercall numbers.
pub mod nr {
    /// `() -> ABI_VERSION`.
    pub const VERSION: u64 = 0;
    /// `(ptr, len) -> bytes written`: writes to the VM's console.
    pub const CONSOLE_WRITE: u64 = 1;
    /// `(code) -> !`: the VM ends with exit code `code as i32`.
    pub const EXIT: u64 = 2;
    /// `() -> ns`: monotonic nanoseconds since the VM started.
    pub const TIME_MONOTONIC: u64 = 3;
    /// `() -> ns`: wall-clock nanoseconds since the Unix epoch (UTC).
    pub const TIME_WALL: u64 = 4;
    /// `(monotonic ns) -> 0`: blocks the vCPU until the monotonic clock reaches the value.
    pub const SLEEP_UNTIL: u64 = 5;
    /// `() -> 0`: gives the physical CPU to another vCPU.
    pub const YIELD: u64 = 6;
    /// `(ptr, len) -> len`: fills the buffer with random bytes.
    pub const RANDOM: u64 = 7;
    /// `(ptr, len) -> bytes copied`: copies [`crate::BootParams`] into the buffer.
    pub const BOOT_PARAMS: u64 = 8;
    /// `(container_index, stream, ptr, len) -> bytes taken`: appends output of a pod's
    /// container to its log (stream 1 = stdout, 2 = stderr; see [`crate::STREAM_STDOUT`]).
    /// At most [`crate::LOG_WRITE_MAX`] bytes are taken per call. [`crate::Error::Invalid`]
    /// for a container index outside the pod spec or another stream, and in a VM that is
    /// not a pod.
    pub const LOG_WRITE: u64 = 9;
    /// `(container_index, exit_code, flags) -> 0`: records the end of a container with its
    /// exit code (`exit_code as i32`; 128 + N when killed by signal N) and
    /// [`crate::EXIT_OOM_KILLED`] in `flags` when the guest's out-of-memory killer ended a
    /// process of the container. The VM keeps running. A second report for the same
    /// container, or an unknown flag, is [`crate::Error::Invalid`].
    pub const CONTAINER_EXIT: u64 = 10;
    /// `(ptr, len) -> total length`: copies the first `min(len, total)` bytes of the pod
    /// spec JSON ([`crate::pod::PodSpec`]) into the buffer and returns the total length
    /// (call with `len` 0 to learn it). [`crate::Error::Invalid`] in a VM that is not a pod.
    pub const POD_SPEC: u64 = 11;
    /// `(index, ptr) -> 0`: writes layer `index`'s [`crate::LayerInfo`] to `ptr`;
    /// [`crate::Error::Invalid`] past the last layer (so a guest counts layers by asking
    /// until it gets that).
    pub const LAYER_INFO: u64 = 12;
    /// `() -> command`: the next command the node has for a managed pod
    /// ([`crate::pod::PodSpec::managed`]), encoded as [`crate::pod::Command::to_raw`]
    /// describes, or 0 when there is none. A vCPU blocked in [`SLEEP_UNTIL`] is woken when
    /// a command arrives, so a guest asks again each time it wakes.
    /// [`crate::Error::Invalid`] in a VM that is not a pod.
    pub const POD_CONTROL: u64 = 13;
    /// `(container_index) -> 0`: the guest kernel is about to enter user mode for the
    /// first time in this VM, in a process of container `container_index`. The hypervisor
    /// notes the guest time the VM has had so far (its guest time up to the container's
    /// first instruction, less the few instructions between this call and the entry) and
    /// reports it with the VM's other figures; a later call changes nothing. A guest makes
    /// it once; one that does not (or a hypervisor older than ABI 4, which answers
    /// [`crate::Error::NoSys`]) only goes without the figure.
    /// [`crate::Error::Invalid`] for a container index outside the pod spec, and in a VM
    /// that is not a pod.
    pub const CONTAINER_ENTRY: u64 = 14;
    /// `(deadline_ns, vector) -> 0`: arms the calling vCPU's one-shot timer. When the VM's
    /// monotonic clock ([`TIME_MONOTONIC`]) reaches `deadline_ns`, the hypervisor delivers
    /// interrupt `vector` to this vCPU as an external interrupt, as soon as the guest can
    /// take one (RFLAGS.IF = 1, no STI or MOV SS interrupt shadow); a deadline already
    /// past fires at once. Delivery disarms the timer; arming again replaces the deadline
    /// and the vector; `deadline_ns = u64::MAX` disarms it. There is no acknowledgement:
    /// at most one interrupt is pending per vCPU, and an expiry while one is still pending
    /// (the guest kept IF = 0) coalesces with it; a pending one is delivered even if the
    /// guest arms again meanwhile. [`crate::Error::Invalid`] for a vector below 32 (the
    /// exceptions) or above 255, and nothing changes. See the crate documentation
    /// ("Interrupts"). A hypervisor older than ABI 5 answers [`crate::Error::NoSys`].
    pub const TIMER_ARM: u64 = 15;
    /// `(mask, vector) -> 0`: kicks vCPUs of the calling VM. For every vCPU i whose bit i
    /// is set in `mask` (bits of vCPUs the VM does not have are ignored; the caller's own
    /// bit is allowed):
    /// * it is woken from [`SLEEP_UNTIL`] (or HLT) at once; if it is not blocked in one
    ///   right now, ONE wake is remembered and its next `SLEEP_UNTIL` (or HLT) returns at
    ///   once instead of blocking (kicks before that are the same one wake; a
    ///   `SLEEP_UNTIL` whose time has already come returns anyway and leaves the wake for
    ///   the next). So a guest that checks its run queue and then sleeps cannot miss a
    ///   kick that lands in between; it checks again after every wake.
    /// * when `vector != 0`, its one-shot timer is re-armed to fire at once with `vector`,
    ///   exactly as if that vCPU had called [`TIMER_ARM`]`(0, vector)` (its own deadline
    ///   is replaced: the handler arms it again), so it is interrupted as soon as it can
    ///   take an interrupt (RFLAGS.IF = 1), promptly also while it runs user code on
    ///   another CPU.
    ///
    /// A vCPU that has not run yet gets its kick when it starts. `vector` 1 to 31 or above
    /// 255 is [`crate::Error::Invalid`] and nothing happens. See the crate documentation
    /// ("Waking and interrupting another vCPU"). A hypervisor older than ABI 6 answers
    /// [`crate::Error::NoSys`] (a guest then falls back to waking on its own timer).
    pub const VCPU_KICK: u64 = 16;
}

/// The vector crx-guest's time slices arrive on ([`nr::TIMER_ARM`]): the first one above
/// the exceptions.
pub const TIMER_VECTOR_DEFAULT: u8 = 0x20;
/// The lowest vector [`nr::TIMER_ARM`] accepts (0 to 31 are exceptions).
pub const TIMER_VECTOR_MIN: u64 = 32;
/// [`nr::TIMER_ARM`]'s deadline that disarms the timer.
pub const TIMER_DISARM: u64 = u64::MAX;

/// [`nr::LOG_WRITE`] stream: the container's standard output.
pub const STREAM_STDOUT: u64 = 1;
/// `CONTAINER_EXIT` flag: a process of the container was killed because guest memory ran
/// out (the kubelet's `OOMKilled`).
pub const EXIT_OOM_KILLED: u64 = 1;
/// [`nr::LOG_WRITE`] stream: the container's standard error.
pub const STREAM_STDERR: u64 = 2;
/// Longest log write taken in one hypercall; longer ones are cut (the count says).
pub const LOG_WRITE_MAX: u64 = 4096;

/// Where one image layer lies in guest-physical space ([`nr::LAYER_INFO`]).
///
/// The bytes `gpa .. gpa + len` are mapped read-only (from [`layout::LAYERS_BASE`] on,
/// each layer starting on a 4 KiB boundary) and backed by the hypervisor's one copy of the
/// layer, shared by every VM that uses it. A guest write there stops the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct LayerInfo {
    /// Guest-physical address of the layer's first byte (4 KiB aligned).
    pub gpa: u64,
    /// Length of the layer in bytes.
    pub len: u64,
    /// [`LayerKind`] as a number.
    pub kind: u32,
    /// Zero.
    pub _pad: u32,
}

impl LayerInfo {
    /// The layer's kind, if the number is one this ABI knows.
    pub fn layer_kind(&self) -> Option<LayerKind> {
        LayerKind::from_raw(self.kind)
    }

    /// Views the record as bytes (for copying into guest memory).
    #[allow(unsafe_code)]
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `LayerInfo` is `repr(C)` plain data: two u64 then two u32, no padding,
        // so all 24 bytes are initialized.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), core::mem::size_of::<Self>())
        }
    }
}

/// How a layer is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum LayerKind {
    /// An uncompressed tar archive (`application/vnd.oci.image.layer.v1.tar`).
    Tar = 0,
    /// A gzip-compressed tar archive (`application/vnd.oci.image.layer.v1.tar+gzip`).
    TarGzip = 1,
}

impl LayerKind {
    /// The kind for its number.
    pub const fn from_raw(raw: u32) -> Option<LayerKind> {
        match raw {
            0 => Some(LayerKind::Tar),
            1 => Some(LayerKind::TarGzip),
            _ => None,
        }
    }
}

/// Longest console write taken in one hypercall; longer ones are cut (the count says).
pub const CONSOLE_WRITE_MAX: u64 = 4096;
/// Longest random fill taken in one hypercall.
pub const RANDOM_MAX: u64 = 4096;

/// Hypercall errors, returned as their negative value in `rax`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum Error {
    /// No such hypercall.
    NoSys = -1,
    /// A pointer or length lies outside the VM's memory.
    Fault = -2,
    /// An argument is out of range.
    Invalid = -3,
    /// The call was made from guest user mode (CPL > 0): only the guest kernel may call.
    Denied = -4,
}

impl Error {
    /// The value placed in `rax`.
    pub const fn to_raw(self) -> u64 {
        self as i64 as u64
    }

    /// Decodes a hypercall result.
    pub fn result(raw: u64) -> Result<u64, Error> {
        match raw as i64 {
            -1 => Err(Error::NoSys),
            -2 => Err(Error::Fault),
            -3 => Err(Error::Invalid),
            -4 => Err(Error::Denied),
            _ => Ok(raw),
        }
    }
}

/// Which instruction makes a hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum HypercallInsn {
    /// Intel VT-x: `vmcall` (0F 01 C1).
    Vmcall = 0,
    /// AMD-V: `vmmcall` (0F 01 D9).
    Vmmcall = 1,
}

/// `BootParams::magic`: "CRXBOOT1".
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"CRXBOOT1");

/// The boot parameters, at [`layout::BOOT_PARAMS`] when the guest starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct BootParams {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// [`HypercallInsn`] as a number.
    pub hypercall_insn: u32,
    /// This VM's index among those started together (0-based).
    pub vm_index: u32,
    /// How many VMs were started together.
    pub vm_count: u32,
    /// Guest memory in bytes (guest-physical 0 up to this).
    pub mem_bytes: u64,
    /// Initial stack pointer.
    pub stack_top: u64,
    /// The guest's first free guest-physical address above its image (page-aligned).
    pub free_start: u64,
    /// Command line for the guest, NUL-padded.
    pub cmdline: [u8; 256],
    /// How many vCPUs the VM has (1 to [`VCPUS_MAX`]); vCPU k starts with RSI = k (ABI 6).
    pub vcpus: u32,
    /// Zero.
    pub _pad: u32,
}

impl BootParams {
    /// The hypercall instruction, if the number is one this ABI knows.
    pub fn insn(&self) -> Option<HypercallInsn> {
        match self.hypercall_insn {
            0 => Some(HypercallInsn::Vmcall),
            1 => Some(HypercallInsn::Vmmcall),
            _ => None,
        }
    }

    /// The command line up to its first NUL, if it is UTF-8.
    pub fn cmdline(&self) -> &str {
        let end = self.cmdline.iter().position(|&b| b == 0).unwrap_or(self.cmdline.len());
        core::str::from_utf8(&self.cmdline[..end]).unwrap_or("")
    }

    /// Views the parameters as bytes (for copying into guest memory).
    #[allow(unsafe_code)]
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `BootParams` is `repr(C)` plain data with no padding (every field is a
        // multiple of 8 bytes or paired to 8, which the layout test checks), so all its
        // bytes are initialized.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), core::mem::size_of::<Self>())
        }
    }
}

/// Several guests in one boot module: the bundle the runner packs and the hypervisor
/// unpacks (entry i becomes VM i with its own command line).
///
/// Layout, all little-endian: a 16-byte header (`MAGIC`, entry count as u32, a zero u32),
/// then one 32-byte entry per VM (image offset, image length, command-line offset,
/// command-line length, each u64, offsets from the bundle's start).
pub mod bundle {
    /// The first 8 bytes of a bundle.
    pub const MAGIC: [u8; 8] = *b"CRXVMS\x00\x01";
    /// Header bytes.
    pub const HEADER: usize = 16;
    /// Bytes per entry.
    pub const ENTRY: usize = 32;
    /// Most entries a bundle may have.
    pub const MAX_ENTRIES: usize = 1024;

    /// Why a bundle was refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum BundleError {
        /// The header is shorter than [`HEADER`] or the magic differs.
        NotABundle,
        /// No entries, or more than [`MAX_ENTRIES`].
        BadCount(u32),
        /// Entry `n` points outside the bundle.
        EntryOutOfBounds(usize),
    }

    impl core::fmt::Display for BundleError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                BundleError::NotABundle => write!(f, "not a guest bundle"),
                BundleError::BadCount(n) => write!(f, "bundle has {n} entries (1 to {MAX_ENTRIES} allowed)"),
                BundleError::EntryOutOfBounds(i) => write!(f, "bundle entry {i} points outside the bundle"),
            }
        }
    }

    /// A checked bundle: every entry lies inside the bytes.
    #[derive(Debug, Clone, Copy)]
    pub struct Bundle<'a> {
        bytes: &'a [u8],
        count: usize,
    }

    /// Whether `bytes` starts like a bundle.
    pub fn is_bundle(bytes: &[u8]) -> bool {
        bytes.get(..8) == Some(&MAGIC[..])
    }

    impl<'a> Bundle<'a> {
        /// Checks the header and every entry.
        pub fn parse(bytes: &'a [u8]) -> Result<Bundle<'a>, BundleError> {
            if bytes.len() < HEADER || !(is_bundle(bytes) || is_pack(bytes)) {
                return Err(BundleError::NotABundle);
            }
            let raw = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            let count = raw as usize;
            if count == 0 || count > MAX_ENTRIES {
                return Err(BundleError::BadCount(raw));
            }
            let b = Bundle { bytes, count };
            for i in 0..count {
                b.entry(i).ok_or(BundleError::EntryOutOfBounds(i))?;
            }
            Ok(b)
        }

        /// Number of entries.
        pub fn len(&self) -> usize {
            self.count
        }

        /// Whether there are no entries (never, once parsed).
        pub fn is_empty(&self) -> bool {
            self.count == 0
        }

        /// Entry `i`: the image and its command line.
        pub fn entry(&self, i: usize) -> Option<(&'a [u8], &'a [u8])> {
            if i >= self.count {
                return None;
            }
            let at = HEADER.checked_add(i.checked_mul(ENTRY)?)?;
            let word = |k: usize| -> Option<usize> {
                let b = self.bytes.get(at + k * 8..at + k * 8 + 8)?;
                usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok()
            };
            let slice = |off: usize, len: usize| self.bytes.get(off..off.checked_add(len)?);
            Some((slice(word(0)?, word(1)?)?, slice(word(2)?, word(3)?)?))
        }
    }

    /// Whether `bytes` starts like a module pack ([`crate::pack`]).
    pub fn is_pack(bytes: &[u8]) -> bool {
        bytes.get(..8) == Some(&crate::pack::MAGIC[..])
    }

    /// Decodes a command line passed through the kernel's command line, where a space is
    /// `+` and `+`, `%` and other bytes are `%XX`. Writes into `out` and returns the length;
    /// `None` for a bad escape or when `out` is too small.
    pub fn decode_cmdline(s: &[u8], out: &mut [u8]) -> Option<usize> {
        wire::percent::decode_strict_into(s, true, out)
    }
}

/// Several boot modules in one, for boot paths that hand the kernel a single module
/// (QEMU's PVH `-initrd`): the kernel reads each entry as a boot module of its own, named
/// by the entry's second part. The layout is [`bundle`]'s with [`pack::MAGIC`], and every
/// module starts on a 4 KiB boundary of the pack ([`pack::PAGE`]), so that a page-aligned
/// pack keeps page-aligned modules (image layers are mapped into guests in place).
pub mod pack {
    use crate::bundle::{Bundle, BundleError};

    /// The first 8 bytes of a module pack.
    pub const MAGIC: [u8; 8] = *b"CRXPACK\x01";
    /// Alignment of every module in a pack.
    pub const PAGE: usize = 4096;

    /// Why a pack was refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum PackError {
        /// The header or an entry is malformed.
        Layout(BundleError),
        /// Module `n` does not start on a [`PAGE`] boundary.
        Misaligned(usize),
    }

    impl core::fmt::Display for PackError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                PackError::Layout(e) => write!(f, "module pack: {e}"),
                PackError::Misaligned(i) => write!(f, "module pack: module {i} is not page-aligned"),
            }
        }
    }

    /// The modules of a pack, each `(bytes, name)`; checked whole before any is returned.
    pub fn modules(bytes: &[u8]) -> Result<impl Iterator<Item = (&[u8], &[u8])>, PackError> {
        if !crate::bundle::is_pack(bytes) {
            return Err(PackError::Layout(BundleError::NotABundle));
        }
        let b = Bundle::parse(bytes).map_err(PackError::Layout)?;
        let base = bytes.as_ptr() as usize;
        for i in 0..b.len() {
            let (m, _) = b.entry(i).ok_or(PackError::Layout(BundleError::EntryOutOfBounds(i)))?;
            if !(m.as_ptr() as usize - base).is_multiple_of(PAGE) {
                return Err(PackError::Misaligned(i));
            }
        }
        Ok((0..b.len()).filter_map(move |i| b.entry(i)))
    }

    /// Packs `(module, name)` pairs, each module on a [`PAGE`] boundary.
    #[cfg(feature = "alloc")]
    pub fn pack(modules: &[(&[u8], &str)]) -> alloc::vec::Vec<u8> {
        let head = crate::bundle::HEADER + modules.len() * crate::bundle::ENTRY;
        let mut out = alloc::vec![0u8; head];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&(modules.len() as u32).to_le_bytes());
        for (i, (m, name)) in modules.iter().enumerate() {
            let at = crate::bundle::HEADER + i * crate::bundle::ENTRY;
            let n = out.len();
            out.extend_from_slice(name.as_bytes());
            let off = out.len().next_multiple_of(PAGE);
            out.resize(off, 0);
            out.extend_from_slice(m);
            for (k, v) in [off, m.len(), n, name.len()].into_iter().enumerate() {
                out[at + k * 8..at + k * 8 + 8].copy_from_slice(&(v as u64).to_le_bytes());
            }
        }
        let end = out.len().next_multiple_of(PAGE);
        out.resize(end, 0);
        out
    }

    #[cfg(all(test, feature = "alloc"))]
    mod tests {
        use super::*;

        #[test]
        fn modules_round_trip_page_aligned_and_bad_packs_are_refused() {
            let p = pack(&[(b"first", "node.cfg"), (&[7u8; 5000], "busybox.img")]);
            assert_eq!(p.len() % PAGE, 0);
            // A Vec's buffer need not be page-aligned: copy into an aligned one.
            let mut buf = alloc::vec![0u8; p.len() + PAGE];
            let skip = (PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
            buf[skip..skip + p.len()].copy_from_slice(&p);
            let aligned = &buf[skip..skip + p.len()];
            let got: alloc::vec::Vec<_> = modules(aligned).unwrap().collect();
            assert_eq!(got.len(), 2);
            assert_eq!(got[0], (&b"first"[..], &b"node.cfg"[..]));
            assert_eq!((got[1].0.len(), got[1].1), (5000, &b"busybox.img"[..]));
            assert!(got.iter().all(|(m, _)| (m.as_ptr() as usize).is_multiple_of(PAGE)));
            assert_eq!(
                modules(b"CRXVMS\x00\x01rest-of-it").err(),
                Some(PackError::Layout(BundleError::NotABundle))
            );
            assert!(matches!(modules(&aligned[..40]), Err(PackError::Layout(_))));
            let mut x = aligned.to_vec();
            x[16] = 1; // module 0 moved off its page
            let mut b2 = alloc::vec![0u8; x.len() + PAGE];
            let skip = (PAGE - b2.as_ptr() as usize % PAGE) % PAGE;
            b2[skip..skip + x.len()].copy_from_slice(&x);
            assert_eq!(modules(&b2[skip..skip + x.len()]).err(), Some(PackError::Misaligned(0)));
        }
    }
}

/// Guest-physical layout the hypervisor sets up before the first instruction.
pub mod layout {
    /// Never mapped: a guest null dereference faults inside the guest.
    pub const NULL_PAGE: u64 = 0;
    /// The guest's PML4; PDPT follows at +0x1000, page directories at +0x2000.. (one per GiB).
    pub const PML4: u64 = 0x1000;
    /// The guest's PDPT.
    pub const PDPT: u64 = 0x2000;
    /// The first page directory (up to 4, covering 4 GiB).
    pub const PD: u64 = 0x3000;
    /// The GDT (and a TSS right after it).
    pub const GDT: u64 = 0x7000;
    /// [`crate::BootParams`].
    pub const BOOT_PARAMS: u64 = 0x8000;
    /// Lowest address an ELF segment may load at.
    pub const KERNEL_MIN: u64 = 0x10_0000;
    /// Most guest memory the layout can describe (4 page directories).
    pub const MEM_MAX: u64 = 4 << 30;
    /// Least guest memory: room for the tables, the image floor and a stack.
    pub const MEM_MIN: u64 = 2 << 20;
    /// Stack bytes of each vCPU at the top of guest memory: vCPU k starts with
    /// RSP = [`crate::BootParams::stack_top`] `- k x VCPU_STACK_BYTES`.
    pub const VCPU_STACK_BYTES: u64 = 64 << 10;
    /// Start of the layer window of a pod VM (256 GiB, above any guest RAM): the image's
    /// layers, read-only, one after another, each 4 KiB aligned ([`crate::LayerInfo`]).
    /// Not in the initial page tables: the guest maps what it reads.
    pub const LAYERS_BASE: u64 = 0x40_0000_0000;
    /// Size of the layer window.
    pub const LAYERS_SIZE: u64 = 256 << 30;

    // The window lies above the most guest RAM the layout can describe.
    const _: () = assert!(LAYERS_BASE >= MEM_MAX);
}

pub mod pod;

/// Making hypercalls from a guest.
#[allow(unsafe_code)]
pub mod call {
    use super::HypercallInsn;

    /// Makes hypercall `nr` with up to four arguments.
    ///
    /// # Safety
    /// Must run in a guest of this hypervisor (elsewhere the instruction faults), and any
    /// pointer argument must be valid for what the hypercall does with it.
    #[inline(always)]
    pub unsafe fn hypercall(insn: HypercallInsn, nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> u64 {
        let ret: u64;
        match insn {
            // SAFETY: the caller guarantees we run as a guest; the hypervisor reads the
            // argument registers and writes only rax.
            HypercallInsn::Vmcall => unsafe {
                core::arch::asm!("vmcall", inlateout("rax") nr => ret, in("rdi") a0, in("rsi") a1,
                    in("rdx") a2, in("r10") a3, options(nostack))
            },
            // SAFETY: as above, with AMD's instruction.
            HypercallInsn::Vmmcall => unsafe {
                core::arch::asm!("vmmcall", inlateout("rax") nr => ret, in("rdi") a0, in("rsi") a1,
                    in("rdx") a2, in("r10") a3, options(nostack))
            },
        }
        ret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_params_layout_is_stable() {
        assert_eq!(core::mem::size_of::<BootParams>(), 48 + 256 + 8);
        assert_eq!(core::mem::offset_of!(BootParams, mem_bytes), 24);
        assert_eq!(core::mem::offset_of!(BootParams, cmdline), 48);
        assert_eq!(core::mem::offset_of!(BootParams, vcpus), 48 + 256, "appended after cmdline (ABI 6)");
        assert_eq!(core::mem::offset_of!(BootParams, _pad), 48 + 256 + 4);
        // It fits in its page below the next boot structure.
        assert!(core::mem::size_of::<BootParams>() <= 0x1000);
    }

    #[test]
    fn bundles_are_checked() {
        use bundle::*;
        let mut b = vec![0u8; HEADER + 2 * ENTRY];
        b[..8].copy_from_slice(&MAGIC);
        b[8] = 2;
        let payload = b.len();
        b.extend_from_slice(b"ELF1ELF2code=3");
        let entries = [[payload, 4, payload + 8, 6], [payload + 4, 4, payload + 14, 0]];
        for (i, e) in entries.iter().enumerate() {
            for (k, v) in e.iter().enumerate() {
                let at = HEADER + i * ENTRY + k * 8;
                b[at..at + 8].copy_from_slice(&(*v as u64).to_le_bytes());
            }
        }
        let p = Bundle::parse(&b).expect("valid bundle");
        assert_eq!(p.len(), 2);
        assert_eq!(p.entry(0), Some((&b"ELF1"[..], &b"code=3"[..])));
        assert_eq!(p.entry(1), Some((&b"ELF2"[..], &b""[..])));
        assert_eq!(p.entry(2), None);
        let mut bad = b.clone();
        bad[HEADER + ENTRY + 8] = 0xff; // image length of entry 1 runs off the end
        assert_eq!(Bundle::parse(&bad).err(), Some(BundleError::EntryOutOfBounds(1)));
        let mut bad = b.clone();
        bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Bundle::parse(&bad).err(), Some(BundleError::BadCount(u32::MAX)));
        assert_eq!(Bundle::parse(&b[..10]).err(), Some(BundleError::NotABundle));
        assert_eq!(Bundle::parse(b"\x7fELF").err(), Some(BundleError::NotABundle));
        // Offsets near u64::MAX must not wrap.
        let mut bad = b.clone();
        bad[HEADER..HEADER + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Bundle::parse(&bad).err(), Some(BundleError::EntryOutOfBounds(0)));
    }

    #[test]
    fn cmdline_decoding() {
        let mut out = [0u8; 32];
        let n = bundle::decode_cmdline(b"code=3+step=rdmsr%2B%25", &mut out).expect("valid");
        assert_eq!(&out[..n], b"code=3 step=rdmsr+%");
        assert_eq!(bundle::decode_cmdline(b"%4", &mut out), None);
        assert_eq!(bundle::decode_cmdline(b"%zz", &mut out), None);
        assert_eq!(bundle::decode_cmdline(b"abcd", &mut [0u8; 3]), None);
    }

    #[test]
    fn layer_info_layout_is_stable() {
        assert_eq!(core::mem::size_of::<LayerInfo>(), 24);
        assert_eq!(core::mem::offset_of!(LayerInfo, kind), 16);
        let l = LayerInfo { gpa: layout::LAYERS_BASE, len: 5, kind: 1, _pad: 0 };
        assert_eq!(&l.as_bytes()[..8], &layout::LAYERS_BASE.to_le_bytes());
        assert_eq!(l.layer_kind(), Some(LayerKind::TarGzip));
        assert_eq!(LayerKind::from_raw(2), None);
    }

    #[test]
    fn hypercall_numbers_are_distinct_and_dense() {
        let all = [
            nr::VERSION,
            nr::CONSOLE_WRITE,
            nr::EXIT,
            nr::TIME_MONOTONIC,
            nr::TIME_WALL,
            nr::SLEEP_UNTIL,
            nr::YIELD,
            nr::RANDOM,
            nr::BOOT_PARAMS,
            nr::LOG_WRITE,
            nr::CONTAINER_EXIT,
            nr::POD_SPEC,
            nr::LAYER_INFO,
            nr::POD_CONTROL,
            nr::CONTAINER_ENTRY,
            nr::TIMER_ARM,
            nr::VCPU_KICK,
        ];
        for (i, n) in all.iter().enumerate() {
            assert_eq!(*n, i as u64, "hypercall numbers run 0, 1, 2, ... without gaps or repeats");
        }
    }

    #[test]
    fn errors_round_trip() {
        for e in [Error::NoSys, Error::Fault, Error::Invalid] {
            assert_eq!(Error::result(e.to_raw()), Err(e));
        }
        assert_eq!(Error::result(42), Ok(42));
    }

    #[test]
    fn cmdline_stops_at_nul() {
        let mut p = BootParams {
            magic: BOOT_MAGIC,
            abi_version: ABI_VERSION,
            hypercall_insn: 1,
            vm_index: 0,
            vm_count: 1,
            mem_bytes: 1 << 20,
            stack_top: 1 << 20,
            free_start: 0,
            cmdline: [0; 256],
            vcpus: 2,
            _pad: 0,
        };
        p.cmdline[..5].copy_from_slice(b"hello");
        assert_eq!(p.cmdline(), "hello");
        assert_eq!(p.insn(), Some(HypercallInsn::Vmmcall));
        p.hypercall_insn = 9;
        assert_eq!(p.insn(), None);
        assert_eq!(p.as_bytes().len(), 312);
        assert_eq!(&p.as_bytes()[304..312], &[2, 0, 0, 0, 0, 0, 0, 0], "vcpus, then the zero pad");
    }
}
