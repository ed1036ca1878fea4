//! How a node is started: QEMU booting the kernel directly (PVH), or Bochs booting the ISO.

use crate::image::target_dir;
use crate::setup::{BOCHS_BIOS, VGA_BIOS};
use crate::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// QEMU's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation: works everywhere, emulates AMD SVM.
    #[default]
    Tcg,
    /// Hardware virtualization; needs `/dev/kvm` with nested virtualization (implies `-cpu host`).
    Kvm,
}

/// A QEMU node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qemu {
    /// The kernel ELF, booted through its PVH note.
    pub kernel: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// CPUs.
    pub smp: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// The `-cpu` model; ignored under KVM, which uses `host`.
    pub cpu: String,
    /// The accelerator.
    pub accel: Accel,
    /// A boot module (`-initrd`), which PVH hands to the kernel as its first module.
    pub initrd: Option<PathBuf>,
    /// More arguments, placed before `-kernel` (e.g. `-icount shift=0`).
    pub extra: Vec<String>,
    /// Boot a GRUB ISO under UEFI firmware instead of the kernel through PVH: then
    /// `kernel`, `cmdline` and `initrd` are not used (the ISO's grub.cfg holds them).
    pub uefi: Option<Uefi>,
    /// The network card, on restricted user networking; `None` is no card at all.
    pub net: Option<Network>,
}

/// A node's network card model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NicModel {
    /// virtio-net over PCI (QEMU only).
    VirtioNet,
    /// Intel 82540EM (QEMU and Bochs).
    E1000,
}

impl NicModel {
    /// QEMU's name for it.
    pub fn qemu_model(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::E1000 => "e1000",
        }
    }
}

/// The address at which a guest reaches what [`Network::guest_forwards`] forwards.
pub const FORWARD_ADDR: &str = "10.0.2.100";

/// The MAC address nodes get unless told otherwise (QEMU's default prefix).
pub const DEFAULT_MAC: &str = "52:54:00:12:34:56";

/// A network card on the emulator's user networking (slirp), restricted: the guest gets
/// DHCP (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3) and reaches only what is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The card.
    pub model: NicModel,
    /// Its MAC address.
    pub mac: String,
    /// `(guest_port, host_port)`: a guest connection to [`FORWARD_ADDR`]:guest_port
    /// reaches 127.0.0.1:host_port (QEMU only; each connection is a fresh one).
    pub guest_forwards: Vec<(u16, u16)>,
    /// `(host_port, guest_port)`: a connection to 127.0.0.1:host_port reaches the guest's
    /// guest_port.
    pub host_forwards: Vec<(u16, u16)>,
    /// Lift the restriction: the guest then reaches the host's loopback at
    /// [`HOST_ADDR`] (every port) and whatever the host can reach. Bochs needs it for a
    /// guest to reach a host server at all, since its slirp forwards no guest connections.
    pub unrestricted: bool,
}

/// The address at which an unrestricted guest reaches the host's loopback (slirp's host).
pub const HOST_ADDR: &str = "10.0.2.2";

impl Network {
    /// A card of `model` with nothing forwarded.
    pub fn new(model: NicModel) -> Network {
        Network {
            model,
            mac: DEFAULT_MAC.into(),
            guest_forwards: Vec::new(),
            host_forwards: Vec::new(),
            unrestricted: false,
        }
    }

    /// QEMU's `-nic` value.
    pub fn qemu_nic(&self) -> String {
        let restrict = if self.unrestricted { "off" } else { "on" };
        let mut s = format!("user,model={},restrict={restrict},mac={}", self.model.qemu_model(), self.mac);
        for (guest, host) in &self.guest_forwards {
            // `cmd:` opens a fresh host connection for every guest connection (a `tcp:`
            // target is one connection, made at start-up). slirp gives the command the guest's
            // connection as stdin, stdout and stderr: nc's complaint about a host port where
            // nothing listens must not reach the guest as if the server had said it, so its
            // stderr goes to /dev/null (through a shell) and the guest sees the connection
            // close without an answer.
            s.push_str(&format!(
                ",guestfwd=tcp:{FORWARD_ADDR}:{guest}-cmd:/bin/sh -c \"exec {} nc 127.0.0.1 {host} 2>/dev/null\"",
                crate::setup::BUSYBOX_PATH
            ));
        }
        for (host, guest) in &self.host_forwards {
            s.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        s
    }

    /// Bochs's slirp configuration file.
    pub fn slirp_conf(&self) -> String {
        let mut s = format!("# slirp config\nrestricted = {}\n", if self.unrestricted { 0 } else { 1 });
        for (host, guest) in &self.host_forwards {
            s.push_str(&format!("hostfwd = tcp:127.0.0.1:{host}-:{guest}\n"));
        }
        s
    }
}

/// A UEFI boot: OVMF on a q35 machine, booting a (hybrid BIOS+UEFI) GRUB ISO from CD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uefi {
    /// The ISO.
    pub iso: PathBuf,
    /// This run's copy of the firmware's variable store (OVMF writes to it).
    pub vars: PathBuf,
}

