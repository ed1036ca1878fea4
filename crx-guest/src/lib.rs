//! crx-guest: the guest kernel that runs inside every pod VM.
//!
//! Not built yet. It will boot in a pod VM in 64-bit mode, build the container's root
//! filesystem from its image layers and run the container's static Linux binaries on a
//! Linux syscall subset, talking to the hypervisor through a versioned hypercall ABI.
#![cfg_attr(not(test), no_std)]
