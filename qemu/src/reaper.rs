//! Emulators must not outlive the runner. Each [`crate::machine::Machine`] runs in a process
//! group of its own (so a Ctrl-C on the terminal does not reach it half-way), and registers
//! that group here while it runs. [`install`] makes SIGINT and SIGTERM kill every registered
//! group and end the runner with 128 + the signal's number; verbs that stop in order
//! (`cluster up`, `vm run`, the node bench) put their own handlers in its place.
//!
//! The handler runs in signal context, so it only reads atomics and calls `killpg` and
//! `_exit`, which are async-signal-safe.

use nix::sys::signal::{killpg, signal, SigHandler, Signal};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicI32, Ordering};

/// Most process groups held at once.
const SLOTS: usize = 256;

static GROUPS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

/// A registered process group; dropping it forgets the group.
#[derive(Debug)]
pub struct Registration(usize);

impl Drop for Registration {
    fn drop(&mut self) {
        GROUPS[self.0].store(0, Ordering::SeqCst);
    }
}

/// Registers process group `pgid` to be killed if the runner is stopped by a signal; `None`
/// when every slot is taken (the group is then only killed by its owner).
pub fn register(pgid: u32) -> Option<Registration> {
    let pgid = i32::try_from(pgid).ok().filter(|p| *p > 1)?;
    GROUPS
        .iter()
        .position(|g| g.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst).is_ok())
        .map(Registration)
}

/// The process groups registered now.
pub fn registered() -> Vec<i32> {
    GROUPS.iter().map(|g| g.load(Ordering::SeqCst)).filter(|p| *p > 0).collect()
}

extern "C" fn on_signal(sig: nix::libc::c_int) {
    for g in &GROUPS {
        let p = g.load(Ordering::SeqCst);
        if p > 1 {
            let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    // SAFETY: _exit ends the process at once without running anything of ours, and is
    // async-signal-safe.
    unsafe { nix::libc::_exit(128 + sig) }
}

/// Makes SIGINT and SIGTERM kill every registered group, then end the runner.
pub fn install() -> Result<(), nix::Error> {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only reads atomics and calls killpg and _exit, which are
        // async-signal-safe.
        unsafe { signal(sig, SigHandler::Handler(on_signal)) }?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_held_while_registered() {
        let a = register(4242).unwrap();
        let b = register(4343).unwrap();
        assert!(registered().contains(&4242) && registered().contains(&4343));
        drop(a);
        assert!(!registered().contains(&4242));
        assert!(registered().contains(&4343));
        drop(b);
        assert!(register(0).is_none() && register(1).is_none(), "never the whole system or init");
    }
}