/// Debian's `ovmf`: the firmware code (read-only) and the template of its variable store.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// See [`OVMF_CODE`].
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

impl Uefi {
    /// A UEFI boot of `iso` for the run called `name`, with a fresh copy of the variable
    /// store at `target/uefi/NAME.vars.fd`.
    pub fn new(name: &str, iso: impl Into<PathBuf>) -> Result<Uefi, Error> {
        crate::setup::ensure_present(crate::setup::UEFI)?;
        let dir = target_dir().join("uefi");
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let vars = dir.join(format!("{name}.vars.fd"));
        fs::copy(OVMF_VARS, &vars).map_err(|e| Error::io(format!("copying {OVMF_VARS}"), e))?;
        Ok(Uefi { iso: iso.into(), vars })
    }

    fn args(&self) -> Vec<String> {
        vec![
            "-machine".into(),
            "q35".into(),
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", self.vars.display()),
            "-cdrom".into(),
            self.iso.display().to_string(),
        ]
    }
}

/// The CPU model that gives the kernel AMD SVM with nested paging under TCG, and RDRAND
/// (the node's TLS keys come from it).
pub const QEMU_CPU: &str = "qemu64,+svm,+npt,+rdrand";

impl Qemu {
    /// A node with the defaults: 4 CPUs, 512 MiB, TCG, SVM with nested paging.
    pub fn new(kernel: impl Into<PathBuf>) -> Qemu {
        Qemu {
            kernel: kernel.into(),
            cmdline: String::new(),
            smp: 4,
            mem_mib: 512,
            cpu: QEMU_CPU.into(),
            accel: Accel::Tcg,
            initrd: None,
            extra: Vec::new(),
            uefi: None,
            net: None,
        }
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<String> {
        let (accel, cpu) = match self.accel {
            Accel::Tcg => ("tcg", self.cpu.as_str()),
            Accel::Kvm => ("kvm", "host"),
        };
        let mut args: Vec<String> = [
            "-accel",
            accel,
            "-cpu",
            cpu,
            "-smp",
            &self.smp.to_string(),
            "-m",
            &self.mem_mib.to_string(),
            "-nographic",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-nic",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(self.net.as_ref().map_or_else(|| "none".to_string(), Network::qemu_nic));
        if let Some(uefi) = &self.uefi {
            args.extend(self.extra.iter().cloned());
            args.extend(uefi.args());
            return args;
        }
        if let Some(initrd) = &self.initrd {
            args.push("-initrd".into());
            args.push(initrd.display().to_string());
        }
        args.extend(self.extra.iter().cloned());
        args.push("-kernel".into());
        args.push(self.kernel.display().to_string());
        args.push("-append".into());
        args.push(self.cmdline.clone());
        args
    }

    /// The command that starts it, its console on stdio (Ctrl-A X quits, Ctrl-A C
    /// switches to the monitor).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(self.args());
        cmd
    }
}

/// A Bochs node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bochs {
    /// The GRUB ISO it boots from (the command line is in its grub.cfg).
    pub iso: PathBuf,
    /// CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub mem_mib: u32,
    /// The CPU model.
    pub model: String,
    /// Emulated instructions per emulated second; also the kernel's TSC rate.
    pub ips: u64,
    /// The network card (an e1000 on slirp); `None` is no card.
    pub net: Option<Network>,
}

/// The Bochs CPU model that offers Intel VMX with EPT.
pub const BOCHS_MODEL: &str = "corei7_skylake_x";

/// The files a Bochs run reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BochsFiles {
    /// The generated configuration.
    pub rc: PathBuf,
    /// The debugger commands (`c`: continue at once).
    pub cmds: PathBuf,
    /// Bochs's own log.
    pub log: PathBuf,
    /// COM1's output (written late; the console is read from port 0xE9).
    pub com1: PathBuf,
    /// The process id of Bochs itself, which `script` starts in a session of its own where
    /// killing `script`'s process group does not reach it.
    pub pid: PathBuf,
    /// The slirp configuration of its network card.
    pub slirp: PathBuf,
}

