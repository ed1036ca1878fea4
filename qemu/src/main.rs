//! `cargo xtask <verb>`: build, boot, test and benchmark the hypervisor.

use clap::{Parser, Subcommand};
use qemu::bench::{self, Sample};
use qemu::emulator::{Accel, Bochs, BochsFiles, Network, NicModel, Qemu, Uefi};
use qemu::image::{self, iso_path, repo_root, target_dir};
use qemu::machine::{Kind, Machine};
use qemu::setup::{self, Need};
use qemu::vm::{self, Event, GuestImage, Host, VmSpec};
use qemu::{Error, EXIT_FAILURE, EXIT_SUCCESS};
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot, test and benchmark the hypervisor")]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Build the kernel and the GRUB ISO (target/hypervisor.iso, the bare-metal install image).
    Build {
        /// The kernel command line written into the ISO's grub.cfg.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// The cluster to join: the node's kubeconfig (server, CA and the node's bearer
        /// token), written into the ISO as the node's configuration (`/boot/node.cfg`).
        #[arg(long, value_name = "FILE", requires = "node_name")]
        kubeconfig: Option<PathBuf>,
        /// The node's name (with --kubeconfig).
        #[arg(long, value_name = "NAME", requires = "kubeconfig")]
        node_name: Option<String>,
        /// An image the node can run (with --kubeconfig; repeatable), written into the ISO as
        /// its own module `/boot/images/NAME.img`: `busybox` (the demo image, answering to
        /// docker.io/library/busybox:latest), an OCI image layout DIR (answering to the
        /// directory's name) or REF=DIR [default: busybox].
        #[arg(long = "image", value_name = "busybox|DIR|REF=DIR", requires = "kubeconfig")]
        images: Vec<String>,
        /// A registry the node pulls from over plain HTTP (with --kubeconfig; repeatable):
        /// HOST[:PORT] as image references name it. Every other registry is reached over TLS.
        #[arg(long = "insecure-registry", value_name = "HOST[:PORT]", requires = "kubeconfig")]
        insecure_registries: Vec<String>,
        /// The CA bundle (PEM) the node verifies HTTPS registries against (with --kubeconfig);
        /// without one it pulls only from insecure registries.
        #[arg(long, value_name = "FILE", requires = "kubeconfig")]
        registry_ca: Option<PathBuf>,
    },
    /// Build, then boot a node and show its console (QEMU: quit with Ctrl-A X).
    Run {
        /// Boot the ISO under Bochs (Intel VMX) instead of QEMU (AMD SVM under TCG).
        #[arg(long)]
        bochs: bool,
        /// Boot the ISO under UEFI firmware (OVMF, q35) in QEMU instead of the kernel
        /// through PVH.
        #[arg(long, conflicts_with = "bochs")]
        uefi: bool,
        /// CPUs [default: 4 under QEMU, 2 under Bochs].
        #[arg(long)]
        smp: Option<u32>,
        /// Memory in MiB.
        #[arg(long, default_value_t = 512)]
        mem: u32,
        /// The kernel command line, e.g. "log=debug selftest=all".
        #[arg(long, default_value = "")]
        cmdline: String,
        /// QEMU's accelerator: `kvm` runs `-accel kvm -cpu host`, for machines with nested
        /// virtualization.
        #[arg(long, value_enum, default_value_t = Accel::Tcg)]
        accel: Accel,
        /// Stop the emulator after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// The network card on restricted user networking (DHCP gives 10.0.2.15/24)
        /// [default: virtio-net under QEMU, e1000 under Bochs]; `none` for no card.
        #[arg(long, value_name = "virtio-net|e1000|none")]
        nic: Option<NicArg>,
        /// Let the node reach a host server: `GUEST_PORT:HOST_PORT` forwards connections
        /// to 10.0.2.100:GUEST_PORT to 127.0.0.1:HOST_PORT (QEMU only; repeatable).
        #[arg(long = "forward", value_name = "GUEST_PORT:HOST_PORT", value_parser = parse_port_pair)]
        forwards: Vec<(u16, u16)>,
        /// Let the host reach the node: `HOST_PORT:GUEST_PORT` forwards 127.0.0.1:HOST_PORT
        /// to the node's GUEST_PORT (repeatable).
        #[arg(long = "expose", value_name = "HOST_PORT:GUEST_PORT", value_parser = parse_port_pair)]
        exposes: Vec<(u16, u16)>,
    },
    /// Install what is missing, build every test binary, then run them (host unit tests and
    /// the emulator integration tests) in three lanes at once: the emulator tests, the node
    /// and cluster tests, the unit and server tests (qemu/src/testrun.rs). With arguments,
    /// run `cargo test --no-fail-fast ARGS` instead, e.g. `cargo xtask test -p tests --test vm`.
    Test {
        /// Arguments for `cargo test`, e.g. `-p tests --test pod -- --nocapture`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check formatting (`cargo fmt --check`) and run clippy with `-D warnings` for the host
    /// crates and, on `x86_64-unknown-none`, for each crate of the kernels and guests.
    Lint,
    /// Run kubelet-lite on the host with a simulated runtime against an API server:
    /// `sim-node --kubeconfig FILE --name NAME` (arguments go to the sim-node program).
    SimNode {
        /// `--kubeconfig FILE --name NAME`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure boot-to-ready time under QEMU (PVH, 4 CPUs) and Bochs (ISO, 2 CPUs), then VM
    /// figures (the `bench` guest) on each backend, pod VMs against Linux, a cluster node as
    /// kubectl sees it, and image pulls by a node against the host's.
    Bench {
        /// Boots under QEMU.
        #[arg(long, default_value_t = 5)]
        qemu_runs: usize,
        /// Boots under Bochs.
        #[arg(long, default_value_t = 3)]
        bochs_runs: usize,
        /// Runs of the `bench` guest per backend (0 skips the VM, pod and Linux figures).
        #[arg(long, default_value_t = 1)]
        vm_runs: usize,
        /// Measure only these parts (comma-separated); all of them by default.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<BenchPart>,
        /// Node runs: each boots a QEMU node and starts a sim-node (0 skips the node figures).
        #[arg(long, default_value_t = 5)]
        node_runs: usize,
        /// Pods applied to each node of a node run, kept running until it stops.
        #[arg(long, default_value_t = 3)]
        node_pods: usize,
        /// Extra QEMU node runs under `-icount shift=0`.
        #[arg(long, default_value_t = 2)]
        node_icount_runs: usize,
        /// Rounds of the pull part on its one QEMU node: each pulls busybox:1 and big:1
        /// (imagePullPolicy Always) and starts a pod of big:1 from the held image
        /// (IfNotPresent); the host copies each image as often (0 skips the pull figures).
        #[arg(long, default_value_t = 3)]
        pull_runs: usize,
    },
    /// Run guest kernels as VMs of the hypervisor.
    Vm {
        #[command(subcommand)]
        verb: VmVerb,
    },
    /// Run container images as pod VMs (crx-guest).
    Pod {
        #[command(subcommand)]
        verb: PodVerb,
    },
    /// Serve the Kubernetes-compatible development control plane in the foreground: writes
    /// DIR/admin.kubeconfig and DIR/node.kubeconfig, prints `control plane ready: URL`, and
    /// keeps every object in DIR across restarts.
    ControlPlane {
        /// The state directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
        listen: std::net::SocketAddr,
        /// Serve plain HTTP instead of HTTPS.
        #[arg(long)]
        insecure_http: bool,
        /// Issue a node credential for NAME (repeatable): DIR/nodes/NAME.kubeconfig; the first
        /// one is also DIR/node.kubeconfig. A new DIR without any gets node `n1`.
        #[arg(long = "node", value_name = "NAME")]
        nodes: Vec<String>,
        /// Send log requests only to kubelets whose serving certificate chains to this CA
        /// bundle (PEM) and names the address dialled; `cluster up` sets it.
        #[arg(long, value_name = "FILE")]
        kubelet_certificate_authority: Option<PathBuf>,
        /// Connections at once [default: 1024].
        #[arg(long, value_name = "N")]
        max_connections: Option<String>,
        /// Connections at once from one client IP address [default: 128].
        #[arg(long, value_name = "N")]
        max_connections_per_client: Option<String>,
        /// Time for a request head, from the connection or the request's first byte [default: 32s].
        #[arg(long, value_name = "DURATION")]
        read_header_timeout: Option<String>,
        /// Time for a request body, and for a write to make progress [default: 60s].
        #[arg(long, value_name = "DURATION")]
        request_timeout: Option<String>,
        /// Time a keep-alive connection may wait for its next request [default: 90s].
        #[arg(long, value_name = "DURATION")]
        idle_timeout: Option<String>,
    },
    /// Build container images for tests.
    Image {
        #[command(subcommand)]
        verb: ImageVerb,
    },
    /// A development cluster whose nodes are the hypervisor.
    Cluster {
        #[command(subcommand)]
        verb: ClusterVerb,
    },
}

#[derive(Subcommand)]
enum ClusterVerb {
    /// Build the kernel, crx-guest and the images, start the control plane (state in
    /// target/cluster/) and boot nodes n1..nN, each with its own credential; wait until
    /// kubectl shows every node Ready, print `export KUBECONFIG=...`, then echo the nodes'
    /// consoles (`nI| line`) until Ctrl-C or SIGTERM, and stop everything. A control plane
    /// that exits meanwhile is restarted (at most 5 times); a node that ends is reported.
    #[command(after_help = CLUSTER_UP_HELP)]
    Up(ClusterUpArgs),
    /// Bring a cluster up as `cluster up` does, apply one pod running COMMAND (image busybox
    /// unless --pod-image says otherwise) with kubectl, print its output as `kubectl logs`
    /// gives it, tear everything down and exit with the container's exit code.
    #[command(after_help = CLUSTER_RUN_HELP)]
    Run(ClusterRunArgs),
}

const CLUSTER_RUN_HELP: &str = "\
Output:
  stdout  the pod's log, as `kubectl logs run` gives it
  stderr  each step: building, booting, Ready, apply, Running, the pod's end

Exit status:
  N      the container's exit code
  1      a step failed: a node not Ready, the pod unable to start (e.g. ErrImagePull) or not
         done within --timeout
  125    the pod ended without an exit code
  130    stopped by Ctrl-C or SIGTERM";

#[derive(clap::Args)]
struct ClusterRunArgs {
    #[command(flatten)]
    up: ClusterUpArgs,
    /// The pod's image [default: busybox].
    #[arg(long, default_value = "busybox")]
    pod_image: String,
    /// How long the pod may take from apply to its end, seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The container's command and arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

const CLUSTER_UP_HELP: &str = "\
Nodes:
  QEMU nodes (AMD SVM under TCG, virtio-net) boot the kernel through PVH with their module
  pack as -initrd (target/nodes/nI.pack: node.cfg, then one image bundle per image). Each
  reaches the API server through a forward (10.0.2.100:PORT to the control plane's
  127.0.0.1:PORT) and reports InternalIP 127.0.0.1 with a kubelet port on the host that is
  forwarded to its port 10250. With --bochs, n1 runs under Bochs (Intel VMX, e1000) from an
  ISO with the same modules (target/cluster/n1.iso); Bochs's slirp cannot forward a guest
  connection to the host, so n1's network is unrestricted (it reaches the host's loopback at
  10.0.2.2, every port).

Processes:
  It prints the control plane's pid (`cluster: control plane ready: URL (pid N, ...)`) and
  each node's (`cluster: nI: QEMU pid N`; under Bochs the process group of the `script`
  that runs it). Killing a node's QEMU powers the node off: the run says so (`cluster: node
  nI's emulator (pid N) exited (...); the others run on`) with the tail of its console, and
  the node turns NotReady in kubectl once the control plane's 50 s grace period has passed.
  A control plane that exits once every node was Ready is reported (`cluster: the control
  plane (pid N) exited (...)`) and started again on the same state directory and port
  (`cluster: control plane ready again: URL (pid M, restart K of at most 5)`); the nodes and
  kubeconfigs reach it there as before.

