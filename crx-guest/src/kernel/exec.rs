//! Program replacement: `execve` and a container's first program load the file at a path
//! into a fresh address space and reset what does not survive an exec.
#![deny(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

use crx_fs::{Errno, Ino};
use crx_guest::elf::{self, ElfError, LoadPlan, PAGE};
use crx_guest::signal::Action;
use crx_guest::stack::{self, AuxInfo};
use crx_guest::vma::{Regions, PROT_EXEC, PROT_WRITE};

use super::arch::TrapFrame;
use super::fd::close_entry;
use super::mm::{self, AddrSpace, Oom, NX, W};
use super::phys;
use super::proc::{pte_flags, Kernel, MemFault, Mm, Pid, Shared, UserMem, STACK_SIZE, STACK_TOP};

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
    let ((mut mm, frame), brk_start) = result?;
    mm.brk_start = brk_start;
    mm.brk = brk_start;
    // The other threads of the process end (Linux's `de_thread`); the caller takes the
    // process's id if it was not its first thread.
    let pid = k.become_sole_thread(pid);
    let Some(p) = k.procs.get_mut(&pid) else { return Ok(()) };
    if let Some(old) = p.mm.replace(Shared::new(mm)).and_then(Shared::into_sole) {
        old.aspace.destroy(&mut k.pool);
    }
    // Descriptors and handlers stop being shared with any other process.
    p.fds = p.fds.duplicate();
    p.sigactions = p.sigactions.duplicate();
    p.in_vfork = false;
    p.frame = frame;
    p.fs_base = 0;
    p.sleep_deadline = None;
    p.exe = String::from_utf8_lossy(path).into_owned();
    // Handlers do not survive the old program; ignored signals stay ignored.
    for s in p.sigactions.borrow_mut().iter_mut() {
        if s.handler > 1 {
            *s = Action::default();
        }
    }
    p.altstack = Default::default();
    p.robust_list = 0;
    p.clear_child_tid = 0;
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

impl Kernel {
    /// Builds a new address space holding the program in `bytes` and its start-up stack.
    /// Returns the address space with its regions, and the entry registers.
    pub fn load_program(
        &mut self,
        bytes: &[u8],
        plan: &LoadPlan,
        argv: &[&[u8]],
        envp: &[&[u8]],
        execfn: &[u8],
    ) -> Result<(Mm, TrapFrame), Result<Errno, Oom>> {
        let aspace = AddrSpace::new(&self.kt, &mut self.pool).map_err(Err)?;
        let mut mm = Mm { aspace, regions: Regions::new(), brk_start: 0, brk: 0 };
        let r = self.fill_program(&mut mm, bytes, plan, argv, envp, execfn);
        match r {
            Ok(frame) => Ok((mm, frame)),
            Err(e) => {
                mm.aspace.destroy(&mut self.pool);
                Err(e)
            }
        }
    }

    fn fill_program(
        &mut self,
        mm: &mut Mm,
        bytes: &[u8],
        plan: &LoadPlan,
        argv: &[&[u8]],
        envp: &[&[u8]],
        execfn: &[u8],
    ) -> Result<TrapFrame, Result<Errno, Oom>> {
        let Mm { aspace, regions, .. } = mm;
        for s in &plan.segments {
            let start = s.vaddr & !(PAGE - 1);
            let end = (s.vaddr + s.memsz).div_ceil(PAGE) * PAGE;
            let mut prot = 0;
            if s.flags & elf::PF_R != 0 {
                prot |= 1;
            }
            if s.flags & elf::PF_W != 0 {
                prot |= PROT_WRITE;
            }
            if s.flags & elf::PF_X != 0 {
                prot |= PROT_EXEC;
            }
            // Pages shared with a previous segment keep the union of both protections.
            let mut page = start;
            while page < end {
                let (pa, old_flags) = match aspace.translate(page) {
                    Some((pa, f)) => (pa, Some(f)),
                    None => (mm::alloc_zeroed(&mut self.pool).map_err(Err)?, None),
                };
                // File bytes of this segment that fall in this page.
                let seg_file_end = s.vaddr + s.filesz;
                let lo = page.max(s.vaddr);
                let hi = (page + PAGE).min(seg_file_end);
                if lo < hi {
                    let off = (s.offset + (lo - s.vaddr)) as usize;
                    let n = (hi - lo) as usize;
                    let src = bytes.get(off..off + n).ok_or(Ok(Errno::ENOEXEC))?;
                    phys::write(pa + (lo - page), src);
                }
                let mut flags = pte_flags(prot);
                if let Some(f) = old_flags {
                    if f & W != 0 {
                        flags |= W;
                    }
                    if f & NX == 0 {
                        flags &= !NX;
                    }
                    aspace.set_flags(page, flags);
                } else {
                    aspace.map(&mut self.pool, page, pa, flags).map_err(Err)?;
                }
                page += PAGE;
            }
            let prev = regions.find(start).map(|r| r.prot).unwrap_or(0);
            regions.insert(start, end, prot | prev);
        }
        regions.insert(STACK_TOP - STACK_SIZE, STACK_TOP, 1 | PROT_WRITE);
        let mut random = [0u8; 16];
        self.hv.random(&mut random);
        let aux = AuxInfo {
            phdr: plan.phdr,
            phent: plan.phent,
            phnum: plan.phnum,
            entry: plan.entry,
            hwcap: self.hwcap,
            random,
        };
        let st =
            stack::build(STACK_TOP, argv, envp, execfn, &aux, 256 * 1024).map_err(|_| Ok(Errno::ENOMEM))?;
        let mut m = UserMem { mm, pool: &mut self.pool };
        m.write(st.rsp, &st.bytes).map_err(|e| match e {
            MemFault::Oom => Err(Oom),
            MemFault::Bad => Ok(Errno::EFAULT),
        })?;
        Ok(TrapFrame::user(plan.entry, st.rsp))
    }
}
