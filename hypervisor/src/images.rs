//! The node's image store: the images its pods can run, keyed by normalised reference
//! (`docker.io/library/busybox:latest`) and, for a pulled image, by repository digest.
//! Images come from the image bundles among the boot modules (`crx_abi::pod::bundle`,
//! `IMAGE_MAGIC`: crx-guest, the image's description and its layers), so an air-gapped node
//! runs what its boot image carries, and from pulls ([`Store::add_pulled`]): the pulled
//! image's layers, inflated once at pull time, are packed into a bundle of the same layout
//! in frames of their own, held once per node and mapped read-only into every pod VM that
//! uses them.
//!
//! Bundles are allegations: a malformed one is left out with its reason, never a panic.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use crx_abi::pod::bundle::PodBundle;
use crx_abi::pod::ImageConfig;
use kubelet_lite::image::Reference;

/// One image the node holds.
#[derive(Debug, Clone)]
pub struct Image {
    /// What it answers to, normalised.
    pub names: Vec<String>,
    /// Its description (entrypoint, cmd, env, working directory).
    pub config: ImageConfig,
    /// Its bundle: crx-guest and the layers, in the module's frames (or the frames a pull
    /// filled).
    pub bundle: PodBundle<'static>,
    /// For a pulled image, its repository digest (`REPOSITORY@sha256:MANIFEST`).
    pub repo_digest: Option<String>,
}

impl Image {
    /// Bytes its layers take.
    pub fn size_bytes(&self) -> u64 {
        self.bundle.layers().map(|l| l.bytes.len() as u64).sum()
    }

    /// What the node reports about it: its names, its id (the repository digest of a pulled
    /// image; the config's digest, as a runtime reports an image it did not pull) and its
    /// size.
    pub fn info(&self) -> kubelet_lite::runtime::ImageInfo {
        let id = match &self.repo_digest {
            Some(d) => d.clone(),
            None if self.config.id.is_empty() => self.names.first().cloned().unwrap_or_default(),
            None => self.config.id.clone(),
        };
        kubelet_lite::runtime::ImageInfo { names: self.names.clone(), id, size_bytes: self.size_bytes() }
    }
}

/// Why a pod's image cannot be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The reference does not parse.
    BadReference(String),
    /// No image of the store answers to it.
    NotFound {
        /// The normalised reference.
        reference: String,
        /// The names the store holds.
        have: Vec<String>,
    },
}

impl core::fmt::Display for LookupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LookupError::BadReference(e) => write!(f, "invalid image reference: {e}"),
            LookupError::NotFound { reference, have } if have.is_empty() => {
                write!(f, "image {reference:?} is not in this node's image store, which is empty")
            }
            LookupError::NotFound { reference, have } => write!(
                f,
                "image {reference:?} is not in this node's image store (it holds {})",
                have.join(", ")
            ),
        }
    }
}

/// The store.
#[derive(Debug, Default)]
pub struct Store {
    images: Vec<Image>,
    /// The crx-guest pulled images run with: the first image bundle's.
    guest: Option<&'static [u8]>,
}

