//! Program replacement: `execve` and a container's first program load the file at a path
//! into a fresh address space and reset what does not survive an exec.
#![deny(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

use crx_fs::{Errno, Ino};
use crx_guest::elf::{self, ElfError};
use crx_guest::signal::Action;

use super::fd::close_entry;
use super::proc::{Kernel, Pid};

/// The path that names the running program.
pub const PROC_SELF_EXE: &[u8] = b"/proc/self/exe";

/// The outcome of resolving a program for `execve` or a container start.
pub enum ExecError {
    /// An errno for `execve`.
    Errno(Errno),
    /// Not runnable as an executable: the reason (for the log).
    Format(ElfError),
    /// Memory ran out.
    Oom,
}

/// Replaces `pid`'s program with the file at `path` (from `cwd`).
pub fn exec(
    k: &mut Kernel,
    pid: Pid,
    path: &[u8],
    argv: &[Vec<u8>],
    envp: &[Vec<u8>],
) -> Result<(), ExecError> {
    let cwd = k.procs.get(&pid).map(|p| p.cwd).unwrap_or(Ino::ROOT);
    // `/proc/self/exe` is the running program (busybox re-executes itself through it).
    let self_exe;
    let path = if path == PROC_SELF_EXE {
        self_exe = k.procs.get(&pid).map(|p| p.exe.clone().into_bytes()).unwrap_or_default();
        &self_exe[..]
    } else {
        path
    };
    let abs;
    let path = if path.first() == Some(&b'/') {
        path
    } else {
        let mut p = k.fs.path_of(cwd).map_err(ExecError::Errno)?;
        if p.last() != Some(&b'/') {
            p.push(b'/');
        }
        p.extend_from_slice(path);
        abs = p;
        &abs[..]
    };
    let ino = k.fs.lookup(cwd, path, true).map_err(ExecError::Errno)?;
    k.fs.check_exec(ino).map_err(ExecError::Errno)?;
    // Take the filesystem out so its file bytes can be read while the kernel is mutated.
    let fs = core::mem::take(&mut k.fs);
    let result = (|| {
        let bytes = fs.contents(ino).map_err(ExecError::Errno)?;
        let plan = elf::plan(bytes).map_err(ExecError::Format)?;
        let argv_refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        let envp_refs: Vec<&[u8]> = envp.iter().map(Vec::as_slice).collect();
        let loaded = k.load_program(bytes, &plan, &argv_refs, &envp_refs, path).map_err(|e| match e {
            Ok(errno) => ExecError::Errno(errno),
            Err(_) => ExecError::Oom,
        })?;
        Ok((loaded, plan.brk_start))
    })();
    k.fs = fs;
    let ((aspace, regions, frame), brk_start) = result?;
    let Some(p) = k.procs.get_mut(&pid) else { return Ok(()) };
    if let Some(old) = p.aspace.replace(aspace) {
        old.destroy(&mut k.pool);
    }
    p.regions = regions;
    p.brk_start = brk_start;
    p.brk = brk_start;
    p.frame = frame;
    p.fs_base = 0;
    p.sleep_deadline = None;
    p.exe = String::from_utf8_lossy(path).into_owned();
    // Handlers do not survive the old program; ignored signals stay ignored.
    for s in p.sigactions.iter_mut() {
        if s.handler > 1 {
            *s = Action::default();
        }
    }
    p.saved_mask = None;
    let closing = p.fds.take_cloexec();
    p.fpu.copy_from(&mut k.fpu_template);
    if k.fpu_owner == Some(pid) {
        k.fpu_owner = None;
    }
    for e in closing {
        close_entry(&mut k.fs, e);
    }
    Ok(())
}
