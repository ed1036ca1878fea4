//! The hypervisor kernel image. Built for `x86_64-unknown-none` by `cargo xtask build`;
//! on the host this binary only says so.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
boot::entry_point!(hypervisor::kmain);

// rustls-rustcrypto draws its ephemeral keys from `OsRng`, which is getrandom's: on this
// target getrandom asks the function registered here.
#[cfg(target_os = "none")]
getrandom::register_custom_getrandom!(getrandom_rdrand);

/// getrandom's source in the kernel: RDRAND, or an error (never predictable bytes).
#[cfg(target_os = "none")]
fn getrandom_rdrand(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    if !hypervisor::arch::random::available() {
        return Err(getrandom::Error::UNSUPPORTED);
    }
    hypervisor::arch::random::fill(buf).map_err(|()| {
        // A custom code: RDRAND is there but kept failing.
        match core::num::NonZeroU32::new(getrandom::Error::CUSTOM_START) {
            Some(code) => getrandom::Error::from(code),
            None => getrandom::Error::UNSUPPORTED,
        }
    })
}

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
