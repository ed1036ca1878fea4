//! Image references as a container runtime reads them: Docker's normalisation
//! (`busybox` is `docker.io/library/busybox:latest`), `name:tag`, `name@sha256:...` and
//! registries with ports. Pure, and total: every input is a [`Reference`] or a
//! [`RefError`].

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

/// The registry of references that name none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag of references that name neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest reference accepted (Docker's limit on a repository name is 255).
pub const MAX_REFERENCE: usize = 512;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `127.0.0.1:5000`, `registry.example.com`.
    pub registry: String,
    /// `library/busybox`.
    pub repository: String,
    /// The tag, when the reference names one (or names nothing: then [`DEFAULT_TAG`]).
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, when the reference names a digest.
    pub digest: Option<String>,
}

/// Why a reference is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefError {
    /// Empty, or longer than [`MAX_REFERENCE`].
    Length(usize),
    /// A path component holds something other than lowercase letters, digits and
    /// single separators (`.`, `_`, `__`, `-`).
    BadComponent(String),
    /// The tag is not 1 to 128 of `[A-Za-z0-9_.-]` starting with a word character.
    BadTag(String),
    /// The digest is not `sha256:` and 64 lowercase hex digits.
    BadDigest(String),
}

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefError::Length(n) => write!(f, "an image reference is 1 to {MAX_REFERENCE} bytes, not {n}"),
            RefError::BadComponent(c) => write!(f, "invalid repository name component {c:?}"),
            RefError::BadTag(t) => write!(f, "invalid tag {t:?}"),
            RefError::BadDigest(d) => write!(f, "invalid digest {d:?} (only sha256 is supported)"),
        }
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Separators between alphanumeric runs: one '.', one or two '_', or any run of '-'.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x)))
}

impl Reference {
    /// Parses and normalises `s` as Docker does.
    pub fn parse(s: &str) -> Result<Reference, RefError> {
        if s.is_empty() || s.len() > MAX_REFERENCE {
            return Err(RefError::Length(s.len()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !valid_digest(d) {
                    return Err(RefError::BadDigest(d.to_string()));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(RefError::BadTag(t.to_string()));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, more)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                if !valid_registry(first) {
                    return Err(RefError::BadComponent(first.to_string()));
                }
                (first.to_string(), more)
            }
            _ => (DEFAULT_REGISTRY.to_string(), name),
        };
        let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY.to_string() } else { registry };
        if let Some(bad) = path.split('/').find(|c| !valid_component(c)) {
            return Err(RefError::BadComponent(bad.to_string()));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    /// The normalised form: `registry/repository[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The normalised form of `s` (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalize(s: &str) -> Result<String, RefError> {
    Reference::parse(s).map(|r| r.to_string())
}

/// When the node pulls a container's image (`imagePullPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// At every container start, even when the image is on the node.
    Always,
    /// Only when the image is not on the node.
    IfNotPresent,
    /// Never: the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The policy a container names, else the API server's default for its image: Always
    /// for a reference whose tag is `latest` (named, or implied by naming neither tag nor
    /// digest), IfNotPresent otherwise. A value that is none of the three counts as
    /// IfNotPresent (the API server does not admit one).
    pub fn of(named: Option<&str>, image: &str) -> PullPolicy {
        match named {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some(_) => PullPolicy::IfNotPresent,
            None => match Reference::parse(image) {
                Ok(r) if r.tag.as_deref() == Some(DEFAULT_TAG) => PullPolicy::Always,
                _ => PullPolicy::IfNotPresent,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_as_the_api_server_does() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for (image, want) in [
            ("busybox", PullPolicy::Always),
            ("busybox:latest", PullPolicy::Always),
            ("127.0.0.1:5000/busybox", PullPolicy::Always),
            ("busybox:1.36", PullPolicy::IfNotPresent),
            (&format!("busybox@{d}"), PullPolicy::IfNotPresent),
            (&format!("busybox:latest@{d}"), PullPolicy::Always),
            ("Not A Reference", PullPolicy::IfNotPresent),
        ] {
            assert_eq!(PullPolicy::of(None, image), want, "{image}");
        }
        assert_eq!(PullPolicy::of(Some("Never"), "busybox"), PullPolicy::Never);
        assert_eq!(PullPolicy::of(Some("Always"), "busybox:1.36"), PullPolicy::Always);
        assert_eq!(PullPolicy::of(Some("IfNotPresent"), "busybox"), PullPolicy::IfNotPresent);
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_normalisation() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
            ("someone/tool:v2", "docker.io/someone/tool:v2"),
            ("127.0.0.1:5000/busybox:1.36", "127.0.0.1:5000/busybox:1.36"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/a/b/c", "localhost:5000/a/b/c:latest"),
            ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
            ("my_re-po__x/z.y", "docker.io/my_re-po__x/z.y:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!((r.tag.as_deref(), r.digest.as_deref()), (None, Some(D)));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = Reference::parse(&format!("127.0.0.1:5000/busybox:1.36@{D}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "busybox", Some("1.36"))
        );
        assert_eq!(r.name(), "127.0.0.1:5000/busybox");
    }

    #[test]
    fn malformed_references_are_errors() {
        let long = "a".repeat(MAX_REFERENCE + 1);
        for bad in [
            "",
            &long,
            "BusyBox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:00",
            "a//b",
            "/busybox",
            "busybox/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "host:99999/x",
            "host:/x",
            "busybox:tag with space",
            "a@",
            "..:1/x",
            "\u{e9}t\u{e9}",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Reference::parse("").err(), Some(RefError::Length(0)));
        assert!(matches!(Reference::parse("Busybox"), Err(RefError::BadComponent(_))));
    }
}
