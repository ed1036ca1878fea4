//! Making sure the programs and files a verb needs are on the machine.
//!
//! Each need is a program on `PATH` or a file, with the Debian package that provides it.
//! Only what is missing is installed, and only as root (`apt-get update` once, then
//! `apt-get install -y`); otherwise the error says exactly what to install.

use crate::Error;
use std::path::Path;
use std::process::{Command, Stdio};

/// The kernel's target triple.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";
/// The toolchain the project pins (rust-toolchain.toml).
pub const TOOLCHAIN: &str = "1.95.0";

/// Where Debian's Bochs keeps its display plugins.
pub const BOCHS_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/bochs/plugins";
/// The Bochs BIOS image.
pub const BOCHS_BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// The VGA BIOS image Bochs loads.
pub const VGA_BIOS: &str = "/usr/share/vgabios/vgabios.bin";

/// How to tell that a need is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A program on `PATH`.
    Program(&'static str),
    /// A file.
    File(&'static str),
}

/// One thing a verb needs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// How to tell it is there.
    pub check: Check,
    /// The package to install when it is not.
    pub package: &'static str,
}

const fn program(name: &'static str, package: &'static str) -> Need {
    Need { check: Check::Program(name), package }
}

const fn file(path: &'static str, package: &'static str) -> Need {
    Need { check: Check::File(path), package }
}

/// What building the ISO needs.
pub const ISO: &[Need] = &[
    program("grub-mkrescue", "grub-common"),
    file("/usr/lib/grub/i386-pc/multiboot2.mod", "grub-pc-bin"),
    file("/usr/lib/grub/x86_64-efi/multiboot2.mod", "grub-efi-amd64-bin"),
    program("xorriso", "xorriso"),
    program("mformat", "mtools"),
];

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// What building the busybox test image needs.
pub const BUSYBOX: &[Need] = &[file(BUSYBOX_PATH, "busybox-static")];

/// Where Debian's libc6-dev puts the static C library that `gcc -static` links.
pub const LIBC_STATIC_PATH: &str = "/usr/lib/x86_64-linux-gnu/libc.a";

/// What compiling the pod tests' static C programs (`gcc -static`, also with `-pthread`:
/// glibc's libc.a holds the threads since 2.34) needs.
pub const STATIC_C: &[Need] = &[program("gcc", "gcc"), file(LIBC_STATIC_PATH, "libc6-dev")];

/// What building the static Go test program (`CGO_ENABLED=0 go build`) needs: Debian's Go
/// (1.19 on bookworm), whose standard library comes with it, so nothing is downloaded.
pub const GO: &[Need] = &[program("go", "golang-go")];

/// Where Debian's musl package puts the musl dynamic loader that `musl-gcc` programs name
/// as their interpreter (PT_INTERP).
pub const MUSL_LOADER_PATH: &str = "/lib/ld-musl-x86_64.so.1";

/// What building the dynamically linked musl test program (`musl-gcc`) needs; the loader
/// comes with musl-tools (its dependency `musl`).
pub const MUSL: &[Need] = &[program("musl-gcc", "musl-tools"), file(MUSL_LOADER_PATH, "musl")];

/// What building the glibc-dynamic Debian image (`image debian`) needs: the programs it
/// copies (gawk is not in a minimal Debian; bash, coreutils, grep and sed are essential
/// packages) and `ldd` to name their libraries.
pub const DEBIAN_IMAGE: &[Need] = &[
    program("bash", "bash"),
    program("ls", "coreutils"),
    program("grep", "grep"),
    program("sed", "sed"),
    program("gawk", "gawk"),
    program("ldd", "libc-bin"),
];

/// Where Debian's python3-kubernetes puts the official Python client.
pub const PYTHON_KUBERNETES: &str = "/usr/lib/python3/dist-packages/kubernetes/__init__.py";

/// What the control-plane tests need: kubectl and the official Python client.
pub const CONTROL_PLANE: &[Need] = &[
    program("kubectl", "kubectl"),
    file("/usr/bin/python3", "python3"),
    file(PYTHON_KUBERNETES, "python3-kubernetes"),
];

/// What driving a cluster needs: kubectl.
pub const KUBECTL: &[Need] = &[program("kubectl", "kubectl")];

