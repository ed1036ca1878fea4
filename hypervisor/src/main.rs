//! The hypervisor kernel image. Built for `x86_64-unknown-none` by `cargo xtask build`;
//! on the host this binary only says so.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
boot::entry_point!(hypervisor::kmain);

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hypervisor::kmain::panic(info)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor runs on bare metal: build it with `cargo xtask build`");
    std::process::exit(2);
}
