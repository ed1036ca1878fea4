//! Program replacement: `execve` and a container's first program load the file at a path
//! into a fresh address space and reset what does not survive an exec.
//!
//! A static program is entered at its entry point. A dynamically linked one (`PT_INTERP`)
//! gets its interpreter too, resolved in the pod's filesystem from the process's working
//! directory (through symbolic links) and placed just below [`MMAP_TOP`], where later
//! mappings go below it; the process enters at the interpreter's entry with `AT_BASE`,
//! `AT_PHDR` and `AT_ENTRY` telling it where both are. The segments of both are file-backed
//! regions (filled on first touch through the page cache, shared between processes),
//! except the pages [`MapOp::Build`] builds at once.
#![deny(unsafe_code)]

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;

use crx_fs::{Errno, FileType, Ino};
use crx_guest::elf::{self, ElfError, LoadPlan, MapOp, PAGE};
use crx_guest::pagecache::MappedFile;
use crx_guest::signal::Action;
use crx_guest::stack::{self, AuxInfo};
use crx_guest::vma::{prot_of_flags, Backing, Region, Regions, PROT_WRITE};

use super::arch::TrapFrame;
use super::fd::close_entry;
use super::mm::{AddrSpace, Oom};
use super::pager;
use super::proc::{pte_flags, Kernel, MemFault, Mm, Pid, Shared, UserMem, MMAP_TOP, STACK_SIZE, STACK_TOP};

/// The path that names the running program.
pub const PROC_SELF_EXE: &[u8] = b"/proc/self/exe";

/// Why the interpreter a program names cannot serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterpError {
    /// It cannot be found or opened (`ENOENT`, `ENOTDIR`, `ELOOP`...; `EACCES` when it is
    /// not an executable regular file).
    Open(Errno),
    /// It is not a usable ELF interpreter (`ELIBBAD`).
    Format(ElfError),
}

/// The outcome of resolving a program for `execve` or a container start.
pub enum ExecError {
    /// An errno for `execve`.
    Errno(Errno),
    /// Not runnable as an executable: the reason (for the log).
    Format(ElfError),
    /// The program's interpreter (its path) cannot serve.
    Interp(Vec<u8>, InterpError),
    /// Memory ran out.
    Oom,
}

impl ExecError {
    /// The errno `execve` returns (Linux's: `ENOENT` for a missing interpreter, `ELIBBAD`
    /// for one that is not a usable ELF file, `ENOEXEC` for a bad program).
    pub fn errno(&self) -> Errno {
        match self {
            ExecError::Errno(e) => *e,
            ExecError::Format(_) => Errno::ENOEXEC,
            ExecError::Interp(_, InterpError::Open(e)) => *e,
            ExecError::Interp(_, InterpError::Format(_)) => Errno::ELIBBAD,
            ExecError::Oom => Errno::ENOMEM,
        }
    }

    /// What is wrong with the interpreter, for a log line: `interpreter PATH: REASON`.
    pub fn interp_reason(&self) -> Option<String> {
        let ExecError::Interp(path, why) = self else { return None };
        let path = String::from_utf8_lossy(path);
        Some(match why {
            InterpError::Open(Errno::ENOENT) => alloc::format!("interpreter {path}: not found"),
            InterpError::Open(Errno::EACCES) => alloc::format!("interpreter {path}: permission denied"),
            InterpError::Open(e) => alloc::format!("interpreter {path}: {e}"),
            InterpError::Format(e) => alloc::format!("bad interpreter {path}: {e}"),
        })
    }
}

/// A file to load: its inode and plan.
struct Image<'a> {
    ino: Ino,
    plan: &'a LoadPlan,
}

/// Finds and checks the interpreter `path` names for `program`.
fn interpreter(
    k: &Kernel,
    cwd: Ino,
    path: &[u8],
    program: &LoadPlan,
) -> Result<(Ino, LoadPlan), InterpError> {
    let ino = k.fs.lookup(cwd, path, true).map_err(InterpError::Open)?;
    if k.fs.file_type(ino).map_err(InterpError::Open)? != FileType::Regular {
        return Err(InterpError::Open(Errno::EACCES));
    }
    k.fs.check_exec(ino).map_err(InterpError::Open)?;
    let bytes = k.fs.contents(ino).map_err(InterpError::Open)?;
    let plan = elf::plan_interpreter(bytes, program, MMAP_TOP).map_err(InterpError::Format)?;
    Ok((ino, plan))
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
    let plan = elf::plan(k.fs.contents(ino).map_err(ExecError::Errno)?).map_err(ExecError::Format)?;
    let interp = match &plan.interp {
        None => None,
        Some(ipath) => {
            Some(interpreter(k, cwd, ipath, &plan).map_err(|e| ExecError::Interp(ipath.clone(), e))?)
        }
    };
    let argv_refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    let envp_refs: Vec<&[u8]> = envp.iter().map(Vec::as_slice).collect();
    let program = Image { ino, plan: &plan };
    let interp = interp.as_ref().map(|(ino, plan)| Image { ino: *ino, plan });
    let (mut mm, frame) =
        k.load_program(&program, interp.as_ref(), &argv_refs, &envp_refs, path).map_err(|e| match e {
            Ok(errno) => ExecError::Errno(errno),
            Err(_) => ExecError::Oom,
        })?;
    mm.brk_start = plan.brk_start;
    mm.brk = plan.brk_start;
    // The other threads of the process end (Linux's `de_thread`); the caller takes the
    // process's id if it was not its first thread.
    let pid = k.become_sole_thread(pid);
    let Some(p) = k.procs.get_mut(&pid) else {
        mm.aspace.destroy(&mut k.pool);
        return Ok(());
    };
    let old = p.mm.replace(Shared::new(mm)).and_then(Shared::into_sole);
    // Descriptors and handlers stop being shared with any other process.
    p.fds = p.fds.duplicate();
    p.sigactions = p.sigactions.duplicate();
    p.in_vfork = false;
    p.altstack = Default::default();
    p.robust_list = 0;
    p.clear_child_tid = 0;
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
    p.saved_mask = None;
    let closing = p.fds.take_cloexec();
    p.fpu.copy_from(&mut k.fpu_template);
    if k.fpu_owner == Some(pid) {
        k.fpu_owner = None;
    }
    if let Some(Mm { aspace, regions, .. }) = old {
        aspace.destroy(&mut k.pool);
        drop(regions);
    }
    // The old program's file pages and files that nothing maps any more go back.
    k.cache.sweep(&mut k.pool, &mut k.fs);
    for e in closing {
        close_entry(&mut k.fs, e);
    }
    Ok(())
}