/// What the registry tests need: the reference registry (CNCF distribution), skopeo to push
/// images to it, and htpasswd for its bcrypt password file.
pub const REGISTRY: &[Need] = &[
    program("docker-registry", "docker-registry"),
    program("skopeo", "skopeo"),
    program("htpasswd", "apache2-utils"),
];

/// What booting the ISO under UEFI firmware in QEMU needs (besides QEMU and the ISO).
pub const UEFI: &[Need] =
    &[file(crate::emulator::OVMF_CODE, "ovmf"), file(crate::emulator::OVMF_VARS, "ovmf")];

/// What booting under QEMU needs.
pub const QEMU: &[Need] = &[program("qemu-system-x86_64", "qemu-system-x86")];

/// What booting under Bochs needs (besides the ISO). Debian's `bochs` package pulls in a
/// graphical display by default; the terminal display is its own package.
pub const BOCHS: &[Need] = &[
    program("bochs", "bochs"),
    file(BOCHS_BIOS, "bochsbios"),
    file(VGA_BIOS, "vgabios"),
    file("/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so", "bochs-term"),
    program("script", "bsdutils"),
];

impl Need {
    /// Whether the need is met on this machine.
    pub fn is_met(&self) -> bool {
        match self.check {
            Check::Program(name) => on_path(name),
            Check::File(path) => Path::new(path).exists(),
        }
    }

    fn describe(&self) -> String {
        match self.check {
            Check::Program(name) => format!("program `{name}` (package {})", self.package),
            Check::File(path) => format!("file {path} (package {})", self.package),
        }
    }
}

/// Whether `name` is an executable file in a directory of `PATH`.
pub fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The packages that provide the unmet needs, each once, in order.
pub fn missing_packages(needs: &[Need]) -> Vec<&'static str> {
    let mut packages: Vec<&'static str> = Vec::new();
    for need in needs.iter().filter(|n| !n.is_met()) {
        if !packages.contains(&need.package) {
            packages.push(need.package);
        }
    }
    packages
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Installs what is missing of `needs`, or says what to install.
pub fn ensure(needs: &[Need]) -> Result<(), Error> {
    let missing = missing_packages(needs);
    if missing.is_empty() {
        return Ok(());
    }
    for need in needs.iter().filter(|n| !n.is_met()) {
        eprintln!("setup: missing {}", need.describe());
    }
    let list = missing.join(" ");
    if !is_root() || !on_path("apt-get") {
        return Err(Error::Missing(format!(
            "missing packages: {list}. Install them with: sudo apt-get install {list}"
        )));
    }
    eprintln!("setup: running apt-get update");
    run_apt(Command::new("apt-get").arg("update"))?;
    eprintln!("setup: installing {list}");
    run_apt(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(&missing),
    )?;
    let still: Vec<String> = needs.iter().filter(|n| !n.is_met()).map(Need::describe).collect();
    if still.is_empty() {
        eprintln!("setup: installed {list}");
        Ok(())
    } else {
        Err(Error::Missing(format!("still missing after installing {list}: {}", still.join(", "))))
    }
}

/// Checks, without installing anything, that `needs` are met.
pub fn ensure_present(needs: &[Need]) -> Result<(), Error> {
    let missing = missing_packages(needs);
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    Err(Error::Missing(format!(
        "missing packages: {list}. `cargo xtask test` installs them, or: sudo apt-get install {list}"
    )))
}

fn run_apt(cmd: &mut Command) -> Result<(), Error> {
    let what = format!("{cmd:?}");
    let status =
        cmd.stdin(Stdio::null()).status().map_err(|e| Error::Io { what: what.clone(), source: e })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Failed { what, status })
    }
}

/// Adds the kernel target to the pinned toolchain when it lacks it. Without rustup, says so
/// and trusts the toolchain to have it.
pub fn ensure_kernel_target() -> Result<(), Error> {
    if !on_path("rustup") {
        eprintln!("setup: rustup not found; assuming the toolchain has the {KERNEL_TARGET} target");
        return Ok(());
    }
    let list = Command::new("rustup")
        .args(["target", "list", "--installed", "--toolchain", TOOLCHAIN])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Io { what: "rustup target list".into(), source: e })?;
    if String::from_utf8_lossy(&list.stdout).lines().any(|l| l.trim() == KERNEL_TARGET) {
        return Ok(());
    }
    eprintln!("setup: adding the {KERNEL_TARGET} target to toolchain {TOOLCHAIN}");
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", KERNEL_TARGET, "--toolchain", TOOLCHAIN]);
    let status = cmd.status().map_err(|e| Error::Io { what: "rustup target add".into(), source: e })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Failed { what: format!("{cmd:?}"), status })
    }
}