Files:
  target/cluster/control-plane/    the control plane's state (admin.kubeconfig, nodes/)
  target/cluster/control-plane.log the control plane's output (restarts append to it)
  target/cluster/nI.console.log    node nI's console

Exit status:
  0      stopped by Ctrl-C or SIGTERM
  1      a step failed, not every node was Ready in time (the node's console tail is shown),
         or the control plane exited after its 5 restarts";

#[derive(clap::Args)]
struct ClusterUpArgs {
    /// How many nodes (n1..nN).
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// Run node n1 under Bochs (Intel VMX) instead of QEMU.
    #[arg(long)]
    bochs: bool,
    /// An image every node carries (repeatable): `busybox` (the demo image, answering to
    /// docker.io/library/busybox:latest), an OCI image layout DIR or REF=DIR [default: busybox].
    #[arg(long = "image", value_name = "busybox|DIR|REF=DIR")]
    images: Vec<String>,
    /// CPUs of each QEMU node.
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// Memory of each node, MiB.
    #[arg(long, default_value_t = 512)]
    mem: u32,
    /// How long to wait for every node to be Ready, seconds [default: 180, 600 with --bochs].
    #[arg(long, value_name = "SECONDS")]
    ready_timeout: Option<u64>,
    /// Give the QEMU nodes an e1000 (Intel 82540EM) instead of virtio-net.
    #[arg(long)]
    e1000: bool,
    /// Another registry on this machine the nodes pull from over plain HTTP (repeatable):
    /// 127.0.0.1:PORT, forwarded to every node as the cluster's own registry is.
    #[arg(long = "insecure-registry", value_name = "127.0.0.1:PORT")]
    insecure_registries: Vec<String>,
}

/// The parts of `cargo xtask bench`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchPart {
    /// Boot times under QEMU and Bochs.
    Boot,
    /// The `bench` guest's figures on each backend.
    Vm,
    /// crx-guest's size and `busybox true` in a pod VM, from tar layers and from gzip
    /// layers: guest instructions to the container's first instruction and to exit.
    Pod,
    /// Debian's Linux kernel to its init, the baseline for the pod figures.
    Linux,
    /// A hypervisor node as kubectl sees it (power-on to Ready, apply to Running and to the
    /// first log line, memory per pod VM), against sim-node and the boot figures.
    Node,
    /// Image pulls by a QEMU node from a local registry (busybox:1 and big:1, busybox under
    /// 4 MiB of incompressible bytes): pull time and throughput against the host's `skopeo
    /// copy` of the same images, and apply to Running of a pod whose image is held against
    /// one that pulls.
    Pull,
    /// CPU-bound work (a static C loop) in a pod VM against the same program as the init
    /// of Debian's Linux kernel, both under qemu -icount shift=0.
    Cpu,
}

#[derive(Subcommand)]
enum PodVerb {
    /// Run one container from an image in a pod VM; print its output on stdout and exit with
    /// its exit code.
    #[command(after_help = POD_RUN_HELP)]
    Run(PodRunArgs),
}

#[derive(Subcommand)]
enum ImageVerb {
    /// Build an OCI image layout from the host's static busybox (/bin/busybox, installed
    /// with busybox-static when missing): bin/busybox with applet links, etc/passwd,
    /// etc/hello.txt, tmp/ (1777); Env PATH=/bin:/usr/bin, WorkingDir /. Files given with
    /// --add go into a second layer.
    Busybox {
        /// The directory to write the layout to.
        #[arg(long)]
        out: PathBuf,
        /// A host file to add (repeatable), at PATH in the image (/bin/NAME by default),
        /// with its mode; symlinks are followed. All of them form one layer above busybox's.
        #[arg(long = "add", value_name = "FILE[=PATH]")]
        add: Vec<String>,
    },
    /// Build a glibc-dynamic OCI image layout from this machine's own Debian programs
    /// (gawk installed when missing): layer 1 the usr-merge links (bin -> usr/bin, lib ->
    /// usr/lib, lib64 -> usr/lib64, ... as on the host), the dynamic loader and every
    /// library `ldd` names for the programs, each with the symlinks on its way; layer 2
    /// bash, coreutils (ls, sort, head, cat, ...), grep, sed and gawk in usr/bin with
    /// sh -> bash and awk -> gawk, etc/passwd, etc/group, data/fruits.txt, data/words.txt,
    /// root/, tmp/ (1777). Env PATH is the default one, Cmd ["bash"], WorkingDir /.
    Debian {
        /// The directory to write the layout to.
        #[arg(long)]
        out: PathBuf,
    },
}

const POD_RUN_HELP: &str = "\
Images:
  --image takes an OCI image layout directory (with oci-layout and index.json; every blob's
  sha256 is checked) or a plain root-filesystem directory (tarred into one layer with its
  modes and symlinks). `--image busybox` (a name, not a path) builds the demo image from the
  host's static busybox into target/images/busybox first, as `image busybox` does.

Command:
  Words after `--` are the container's whole argv (the image's Entrypoint and Cmd are then
  not used); without them the argv is Entrypoint + Cmd. argv[0] without a `/` is looked up
  in the image's PATH by the guest.

Output:
  The container's output lines (`pod/main> text` on the console) are printed as `text` on
  stdout; its end line and the runner's messages go to stderr. --verbose prints the whole
  console on stderr.

