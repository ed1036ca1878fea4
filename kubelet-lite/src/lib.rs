//! kubelet-lite: the node agent that runs inside the hypervisor.
//!
//! It registers a node with a Kubernetes control plane, keeps the node's lease and status,
//! lists and watches the pods bound to it, runs them against a [`runtime::Runtime`] and
//! reports their status, events and logs. The wire contract it follows is the real
//! kubelet's (JSON over HTTP/1.1, strategic merge patches, core/v1 events).
//!
//! Everything here is `no_std` + `alloc` and does no I/O of its own: time is passed in
//! ([`time::Time`]), the agent is a state machine that hands out requests and takes their
//! replies ([`agent::Agent`]), and the HTTP client runs over a [`http::Transport`] trait.
//! Bytes from the network are allegations: every parser here returns a typed error on
//! malformed or oversized input and never panics.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod agent;
pub mod http;
pub mod image;
pub mod logs;
pub mod nodecfg;
pub mod pods;
pub mod pullsecrets;
pub mod registry;
pub mod runtime;
pub mod sim;
pub mod time;
pub mod types;
