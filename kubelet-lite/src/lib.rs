//! kubelet-lite: the node agent that runs inside the hypervisor.
//!
//! Not built yet. It will register the node with a Kubernetes control plane, keep its
//! lease, run the pods bound to it and report their status and logs, with time and I/O
//! passed in so that all of it runs under `cargo test`.
#![cfg_attr(not(test), no_std)]
