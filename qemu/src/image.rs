//! Building what boots: the kernel ELF (booted directly by QEMU through its PVH note) and
//! the GRUB ISO (Multiboot2; booted by Bochs and written to a USB stick for bare metal).

use crate::setup::{self, KERNEL_TARGET};
use crate::Error;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    // This crate sits one level below the root.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The workspace's `target/` directory (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        None => repo_root().join("target"),
    }
}

/// Where `cargo build --release` leaves the kernel.
pub fn kernel_path() -> PathBuf {
    target_dir().join(KERNEL_TARGET).join("release").join("hypervisor")
}

/// The install image `build` writes.
pub fn iso_path() -> PathBuf {
    target_dir().join("hypervisor.iso")
}

/// Holds an exclusive lock on `target/xtask.lock` so that builds from several processes
/// (test binaries, a concurrent `cargo xtask`) do not overwrite each other's files.
pub struct BuildLock {
    _file: File,
}

impl BuildLock {
    /// Waits for the lock.
    pub fn acquire() -> Result<BuildLock, Error> {
        let dir = target_dir();
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join("xtask.lock");
        let file = File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        file.lock().map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
        Ok(BuildLock { _file: file })
    }
}

/// Builds the kernel (release, for `x86_64-unknown-none`) and returns its path.
pub fn build_kernel() -> Result<PathBuf, Error> {
    setup::ensure_kernel_target()?;
    let _lock = BuildLock::acquire()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["build", "--release", "-p", "hypervisor", "--target", KERNEL_TARGET]);
    let status = cmd.status().map_err(|e| Error::io("running cargo build", e))?;
    if !status.success() {
        return Err(Error::Failed { what: format!("{cmd:?}"), status });
    }
    let kernel = kernel_path();
    if kernel.is_file() {
        Ok(kernel)
    } else {
        Err(Error::Missing(format!("cargo build succeeded but left no kernel at {}", kernel.display())))
    }
}

/// The test guests (binaries of the `guests` crate) that [`build_guests`] builds.
pub const GUESTS: &[&str] = &[
    "hello",
    "exit-code",
    "time",
    "spin",
    "counter",
    "fpu",
    "oob-read",
    "oob-write",
    "privileged",
    "triple-fault",
    "wild-hypercalls",
    "forever",
    "kick",
    "bench",
];

/// Where `cargo build --release -p guests` leaves guest `name`.
pub fn guest_path(name: &str) -> PathBuf {
    target_dir().join(KERNEL_TARGET).join("release").join(name)
}

/// Builds the test guests (release, for `x86_64-unknown-none`) and returns the directory
/// that holds them.
pub fn build_guests() -> Result<PathBuf, Error> {
    setup::ensure_kernel_target()?;
    let _lock = BuildLock::acquire()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["build", "--release", "-p", "guests", "--target", KERNEL_TARGET]);
    let status = cmd.status().map_err(|e| Error::io("running cargo build", e))?;
    if !status.success() {
        return Err(Error::Failed { what: format!("{cmd:?}"), status });
    }
    for name in GUESTS {
        if !guest_path(name).is_file() {
            let path = guest_path(name);
            return Err(Error::Missing(format!(
                "cargo build succeeded but left no guest at {}",
                path.display()
            )));
        }
    }
    Ok(target_dir().join(KERNEL_TARGET).join("release"))
}

/// Quotes one command-line word for grub.cfg when it holds anything beyond plain characters.
fn grub_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "=,._:/+-".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The grub.cfg that boots the kernel at once with `cmdline`.
pub fn grub_cfg(cmdline: &str) -> String {
    grub_cfg_with_modules(cmdline, &[])
}

