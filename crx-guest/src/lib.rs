//! crx-guest: the guest kernel that runs inside every pod VM.
//!
//! It boots in a pod VM in 64-bit mode, builds the containers' root filesystem from the
//! image layers and runs the containers' static Linux x86_64 binaries in user mode on a
//! subset of the Linux syscall ABI, talking to the hypervisor through hypercalls.
//!
//! This library holds the kernel's pure logic, which builds and is tested on the host:
//! ELF load plans for programs and their interpreter ([`elf`]), the start-up stack and its
//! auxiliary vector ([`stack`]), the frame pool ([`frames`]), the page cache of mapped files
//! ([`pagecache`]), address-space regions and `mremap`'s checks ([`vma`]), process ABI
//! details ([`posix`]), interval timers ([`itimer`]), readiness ([`poll`]), thread and futex arguments ([`threads`]), syscall names
//! ([`sysno`]) and the pod ABI ([`podabi`]). The kernel proper (`src/main.rs` and
//! `src/kernel/`) builds only for `x86_64-unknown-none`.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod elf;
pub mod frames;
pub mod itimer;
pub mod pagecache;
pub mod podabi;
pub mod poll;
pub mod posix;
pub mod signal;
pub mod stack;
pub mod sysno;
pub mod threads;
pub mod vma;