/// Debian's package for its current kernel, the Linux baseline of `cargo xtask bench`.
pub const LINUX_PACKAGE: &str = "linux-image-amd64";

/// The newest `vmlinuz-*` in `dir`, by version order.
pub fn newest_kernel(dir: &Path) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmlinuz-"))
        .collect();
    names.sort_by(|a, b| version_cmp(a, b));
    names.pop().map(|n| dir.join(n))
}

/// Compares names so that runs of digits compare as numbers (`6.1.0-9` < `6.1.0-40`).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            let split = i == bytes.len()
                || bytes.get(i).map(u8::is_ascii_digit) != bytes.get(i - 1).map(u8::is_ascii_digit);
            if split {
                let digits = bytes.get(start).is_some_and(u8::is_ascii_digit);
                out.push((digits, s.get(start..i).unwrap_or_default()));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let ord = match (x, y) {
            ((true, p), (true, q)) => {
                let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                p.len().cmp(&q.len()).then_with(|| p.cmp(q))
            }
            ((_, p), (_, q)) => p.cmp(q),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The newest Linux kernel in /boot; when there is none, installs [`LINUX_PACKAGE`] without
/// recommends (running `apt-get update` and trying again if the first attempt fails).
pub fn ensure_linux_kernel() -> Result<std::path::PathBuf, Error> {
    let boot = Path::new("/boot");
    if let Some(k) = newest_kernel(boot) {
        return Ok(k);
    }
    if !is_root() || !on_path("apt-get") {
        return Err(Error::Missing(format!(
            "no /boot/vmlinuz-*. Install one with: sudo apt-get install --no-install-recommends {LINUX_PACKAGE}"
        )));
    }
    let install = || {
        run_apt(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "--no-install-recommends",
            LINUX_PACKAGE,
        ]))
    };
    eprintln!(
        "setup: no /boot/vmlinuz-*: running apt-get install -y --no-install-recommends {LINUX_PACKAGE}"
    );
    if install().is_err() {
        eprintln!("setup: running apt-get update, then installing {LINUX_PACKAGE} again");
        run_apt(Command::new("apt-get").arg("update"))?;
        install()?;
    }
    newest_kernel(boot)
        .ok_or_else(|| Error::Missing(format!("still no /boot/vmlinuz-* after installing {LINUX_PACKAGE}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_program_is_met_and_a_missing_one_is_not() {
        assert!(program("sh", "dash").is_met());
        assert!(!program("no-such-program-anywhere", "nothing").is_met());
        assert!(!file("/no/such/file", "nothing").is_met());
    }

    #[test]
    fn missing_packages_are_listed_once() {
        let needs = [
            program("no-such-program-a", "pkg-a"),
            file("/no/such/file", "pkg-a"),
            program("sh", "dash"),
            program("no-such-program-b", "pkg-b"),
        ];
        assert_eq!(missing_packages(&needs), vec!["pkg-a", "pkg-b"]);
    }

    #[test]
    fn kernel_versions_compare_as_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-40-amd64"), Less);
        assert_eq!(version_cmp("vmlinuz-6.10.0-1-amd64", "vmlinuz-6.9.0-1-amd64"), Greater);
        assert_eq!(version_cmp("vmlinuz-6.1.0-40-amd64", "vmlinuz-6.1.0-40-amd64"), Equal);
        assert_eq!(version_cmp("vmlinuz-6.1", "vmlinuz-6.1.0"), Less);
    }

    #[test]
    fn the_newest_kernel_in_a_directory_is_found() {
        let dir = std::env::temp_dir().join(format!("newest-kernel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(std::fs::create_dir_all(&dir).is_ok());
        assert_eq!(newest_kernel(&dir), None);
        for name in ["vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-40-amd64", "initrd.img-6.1.0-99-amd64"] {
            assert!(std::fs::write(dir.join(name), b"").is_ok());
        }
        assert_eq!(newest_kernel(&dir), Some(dir.join("vmlinuz-6.1.0-40-amd64")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
