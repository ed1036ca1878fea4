//! Image layers assembled in memory, from made-up files and from the host's own files, and
//! the glibc-dynamic Debian image built from this machine's programs (`cargo xtask image
//! debian`).
//!
//! A [`Rootfs`] is one layer's tree: directories, regular files and symlinks by path
//! (relative to the root, no leading `/`), written as a tar in path order, so that every
//! directory comes before what it holds. [`Rootfs::copy_from_host`] copies one host path
//! with every symlink on the way reproduced as a symlink: on a usr-merged Debian,
//! `/lib64/ld-linux-x86-64.so.2` becomes the link `lib64 -> usr/lib64`, the link
//! `usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`, the link
//! `lib -> usr/lib` and the file `usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`, so that a
//! program's PT_INTERP resolves in the image as it does on the host.

use crate::oci::{self, ImageError, RunConfig, TarEntry};
use crate::Error;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One entry of a [`Rootfs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory and its mode.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Its content.
        bytes: Vec<u8>,
    },
    /// A symlink.
    Symlink {
        /// Where it points, as written (relative or absolute).
        target: String,
    },
}

/// The tree of one layer, by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rootfs {
    entries: BTreeMap<String, Node>,
}

/// How many symlinks one [`Rootfs::copy_from_host`] follows before it gives up (Linux's
/// own limit on a path lookup).
const MAX_SYMLINKS: u32 = 40;

fn bad(message: String) -> ImageError {
    ImageError::Io { what: message, source: std::io::Error::from(std::io::ErrorKind::InvalidInput) }
}

/// `path` as the relative path of an entry: no leading `/`, no empty, `.` or `..` parts.
fn entry_path(path: &str) -> Result<String, ImageError> {
    let rel = path.trim_start_matches('/');
    let parts: Vec<&str> = rel.split('/').collect();
    if rel.is_empty() || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return Err(bad(format!("{path:?} is not a path inside an image")));
    }
    Ok(rel.to_string())
}

/// Pushes the parts of `path` onto `parts`, `.` dropped and `..` taking the last part off
/// (above the root stays at the root, as on Linux).
fn push_parts(parts: &mut Vec<String>, path: &str) {
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p.to_string()),
        }
    }
}

impl Rootfs {
    /// An empty tree.
    pub fn new() -> Rootfs {
        Rootfs::default()
    }

    /// The entry at `path` (relative, as stored).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path.trim_start_matches('/'))
    }

    /// Every path, in the order the tar holds them.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the directories above `rel` that are not there yet (mode 0755).
    fn parents(&mut self, rel: &str) -> Result<(), ImageError> {
        let mut at = 0;
        while let Some(i) = rel[at..].find('/') {
            let parent = &rel[..at + i];
            match self.entries.get(parent) {
                None => {
                    self.entries.insert(parent.to_string(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(_) => return Err(bad(format!("{parent} is not a directory, so {rel} cannot be added"))),
            }
            at += i + 1;
        }
        Ok(())
    }

    /// Adds (or replaces) a directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Rootfs, ImageError> {
        let rel = entry_path(path)?;
        self.parents(&rel)?;
        self.entries.insert(rel, Node::Dir { mode: mode & 0o7777 });
        Ok(self)
    }

    /// Adds (or replaces) a regular file, with the directories above it.
    pub fn file(&mut self, path: &str, mode: u32, bytes: Vec<u8>) -> Result<&mut Rootfs, ImageError> {
        let rel = entry_path(path)?;
        self.parents(&rel)?;
        self.entries.insert(rel, Node::File { mode: mode & 0o7777, bytes });
        Ok(self)
    }

    /// Adds (or replaces) a symlink, with the directories above it.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Rootfs, ImageError> {
        let rel = entry_path(path)?;
        if target.is_empty() {
            return Err(bad(format!("symlink {rel} has an empty target")));
        }
        self.parents(&rel)?;
        self.entries.insert(rel, Node::Symlink { target: target.to_string() });
        Ok(self)
    }

    /// Copies the host's file `path` (absolute) to the same path here, every directory on
    /// the way with its host mode and every symlink on the way (the file itself or a
    /// directory above it) as the same symlink, followed to the file it ends at.
    pub fn copy_from_host(&mut self, path: &Path) -> Result<(), ImageError> {
        let text = path.to_str().ok_or_else(|| bad(format!("{} is not UTF-8", path.display())))?;
        if !text.starts_with('/') {
            return Err(bad(format!("{text} is not an absolute path")));
        }
        let mut todo = Vec::new();
        push_parts(&mut todo, text);
        let mut hops = 0;
        'walk: loop {
            let mut done: Vec<String> = Vec::new();
            for (i, part) in todo.iter().enumerate() {
                let rel = if done.is_empty() { part.clone() } else { format!("{}/{part}", done.join("/")) };
                let host = Path::new("/").join(&rel);
                let md = fs::symlink_metadata(&host)
                    .map_err(oci::io_err(format!("reading {}", host.display())))?;
                let last = i + 1 == todo.len();
                if md.file_type().is_symlink() {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(bad(format!("{text}: more than {MAX_SYMLINKS} symlinks")));
                    }
                    let target = fs::read_link(&host)
                        .map_err(oci::io_err(format!("reading link {}", host.display())))?;
                    let target = target
                        .to_str()
                        .ok_or_else(|| bad(format!("the target of {} is not UTF-8", host.display())))?
                        .to_string();
                    self.symlink(&rel, &target)?;
                    let mut next = if target.starts_with('/') { Vec::new() } else { done.clone() };
                    push_parts(&mut next, &target);
                    next.extend(todo[i + 1..].iter().cloned());
                    todo = next;
                    continue 'walk;
                }
                let mode = md.permissions().mode() & 0o7777;
                if md.is_dir() {
                    match self.entries.get(&rel) {
                        Some(Node::Dir { .. }) => {}
                        _ => {
                            self.entries.insert(rel.clone(), Node::Dir { mode });
                        }
                    }
                } else if md.is_file() && last {
                    let bytes =
                        fs::read(&host).map_err(oci::io_err(format!("reading {}", host.display())))?;
                    self.entries.insert(rel.clone(), Node::File { mode, bytes });
                } else {
                    return Err(bad(format!("{}: neither a directory nor a regular file", host.display())));
                }
                done.push(part.clone());
            }
            return Ok(());
        }
    }

    /// The tree as an uncompressed tar, in path order (owner root, a fixed mtime).
    pub fn tar(&self) -> Result<Vec<u8>, ImageError> {
        let entries: Vec<TarEntry<'_>> = self
            .entries
            .iter()
            .map(|(path, node)| match node {
                Node::Dir { mode } => TarEntry::Dir(path, *mode),
                Node::File { mode, bytes } => TarEntry::File(path, *mode, bytes),
                Node::Symlink { target } => TarEntry::Symlink(path, target),
            })
            .collect();
        oci::tar_entries(&entries)
    }
}

/// The files `ldd` names in its output `text`: each library it found and the dynamic
/// loader, in order, each once (the vDSO, which is no file, left out). A static program
/// names none; a library ldd could not find is an error naming it.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not a dynamic executable") || line == "statically linked" {
            continue;
        }
        let path = match line.split_once(" => ") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("ldd: {name} not found"));
                }
                rest.split(" (").next().unwrap_or(rest).trim()
            }
            None => line.split(" (").next().unwrap_or(line).trim(),
        };
        if !path.starts_with('/') {
            // linux-vdso.so.1 (0x...): in the kernel, not a file.
            continue;
        }
        let path = PathBuf::from(path);
        if !out.contains(&path) {
            out.push(path);
        }
    }
    Ok(out)
}

/// The libraries and the loader of `program`, as the host's `ldd` names them.
pub fn ldd(program: &Path) -> Result<Vec<PathBuf>, Error> {
    let what = format!("ldd {}", program.display());
    let out = Command::new("ldd").arg(program).output().map_err(|e| Error::io(what.clone(), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && !text.contains("not a dynamic executable") {
        return Err(Error::Failed { what, status: out.status });
    }
    parse_ldd(&text).map_err(|e| Error::Missing(format!("{}: {e}", program.display())))
}

/// The programs of the Debian image, found in the host's `/usr/bin` (or `/bin`).
pub const DEBIAN_PROGRAMS: &[&str] = &[
    "bash", "cat", "ls", "sort", "head", "tail", "wc", "cut", "tr", "uniq", "echo", "env", "true", "false",
    "sleep", "mkdir", "rm", "cp", "mv", "ln", "touch", "chmod", "pwd", "basename", "dirname", "date", "id",
    "uname", "seq", "tee", "printf", "readlink", "stat", "grep", "sed", "gawk",
];

/// Links the Debian image adds beside its programs (the host's `sh` is dash and its
/// `awk` goes through /etc/alternatives).
pub const DEBIAN_LINKS: &[(&str, &str)] = &[("usr/bin/sh", "bash"), ("usr/bin/awk", "gawk")];

/// `data/fruits.txt` of the Debian image: name, count and colour, to grep, sort and awk over.
pub const DEBIAN_FRUITS: &str = "\
apple 3 red
banana 12 yellow
cherry 7 red
date 5 brown
elderberry 9 purple
fig 4 purple
grape 15 green
";

/// `data/words.txt` of the Debian image: words with repeats, to sort and uniq.
pub const DEBIAN_WORDS: &str = "\
pear
apple
pear
quince
apple
pear
";

/// The Debian image's `etc/passwd`.
pub const DEBIAN_PASSWD: &str =
    "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
/// The Debian image's `etc/group`.
pub const DEBIAN_GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// The top-level directories a usr-merged system makes symlinks into `/usr`.
const MERGED_DIRS: &[&str] = &["bin", "sbin", "lib", "lib64"];

/// Where the host keeps program `name`: `/usr/bin` first, then `/bin`.
fn host_program(name: &str) -> Result<PathBuf, Error> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Missing(format!(
                "the Debian image needs the host's {name}, which is not in /usr/bin or /bin"
            ))
        })
}

/// The Debian image's two layers, from the host's files.
#[derive(Debug, Clone)]
pub struct DebianLayers {
    /// Layer 1: the usr-merge links, the dynamic loader and every library `ldd` names for
    /// the programs, each with the symlinks on its way.
    pub libraries: Rootfs,
    /// Layer 2: the programs ([`DEBIAN_PROGRAMS`], [`DEBIAN_LINKS`]), `etc/passwd`,
    /// `etc/group`, `data/*.txt`, `root/`, `tmp/` (1777).
    pub programs: Rootfs,
    /// The host paths of the libraries and loader, in the order first named.
    pub library_paths: Vec<PathBuf>,
    /// The host paths of the programs.
    pub program_paths: Vec<PathBuf>,
}

/// Collects the Debian image's layers from this machine's programs and libraries.
pub fn debian_layers() -> Result<DebianLayers, Error> {
    let image_err = |e: ImageError| Error::Missing(format!("building the Debian image: {e}"));
    let mut libraries = Rootfs::new();
    for dir in MERGED_DIRS {
        let host = Path::new("/").join(dir);
        if let Ok(target) = fs::read_link(&host) {
            let target = target
                .to_str()
                .ok_or_else(|| Error::Missing(format!("{} links to a non-UTF-8 path", host.display())))?;
            libraries.symlink(dir, target).map_err(image_err)?;
        }
    }
    let mut programs = Rootfs::new();
    let mut library_paths: Vec<PathBuf> = Vec::new();
    let mut program_paths = Vec::new();
    for name in DEBIAN_PROGRAMS {
        let path = host_program(name)?;
        for lib in ldd(&path)? {
            if !library_paths.contains(&lib) {
                library_paths.push(lib);
            }
        }
        programs.copy_from_host(&path).map_err(image_err)?;
        program_paths.push(path);
    }
    if library_paths.is_empty() {
        return Err(Error::Missing(
            "ldd named no library for any program: they are not dynamically linked".into(),
        ));
    }
    for lib in &library_paths {
        libraries.copy_from_host(lib).map_err(image_err)?;
    }
    for (link, target) in DEBIAN_LINKS {
        programs.symlink(link, target).map_err(image_err)?;
    }
    programs
        .file("etc/passwd", 0o644, DEBIAN_PASSWD.into())
        .and_then(|r| r.file("etc/group", 0o644, DEBIAN_GROUP.into()))
        .and_then(|r| r.file("data/fruits.txt", 0o644, DEBIAN_FRUITS.into()))
        .and_then(|r| r.file("data/words.txt", 0o644, DEBIAN_WORDS.into()))
        .and_then(|r| r.dir("root", 0o700))
        .and_then(|r| r.dir("tmp", 0o1777))
        .map_err(image_err)?;
    Ok(DebianLayers { libraries, programs, library_paths, program_paths })
}

/// The Debian image's config: `Env` the default PATH, `Cmd ["bash"]`, `WorkingDir /`.
pub fn debian_run_config() -> RunConfig {
    RunConfig {
        entrypoint: None,
        cmd: Some(vec!["bash".into()]),
        env: Some(vec![oci::DEFAULT_PATH.into()]),
        working_dir: Some("/".into()),
    }
}

/// What [`build_debian_image`] wrote.
#[derive(Debug, Clone)]
pub struct DebianImage {
    /// The manifest's digest.
    pub digest: String,
    /// The layers it was made of.
    pub layers: DebianLayers,
}

/// Builds the glibc-dynamic Debian image at `out` (an OCI image layout of two layers, see
/// [`DebianLayers`]), installing gawk first when it is missing.
pub fn build_debian_image(out: &Path) -> Result<DebianImage, Error> {
    crate::setup::ensure(crate::setup::DEBIAN_IMAGE)?;
    let layers = debian_layers()?;
    let image_err =
        |e: ImageError| Error::Missing(format!("writing the Debian image to {}: {e}", out.display()));
    let tars = [layers.libraries.tar().map_err(image_err)?, layers.programs.tar().map_err(image_err)?];
    oci::clear_layout(out).map_err(image_err)?;
    let digest = oci::write_layout(out, &tars, debian_run_config()).map_err(image_err)?;
    Ok(DebianImage { digest, layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibtinfo.so.6 => /lib/x86_64-linux-gnu/libtinfo.so.6 (0x00007f01)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libtinfo.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert_eq!(parse_ldd("\tnot a dynamic executable\n").unwrap(), Vec::<PathBuf>::new());
        assert_eq!(parse_ldd("\tstatically linked\n").unwrap(), Vec::<PathBuf>::new());
        let missing = parse_ldd("\tlibgone.so.1 => not found\n").unwrap_err();
        assert!(missing.contains("libgone.so.1"), "{missing}");
    }

    #[test]
    fn entries_get_their_parents_and_bad_paths_are_refused() {
        let mut r = Rootfs::new();
        r.file("/usr/bin/tool", 0o100755, b"x".to_vec()).unwrap();
        r.symlink("bin", "usr/bin").unwrap();
        assert_eq!(r.paths().collect::<Vec<_>>(), ["bin", "usr", "usr/bin", "usr/bin/tool"]);
        assert_eq!(r.get("usr/bin"), Some(&Node::Dir { mode: 0o755 }));
        assert_eq!(r.get("/usr/bin/tool"), Some(&Node::File { mode: 0o755, bytes: b"x".to_vec() }));
        for bad in ["", "/", "a//b", "a/../b", "./a"] {
            assert!(r.file(bad, 0o644, Vec::new()).is_err(), "{bad:?} should be refused");
        }
        // A file below a symlink of the same tree cannot be added.
        assert!(r.file("bin/other", 0o755, Vec::new()).is_err());
        assert!(r.symlink("x", "").is_err());
    }

    #[test]
    fn host_paths_keep_their_symlinks() {
        let base = std::env::temp_dir().join(format!("crx-rootfs-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let real = base.join("usr/lib/x86_64-test");
        fs::create_dir_all(&real).unwrap();
        fs::create_dir_all(base.join("usr/lib64")).unwrap();
        fs::write(real.join("ld.so"), b"loader").unwrap();
        fs::set_permissions(real.join("ld.so"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("usr/lib", base.join("lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib64", base.join("lib64")).unwrap();
        let abs_target = format!("{}/lib/x86_64-test/ld.so", base.display());
        std::os::unix::fs::symlink(&abs_target, base.join("usr/lib64/ld.so")).unwrap();
        std::os::unix::fs::symlink("../x86_64-test/./ld.so", real.join("ld-rel.so")).unwrap();

        let mut r = Rootfs::new();
        r.copy_from_host(&base.join("lib64/ld.so")).unwrap();
        r.copy_from_host(&base.join("lib/x86_64-test/ld-rel.so")).unwrap();
        let rel = |p: &str| format!("{}/{p}", base.display()).trim_start_matches('/').to_string();
        assert_eq!(r.get(&rel("lib64")), Some(&Node::Symlink { target: "usr/lib64".into() }));
        assert_eq!(r.get(&rel("usr/lib64/ld.so")), Some(&Node::Symlink { target: abs_target.clone() }));
        assert_eq!(r.get(&rel("lib")), Some(&Node::Symlink { target: "usr/lib".into() }));
        assert_eq!(
            r.get(&rel("usr/lib/x86_64-test/ld-rel.so")),
            Some(&Node::Symlink { target: "../x86_64-test/./ld.so".into() })
        );
        assert_eq!(
            r.get(&rel("usr/lib/x86_64-test/ld.so")),
            Some(&Node::File { mode: 0o755, bytes: b"loader".to_vec() })
        );
        // Nothing was copied through a link as a directory.
        assert!(r.get(&rel("lib64/ld.so")).is_none() && r.get(&rel("lib/x86_64-test")).is_none());

        // A loop of links ends with an error, as does a path that is not there.
        std::os::unix::fs::symlink("loop-b", base.join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", base.join("loop-b")).unwrap();
        assert!(r.copy_from_host(&base.join("loop-a")).is_err());
        assert!(r.copy_from_host(&base.join("missing")).is_err());
        assert!(r.copy_from_host(Path::new("relative/path")).is_err());

        // The tar holds every entry, parents first, links as links.
        let tar = r.tar().unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let names: Vec<(String, tar::EntryType)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().entry_type())
            })
            .collect();
        let pos = |p: &str| names.iter().position(|(n, _)| *n == rel(p)).unwrap();
        assert!(pos("usr") < pos("usr/lib") && pos("usr/lib") < pos("usr/lib/x86_64-test/ld.so"));
        assert_eq!(names[pos("lib64")].1, tar::EntryType::Symlink);
        fs::remove_dir_all(&base).unwrap();
    }
}
