//! The crx-guest kernel binary. Built for `x86_64-unknown-none` it is the kernel the
//! hypervisor boots in a pod VM; built for the host it is a stub that says so.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod kernel;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("crx-guest is a guest kernel; build it with `cargo build --release -p crx-guest --target x86_64-unknown-none`");
    std::process::exit(2);
}