/// The grub.cfg that boots the kernel at once with `cmdline` and loads the files under
/// `/boot/` named by `modules`, in order, as Multiboot2 modules.
pub fn grub_cfg_with_modules(cmdline: &str, modules: &[&str]) -> String {
    let mut line = String::from("multiboot2 /boot/hypervisor");
    for word in cmdline.split_whitespace() {
        line.push(' ');
        line.push_str(&grub_word(word));
    }
    for module in modules {
        line.push_str(&format!("\n    module2 /boot/{}", grub_word(module)));
    }
    format!("set timeout=0\nset default=0\n\nmenuentry \"hypervisor\" {{\n    {line}\n    boot\n}}\n")
}

/// Builds a GRUB ISO at `out` holding `kernel` and a grub.cfg that passes `cmdline`.
pub fn build_iso(kernel: &Path, cmdline: &str, out: &Path) -> Result<(), Error> {
    build_iso_with_modules(kernel, cmdline, &[], out)
}

/// Builds a GRUB ISO like [`build_iso`] that also holds `modules` (each copied to
/// `/boot/NAME`, NAME possibly in a folder such as `images/busybox.img`, and loaded, in
/// order, as a Multiboot2 module).
pub fn build_iso_with_modules(
    kernel: &Path,
    cmdline: &str,
    modules: &[(&str, &Path)],
    out: &Path,
) -> Result<(), Error> {
    setup::ensure(setup::ISO)?;
    let _lock = BuildLock::acquire()?;
    let name = out.file_stem().and_then(|s| s.to_str()).unwrap_or("hypervisor");
    let staging = target_dir().join("iso-staging").join(name);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| Error::io(format!("clearing {}", staging.display()), e))?;
    }
    let grub = staging.join("boot").join("grub");
    fs::create_dir_all(&grub).map_err(|e| Error::io(format!("creating {}", grub.display()), e))?;
    fs::copy(kernel, staging.join("boot").join("hypervisor"))
        .map_err(|e| Error::io(format!("copying {}", kernel.display()), e))?;
    for (name, path) in modules {
        let to = staging.join("boot").join(name);
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        fs::copy(path, &to).map_err(|e| Error::io(format!("copying {}", path.display()), e))?;
    }
    let names: Vec<&str> = modules.iter().map(|(name, _)| *name).collect();
    fs::write(grub.join("grub.cfg"), grub_cfg_with_modules(cmdline, &names))
        .map_err(|e| Error::io("writing grub.cfg", e))?;
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    let mut cmd = Command::new("grub-mkrescue");
    cmd.arg("-o").arg(out).arg(&staging).stdin(Stdio::null());
    let output = cmd.output().map_err(|e| Error::io("running grub-mkrescue", e))?;
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        return Err(Error::Failed { what: format!("{cmd:?}"), status: output.status });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_boots_at_once_with_the_command_line() {
        let cfg = grub_cfg("selftest=all log=debug");
        assert!(cfg.starts_with("set timeout=0\nset default=0\n"));
        assert!(cfg.contains("    multiboot2 /boot/hypervisor selftest=all log=debug\n    boot\n}"));
    }

    #[test]
    fn grub_cfg_loads_modules_in_order() {
        let cfg = grub_cfg_with_modules("vm.count=2", &["guest", "more"]);
        assert!(
            cfg.contains(
                "    multiboot2 /boot/hypervisor vm.count=2\n    module2 /boot/guest\n    module2 /boot/more\n    boot\n"
            ),
            "{cfg}"
        );
    }

    #[test]
    fn grub_cfg_without_a_command_line() {
        assert!(grub_cfg("  ").contains("    multiboot2 /boot/hypervisor\n"));
    }

    #[test]
    fn grub_cfg_quotes_odd_words() {
        let cfg = grub_cfg("log=loud =x a;b it's");
        assert!(cfg.contains("multiboot2 /boot/hypervisor log=loud =x 'a;b' 'it'\\''s'\n"), "{cfg}");
    }

    #[test]
    fn paths_sit_under_target() {
        assert!(kernel_path().ends_with("x86_64-unknown-none/release/hypervisor"));
        assert_eq!(iso_path().file_name().and_then(|n| n.to_str()), Some("hypervisor.iso"));
    }
}