impl BochsFiles {
    /// The files of a run called `name`, under `target/bochs/`; they stay there after the
    /// run for a look, and the next run of that name overwrites them.
    pub fn new(name: &str) -> BochsFiles {
        let dir = target_dir().join("bochs");
        let stem = name;
        BochsFiles {
            rc: dir.join(format!("{stem}.bochsrc")),
            cmds: dir.join(format!("{stem}.cmds")),
            log: dir.join(format!("{stem}.log")),
            com1: dir.join(format!("{stem}.com1")),
            pid: dir.join(format!("{stem}.pid")),
            slirp: dir.join(format!("{stem}.slirp.conf")),
        }
    }
}

impl Bochs {
    /// A node with the defaults: 2 CPUs of model `corei7_skylake_x`, 512 MiB.
    pub fn new(iso: impl Into<PathBuf>) -> Bochs {
        Bochs {
            iso: iso.into(),
            cpus: 2,
            mem_mib: 512,
            model: BOCHS_MODEL.into(),
            ips: 50_000_000,
            net: None,
        }
    }

    /// The configuration file's text.
    pub fn bochsrc(&self, files: &BochsFiles) -> String {
        let mut rc = format!(
            "# Generated by `cargo xtask`; rewritten on every run.\n\
             megs: {mem}\n\
             cpu: model={model}, count={cpus}, ips={ips}\n\
             romimage: file={bios}\n\
             vgaromimage: file={vga}\n\
             ata0-master: type=cdrom, path=\"{iso}\", status=inserted\n\
             boot: cdrom\n\
             display_library: term\n\
             port_e9_hack: enabled=1\n\
             com1: enabled=1, mode=file, dev=\"{com1}\"\n\
             log: \"{log}\"\n\
             clock: sync=none, time0=local\n\
             sound: driver=dummy\n\
             speaker: enabled=0\n",
            mem = self.mem_mib,
            model = self.model,
            cpus = self.cpus,
            ips = self.ips,
            bios = BOCHS_BIOS,
            vga = VGA_BIOS,
            iso = self.iso.display(),
            com1 = files.com1.display(),
            log = files.log.display(),
        );
        if let Some(net) = &self.net {
            rc.push_str(&format!(
                "pci: enabled=1, chipset=i440fx, slot1=e1000\n\
                 e1000: enabled=1, mac={}, ethmod=slirp, script=\"{}\"\n",
                net.mac,
                files.slirp.display()
            ));
        }
        rc
    }

