//! Starting the pod: the spec, the layers, the root filesystem's scratch directories, and
//! one first process per container.
//!
//! The spec comes from `POD_SPEC` and the layers from `LAYER_INFO`. A hypervisor without
//! pod hypercalls (ABI v1) is also served, for testing the kernel on its own: the spec is
//! then one container whose argv is the command line after `--` (words separated by spaces,
//! `%XX` escapes), and the layer is the one built into a test image (`CRX_GUEST_EMBED_LAYER`).
#![deny(unsafe_code)]

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use crx_abi::{BootParams, Error};
use crx_fs::{Errno, Fs, Ino, LayerKind, Timespec};
use crx_guest::frames::FramePool;
use crx_guest::podabi::{self, ContainerSpec, PodSpec};
use crx_guest::posix::{self, sig, Exit};

use super::arch::{self, FpuArea};
use super::exec::{self, ExecError};
use super::fd::{desc, FdEntry, Object};
use super::klog;
use super::mm::{self, KernelTables};
use super::phys;
use super::proc::{Container, Kernel, Pid};
use crx_fs::linux::o;

/// A command-line word: `%XX` escapes decoded (a bad escape stays as it is), `+` as itself.
fn decode_word(w: &str) -> String {
    wire::percent::decode(w, false)
}

fn spec_from_cmdline(cmdline: &str) -> PodSpec {
    let argv: Vec<String> = match cmdline.split_once("--") {
        Some((_, rest)) => rest.split(' ').filter(|w| !w.is_empty()).map(decode_word).collect(),
        None => Vec::new(),
    };
    let argv = if argv.is_empty() { alloc::vec![String::from("/bin/sh")] } else { argv };
    PodSpec {
        name: String::from("pod"),
        containers: alloc::vec![ContainerSpec {
            name: String::from("main"),
            command: argv,
            env: alloc::vec![String::from(
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            )],
            working_dir: String::from("/"),
        }],
        process_limit: podabi::DEFAULT_PROCESS_LIMIT,
        managed: false,
    }
}

/// The spec, and whether the hypervisor speaks the pod ABI.
fn fetch_spec(k: &Kernel, params: &BootParams) -> Result<(PodSpec, bool), String> {
    let mut probe = [0u8; 1];
    match k.hv.pod_spec(&mut probe[..0]) {
        // Not a pod VM (ABI v1, or v2 outside a pod): run the command line's argv.
        Err(Error::NoSys | Error::Invalid) => Ok((spec_from_cmdline(params.cmdline()), false)),
        Err(e) => Err(alloc::format!("POD_SPEC failed: {e:?}")),
        Ok(total) => {
            let len = usize::try_from(total).map_err(|_| String::from("pod spec too long"))?;
            if len > crx_abi::pod::MAX_SPEC_BYTES {
                return Err(alloc::format!("pod spec of {len} bytes is too long"));
            }
            let mut buf = alloc::vec![0u8; len];
            k.hv.pod_spec(&mut buf).map_err(|e| alloc::format!("POD_SPEC failed: {e:?}"))?;
            let spec = PodSpec::from_json(&buf).map_err(|e| alloc::format!("{e}"))?;
            Ok((spec, true))
        }
    }
}

#[cfg(crx_embedded_layer)]
static EMBEDDED_LAYER: &[u8] = include_bytes!(env!("CRX_GUEST_LAYER_PATH"));
#[cfg(not(crx_embedded_layer))]
static EMBEDDED_LAYER: &[u8] = &[];

/// Applies every layer in order; the error names the layer.
fn apply_layers(k: &mut Kernel) -> Result<(), String> {
    if !k.pod_log {
        if EMBEDDED_LAYER.is_empty() {
            return Ok(());
        }
        let kind =
            if EMBEDDED_LAYER.starts_with(&[0x1f, 0x8b]) { LayerKind::TarGzip } else { LayerKind::Tar };
        let stats = k.fs.apply_layer(EMBEDDED_LAYER, kind).map_err(|e| alloc::format!("layer 0: {e}"))?;
        klog!("built-in layer: {} entries", stats.entries);
        return Ok(());
    }
    for i in 0u32.. {
        let info = match k.hv.layer_info(i) {
            Ok(info) => info,
            Err(Error::Invalid) => return Ok(()),
            Err(e) => return Err(alloc::format!("layer {i}: LAYER_INFO failed: {e:?}")),
        };
        if !podabi::in_window(&info) {
            return Err(alloc::format!("layer {i}: outside the layer window"));
        }
        let kind = LayerKind::from_raw(info.kind)
            .ok_or_else(|| alloc::format!("layer {i}: unknown kind {}", info.kind))?;
        mm::map_layers(&k.kt, &mut k.pool, info.gpa, info.gpa + info.len)
            .map_err(|_| alloc::format!("layer {i}: no memory to map it"))?;
        let bytes =
            phys::layer_bytes(info.gpa, info.len).ok_or_else(|| alloc::format!("layer {i}: not mapped"))?;
        k.fs.apply_layer(bytes, kind).map_err(|e| alloc::format!("layer {i}: {e}"))?;
    }
    Ok(())
}