impl Kernel {
    /// Builds a new address space holding the program (and its interpreter) and the
    /// start-up stack. Returns the address space with its regions, and the entry registers.
    fn load_program(
        &mut self,
        program: &Image<'_>,
        interp: Option<&Image<'_>>,
        argv: &[&[u8]],
        envp: &[&[u8]],
        execfn: &[u8],
    ) -> Result<(Mm, TrapFrame), Result<Errno, Oom>> {
        let aspace = AddrSpace::new(&self.kt, &mut self.pool).map_err(Err)?;
        let mut mm = Mm { aspace, regions: Regions::new(), brk_start: 0, brk: 0 };
        let mut r = self.map_image(&mut mm.aspace, &mut mm.regions, program);
        if let (Ok(()), Some(i)) = (&r, interp) {
            r = self.map_image(&mut mm.aspace, &mut mm.regions, i);
        }
        let r = r.and_then(|()| self.start_stack(&mut mm, program, interp, argv, envp, execfn));
        match r {
            Ok(frame) => Ok((mm, frame)),
            Err(e) => {
                let Mm { aspace, regions, .. } = mm;
                aspace.destroy(&mut self.pool);
                drop(regions);
                self.cache.sweep(&mut self.pool, &mut self.fs);
                Err(e)
            }
        }
    }

    /// Maps one file's segments: file-backed and zero regions, and the pages built now.
    fn map_image(
        &mut self,
        aspace: &mut AddrSpace,
        regions: &mut Regions,
        image: &Image<'_>,
    ) -> Result<(), Result<Errno, Oom>> {
        let file: Rc<MappedFile> = self.cache.file(&mut self.fs, image.ino).map_err(Ok)?;
        let data = self.fs.contents(image.ino).map_err(Ok)?;
        for op in image.plan.map_ops() {
            match op {
                MapOp::File { start, end, offset, flags } => regions.insert_region(Region {
                    start,
                    end,
                    prot: prot_of_flags(flags),
                    backing: Some(Backing { file: file.clone(), offset, shared: false }),
                }),
                MapOp::Zero { start, end, flags } => regions.insert(start, end, prot_of_flags(flags)),
                MapOp::Build { page, flags, parts } => {
                    let prot = prot_of_flags(flags);
                    pager::build(
                        aspace,
                        &mut self.pool,
                        &mut self.cache,
                        data,
                        &parts,
                        page,
                        pte_flags(prot),
                    )
                    .map_err(Err)?;
                    regions.insert(page, page + PAGE, prot);
                }
            }
        }
        Ok(())
    }

    /// The stack region and the start-up stack; the registers that enter the program (or
    /// its interpreter).
    fn start_stack(
        &mut self,
        mm: &mut Mm,
        program: &Image<'_>,
        interp: Option<&Image<'_>>,
        argv: &[&[u8]],
        envp: &[&[u8]],
        execfn: &[u8],
    ) -> Result<TrapFrame, Result<Errno, Oom>> {
        mm.regions.insert(STACK_TOP - STACK_SIZE, STACK_TOP, 1 | PROT_WRITE);
        let mut random = [0u8; 16];
        self.hv.random(&mut random);
        let plan = program.plan;
        let aux = AuxInfo {
            phdr: plan.phdr,
            phent: plan.phent,
            phnum: plan.phnum,
            entry: plan.entry,
            base: interp.map(|i| i.plan.bias).unwrap_or(0),
            hwcap: self.hwcap,
            hwcap2: 0,
            random,
        };
        let st =
            stack::build(STACK_TOP, argv, envp, execfn, &aux, 256 * 1024).map_err(|_| Ok(Errno::E2BIG))?;
        let mut m = UserMem { mm, pool: &mut self.pool, fs: &self.fs, cache: &mut self.cache };
        m.write(st.rsp, &st.bytes).map_err(|e| match e {
            MemFault::Oom => Err(Oom),
            MemFault::Bad => Ok(Errno::EFAULT),
        })?;
        let entry = interp.map(|i| i.plan.entry).unwrap_or(plan.entry);
        Ok(TrapFrame::user(entry, st.rsp))
    }
}
