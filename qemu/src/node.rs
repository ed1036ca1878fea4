//! What a node boots with: its boot configuration from a kubeconfig (the module the kernel
//! reads to join a cluster, `kubelet_lite::nodecfg`, written to `target/nodes/NAME.cfg`),
//! the image bundles of the images it can run (`crx_abi::pod::bundle`, image magic), and the
//! module pack that carries them all as QEMU's one `-initrd` (`crx_abi::pack`). The kernel
//! tells the modules apart by their magic.

use crate::image::target_dir;
use crate::oci::Image;
use crate::Error;
use crx_abi::pod::ImageConfig;
use kubelet_lite::nodecfg::NodeBootConfig;
use sim_node::kubeconfig::Kubeconfig;
use std::fs;
use std::path::{Path, PathBuf};

/// What to change in the kubeconfig's view when the node reaches the API server another way
/// (e.g. through an emulator's forward).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// The server URL the node uses instead of the kubeconfig's.
    pub server: Option<String>,
    /// The certificate name to verify instead of the server URL's host.
    pub tls_server_name: Option<String>,
}

/// The configuration for node `name` from the kubeconfig at `path`.
pub fn from_kubeconfig(path: &Path, name: &str, reach: &Reach) -> Result<NodeBootConfig, Error> {
    let k = Kubeconfig::load(path).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let bad = |why: String| Error::Usage(format!("{}: {why}", path.display()));
    if k.insecure {
        return Err(bad("insecure-skip-tls-verify is set: a node verifies its API server".into()));
    }
    let ca = k.ca_pem.ok_or_else(|| bad("no certificate-authority or certificate-authority-data".into()))?;
    let ca = String::from_utf8(ca).map_err(|_| bad("the CA is not PEM text".into()))?;
    let token = k
        .token
        .ok_or_else(|| bad("the user has no token (a node authenticates with a bearer token)".into()))?;
    let c = NodeBootConfig {
        node_name: name.to_string(),
        server: reach.server.clone().unwrap_or(k.server),
        tls_server_name: reach.tls_server_name.clone().or(k.tls_server_name),
        certificate_authority: ca,
        token,
        node_ip: None,
        kubelet_port: None,
        kubelet_certificate: None,
        kubelet_key: None,
        registries: Default::default(),
    };
    c.check().map_err(|e| bad(e.to_string()))?;
    Ok(c)
}