Exit status:
  0-255  the container's exit code (its low 8 bits)
  124    --timeout ran out
  125    the pod VM was stopped before the container reported an exit code
  126    the node ended without a result (the kernel could not run the pod)
  127    the runner failed (build, image, set-up, bad options)";

#[derive(clap::Args)]
struct PodRunArgs {
    /// An OCI image layout directory or a root-filesystem directory.
    #[arg(long, value_name = "DIR")]
    image: PathBuf,
    /// Run under Bochs (Intel VMX, the bundle as GRUB's module2) instead of QEMU (AMD SVM).
    #[arg(long)]
    bochs: bool,
    /// Memory of the pod VM, MiB [default: the kernel's pod default, 64].
    #[arg(long)]
    mem: Option<u32>,
    /// Stop after this many seconds (status 124).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Host memory, MiB.
    #[arg(long, default_value_t = 512)]
    host_mem: u32,
    /// More words for the hypervisor's command line, e.g. "log=debug".
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Print every console line on stderr.
    #[arg(short, long)]
    verbose: bool,
    /// The container's argv.
    #[arg(last = true, value_name = "CMD ARGS")]
    argv: Vec<String>,
}

#[derive(Subcommand)]
enum VmVerb {
    /// Boot the hypervisor with guest kernels, print each VM's console lines (`vm<i>: ...`)
    /// and end lines, and exit with VM 0's exit code.
    #[command(after_help = VM_RUN_HELP)]
    Run(VmRunArgs),
    /// Build the test guests (the `guests` crate) into target/x86_64-unknown-none/release/.
    BuildGuests,
}

const VM_RUN_HELP: &str = "\
Guests:
  --kernel takes a static x86_64 ELF, or the name of a test guest, which is built first:
  hello, exit-code, time, spin, counter, fpu, oob-read, oob-write, privileged, triple-fault,
  wild-hypercalls, forever, kick, bench. Give one guest for every VM, or one per VM (--kernel repeated,
  in VM order). --guest-cmdline likewise: once for every VM, or once per guest.

Exit status:
  0-255  VM 0 exited with this code (its low 8 bits)
  124    --timeout ran out before VM 0 ended
  125    VM 0 was stopped by the hypervisor (the reason is printed)
  126    the node ended without VM 0 ending (the kernel could not run VMs, panicked, or the
         emulator failed); the whole console log is printed on stderr
  127    the runner failed (build, set-up, bad options)
  130    interrupted with Ctrl-C";