fn ensure_dir(fs: &mut Fs, path: &[u8], mode: u32) {
    if fs.lookup(Ino::ROOT, path, true).is_err() {
        if let Ok((dir, name)) = fs.lookup_parent(Ino::ROOT, path) {
            let _ = fs.mkdir(dir, &name, mode);
        }
    }
    if let Ok(ino) = fs.lookup(Ino::ROOT, path, true) {
        let _ = fs.chmod(ino, mode);
    }
}

fn ensure_file(fs: &mut Fs, path: &[u8], mode: u32) {
    if fs.lookup(Ino::ROOT, path, true).is_err() {
        if let Ok((dir, name)) = fs.lookup_parent(Ino::ROOT, path) {
            let _ = fs.create(dir, &name, mode);
        }
    }
}

/// Starts container `i` as the pod spec says: its first process, or its end with the reason
/// (the image's layers could not be applied, or the command cannot run).
pub fn start_container_at(k: &mut Kernel, i: u32) {
    let Some(spec) = k.specs.get(i as usize).cloned() else { return };
    match k.layers_error.clone() {
        Some(e) => fail(k, i, &alloc::format!("the image cannot be used: {e}"), Exit::Code(1)),
        None => start_container(k, i, &spec),
    }
}

/// Starts container `i`'s first process, or ends the container with the shell's code for
/// why it cannot start.
fn start_container(k: &mut Kernel, i: u32, spec: &ContainerSpec) {
    let pid: Pid = k.next_pid;
    k.next_pid += 1;
    let aspace = match mm::AddrSpace::new(&k.kt, &mut k.pool) {
        Ok(a) => a,
        Err(_) => {
            fail(k, i, "out of memory starting the container", Exit::Signal(sig::SIGKILL));
            return;
        }
    };
    let mut p = k.blank_process(pid, 0, i, Some(aspace));
    p.cwd = match k.fs.lookup(Ino::ROOT, spec.working_dir.as_bytes(), true) {
        Ok(ino) if k.fs.file_type(ino) == Ok(crx_fs::FileType::Dir) => ino,
        _ => {
            ensure_dir(&mut k.fs, spec.working_dir.as_bytes(), 0o755);
            k.fs.lookup(Ino::ROOT, spec.working_dir.as_bytes(), true).unwrap_or(Ino::ROOT)
        }
    };
    let _ = p.fds.install(FdEntry { desc: desc(Object::Null, o::RDONLY), cloexec: false }, 0);
    let _ = p.fds.install(FdEntry { desc: desc(Object::Log { stream: 1 }, o::WRONLY), cloexec: false }, 1);
    let _ = p.fds.install(FdEntry { desc: desc(Object::Log { stream: 2 }, o::WRONLY), cloexec: false }, 2);
    p.exe = spec.command.first().cloned().unwrap_or_default();
    let cwd = p.cwd;
    k.procs.insert(pid, p);
    if let Some(c) = k.containers.get_mut(i as usize) {
        c.root = Some(pid);
    }
    let name = spec.command.first().cloned().unwrap_or_default();
    let path = posix::env_get(&spec.env, "PATH");
    let mut denied = None;
    let mut found = None;
    for cand in posix::path_candidates(&name, path) {
        match k.fs.lookup(cwd, cand.as_bytes(), true) {
            Ok(ino) if k.fs.file_type(ino) == Ok(crx_fs::FileType::Regular) => {
                if k.fs.check_exec(ino).is_ok() {
                    found = Some(cand);
                    break;
                }
                denied.get_or_insert(cand);
            }
            Ok(_) if name.contains('/') => {
                denied.get_or_insert(cand);
            }
            _ => {}
        }
    }
    let Some(path) = found else {
        if denied.is_some() {
            fail(k, i, &alloc::format!("exec: {name}: permission denied"), Exit::Code(126));
        } else {
            fail(k, i, &alloc::format!("exec: {name}: not found"), Exit::Code(127));
        }
        return;
    };
    let argv: Vec<Vec<u8>> = spec.command.iter().map(|s| s.as_bytes().to_vec()).collect();
    let envp: Vec<Vec<u8>> = spec.env.iter().map(|s| s.as_bytes().to_vec()).collect();
    match exec::exec(k, pid, path.as_bytes(), &argv, &envp) {
        Ok(()) => {}
        Err(ExecError::Errno(Errno::EACCES)) => {
            fail(k, i, &alloc::format!("exec: {name}: permission denied"), Exit::Code(126))
        }
        Err(ExecError::Errno(e)) => fail(k, i, &alloc::format!("exec: {name}: {e}"), Exit::Code(126)),
        // As a shell: a missing interpreter is "not found" (127), an unusable one 126.
        Err(e @ ExecError::Interp(..)) => {
            let why = e.interp_reason().unwrap_or_default();
            let code = if e.errno() == Errno::ENOENT { 127 } else { 126 };
            fail(k, i, &alloc::format!("exec: {name}: {why}"), Exit::Code(code))
        }
        Err(ExecError::Format(e)) => fail(k, i, &alloc::format!("exec: {name}: {e}"), Exit::Code(126)),
        Err(ExecError::Oom) => {
            k.oom_kill(pid);
        }
    }
}