/// Writes `config`'s module to `target/nodes/NAME.cfg` and returns the path.
pub fn write_module(config: &NodeBootConfig) -> Result<PathBuf, Error> {
    let bytes = config.to_module().map_err(|e| Error::Usage(format!("node configuration: {e}")))?;
    let dir = target_dir().join("nodes");
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(format!("{}.cfg", config.node_name));
    fs::write(&path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// An image a node carries: the references it answers to and where its layout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeImage {
    /// The references, as given (normalised by [`image_bundle`]).
    pub names: Vec<String>,
    /// The OCI image layout (or root-filesystem directory).
    pub dir: PathBuf,
}

impl NodeImage {
    /// What `--image` names: `busybox`, the demo image (built on first use, answering to
    /// `busybox`, i.e. `docker.io/library/busybox:latest`); `REF=DIR`, the image at DIR
    /// answering to REF; or `DIR`, answering to the directory's name.
    pub fn from_arg(arg: &str) -> Result<NodeImage, Error> {
        if arg == "busybox" && !Path::new(arg).exists() {
            return Ok(NodeImage { names: vec!["busybox".into()], dir: crate::pod::ensure_busybox_image()? });
        }
        let (name, dir) = match arg.split_once('=') {
            Some((r, d)) => (r.to_string(), PathBuf::from(d)),
            None => {
                let dir = PathBuf::from(arg);
                let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                (name, dir)
            }
        };
        kubelet_lite::image::normalize(&name)
            .map_err(|e| Error::Usage(format!("--image {arg}: `{name}` is not an image reference: {e}")))?;
        Ok(NodeImage { names: vec![name], dir })
    }

    /// Reads the image and packs its bundle with `guest_elf` (see [`image_bundle`]).
    pub fn bundle(&self, guest_elf: &[u8]) -> Result<Vec<u8>, Error> {
        let image =
            Image::open(&self.dir).map_err(|e| Error::Usage(format!("image {}: {e}", self.dir.display())))?;
        image_bundle(guest_elf, &image, &self.names)
    }
}

/// The image description of `image` answering to `names` (normalised as Docker does:
/// `busybox` is `docker.io/library/busybox:latest`), from its OCI config.
pub fn image_config(image: &Image, names: &[String]) -> Result<ImageConfig, Error> {
    if names.is_empty() {
        return Err(Error::Usage("an image bundle needs at least one name".into()));
    }
    let names = names
        .iter()
        .map(|n| {
            kubelet_lite::image::normalize(n)
                .map_err(|e| Error::Usage(format!("`{n}` is not an image reference: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let c = &image.config;
    Ok(ImageConfig {
        names,
        id: image.id.clone(),
        entrypoint: c.entrypoint.clone().unwrap_or_default(),
        cmd: c.cmd.clone().unwrap_or_default(),
        env: c.env.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
    })
}

/// A node's image bundle: crx-guest (`guest_elf`), the image description (see
/// [`image_config`]) and the image's layers, each layer on a page boundary, padded to a
/// whole page.
pub fn image_bundle(guest_elf: &[u8], image: &Image, names: &[String]) -> Result<Vec<u8>, Error> {
    let config = image_config(image, names)?;
    let json = serde_json::to_vec(&config).map_err(|e| Error::Usage(format!("image description: {e}")))?;
    // What the node will read back must pass its own checks.
    ImageConfig::from_json(&json).map_err(|e| Error::Usage(format!("image description: {e}")))?;
    let layers: Vec<(&[u8], crx_abi::LayerKind)> =
        image.layers.iter().map(|l| (l.bytes.as_slice(), l.compression.kind())).collect();
    let mut b = crx_abi::pod::bundle::pack_image(guest_elf, &json, &layers);
    b.resize(b.len().next_multiple_of(crx_abi::pod::bundle::PAGE), 0);
    Ok(b)
}

/// The file name an image bundle goes by in a pack or on the ISO: the last component of its
/// first name's repository, with its tag unless that is `latest` (`busybox.img`,
/// `tool-v2.img`); `image.img` when the bundle cannot be read.
pub fn image_module_name(bundle: &[u8]) -> String {
    let stem = crx_abi::pod::bundle::PodBundle::parse(bundle)
        .ok()
        .and_then(|b| ImageConfig::from_json(b.spec()).ok())
        .and_then(|c| kubelet_lite::image::Reference::parse(c.names.first()?).ok())
        .map(|r| {
            let base = r.repository.rsplit('/').next().unwrap_or_default().to_string();
            match r.tag.as_deref() {
                Some(t) if t != kubelet_lite::image::DEFAULT_TAG => format!("{base}-{t}"),
                _ => base,
            }
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "image".into());
    format!("{stem}.img")
}

/// Names for several bundles: [`image_module_name`] each, a second of a name made unique
/// with `-2` (and so on).
pub fn image_module_names(images: &[Vec<u8>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for b in images {
        let name = image_module_name(b);
        let stem = name.trim_end_matches(".img").to_string();
        let mut candidate = name;
        let mut n = 2;
        while out.contains(&candidate) {
            candidate = format!("{stem}-{n}.img");
            n += 1;
        }
        out.push(candidate);
    }
    out
}

/// The module pack of a node: `node.cfg` (the configuration's module, checked) first, then
/// each image bundle as `NAME.img` ([`image_module_names`]).
pub fn boot_pack(cfg: &NodeBootConfig, images: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let module = cfg.to_module().map_err(|e| Error::Usage(format!("node configuration: {e}")))?;
    let names = image_module_names(images);
    let mut modules: Vec<(&[u8], &str)> = vec![(&module, "node.cfg")];
    modules.extend(images.iter().zip(&names).map(|(b, n)| (b.as_slice(), n.as_str())));
    Ok(crx_abi::pack::pack(&modules))
}

/// Writes [`boot_pack`] to `target/nodes/NAME.pack` (QEMU's `-initrd`) and returns the path.
pub fn write_boot_pack(cfg: &NodeBootConfig, images: &[Vec<u8>]) -> Result<PathBuf, Error> {
    let bytes = boot_pack(cfg, images)?;
    let dir = target_dir().join("nodes");
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(format!("{}.pack", cfg.node_name));
    fs::write(&path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// Writes each image bundle to `target/nodes/images/NAME.img` and returns `(NAME.img, path)`
/// pairs, for the ISO's `/boot/images/`.
pub fn write_image_modules(images: &[Vec<u8>]) -> Result<Vec<(String, PathBuf)>, Error> {
    let dir = target_dir().join("nodes").join("images");
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut out = Vec::new();
    for (b, name) in images.iter().zip(image_module_names(images)) {
        let path = dir.join(&name);
        fs::write(&path, b).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        out.push((name, path));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBAQ==\n-----END CERTIFICATE-----\n";

    fn kubeconfig(dir: &Path, user: &str) -> PathBuf {
        use base64::Engine as _;
        use std::io::Write as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(CA);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    \
             server: https://127.0.0.1:6443\n  name: dev\nusers:\n- name: n1\n  user:\n{user}"
        );
        let path = dir.join("k.kubeconfig");
        fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes())).unwrap();
        path
    }

    #[test]
    fn a_kubeconfig_becomes_a_module_and_bad_ones_say_why() {
        let dir = std::env::temp_dir().join(format!("node-cfg-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let k = kubeconfig(&dir, "    token: n1.secret\n");
        let c = from_kubeconfig(&k, "n1", &Reach::default()).unwrap();
        assert_eq!(
            (c.server.as_str(), c.token.as_str(), c.tls_server_name.as_deref()),
            ("https://127.0.0.1:6443", "n1.secret", None)
        );
        assert_eq!(c.certificate_authority, CA);
        let reach = Reach {
            server: Some("https://10.0.2.100:6443".into()),
            tls_server_name: Some("127.0.0.1".into()),
        };
        let c = from_kubeconfig(&k, "n1", &reach).unwrap();
        assert_eq!(c.verify_name().unwrap(), "127.0.0.1");
        let m = fs::read(write_module(&c).unwrap()).unwrap();
        assert_eq!(NodeBootConfig::from_module(&m).unwrap(), c);
        let e = from_kubeconfig(&k, "N1", &Reach::default()).unwrap_err().to_string();
        assert!(e.contains("nodeName must be a lowercase RFC 1123 subdomain"), "{e}");
        let no_token = kubeconfig(&dir, "    username: x\n");
        let e = from_kubeconfig(&no_token, "n1", &Reach::default()).unwrap_err().to_string();
        assert!(e.contains("the user has no token"), "{e}");
        let e = from_kubeconfig(&dir.join("missing"), "n1", &Reach::default()).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn image() -> Image {
        use crate::oci::{Compression, Layer, RunConfig};
        Image {
            layers: vec![
                Layer { bytes: vec![1; 100], compression: Compression::Gzip },
                Layer { bytes: vec![2; 5000], compression: Compression::None },
            ],
            config: RunConfig {
                entrypoint: Some(vec!["/bin/sh".into()]),
                cmd: Some(vec!["-c".into(), "echo hi".into()]),
                env: Some(vec!["PATH=/bin".into()]),
                working_dir: None,
            },
            id: format!("sha256:{}", "ab".repeat(32)),
        }
    }

    /// `bytes` copied to a page-aligned buffer (a module's place in memory).
    fn aligned(bytes: &[u8]) -> (Vec<u8>, usize) {
        let mut buf = vec![0u8; bytes.len() + 4096];
        let skip = (4096 - buf.as_ptr() as usize % 4096) % 4096;
        buf[skip..skip + bytes.len()].copy_from_slice(bytes);
        (buf, skip)
    }

    #[test]
    fn an_image_bundle_describes_its_image_with_normalised_names() {
        let b = image_bundle(b"\x7fELF-guest", &image(), &["busybox".into(), "busybox:1.36".into()]).unwrap();
        assert_eq!(b.len() % 4096, 0);
        assert!(crx_abi::pod::bundle::is_image_bundle(&b));
        let p = crx_abi::pod::bundle::PodBundle::parse(&b).unwrap();
        assert!(p.is_image());
        assert_eq!(p.guest(), b"\x7fELF-guest");
        let c = ImageConfig::from_json(p.spec()).unwrap();
        assert_eq!(c.names, ["docker.io/library/busybox:latest", "docker.io/library/busybox:1.36"]);
        assert_eq!(c.id, image().id);
        assert_eq!(
            (c.entrypoint.as_slice(), c.cmd.as_slice()),
            (&["/bin/sh".to_string()][..], &["-c".to_string(), "echo hi".to_string()][..])
        );
        assert_eq!((c.env.as_slice(), c.working_dir.as_str()), (&["PATH=/bin".to_string()][..], ""));
        assert_eq!(p.layer_count(), 2);
        assert_eq!(p.layer(0).unwrap().kind, crx_abi::LayerKind::TarGzip);
        assert_eq!(p.layer(1).unwrap().bytes, &[2u8; 5000][..]);
        assert_eq!(image_module_name(&b), "busybox.img");
        let tagged = image_bundle(b"g", &image(), &["someone/tool:v2".into()]).unwrap();
        assert_eq!(image_module_name(&tagged), "tool-v2.img");
        assert_eq!(image_module_name(b"junk"), "image.img");
        assert_eq!(
            image_module_names(&[b.clone(), tagged, b.clone(), b.clone()]),
            ["busybox.img", "tool-v2.img", "busybox-2.img", "busybox-3.img"]
        );
        // A bundle needs a name, and names must be references.
        assert!(image_bundle(b"g", &image(), &[]).is_err());
        let e = image_bundle(b"g", &image(), &["Not A Name".into()]).unwrap_err().to_string();
        assert!(e.contains("not an image reference"), "{e}");
    }

    #[test]
    fn a_boot_pack_holds_the_configuration_then_the_images() {
        let cfg = NodeBootConfig {
            node_name: "pack-test".into(),
            server: "https://10.0.2.100:6443".into(),
            tls_server_name: Some("127.0.0.1".into()),
            certificate_authority: CA.into(),
            token: "pack-test.secret".into(),
            node_ip: Some("127.0.0.1".into()),
            kubelet_port: Some(40100),
            kubelet_certificate: None,
            kubelet_key: None,
            registries: Default::default(),
        };
        let img = image_bundle(b"\x7fELF", &image(), &["busybox".into()]).unwrap();
        let path = write_boot_pack(&cfg, std::slice::from_ref(&img)).unwrap();
        assert!(path.ends_with("nodes/pack-test.pack"), "{}", path.display());
        let bytes = fs::read(&path).unwrap();
        let (buf, skip) = aligned(&bytes);
        let modules: Vec<_> = crx_abi::pack::modules(&buf[skip..skip + bytes.len()]).unwrap().collect();
        assert_eq!(modules.len(), 2);
        assert_eq!(modules[0].1, b"node.cfg");
        assert_eq!(NodeBootConfig::from_module(modules[0].0).unwrap(), cfg);
        assert_eq!((modules[1].0, modules[1].1), (img.as_slice(), &b"busybox.img"[..]));
        // A bad configuration makes no pack.
        let bad = NodeBootConfig { kubelet_port: Some(0), ..cfg };
        assert!(boot_pack(&bad, &[]).unwrap_err().to_string().contains("kubeletPort"));
        let written = write_image_modules(&[img]).unwrap();
        assert_eq!(written[0].0, "busybox.img");
        assert!(written[0].1.ends_with("nodes/images/busybox.img"));
    }

    #[test]
    fn image_arguments() {
        let dir = std::env::temp_dir().join(format!("node-img-arg-{}", std::process::id()));
        let i = NodeImage::from_arg(&format!("registry.example.com/x:1={}", dir.display())).unwrap();
        assert_eq!((i.names.as_slice(), &i.dir), (&["registry.example.com/x:1".to_string()][..], &dir));
        let i = NodeImage::from_arg("/some/where/tool").unwrap();
        assert_eq!(i.names, ["tool"]);
        assert!(NodeImage::from_arg("Bad Name=/x").is_err());
        let e = NodeImage::from_arg(&format!("x={}", dir.display())).unwrap().bundle(b"g").unwrap_err();
        assert!(e.to_string().contains("image "), "{e}");
    }
}