    /// Writes the configuration and debugger commands, and returns the command that runs
    /// Bochs under a pseudo-terminal (its terminal display needs one).
    pub fn command(&self, files: &BochsFiles) -> Result<Command, Error> {
        if let Some(dir) = files.rc.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        if let Some(net) = &self.net {
            if net.model != NicModel::E1000 {
                return Err(Error::Usage(format!("Bochs has no {} card; use e1000", net.model.qemu_model())));
            }
            if !net.guest_forwards.is_empty() {
                return Err(Error::Usage("Bochs's slirp forwards no guest connections to the host".into()));
            }
            write(&files.slirp, &net.slirp_conf())?;
        }
        write(&files.rc, &self.bochsrc(files))?;
        write(&files.cmds, "c\n")?;
        let _ = fs::remove_file(&files.pid);
        let mut cmd = Command::new("script");
        // `exec` keeps the shell's pid for Bochs (Debian's `bochs` wrapper execs `bochs-bin`).
        cmd.arg("-qec")
            .arg(format!(
                "echo $$ > {}; exec bochs -q -f {} -rc {}",
                shell_quote(&files.pid),
                shell_quote(&files.rc),
                shell_quote(&files.cmds)
            ))
            .arg("/dev/null");
        Ok(cmd)
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Quotes a path for `sh -c`.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_defaults() {
        let args = Qemu::new("/k").args().join(" ");
        assert!(
            args.starts_with("-accel tcg -cpu qemu64,+svm,+npt,+rdrand -smp 4 -m 512 -nographic"),
            "{args}"
        );
        assert!(args.contains("-no-reboot"));
        assert!(args.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(args.contains("-nic none"));
        assert!(args.ends_with("-kernel /k -append "), "{args}");
    }

    #[test]
    fn qemu_options_land_in_the_arguments() {
        let q = Qemu { cmdline: "selftest=all log=debug".into(), smp: 2, mem_mib: 256, ..Qemu::new("/k") };
        let args = q.args();
        assert_eq!(args.last().map(String::as_str), Some("selftest=all log=debug"));
        let joined = args.join(" ");
        assert!(joined.contains("-smp 2 -m 256"), "{joined}");
    }

    #[test]
    fn initrd_and_extra_arguments_come_before_the_kernel() {
        let q = Qemu {
            initrd: Some("/g".into()),
            extra: vec!["-icount".into(), "shift=0".into()],
            ..Qemu::new("/k")
        };
        let args = q.args().join(" ");
        assert!(args.ends_with("-initrd /g -icount shift=0 -kernel /k -append "), "{args}");
    }

    #[test]
    fn uefi_boots_the_iso_from_cd_with_ovmf() {
        let uefi = Uefi { iso: "/x.iso".into(), vars: "/v.fd".into() };
        let q = Qemu { uefi: Some(uefi), initrd: Some("/g".into()), ..Qemu::new("/k") };
        let args = q.args().join(" ");
        assert!(args.starts_with("-accel tcg -cpu qemu64,+svm,+npt,+rdrand "), "{args}");
        assert!(args.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"), "{args}");
        assert!(
            args.ends_with(&format!(
                "-machine q35 -drive if=pflash,format=raw,readonly=on,file={OVMF_CODE} \
                 -drive if=pflash,format=raw,file=/v.fd -cdrom /x.iso"
            )),
            "{args}"
        );
        assert!(!args.contains("-kernel") && !args.contains("-initrd"), "{args}");
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let args = Qemu { accel: Accel::Kvm, ..Qemu::new("/k") }.args().join(" ");
        assert!(args.starts_with("-accel kvm -cpu host "), "{args}");
    }

    #[test]
    fn bochsrc_has_what_the_kernel_relies_on() {
        let files = BochsFiles {
            rc: "/t/a.bochsrc".into(),
            cmds: "/t/a.cmds".into(),
            log: "/t/a.log".into(),
            com1: "/t/a.com1".into(),
            pid: "/t/a.pid".into(),
            slirp: "/t/a.slirp.conf".into(),
        };
        let rc = Bochs::new("/t/h.iso").bochsrc(&files);
        for line in [
            "megs: 512\n",
            "cpu: model=corei7_skylake_x, count=2, ips=50000000\n",
            "romimage: file=/usr/share/bochs/BIOS-bochs-latest\n",
            "vgaromimage: file=/usr/share/vgabios/vgabios.bin\n",
            "ata0-master: type=cdrom, path=\"/t/h.iso\", status=inserted\n",
            "boot: cdrom\n",
            "display_library: term\n",
            "port_e9_hack: enabled=1\n",
            "log: \"/t/a.log\"\n",
        ] {
            assert!(rc.contains(line), "missing {line:?} in\n{rc}");
        }
    }

    #[test]
    fn network_cards_are_restricted_and_forward_only_what_is_asked() {
        let mut net = Network::new(NicModel::VirtioNet);
        net.guest_forwards.push((443, 40001));
        net.host_forwards.push((40002, 10250));
        let args = Qemu { net: Some(net.clone()), ..Qemu::new("/k") }.args();
        let i = args.iter().position(|a| a == "-nic").unwrap();
        assert_eq!(
            args[i + 1],
            "user,model=virtio-net-pci,restrict=on,mac=52:54:00:12:34:56,\
             guestfwd=tcp:10.0.2.100:443-cmd:/bin/sh -c \"exec /bin/busybox nc 127.0.0.1 40001 2>/dev/null\",\
             hostfwd=tcp:127.0.0.1:40002-:10250"
        );
        assert_eq!(args.iter().filter(|a| *a == "-nic").count(), 1);
        assert_eq!(
            net.slirp_conf(),
            "# slirp config\nrestricted = 1\nhostfwd = tcp:127.0.0.1:40002-:10250\n"
        );
        let files = BochsFiles::new("netcheck");
        let bochs = Bochs { net: Some(Network::new(NicModel::E1000)), ..Bochs::new("/t/h.iso") };
        let rc = bochs.bochsrc(&files);
        assert!(rc.contains("pci: enabled=1, chipset=i440fx, slot1=e1000\n"), "{rc}");
        assert!(rc.contains("e1000: enabled=1, mac=52:54:00:12:34:56, ethmod=slirp, script="), "{rc}");
        let virtio = Bochs { net: Some(Network::new(NicModel::VirtioNet)), ..Bochs::new("/t/h.iso") };
        assert!(virtio.command(&BochsFiles::new("netcheck-virtio")).is_err());
        assert!(!Bochs::new("/t/h.iso").bochsrc(&files).contains("e1000"));
        let open = Network { unrestricted: true, ..Network::new(NicModel::E1000) };
        assert_eq!(open.slirp_conf(), "# slirp config\nrestricted = 0\n");
        assert!(open.qemu_nic().starts_with("user,model=e1000,restrict=off,"), "{}", open.qemu_nic());
    }

    #[test]
    fn bochs_files_are_named_after_the_run() {
        let a = BochsFiles::new("x");
        assert!(a.rc.ends_with("bochs/x.bochsrc"), "{}", a.rc.display());
        assert!(a.cmds.ends_with("bochs/x.cmds"));
        assert!(a.pid.ends_with("bochs/x.pid"));
        assert_ne!(BochsFiles::new("y").log, a.log);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