/// Ends container `i` before it ran, with a line on its stderr.
fn fail(k: &mut Kernel, i: u32, msg: &str, how: Exit) {
    let mut line = String::from(msg);
    line.push('\n');
    k.log_output(i, 2, line.as_bytes());
    if k.pod_log {
        // Also on the VM console (without the pod log the line above is already there).
        klog!("{msg}");
    }
    match k.containers.get(i as usize).and_then(|c| c.root) {
        Some(pid) => k.terminate(pid, how),
        None => {
            let mut oom_killed = false;
            if let Some(c) = k.containers.get_mut(i as usize) {
                c.exit = Some(how.container_code());
                oom_killed = c.oom_killed;
            }
            let _ = k.hv.container_exit(i, how.container_code(), oom_killed);
        }
    }
}

fn now_timespec(k: &Kernel) -> Timespec {
    let ns = k.hv.wall_ns();
    Timespec { sec: (ns / 1_000_000_000) as i64, nsec: (ns % 1_000_000_000) as u32 }
}

/// The time the filesystem stamps on changes.
fn tick_fs_time(k: &mut Kernel) {
    let t = now_timespec(k);
    k.fs.set_time(t);
}

/// Boots the pod: the kernel with the pod's first processes (none yet in a managed pod),
/// for the scheduler to run.
pub fn start(kt: KernelTables, pool: FramePool, params: &BootParams, heap_bytes: u64) -> Kernel {
    let hv = super::hv();
    let fpu_fmt = arch::fpu_format();
    arch::fpu_reset();
    let mut fpu_template = FpuArea::new(&fpu_fmt);
    fpu_template.save(&fpu_fmt);
    let fs_limit = usize::try_from(heap_bytes / 2).unwrap_or(usize::MAX);
    let mut k = Kernel {
        hv,
        pool,
        cache: crx_guest::pagecache::PageCache::new(),
        kt,
        fpu_fmt,
        fpu_template,
        fpu_owner: None,
        procs: BTreeMap::new(),
        current: 1,
        next_pid: 1,
        fs: Fs::with_limit(fs_limit),
        containers: Vec::new(),
        pod_name: String::new(),
        process_limit: 64,
        unknown_logged: BTreeSet::new(),
        hwcap: arch::hwcap(),
        pod_log: false,
        yield_requested: false,
        trace: params.cmdline().split(' ').any(|w| w == "crx.trace"),
        managed: false,
        specs: Vec::new(),
        layers_error: None,
        picks_since_control: 0,
        entered_user: false,
        next_futex_seq: 0,
        ports: Default::default(),
        vcpus: 1,
        on_cpu: None,
        me: 0,
        cpus: alloc::vec![Default::default()],
        poked: false,
        timekeeper: None,
        next_port: 32768,
        itimers: BTreeMap::new(),
    };
    // Several vCPUs only with a hypervisor that can kick them (ABI 6).
    let vcpus = (params.vcpus as usize).clamp(1, super::smp::MAX_CPUS);
    let vcpus = if vcpus > 1 && hv.vcpu_kick(0, 0).is_ok() { vcpus } else { 1 };
    k.vcpus = vcpus;
    k.cpus = alloc::vec![Default::default(); vcpus];
    let (spec, pod_log) = match fetch_spec(&k, params) {
        Ok(s) => s,
        Err(e) => {
            klog!("cannot start the pod: {e}");
            hv.exit(1);
        }
    };
    k.pod_log = pod_log;
    k.managed = pod_log && spec.managed;
    k.specs = spec.containers.clone();
    k.pod_name = spec.name.clone();
    k.process_limit = (spec.process_limit as usize).max(1);
    k.containers = spec
        .containers
        .iter()
        .map(|c| Container { name: c.name.clone(), root: None, exit: None, oom_killed: false })
        .collect();
    tick_fs_time(&mut k);
    k.layers_error = apply_layers(&mut k).err();
    ensure_dir(&mut k.fs, b"/tmp", 0o1777);
    ensure_dir(&mut k.fs, b"/dev", 0o755);
    ensure_dir(&mut k.fs, b"/proc", 0o555);
    ensure_file(&mut k.fs, b"/dev/null", 0o666);
    ensure_file(&mut k.fs, b"/dev/zero", 0o666);
    klog!(
        "pod {}: {} container(s), {} vCPU(s), process limit {}, filesystem {} KiB",
        spec.name,
        spec.containers.len(),
        k.vcpus,
        k.process_limit,
        k.fs.used_bytes() >> 10
    );
    if k.managed {
        klog!("pod {}: managed: containers start on the node's commands", spec.name);
    } else {
        for i in 0..spec.containers.len() {
            start_container_at(&mut k, i as u32);
        }
    }
    k.current = 0;
    k
}