impl Store {
    /// A store of the image bundles in `modules`; each one left out is returned with its
    /// reason.
    pub fn from_modules(modules: &[&'static [u8]]) -> (Store, Vec<String>) {
        let mut store = Store::default();
        let mut refused = Vec::new();
        for (i, m) in modules.iter().enumerate() {
            match Self::parse(m) {
                Ok(image) => {
                    store.guest.get_or_insert(image.bundle.guest());
                    store.images.push(image)
                }
                Err(e) => refused.push(format!("image bundle {i}: {e}")),
            }
        }
        (store, refused)
    }

    fn parse(m: &'static [u8]) -> Result<Image, String> {
        let bundle = PodBundle::parse(m).map_err(|e| format!("{e}"))?;
        if !bundle.is_image() {
            return Err(String::from("a pod bundle, not an image bundle"));
        }
        let config = ImageConfig::from_json(bundle.spec()).map_err(|e| format!("{e}"))?;
        let mut names = Vec::new();
        for n in &config.names {
            let r = Reference::parse(n).map_err(|e| format!("name {n:?}: {e}"))?;
            names.push(format!("{r}"));
        }
        Ok(Image { names, config, bundle, repo_digest: None })
    }

    /// Adds a pulled image: its layers' tars, crx-guest and its description packed into one
    /// bundle that `hold` copies into frames of its own. Names the image answers to leave
    /// any older image that had them (a tag that moved). A manifest of a repository the
    /// store already holds (another tag of it, or the same one pulled again) is not held
    /// twice: its names join the image that has its frames, and `hold` is not called.
    /// Returns what the node reports.
    pub fn add_pulled(
        &mut self,
        image: &kubelet_lite::registry::Image,
        hold: impl FnOnce(&[u8]) -> Option<&'static [u8]>,
    ) -> Result<kubelet_lite::runtime::ImageInfo, String> {
        let repo_digest = image.repo_digest();
        let mut names = Vec::new();
        for n in image.config.names.iter().chain(core::iter::once(&repo_digest)) {
            if let Ok(r) = Reference::parse(n) {
                let n = format!("{r}");
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let held = self.images.iter().position(|i| i.repo_digest.as_deref() == Some(repo_digest.as_str()));
        for (i, old) in self.images.iter_mut().enumerate() {
            if Some(i) != held {
                old.names.retain(|n| !names.contains(n));
            }
        }
        if let Some(same) = held.and_then(|i| self.images.get_mut(i)) {
            for n in names {
                if !same.names.contains(&n) {
                    same.names.push(n);
                }
            }
            return Ok(same.info());
        }
        let guest = self.guest.ok_or_else(|| {
            String::from("this node has no crx-guest to run pulled images with (its boot image carries no image bundle)")
        })?;
        let mut layers = Vec::new();
        for l in &image.layers {
            let tar = l.tar().ok_or_else(|| format!("layer {} was not unpacked", l.digest))?;
            layers.push((tar, crx_abi::LayerKind::Tar));
        }
        let config = serde_json::to_vec(&image.config).map_err(|e| format!("image description: {e}"))?;
        let packed = crx_abi::pod::bundle::pack_image(guest, &config, &layers);
        let bytes = hold(&packed).ok_or_else(|| {
            format!("no {} KiB of contiguous memory left for the image", packed.len().div_ceil(1024))
        })?;
        drop(packed);
        let bundle = PodBundle::parse(bytes).map_err(|e| format!("{e}"))?;
        let added = Image { names, config: image.config.clone(), bundle, repo_digest: Some(repo_digest) };
        let info = added.info();
        self.images.push(added);
        Ok(info)
    }

    /// The image `reference` names (normalised first: `busybox` finds
    /// `docker.io/library/busybox:latest`).
    pub fn lookup(&self, reference: &str) -> Result<&Image, LookupError> {
        let r = Reference::parse(reference).map_err(|e| LookupError::BadReference(format!("{e}")))?;
        let want = format!("{r}");
        self.images.iter().find(|i| i.names.contains(&want)).ok_or_else(|| LookupError::NotFound {
            reference: want,
            have: self.images.iter().flat_map(|i| i.names.iter().cloned()).collect(),
        })
    }

    /// Every image that answers to a name.
    pub fn images(&self) -> impl Iterator<Item = &Image> {
        self.images.iter().filter(|i| !i.names.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use crx_abi::pod::bundle::{pack, pack_image};
    use crx_abi::LayerKind;

    fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }

    fn image(names: &str) -> &'static [u8] {
        let cfg = format!(r#"{{"names":{names},"cmd":["sh"],"env":["PATH=/bin"]}}"#);
        leak(pack_image(b"\x7fELF", cfg.as_bytes(), &[(b"layer", LayerKind::Tar)]))
    }

    #[test]
    fn lookups_normalise_and_a_missing_image_names_what_there_is() {
        let (store, refused) = Store::from_modules(&[
            image(r#"["busybox:latest","docker.io/library/busybox:1.36"]"#),
            image(r#"["127.0.0.1:5000/tools/x:v1"]"#),
        ]);
        assert!(refused.is_empty(), "{refused:?}");
        for r in ["busybox", "busybox:latest", "docker.io/library/busybox", "busybox:1.36"] {
            assert!(store.lookup(r).is_ok(), "{r}");
        }
        assert_eq!(store.lookup("busybox").unwrap().config.cmd, ["sh"]);
        assert_eq!(store.lookup("127.0.0.1:5000/tools/x:v1").unwrap().size_bytes(), 5);
        let e = store.lookup("nginx:1.27").unwrap_err();
        assert_eq!(
            e.to_string(),
            "image \"docker.io/library/nginx:1.27\" is not in this node's image store (it holds \
             docker.io/library/busybox:latest, docker.io/library/busybox:1.36, 127.0.0.1:5000/tools/x:v1)"
        );
        assert!(matches!(store.lookup("Not A Reference"), Err(LookupError::BadReference(_))));
        let (empty, _) = Store::from_modules(&[]);
        assert!(empty.lookup("busybox").unwrap_err().to_string().ends_with("which is empty"));
    }

    fn pulled(tag: &str, manifest: &str, layer: &[u8]) -> kubelet_lite::registry::Image {
        use kubelet_lite::registry::{Image, Layer};
        Image {
            manifest_digest: manifest.into(),
            config: ImageConfig {
                names: alloc::vec![format!("127.0.0.1:5000/tools/x:{tag}")],
                id: "sha256:c0".into(),
                cmd: alloc::vec!["sh".into()],
                ..Default::default()
            },
            layers: alloc::vec![Layer {
                digest: "sha256:l".into(),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                kind: LayerKind::TarGzip,
                bytes: b"gzip bytes".to_vec(),
                unpacked: Some(layer.to_vec()),
            }],
            config_size: 100,
        }
    }

    #[test]
    fn pulled_images_answer_to_their_tag_and_digest_and_a_moved_tag_moves() {
        let (mut store, _) = Store::from_modules(&[image(r#"["busybox"]"#)]);
        let d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let info = store.add_pulled(&pulled("v1", d1, b"tar one"), |b| Some(leak(b.to_vec()))).unwrap();
        assert_eq!(info.id, format!("127.0.0.1:5000/tools/x@{d1}"));
        assert_eq!(info.names, [String::from("127.0.0.1:5000/tools/x:v1"), info.id.clone()]);
        let i = store.lookup("127.0.0.1:5000/tools/x:v1").unwrap();
        let layer = i.bundle.layers().next().unwrap();
        assert_eq!((layer.bytes, layer.kind), (&b"tar one"[..], LayerKind::Tar), "held inflated");
        assert_eq!(i.bundle.guest(), b"\x7fELF", "the boot image's crx-guest");
        assert!(store.lookup(&format!("127.0.0.1:5000/tools/x@{d1}")).is_ok());
        // The tag moves to a new image; the old one keeps its digest.
        let d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        store.add_pulled(&pulled("v1", d2, b"tar two"), |b| Some(leak(b.to_vec()))).unwrap();
        let now = store.lookup("127.0.0.1:5000/tools/x:v1").unwrap();
        assert_eq!(now.repo_digest.as_deref(), Some(&*format!("127.0.0.1:5000/tools/x@{d2}")));
        assert!(store.lookup(&format!("127.0.0.1:5000/tools/x@{d1}")).is_ok());
        assert_eq!(store.images().count(), 3);
        // No memory, or no crx-guest on the node (for a manifest it does not hold yet).
        let d3 = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
        let e = store.add_pulled(&pulled("v2", d3, b"x"), |_| None).unwrap_err();
        assert!(e.contains("no ") && e.contains("memory"), "{e}");
        let e = Store::default().add_pulled(&pulled("v2", d3, b"x"), |b| Some(leak(b.to_vec()))).unwrap_err();
        assert!(e.contains("no crx-guest"), "{e}");
    }

    #[test]
    fn another_tag_of_a_held_manifest_takes_no_frames() {
        let (mut store, _) = Store::from_modules(&[image(r#"["busybox"]"#)]);
        let d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        store.add_pulled(&pulled("v1", d1, b"tar one"), |b| Some(leak(b.to_vec()))).unwrap();
        let bundle = store.lookup("127.0.0.1:5000/tools/x:v1").unwrap().bundle.bytes().as_ptr();
        for tag in ["v1-again", "v1"] {
            let info = store.add_pulled(&pulled(tag, d1, b"tar one"), |_| panic!("held twice")).unwrap();
            assert_eq!(info.id, format!("127.0.0.1:5000/tools/x@{d1}"));
        }
        assert_eq!(store.images().count(), 2, "the boot image and one pulled image");
        for r in ["127.0.0.1:5000/tools/x:v1", "127.0.0.1:5000/tools/x:v1-again"] {
            assert_eq!(store.lookup(r).unwrap().bundle.bytes().as_ptr(), bundle, "{r}");
        }
        let names = &store.lookup("127.0.0.1:5000/tools/x:v1").unwrap().names;
        assert_eq!(names.len(), 3, "{names:?}");
        // A tag that moves to a new manifest leaves the held image, which keeps the others.
        let d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        store.add_pulled(&pulled("v1-again", d2, b"tar two"), |b| Some(leak(b.to_vec()))).unwrap();
        assert_eq!(store.lookup("127.0.0.1:5000/tools/x:v1").unwrap().bundle.bytes().as_ptr(), bundle);
        assert_ne!(store.lookup("127.0.0.1:5000/tools/x:v1-again").unwrap().bundle.bytes().as_ptr(), bundle);
    }

    #[test]
    fn malformed_bundles_are_left_out_with_a_reason() {
        let good = image(r#"["busybox"]"#);
        let pod = leak(pack(b"\x7fELF", br#"{"name":"p","containers":[]}"#, &[]));
        let bad_json = leak(pack_image(b"\x7fELF", b"{not json", &[]));
        let no_names = leak(pack_image(b"\x7fELF", br#"{"names":[]}"#, &[]));
        let bad_name = leak(pack_image(b"\x7fELF", br#"{"names":["UPPER"]}"#, &[]));
        let unknown = leak(pack_image(b"\x7fELF", br#"{"names":["a"],"surprise":1}"#, &[]));
        let cut = leak(good[..20].to_vec());
        let (store, refused) = Store::from_modules(&[good, pod, bad_json, no_names, bad_name, unknown, cut]);
        assert_eq!(store.images().count(), 1);
        assert_eq!(refused.len(), 6, "{refused:?}");
        assert!(refused[0].contains("not an image bundle"), "{}", refused[0]);
        assert!(refused[3].contains("UPPER"), "{}", refused[3]);
    }
}