#[derive(clap::Args)]
struct VmRunArgs {
    /// A guest kernel: an ELF file or a test guest's name (repeat for one per VM).
    #[arg(long = "kernel", visible_alias = "guest", value_name = "FILE|NAME", required = true)]
    kernels: Vec<String>,
    /// How many VMs [default: 1, or one per --kernel when several are given].
    #[arg(long)]
    count: Option<u32>,
    /// Guest memory per VM, MiB.
    #[arg(long, default_value_t = 16)]
    mem: u32,
    /// vCPUs per VM.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Stop after this many seconds (status 124 when VM 0 has not ended by then).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Run under Bochs (Intel VMX) instead of QEMU (AMD SVM under TCG).
    #[arg(long)]
    bochs: bool,
    /// The guest's command line, e.g. "code=3" (once for all, or once per --kernel).
    #[arg(long = "guest-cmdline", value_name = "S")]
    guest_cmdline: Vec<String>,
    /// Host CPUs [default: 4 under QEMU, 2 under Bochs].
    #[arg(long)]
    smp: Option<u32>,
    /// Host memory, MiB.
    #[arg(long, default_value_t = 512)]
    host_mem: u32,
    /// More words for the hypervisor's command line, e.g. "log=debug".
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Print every console line, not only the VMs' lines.
    #[arg(short, long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A signal ends the run and every emulator it started; verbs that stop in order install
    // their own handlers over this one.
    if let Err(e) = qemu::reaper::install() {
        eprintln!("xtask: cannot catch SIGINT/SIGTERM ({e}): an interrupted run may leave emulators behind");
    }
    let result = match cli.verb {
        Verb::Build { cmdline, kubeconfig, node_name, images, insecure_registries, registry_ca } => {
            match (kubeconfig, node_name) {
                (Some(k), Some(n)) => registry_settings(&insecure_registries, registry_ca.as_deref())
                    .and_then(|registries| build(&cmdline, Some((&k, &n, registries)), &images)),
                _ => build(&cmdline, None, &[]),
            }
        }
        Verb::Run { bochs, uefi, smp, mem, cmdline, accel, timeout, nic, forwards, exposes } => {
            let firmware = if bochs {
                Firmware::Bochs
            } else if uefi {
                Firmware::Uefi
            } else {
                Firmware::Pvh
            };
            let model = match nic {
                Some(NicArg::None) => None,
                Some(NicArg::VirtioNet) => Some(NicModel::VirtioNet),
                Some(NicArg::E1000) => Some(NicModel::E1000),
                None if bochs => Some(NicModel::E1000),
                None => Some(NicModel::VirtioNet),
            };
            let net = model.map(|m| Network {
                guest_forwards: forwards,
                host_forwards: exposes,
                ..Network::new(m)
            });
            run(firmware, smp, mem, &cmdline, accel, timeout.map(Duration::from_secs), net)
        }
        Verb::Test { args } => test(&args),
        Verb::Lint => lint(),
        Verb::SimNode { args } => sim_node(&args),
        Verb::Bench {
            qemu_runs,
            bochs_runs,
            vm_runs,
            only,
            node_runs,
            node_pods,
            node_icount_runs,
            pull_runs,
        } => {
            let node =
                NodeBench { runs: node_runs, pods: node_pods, icount_runs: node_icount_runs, pull_runs };
            bench(qemu_runs, bochs_runs, vm_runs, &only, node)
        }
        Verb::Vm { verb: VmVerb::BuildGuests } => build_guests(),
        Verb::Image { verb: ImageVerb::Busybox { out, add } } => image_busybox(&out, &add),
        Verb::Image { verb: ImageVerb::Debian { out } } => image_debian(&out),
        Verb::Cluster { verb: ClusterVerb::Up(args) } => cluster_up(&args, None),
        Verb::Cluster { verb: ClusterVerb::Run(args) } => {
            let pod = qemu::cluster_run::RunPod {
                image: args.pod_image.clone(),
                command: args.command.clone(),
                timeout: Duration::from_secs(args.timeout),
            };
            cluster_up(&args.up, Some(pod))
        }
        Verb::ControlPlane {
            dir,
            listen,
            insecure_http,
            nodes,
            kubelet_certificate_authority,
            max_connections,
            max_connections_per_client,
            read_header_timeout,
            request_timeout,
            idle_timeout,
        } => {
            let mut limits = control_plane::server::Limits::default();
            let given = [
                max_connections,
                max_connections_per_client,
                read_header_timeout,
                request_timeout,
                idle_timeout,
            ];
            for (flag, value) in control_plane::server::Limits::FLAGS.iter().zip(given) {
                if let Err(e) = value.map_or(Ok(()), |v| limits.set(flag, &v)) {
                    eprintln!("xtask: error: control plane: {e}");
                    return ExitCode::from(2);
                }
            }
            let cfg = control_plane::Config {
                dir,
                listen,
                insecure_http,
                nodes,
                kubelet_ca: kubelet_certificate_authority,
                store: control_plane::store::Limits::default(),
                limits,
            };
            return match control_plane::run(&cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xtask: error: control plane: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Verb::Pod { verb: PodVerb::Run(args) } => {
            return match pod_run(&args) {
                Ok(status) => ExitCode::from(status),
                Err(e) => {
                    eprintln!("xtask: error: {e}");
                    ExitCode::from(vm::STATUS_RUNNER)
                }
            };
        }
        Verb::Vm { verb: VmVerb::Run(args) } => {
            return match vm_run(&args) {
                Ok(status) => ExitCode::from(status),
                Err(e) => {
                    eprintln!("xtask: error: {e}");
                    ExitCode::from(vm::STATUS_RUNNER)
                }
            };
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn needs(lists: &[&[Need]]) -> Vec<Need> {
    lists.iter().flat_map(|l| l.iter().copied()).collect()
}

/// The node configuration's registries from `build`'s options.
fn registry_settings(
    insecure: &[String],
    ca: Option<&std::path::Path>,
) -> Result<kubelet_lite::nodecfg::Registries, Error> {
    let certificate_authority = match ca {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?,
        ),
    };
    Ok(kubelet_lite::nodecfg::Registries {
        insecure: insecure.to_vec(),
        endpoints: Default::default(),
        certificate_authority,
    })
}

fn build(
    cmdline: &str,
    node: Option<(&std::path::Path, &str, kubelet_lite::nodecfg::Registries)>,
    images: &[String],
) -> Result<ExitCode, Error> {
    setup::ensure(setup::ISO)?;
    // Checked before the (slow) kernel build, so a bad kubeconfig fails at once.
    let config = match node {
        Some((k, name, registries)) => {
            let mut c = qemu::node::from_kubeconfig(k, name, &qemu::node::Reach::default())?;
            // The kubelet endpoint's certificate, self-signed as a kubelet makes its own.
            let (cert, key) = qemu::cluster::kubelet_serving_certificate(name)?;
            c.kubelet_certificate = Some(cert);
            c.kubelet_key = Some(key);
            c.registries = registries;
            c.check().map_err(|e| Error::Usage(format!("node configuration: {e}")))?;
            Some(c)
        }
        None => None,
    };
    // A node without images can run nothing: busybox unless told otherwise.
    let default_images = ["busybox".to_string()];
    let images = if images.is_empty() { &default_images[..] } else { images };
    let kernel = image::build_kernel()?;
    match &config {
        Some(c) => {
            let wanted =
                images.iter().map(|a| qemu::node::NodeImage::from_arg(a)).collect::<Result<Vec<_>, _>>()?;
            let guest = qemu::pod::build_guest_kernel()?;
            let elf =
                std::fs::read(&guest).map_err(|e| Error::io(format!("reading {}", guest.display()), e))?;
            let bundles = wanted.iter().map(|i| i.bundle(&elf)).collect::<Result<Vec<_>, _>>()?;
            let module = qemu::node::write_module(c)?;
            let written = qemu::node::write_image_modules(&bundles)?;
            let mut modules: Vec<(String, PathBuf)> = vec![("node.cfg".into(), module)];
            modules.extend(written.into_iter().map(|(name, path)| (format!("images/{name}"), path)));
            let refs: Vec<(&str, &std::path::Path)> =
                modules.iter().map(|(n, p)| (n.as_str(), p.as_path())).collect();
            image::build_iso_with_modules(&kernel, cmdline, &refs, &iso_path())?;
            println!("node:   {c}");
            for (image, (name, _)) in wanted.iter().zip(modules.iter().skip(1)) {
                println!("image:  /boot/{name} ({})", image.names.join(", "));
            }
        }
        None => image::build_iso(&kernel, cmdline, &iso_path())?,
    }
    println!("kernel: {}", kernel.display());
    println!("ISO:    {}  (write it to a USB stick with dd; see README.md)", iso_path().display());
    Ok(ExitCode::SUCCESS)
}

/// How `run` boots the node.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Firmware {
    /// QEMU loads the kernel through its PVH note.
    Pvh,
    /// QEMU with OVMF boots the GRUB ISO.
    Uefi,
    /// Bochs boots the GRUB ISO from its BIOS.
    Bochs,
}

/// `--nic`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NicArg {
    /// virtio-net over PCI (QEMU).
    VirtioNet,
    /// Intel 82540EM (QEMU and Bochs).
    E1000,
    /// No card.
    None,
}

/// Parses `A:B` with two ports 1 to 65535.
fn parse_port_pair(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{p}` is not a port 1 to 65535")),
    };
    let (a, b) = s.split_once(':').ok_or_else(|| format!("`{s}` is not PORT:PORT"))?;
    Ok((port(a)?, port(b)?))
}

fn run(
    firmware: Firmware,
    smp: Option<u32>,
    mem: u32,
    cmdline: &str,
    accel: Accel,
    timeout: Option<Duration>,
    net: Option<Network>,
) -> Result<ExitCode, Error> {
    if firmware == Firmware::Bochs {
        setup::ensure(&needs(&[setup::ISO, setup::BOCHS]))?;
        let kernel = image::build_kernel()?;
        image::build_iso(&kernel, cmdline, &iso_path())?;
        let node = Bochs { cpus: smp.unwrap_or(2), mem_mib: mem, net, ..Bochs::new(iso_path()) };
        let files = BochsFiles::new("run");
        let cmd = node.command(&files)?;
        eprintln!(
            "run: Bochs from {} (config {}); stop it with Ctrl-C",
            iso_path().display(),
            files.rc.display()
        );
        let status = interactive(cmd, timeout)?;
        Ok(verdict(Kind::Bochs, status))
    } else {
        setup::ensure(setup::QEMU)?;
        if net.as_ref().is_some_and(|n| !n.guest_forwards.is_empty()) {
            setup::ensure(setup::BUSYBOX)?;
        }
        let kernel = image::build_kernel()?;
        let mut node = Qemu {
            cmdline: cmdline.into(),
            smp: smp.unwrap_or(4),
            mem_mib: mem,
            accel,
            net,
            ..Qemu::new(&kernel)
        };
        if firmware == Firmware::Uefi {
            setup::ensure(&needs(&[setup::ISO, setup::UEFI]))?;
            image::build_iso(&kernel, cmdline, &iso_path())?;
            node.uefi = Some(Uefi::new("run", iso_path())?);
        }
        let cmd = node.command();
        eprintln!("run: {cmd:?}");
        eprintln!("run: the console follows; quit with Ctrl-A X");
        let status = interactive(cmd, timeout)?;
        Ok(verdict(Kind::Qemu, status))
    }
}

/// Runs `cmd` on this terminal; after `timeout` asks it to stop, then kills it.
fn interactive(mut cmd: Command, timeout: Option<Duration>) -> Result<Option<ExitStatus>, Error> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting {cmd:?}"), e))?;
    let started = Instant::now();
    let pid = i32::try_from(child.id()).ok().map(Pid::from_raw);
    let mut asked_at: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::io("waiting for the emulator", e))? {
            if asked_at.is_some() {
                eprintln!("\r\nrun: stopped after {:?} (--timeout)\r", started.elapsed());
                return Ok(None);
            }
            return Ok(Some(status));
        }
        match (timeout, asked_at) {
            (Some(limit), None) if started.elapsed() >= limit => {
                // SIGTERM lets QEMU and script restore the terminal's settings.
                if let Some(pid) = pid {
                    let _ = kill(pid, Signal::SIGTERM);
                }
                asked_at = Some(Instant::now());
            }
            (_, Some(at)) if at.elapsed() >= Duration::from_secs(5) => {
                let _ = child.kill();
            }
            _ => {}
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Says how the run ended and turns it into this program's exit code.
fn verdict(kind: Kind, status: Option<ExitStatus>) -> ExitCode {
    let Some(status) = status else { return ExitCode::SUCCESS };
    match (kind, status.code()) {
        (Kind::Qemu, Some(EXIT_SUCCESS)) => {
            eprintln!("run: the kernel reported success (QEMU exit status {EXIT_SUCCESS})");
            ExitCode::SUCCESS
        }
        (Kind::Qemu, Some(EXIT_FAILURE)) => {
            eprintln!("run: the kernel reported failure (QEMU exit status {EXIT_FAILURE})");
            ExitCode::FAILURE
        }
        (_, Some(0)) => ExitCode::SUCCESS,
        // Bochs exits with 1 when the kernel powers it off; its console says how it went.
        (Kind::Bochs, Some(1)) => ExitCode::SUCCESS,
        _ => {
            eprintln!("run: the emulator exited with {status}");
            ExitCode::FAILURE
        }
    }
}

fn test(args: &[String]) -> Result<ExitCode, Error> {
    setup::ensure(&needs(&[
        setup::ISO,
        setup::QEMU,
        setup::UEFI,
        setup::BOCHS,
        setup::BUSYBOX,
        setup::STATIC_C,
        setup::GO,
        setup::MUSL,
        setup::DEBIAN_IMAGE,
        setup::CONTROL_PLANE,
        setup::REGISTRY,
    ]))?;
    setup::ensure_kernel_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !args.is_empty() {
        // A chosen part of the suite: cargo test as it is, one binary after another.
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(repo_root()).args(["test", "--no-fail-fast"]).args(args);
        eprintln!("test: {cmd:?}");
        let status = cmd.status().map_err(|e| Error::io("running cargo test", e))?;
        return Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    catch_stop_signals().map_err(Error::Usage)?;
    let binaries = qemu::testrun::build_all(&cargo)?;
    // What the tests boot and start, built now, while nothing runs beside the builds.
    eprintln!("test: building the kernel, the guests, crx-guest, the busybox image and the servers");
    qemu::image::build_kernel()?;
    qemu::image::build_guests()?;
    qemu::pod::build_guest_kernel()?;
    qemu::pod::ensure_busybox_image()?;
    for (what, build) in [
        ("control-plane", &["build", "--quiet", "-p", "control-plane", "--bin", "control-plane"][..]),
        ("sim-node", &["build", "--quiet", "--release", "-p", "sim-node", "--bin", "sim-node"][..]),
    ] {
        let status = Command::new(&cargo)
            .current_dir(repo_root())
            .args(build)
            .status()
            .map_err(|e| Error::io(format!("building {what}"), e))?;
        if !status.success() {
            return Err(Error::Failed { what: format!("cargo {}", build.join(" ")), status });
        }
    }
    let mut passed = qemu::testrun::run_all(&cargo, &binaries, &|| INTERRUPTED.load(Ordering::SeqCst))?;
    // The documentation tests, as `cargo test` runs them after the binaries.
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(repo_root()).args(["test", "--workspace", "--doc", "--no-fail-fast"]);
    eprintln!("test: {cmd:?}");
    passed &= cmd.status().map_err(|e| Error::io("running cargo test --doc", e))?.success();
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The crates built for the kernel target, each checked on its own: checked together,
/// cargo would unify their features (crx-abi's `serde` for the hypervisor would reach the
/// guests, which have no allocator).
const KERNEL_CRATES: &[&str] = &["boot", "wire", "crx-abi", "crx-fs", "hypervisor", "crx-guest", "guests"];

fn lint() -> Result<ExitCode, Error> {
    setup::ensure_kernel_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut runs: Vec<(String, Vec<&str>)> = vec![
        ("formatting".into(), vec!["fmt", "--all", "--", "--check"]),
        (
            "clippy (host)".into(),
            vec!["clippy", "--workspace", "--all-targets", "--quiet", "--", "-D", "warnings"],
        ),
    ];
    for krate in KERNEL_CRATES {
        runs.push((
            format!("clippy ({krate}, {})", setup::KERNEL_TARGET),
            vec![
                "clippy",
                "--release",
                "--quiet",
                "-p",
                krate,
                "--target",
                setup::KERNEL_TARGET,
                "--",
                "-D",
                "warnings",
            ],
        ));
    }
    let mut failed = Vec::new();
    for (what, args) in &runs {
        eprintln!("lint: {what}: cargo {}", args.join(" "));
        let status = Command::new(&cargo)
            .current_dir(repo_root())
            .args(args)
            .status()
            .map_err(|e| Error::io("running cargo", e))?;
        if !status.success() {
            eprintln!("lint: {what} FAILED");
            failed.push(what.clone());
        }
    }
    for krate in qemu::modgraph::CHECKED {
        eprintln!("lint: import cycles ({krate})");
        let src = repo_root().join(krate).join("src");
        let graph =
            qemu::modgraph::read(&src).map_err(|e| Error::io(format!("reading {}", src.display()), e))?;
        let cycles = graph.cycles();
        for c in &cycles {
            eprintln!("lint: {krate}: import cycle between {}", c.join(", "));
        }
        if !cycles.is_empty() {
            eprintln!("lint: import cycles ({krate}) FAILED");
            failed.push(format!("import cycles ({krate})"));
        }
    }
    if failed.is_empty() {
        eprintln!("lint: all clean");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("lint: failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

fn sim_node(args: &[String]) -> Result<ExitCode, Error> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["run", "--quiet", "--release", "-p", "sim-node", "--"]).args(args);
    let status = cmd.status().map_err(|e| Error::io("running sim-node", e))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn build_guests() -> Result<ExitCode, Error> {
    let dir = image::build_guests()?;
    println!("guests: {} in {}", image::GUESTS.join(", "), dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Set by Ctrl-C, so that the run stops its emulator (in a process group of its own) first.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

extern "C" fn on_stop_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn cluster_up(args: &ClusterUpArgs, pod: Option<qemu::cluster_run::RunPod>) -> Result<ExitCode, Error> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { signal(sig, SigHandler::Handler(on_stop_signal)) } {
            return Err(Error::Missing(format!(
                "cannot catch {sig}: {e}; not starting emulators that could outlive this run"
            )));
        }
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this program", e))?;
    let opts = qemu::cluster::Options {
        nodes: args.nodes,
        bochs: args.bochs,
        images: args.images.clone(),
        smp: args.smp,
        mem_mib: args.mem,
        ready_timeout: Duration::from_secs(args.ready_timeout.unwrap_or(if args.bochs { 600 } else { 180 })),
        control_plane: vec![exe.display().to_string(), "control-plane".into()],
        kubectl: kubectl_path(),
        e1000: args.e1000,
        insecure_registries: args.insecure_registries.clone(),
    };
    let stop = || INTERRUPTED.load(Ordering::SeqCst);
    let Some(pod) = pod else {
        qemu::cluster::up(&opts, &stop)?;
        return Ok(ExitCode::SUCCESS);
    };
    let mut job = qemu::cluster_run::Job::new(pod, &opts.kubectl, &qemu::cluster::cluster_dir());
    qemu::cluster::up_with(&opts, &stop, Some(&mut job))?;
    Ok(match job.exit_code {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(125)),
        None if stop() => ExitCode::from(130),
        None => ExitCode::from(125),
    })
}

/// Resolves `--kernel` values: an existing file, or a test guest's name (built once).
fn resolve_guests(values: &[String]) -> Result<Vec<PathBuf>, Error> {
    let mut built = false;
    let mut out = Vec::new();
    for v in values {
        let path = PathBuf::from(v);
        if path.is_file() {
            out.push(path);
        } else if image::GUESTS.contains(&v.as_str()) {
            if !built {
                image::build_guests()?;
                built = true;
            }
            out.push(image::guest_path(v));
        } else {
            return Err(Error::Missing(format!(
                "`{v}` is neither a file nor a test guest ({})",
                image::GUESTS.join(", ")
            )));
        }
    }
    Ok(out)
}

fn vm_spec(args: &VmRunArgs, paths: Vec<PathBuf>) -> Result<VmSpec, Error> {
    let cmdlines = &args.guest_cmdline;
    if cmdlines.len() > 1 && cmdlines.len() != paths.len() {
        return Err(Error::Missing(format!(
            "{} --guest-cmdline values for {} guests: give one for all, or one per guest",
            cmdlines.len(),
            paths.len()
        )));
    }
    let guests: Vec<GuestImage> = paths
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let cmdline = cmdlines.get(i).or(cmdlines.first()).map(String::as_str).unwrap_or("");
            GuestImage::new(p).with_cmdline(cmdline)
        })
        .collect();
    let count = args.count.unwrap_or(u32::try_from(guests.len()).unwrap_or(u32::MAX));
    let spec =
        VmSpec { guests, count, mem_mib: args.mem, vcpus: args.vcpus, kernel_cmdline: args.cmdline.clone() };
    spec.check().map_err(|e| Error::Missing(e.to_string()))?;
    Ok(spec)
}

fn vm_run(args: &VmRunArgs) -> Result<u8, Error> {
    let paths = resolve_guests(&args.kernels)?;
    let spec = vm_spec(args, paths)?;
    let kernel = image::build_kernel()?;
    let mut host = if args.bochs {
        setup::ensure(&needs(&[setup::ISO, setup::BOCHS]))?;
        Host::bochs(kernel)
    } else {
        setup::ensure(setup::QEMU)?;
        Host::qemu(kernel)
    };
    host.cpus = args.smp.unwrap_or(host.cpus);
    host.mem_mib = args.host_mem;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let handler = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::Handler(on_interrupt),
        )
    };
    if let Err(e) = handler {
        eprintln!("vm run: cannot catch Ctrl-C ({e}); the emulator may outlive an interrupted run");
    }
    eprintln!(
        "vm run: {} VM(s) under {}, kernel command line `{}`",
        spec.count,
        if args.bochs { "Bochs" } else { "QEMU" },
        spec.kernel_cmdline()
    );
    let verbose = args.verbose;
    let mut print = |line: &qemu::Line, event: Option<&Event>| {
        if verbose || event.is_some() {
            println!("{}", line.text);
        }
    };
    let timeout = args.timeout.map(Duration::from_secs);
    let run = vm::run(&host, "vm-run", &spec, timeout, &|_| INTERRUPTED.load(Ordering::SeqCst), &mut print)?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("vm run: interrupted");
        return Ok(130);
    }
    let no_vm_line = run.report.console.is_empty() && run.report.all_ended.is_none();
    if !verbose && (run.status == vm::RunStatus::NoResult || no_vm_line) {
        eprintln!("{}", run.log());
        if no_vm_line {
            eprintln!("vm run: the node printed no VM line: this kernel may not run VMs");
        }
    }
    let status = run.status.exit_status();
    eprintln!("vm run: {} (exit status {status})", run.status.describe());
    Ok(status)
}

fn image_busybox(out: &std::path::Path, add: &[String]) -> Result<ExitCode, Error> {
    use std::os::unix::fs::PermissionsExt;
    setup::ensure(setup::BUSYBOX)?;
    let mut extra = qemu::rootfs::Rootfs::new();
    for arg in add {
        let (file, at) = match arg.split_once('=') {
            Some((file, at)) => (std::path::PathBuf::from(file), at.to_string()),
            None => {
                let file = std::path::PathBuf::from(arg);
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| Error::Usage(format!("--add {arg}: no file name")))?;
                (file, format!("bin/{name}"))
            }
        };
        let bytes = std::fs::read(&file).map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
        let mode = std::fs::metadata(&file)
            .map_err(|e| Error::io(format!("reading {}", file.display()), e))?
            .permissions()
            .mode();
        extra.file(&at, mode, bytes).map_err(|e| Error::Usage(format!("--add {arg}: {e}")))?;
    }
    let more = if extra.is_empty() {
        Vec::new()
    } else {
        vec![extra.tar().map_err(|e| Error::Missing(e.to_string()))?]
    };
    let digest = qemu::oci::build_busybox_image_with(std::path::Path::new(setup::BUSYBOX_PATH), &more, out)
        .map_err(|e| Error::Missing(e.to_string()))?;
    println!("image: {} (manifest {digest}, {} layers)", out.display(), 1 + more.len());
    Ok(ExitCode::SUCCESS)
}

fn image_debian(out: &std::path::Path) -> Result<ExitCode, Error> {
    let image = qemu::rootfs::build_debian_image(out)?;
    println!(
        "image: {} (manifest {}, 2 layers: {} libraries and the loader, {} programs)",
        out.display(),
        image.digest,
        image.layers.library_paths.len(),
        image.layers.program_paths.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The image directory `--image` names: `busybox` (no such directory here) is the demo image,
/// built on first use.
fn resolve_image(arg: &std::path::Path) -> Result<PathBuf, Error> {
    if arg != std::path::Path::new("busybox") || arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let dir = qemu::pod::busybox_image_dir();
    if !dir.join("index.json").exists() {
        eprintln!("pod run: building the busybox demo image in {}", dir.display());
    }
    qemu::pod::ensure_busybox_image()
}

fn pod_run(args: &PodRunArgs) -> Result<u8, Error> {
    let dir = resolve_image(&args.image)?;
    let image = qemu::oci::Image::open(&dir).map_err(|e| Error::Missing(format!("image: {e}")))?;
    let run = qemu::pod::PodRun::new(&image, &args.argv);
    if run.argv.is_empty() {
        return Err(Error::Missing("the image has no Entrypoint or Cmd: give the command after `--`".into()));
    }
    let guest = qemu::pod::build_guest_kernel()?;
    let module = qemu::pod::write_bundle(&guest, &image, &run, "pod-run")?;
    let kernel = image::build_kernel()?;
    let mut host = if args.bochs {
        setup::ensure(&needs(&[setup::ISO, setup::BOCHS]))?;
        Host::bochs(kernel)
    } else {
        setup::ensure(setup::QEMU)?;
        Host::qemu(kernel)
    };
    host.mem_mib = args.host_mem;
    let cmdline = qemu::pod::kernel_cmdline(args.mem, &args.cmdline);
    eprintln!(
        "pod run: {:?} in {} under {}",
        run.argv,
        args.image.display(),
        if args.bochs { "Bochs" } else { "QEMU" }
    );
    let verbose = args.verbose;
    let mut print = |line: &qemu::Line, _: Option<&Event>, pe: Option<&qemu::pod::PodEvent>| {
        use qemu::pod::PodEvent;
        match pe {
            Some(PodEvent::Output { text, .. }) => println!("{text}"),
            Some(_) => eprintln!("{}", line.text),
            None if verbose => eprintln!("{}", line.text),
            None => {}
        }
    };
    let timeout = args.timeout.map(Duration::from_secs);
    let out = qemu::pod::run(&host, "pod-run", module, cmdline, &run.container, timeout, &mut print)?;
    if !verbose && out.status == qemu::pod::PodStatus::NoResult {
        eprintln!("{}", out.run.log());
    }
    if let qemu::pod::PodStatus::Stopped(_) = out.status {
        // The VM's own lines say more (the hypervisor's reason, the guest's last words).
        for l in out.run.lines.iter().filter(|l| l.text.starts_with("vm0")) {
            eprintln!("{}", l.text);
        }
    }
    let status = out.status.exit_status();
    eprintln!("pod run: {} (exit status {status})", out.status.describe());
    Ok(status)
}

/// The node and pull parts' counts (`--node-runs`, `--node-pods`, `--node-icount-runs`,
/// `--pull-runs`).
struct NodeBench {
    runs: usize,
    pods: usize,
    icount_runs: usize,
    pull_runs: usize,
}

fn bench(
    qemu_runs: usize,
    bochs_runs: usize,
    vm_runs: usize,
    only: &[BenchPart],
    node: NodeBench,
) -> Result<ExitCode, Error> {
    let part = |p: BenchPart| only.is_empty() || only.contains(&p);
    let registry: &[Need] = if part(BenchPart::Pull) && node.pull_runs > 0 { setup::REGISTRY } else { &[] };
    setup::ensure(&needs(&[setup::ISO, setup::QEMU, setup::BOCHS, setup::BUSYBOX, registry]))?;
    let kernel = image::build_kernel()?;
    if part(BenchPart::Boot) {
        bench_boot(&kernel, qemu_runs, bochs_runs)?;
    }
    if vm_runs > 0 {
        if part(BenchPart::Vm) {
            bench_vms(&kernel, vm_runs)?;
        }
        let pod = if part(BenchPart::Pod) { Some(bench_pod(&kernel)) } else { None };
        if part(BenchPart::Linux) {
            bench_linux(pod.as_ref());
        }
        if part(BenchPart::Cpu) {
            qemu::cpubench::run(&kernel);
        }
    }
    if part(BenchPart::Node) && node.runs > 0 {
        let code = bench_node(&kernel, &node)?;
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Ok(code);
        }
    }
    if part(BenchPart::Pull) && node.pull_runs > 0 {
        return bench_pull(&kernel, node.pull_runs);
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes SIGINT and SIGTERM set [`INTERRUPTED`], so that a bench part stops what it
/// started; the error says which signal could not be caught.
fn catch_stop_signals() -> Result<(), String> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { signal(sig, SigHandler::Handler(on_stop_signal)) } {
            return Err(format!("cannot catch {sig}: {e}"));
        }
    }
    Ok(())
}

/// kubectl: Debian's when installed, else the one on PATH.
fn kubectl_path() -> PathBuf {
    if std::path::Path::new("/usr/bin/kubectl").exists() { "/usr/bin/kubectl" } else { "kubectl" }.into()
}

/// The pull figures (qemu::pullbench): a registry holding busybox:1 and big:1, the host's
/// copies of them, then one QEMU node pulling them round after round. SIGINT and SIGTERM
/// stop every process it started before the run ends (status 130).
fn bench_pull(kernel: &std::path::Path, runs: usize) -> Result<ExitCode, Error> {
    use qemu::pullbench;
    if let Err(why) = catch_stop_signals() {
        println!("  pull figures: not measured: {why}");
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this program", e))?;
    let opts = pullbench::Options {
        runs,
        smp: 2,
        mem_mib: 512,
        kernel: kernel.to_path_buf(),
        control_plane: vec![exe.display().to_string(), "control-plane".into()],
        kubectl: kubectl_path(),
    };
    let result = pullbench::run(&opts, &|| INTERRUPTED.load(Ordering::SeqCst));
    println!();
    let f = match result {
        Ok(f) => f,
        Err(Error::Interrupted) => {
            eprintln!("bench: interrupted; the emulator, registry and control plane it started are stopped");
            return Ok(ExitCode::from(130));
        }
        Err(e) => {
            println!("Pull figures: not measured: {e}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!(
        "Pull figures (printed, not judged): a registry on 127.0.0.1 (docker-registry, plain HTTP) holding"
    );
    println!(
        "busybox:1 (the busybox image) and big:1 (busybox under a layer of {} MiB of incompressible bytes);",
        pullbench::NOISE_BYTES >> 20
    );
    println!(
        "the host copies each with `skopeo copy --src-tls-verify=false docker://... oci:DIR` (a fresh DIR,"
    );
    println!(
        "timed from skopeo's start to its end: layers fetched and verified, not inflated), then one QEMU"
    );
    println!(
        "node (tcg, {} CPUs, {} MiB, the registry reached through its forward as an insecure registry)",
        opts.smp, opts.mem_mib
    );
    println!(
        "pulls each {} time(s) for a pod with imagePullPolicy Always: fetched, verified and inflated by",
        runs
    );
    println!("the node itself, timed by its `node: pulled` line (from the pull's start to its last blob");
    println!("fetched, verified and inflated straight into the frames the node holds it in). A");
    println!("pod of big:1 with IfNotPresent then starts from the held image. Wall-clock seconds on this");
    println!("machine; registry bytes are the config and layer blobs a pull fetches; `ratio` is the row's");
    println!("median over the median of row #N.");
    println!();
    for i in &f.images {
        let held = i.node.first().map_or_else(
            || "-".to_string(),
            |p| format!("{} bytes inflated in {} frames", p.held_bytes, p.frames),
        );
        println!("  {}: {} registry bytes; the node holds {held}", i.tag, i.registry_bytes);
    }
    println!();
    print!("{}", qemu::nodebench::table(&pullbench::rows(&f), 1));
    println!();
    match &f.cached_event {
        Some(e) => println!(
            "  the cached pods' events: {} of {} say `{}`: {e}",
            f.cached_events,
            f.cached_running.len(),
            pullbench::CACHED_EVENT
        ),
        None => println!(
            "  the cached pods' events: none of {} says `{}`",
            f.cached_running.len(),
            pullbench::CACHED_EVENT
        ),
    }
    if let Some(why) = &f.failed {
        println!();
        println!("  pull figures: a step failed, so the figures above are of the steps before it: {why}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The node figures (qemu::nodebench): a control plane, then per run a sim-node and a QEMU
/// node, each given busybox pods; then the icount runs. SIGINT and SIGTERM stop every
/// process it started before the run ends (status 130).
fn bench_node(kernel: &std::path::Path, node: &NodeBench) -> Result<ExitCode, Error> {
    use qemu::nodebench::{self, Figures};
    if let Err(why) = catch_stop_signals() {
        println!("  node figures: not measured: {why}");
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this program", e))?;
    let kubectl = kubectl_path();
    let opts = nodebench::Options {
        runs: node.runs,
        pods: node.pods,
        icount_runs: node.icount_runs,
        smp: 2,
        mem_mib: 512,
        kernel: kernel.to_path_buf(),
        control_plane: vec![exe.display().to_string(), "control-plane".into()],
        kubectl,
    };
    let result = nodebench::run(&opts, &|| INTERRUPTED.load(Ordering::SeqCst));
    println!();
    let f: Figures = match result {
        Ok(f) => f,
        Err(Error::Interrupted) => {
            eprintln!(
                "bench: interrupted; the emulators, sim-nodes and the control plane it started are stopped"
            );
            return Ok(ExitCode::from(130));
        }
        Err(e) => {
            println!("Node figures: not measured: {e}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!(
        "Node figures (printed, not judged): {} run(s), each a fresh QEMU node (tcg, {} CPUs, {} MiB, PVH",
        f.hypervisor.len(),
        opts.smp,
        opts.mem_mib
    );
    println!(
        "with its module pack) and a fresh sim-node (kubelet-lite on the host, simulated runtime) of one"
    );
    println!(
        "control plane, each given {} busybox pod(s) one after the other, `echo` then `sleep`, no limits.",
        f.pods
    );
    println!("Every figure is wall-clock seconds on this machine, seen by kubectl (watches on nodes and");
    println!("pods; `kubectl logs` polled one call after another) or on the node's console; power-on is");
    println!("the emulator's start, apply the start of `kubectl apply`. `ratio` is the row's median over");
    println!("the median of row #N. `icount` rows ran QEMU with -icount shift=0: still wall-clock, since");
    println!("slirp, the control plane and kubectl run in real time.");
    println!();
    let timing = nodebench::timing_rows(&f);
    print!("{}", nodebench::table(&timing, 1));
    println!();
    println!("Host memory per running pod VM: the node's own accounting (`vmI: memory` lines: guest memory,");
    println!(
        "and nested tables plus vCPU and FPU state), and QEMU's VmRSS ({} pod(s) running vs none, same",
        f.pods
    );
    println!("node, after {} s idle each), in MiB unless named:", nodebench::SETTLE.as_secs());
    println!();
    print!("{}", nodebench::table(&nodebench::memory_rows(&f), timing.len() + 1));
    if let Some(why) = &f.failed {
        println!();
        println!("  node figures: a run failed, so the figures above are of the runs before it: {why}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Boot times under QEMU and Bochs.
fn bench_boot(kernel: &std::path::Path, qemu_runs: usize, bochs_runs: usize) -> Result<(), Error> {
    let iso = target_dir().join("bench.iso");
    image::build_iso(kernel, "", &iso)?;

    let mut qemu_samples: Vec<Sample> = Vec::new();
    for i in 0..qemu_runs {
        let machine = Machine::qemu(&format!("bench-qemu-{i}"), &Qemu::new(kernel))?;
        let s = bench::measure(machine, Duration::from_secs(120))?;
        eprintln!("bench: qemu run {}: first line {:?}, ready {:?}", i + 1, s.first_line, s.ready);
        qemu_samples.push(s);
    }
    let mut bochs_samples: Vec<Sample> = Vec::new();
    for i in 0..bochs_runs {
        let machine = Machine::bochs(&format!("bench-bochs-{i}"), &Bochs::new(&iso))?;
        let s = bench::measure(machine, Duration::from_secs(300))?;
        eprintln!("bench: bochs run {}: first line {:?}, ready {:?}", i + 1, s.first_line, s.ready);
        bochs_samples.push(s);
    }
    println!();
    println!("Boot times in seconds from the emulator's start: to the kernel's first console line");
    println!("(firmware and loading), and to the ready line. Measured on this machine, not judged.");
    println!();
    print!(
        "{}",
        bench::table(&[
            ("qemu tcg, pvh, 4 cpus", &qemu_samples),
            ("bochs skylake-x, iso, 2 cpus", &bochs_samples),
        ])
    );
    Ok(())
}

/// Pod figures: crx-guest's image size, and `busybox true` in a pod VM under QEMU
/// `-icount shift=0` (one emulated instruction per nanosecond) from two bundles of the same
/// image, one with plain tar layers (as a node holds a pulled image) and one with gzip
/// layers (as a boot module's image bundle carries them): guest instructions from the VM's
/// creation to the container's first instruction and to its exit (the VM's accounting).
/// Printed, not judged; rows that cannot be measured say why.
fn bench_pod(kernel: &std::path::Path) -> bench::PodFigures {
    let mut figures = bench::PodFigures::default();
    println!();
    println!("Pod figures (printed, not judged; the size target is under 512 KiB):");
    let guest = match qemu::pod::build_guest_kernel() {
        Ok(g) => g,
        Err(e) => {
            println!("  crx-guest image size           not measured: {e}");
            return figures;
        }
    };
    let size = std::fs::metadata(&guest).map(|m| m.len()).unwrap_or(0);
    let stripped = stripped_size(&guest);
    println!(
        "  crx-guest image size           {} KiB ({} KiB stripped)",
        size >> 10,
        stripped.unwrap_or(0) >> 10
    );
    let dir = image::target_dir().join("bench-pod").join("busybox");
    let built = setup::ensure(setup::BUSYBOX).map_err(|e| e.to_string()).and_then(|_| {
        qemu::oci::build_busybox_image(std::path::Path::new(setup::BUSYBOX_PATH), &dir)
            .and_then(|_| qemu::oci::Image::open(&dir))
            .and_then(|gzip| Ok((gzip.with_plain_layers()?, gzip)))
            .map_err(|e| e.to_string())
    });
    let (tar_img, gzip_img) = match built {
        Ok(i) => i,
        Err(e) => {
            println!("  pod `busybox true`             not measured: {e}");
            return figures;
        }
    };
    let layer_bytes = |img: &qemu::oci::Image| img.layers.iter().map(|l| l.bytes.len()).sum::<usize>();
    println!("  pod `busybox true` under qemu svm -icount shift=0, guest instructions from VM creation");
    println!(
        "  (busybox image, one layer: {} bytes as tar, {} as gzip):",
        layer_bytes(&tar_img),
        layer_bytes(&gzip_img)
    );
    println!("    {:<40} {:>23} {:>14} {:>7}", "layers", "to first container insn", "to exit", "exits");
    let mut host = Host::qemu(kernel);
    host.qemu_extra = vec!["-icount".into(), "shift=0".into()];
    for (label, img, name, slot) in [
        ("tar (as a node holds a pulled image)", &tar_img, "bench-pod-tar", &mut figures.tar),
        ("gzip (as a boot module's bundle has it)", &gzip_img, "bench-pod-gzip", &mut figures.gzip),
    ] {
        let run = qemu::pod::PodRun::new(img, &["true".into()]);
        let result = qemu::pod::write_bundle(&guest, img, &run, name).and_then(|m| {
            qemu::pod::run(
                &host,
                name,
                m,
                String::new(),
                "main",
                Some(Duration::from_secs(180)),
                &mut |_, _, _| {},
            )
        });
        let why = match result {
            Ok(o) => match (o.status, o.run.report.figures(0)) {
                (qemu::pod::PodStatus::Exited(0), Some(f)) => {
                    let first = f.first_container_ns.map_or_else(|| "-".to_string(), |n| n.to_string());
                    println!("    {label:<40} {first:>23} {:>14} {:>7}", f.guest_ns, f.exits);
                    *slot = Some(f);
                    continue;
                }
                (qemu::pod::PodStatus::Exited(0), None) => "no accounting line".to_string(),
                (status, _) => status.describe(),
            },
            Err(e) => e.to_string(),
        };
        println!("    {label:<40} not measured: {why}");
    }
    let first = |a: Option<qemu::vm::Accounting>| a.and_then(|a| a.first_container_ns);
    let exit = |a: Option<qemu::vm::Accounting>| a.map(|a| a.guest_ns);
    println!(
        "    tar / gzip: to the first container instruction {}, to exit {}",
        bench::ratio(first(figures.tar), first(figures.gzip)),
        bench::ratio(exit(figures.tar), exit(figures.gzip))
    );
    let dynamic = bench_dynamic_bash(&guest, &host);
    println!(
        "    dynamic bash / static busybox (tar): to the first container instruction {}, to exit {}",
        bench::ratio(first(dynamic), first(figures.tar)),
        bench::ratio(exit(dynamic), exit(figures.tar))
    );
    figures
}

/// `bash -c true` from the Debian image (`image debian`: glibc's bash through the image's
/// ld.so, two tar layers) in a 128 MiB pod VM under the same `-icount` host: guest
/// instructions to the container's first instruction (ld.so's entry) and to exit.
fn bench_dynamic_bash(guest: &std::path::Path, host: &Host) -> Option<qemu::vm::Accounting> {
    let label = "dynamic bash (Debian image, ld.so, tar)";
    let dir = image::target_dir().join("bench-pod").join("debian");
    let result = qemu::rootfs::build_debian_image(&dir)
        .map_err(|e| e.to_string())
        .and_then(|_| qemu::oci::Image::open(&dir).map_err(|e| e.to_string()))
        .and_then(|img| {
            let run = qemu::pod::PodRun::new(&img, &["bash".into(), "-c".into(), "true".into()]);
            qemu::pod::write_bundle(guest, &img, &run, "bench-pod-bash")
                .and_then(|m| {
                    qemu::pod::run(
                        host,
                        "bench-pod-bash",
                        m,
                        qemu::pod::kernel_cmdline(Some(128), ""),
                        "main",
                        Some(Duration::from_secs(300)),
                        &mut |_, _, _| {},
                    )
                })
                .map_err(|e| e.to_string())
        });
    let why = match result {
        Ok(o) => match (o.status, o.run.report.figures(0)) {
            (qemu::pod::PodStatus::Exited(0), Some(f)) => {
                let first = f.first_container_ns.map_or_else(|| "-".to_string(), |n| n.to_string());
                println!("    {label:<40} {first:>23} {:>14} {:>7}", f.guest_ns, f.exits);
                return Some(f);
            }
            (qemu::pod::PodStatus::Exited(0), None) => "no accounting line".to_string(),
            (status, _) => status.describe(),
        },
        Err(e) => e,
    };
    println!("    {label:<40} not measured: {why}");
    None
}

/// The Linux baseline: Debian's kernel (installed when /boot has none) boots under the same
/// QEMU with `-icount shift=0`, one CPU, and an initramfs holding only the static busybox,
/// which the kernel runs as init and which powers the machine off. printk's timestamps give
/// the instructions to init and to power-off (from the kernel's clock setup on). Printed
/// next to the pod figures from the same run, not judged.
fn bench_linux(pod: Option<&bench::PodFigures>) {
    println!();
    println!("Linux baseline (printed, not judged): Debian's kernel under qemu tcg -icount shift=0,");
    println!("one CPU, initramfs = the static busybox as init running `poweroff -f`; printk's clock,");
    println!("which starts at the kernel's clock setup (firmware and decompression not counted):");
    match measure_linux() {
        Ok(boot) => {
            let version = boot.version.as_deref().unwrap_or("?");
            let num = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            println!("  linux {version} to init: {} instructions", num(boot.to_init_ns));
            println!("  linux {version} to power-off: {} instructions", num(boot.to_power_off_ns));
            match pod {
                Some(p) => {
                    for line in bench::pod_vs_linux(p, boot.to_init_ns) {
                        println!("  {line}");
                    }
                }
                None => println!("  crx-guest pod / linux to-init: - (no pod figures in this run)"),
            }
        }
        Err(why) => println!("  linux baseline: not measured: {why}"),
    }
}

fn measure_linux() -> Result<bench::LinuxBoot, String> {
    setup::ensure(setup::BUSYBOX).map_err(|e| e.to_string())?;
    let vmlinuz = setup::ensure_linux_kernel().map_err(|e| e.to_string())?;
    let busybox = std::fs::read(setup::BUSYBOX_PATH).map_err(|e| format!("{}: {e}", setup::BUSYBOX_PATH))?;
    let archive = bench::busybox_initramfs(&busybox).map_err(|e| e.to_string())?;
    let dir = target_dir().join("bench-linux");
    let initrd = dir.join("initramfs.cpio");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&initrd, archive))
        .map_err(|e| format!("{}: {e}", initrd.display()))?;
    let node = bench::linux_qemu(&vmlinuz, initrd, bench::LINUX_CMDLINE.into());
    eprintln!("bench: booting {} under qemu -icount shift=0", vmlinuz.display());
    let machine = Machine::qemu("bench-linux", &node).map_err(|e| e.to_string())?;
    let out = machine.wait_exit(Duration::from_secs(300)).map_err(|e| e.to_string())?;
    let boot = bench::LinuxBoot::from_console(out.console());
    if boot.to_init_ns.is_none() {
        let log = qemu::machine::format_log("bench-linux", &out.lines);
        return Err(format!("no `Run ... as init process` line ({})\n{log}", out.status));
    }
    Ok(boot)
}

/// The size of `path` with its debug information stripped, if `strip` is on the machine.
fn stripped_size(path: &std::path::Path) -> Option<u64> {
    let out = image::target_dir().join("bench-pod").join("crx-guest.stripped");
    std::fs::create_dir_all(out.parent()?).ok()?;
    let ok = Command::new("strip").arg("-o").arg(&out).arg(path).status().ok()?.success();
    if !ok {
        return None;
    }
    std::fs::metadata(&out).ok().map(|m| m.len())
}

/// Runs the `bench` guest on each backend and prints the VM figures table.
fn bench_vms(kernel: &std::path::Path, runs: usize) -> Result<(), Error> {
    image::build_guests()?;
    let spec = VmSpec::new(GuestImage::new(image::guest_path("bench")), 1);
    let mut qemu_host = Host::qemu(kernel);
    qemu_host.qemu_extra = vec!["-icount".into(), "shift=0".into()];
    let backends = [
        ("qemu svm, icount shift=0", qemu_host, Duration::from_secs(180), true),
        ("bochs vmx", Host::bochs(kernel), Duration::from_secs(300), false),
    ];
    let mut rows: Vec<(&str, Vec<bench::VmSample>, bool)> = Vec::new();
    for (name, host, limit, icount) in backends {
        let mut samples = Vec::new();
        for i in 0..runs {
            let run =
                vm::run(&host, &format!("bench-vm-{i}"), &spec, Some(limit), &|_| false, &mut |_, _| {})?;
            let s = bench::VmSample::from_report(&run.report);
            eprintln!("bench: {name} run {}: {} {s:?}", i + 1, run.status.describe());
            if s == bench::VmSample::default() {
                eprintln!("bench: no VM figures from {name}; its log:\n{}", run.log());
            }
            samples.push(s);
        }
        rows.push((name, samples, icount));
    }
    println!();
    println!("VM figures (the `bench` guest as one VM, medians): time from VM creation to the first");
    println!("guest instruction, one VERSION hypercall round trip, exits per second of guest time");
    println!("and host memory per VM beyond guest RAM. Under -icount shift=0 a nanosecond is one");
    println!("emulated instruction, so `cycles` repeats the first two in instructions. Not judged.");
    println!();
    let table: Vec<(&str, &[bench::VmSample], bool)> =
        rows.iter().map(|(n, s, i)| (*n, s.as_slice(), *i)).collect();
    print!("{}", bench::vm_table(&table));
    Ok(())
}
