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

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use crx_abi::pod::bundle::PodBundle;
use crx_abi::pod::ImageConfig;
use crx_abi::LayerKind;
use kubelet_lite::image::Reference;

/// A page size, for the layer checks.
const PAGE: u64 = 4096;

/// Contiguous frames that hold one pulled layer; given back (`release`) when the last
/// image and VM holding them let go.
#[derive(Debug)]
pub struct Held {
    /// The first frame's host physical address.
    pub phys: u64,
    /// How many frames.
    pub frames: usize,
    /// Bytes of the layer (the rest of the last frame is zero).
    pub len: u64,
    release: fn(u64, usize),
}

impl Held {
    /// Frames `phys..phys + frames * 4096` holding `len` bytes of a layer, given back with
    /// `release(phys, frames)`.
    pub fn new(phys: u64, frames: usize, len: u64, release: fn(u64, usize)) -> Held {
        Held { phys, frames, len, release }
    }
}

/// The pulled layers the node holds, by blob digest, with the diff_id each was checked
/// against: shared between the store and the pulls under way (which fill it), each entry
/// weak, so a layer lives as long as an image or a pod VM has it.
#[derive(Clone, Default)]
pub struct LayerCache(Arc<spin::Mutex<LayerMap>>);

/// Blob digest → the layer held for it and the diff_id it was checked against.
type LayerMap = BTreeMap<String, (Weak<Held>, String)>;

impl LayerCache {
    /// The layer held for blob `digest`, if it is still held and was checked against
    /// `diff_id`.
    pub fn get(&self, digest: &str, diff_id: &str) -> Option<Arc<Held>> {
        let map = self.0.lock();
        map.get(digest).filter(|(_, d)| d == diff_id).and_then(|(w, _)| w.upgrade())
    }

    /// Notes a layer just stored.
    pub fn insert(&self, digest: &str, diff_id: &str, held: &Arc<Held>) {
        self.0.lock().insert(digest.into(), (Arc::downgrade(held), diff_id.into()));
    }

    /// Forgets layers nothing holds any more.
    fn prune(&self) {
        self.0.lock().retain(|_, (w, _)| w.strong_count() > 0);
    }

    /// Bytes of frames the held layers take.
    fn bytes(&self) -> u64 {
        self.0.lock().values().filter_map(|(w, _)| w.upgrade()).map(|h| h.frames as u64 * PAGE).sum()
    }

    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.release)(self.phys, self.frames);
    }
}

/// One layer of an image, where the host holds it.
#[derive(Debug, Clone)]
pub struct ImageLayer {
    /// The host physical address of its first byte (page-aligned).
    pub hpa: u64,
    /// Its length in bytes; the whole last page is the image's.
    pub len: u64,
    /// How its bytes are stored.
    pub kind: LayerKind,
    /// The frames of a pulled layer (none for a boot module's, which stay for good).
    hold: Option<Arc<Held>>,
}

/// One image the node holds. Pod VMs keep an `Arc` of the image they run for as long as
/// their memory maps its layers, so its frames outlive an eviction until the last such VM
/// is gone.
#[derive(Debug)]
pub struct Image {
    /// Its description (entrypoint, cmd, env, working directory).
    pub config: ImageConfig,
    /// The crx-guest its pods run.
    pub guest: &'static [u8],
    /// Its layers, lowest first.
    pub layers: Vec<ImageLayer>,
    /// For a pulled image, its repository digest (`REPOSITORY@sha256:MANIFEST`).
    pub repo_digest: Option<String>,
}

impl Image {
    /// Bytes its layers take.
    pub fn size_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.len).sum()
    }

    /// Frames its pulled layers hold (0 for a boot module's image). A layer another image
    /// shares counts for each.
    pub fn held_frames(&self) -> usize {
        self.layers.iter().filter_map(|l| l.hold.as_ref()).map(|h| h.frames).sum()
    }

    /// Whether it came from a pull (and may be evicted).
    pub fn pulled(&self) -> bool {
        self.repo_digest.is_some()
    }

    /// What the node reports about it, answering to `names`: its id (the repository digest
    /// of a pulled image; the config's digest, as a runtime reports an image it did not
    /// pull) and its size.
    pub fn info(&self, names: &[String]) -> kubelet_lite::runtime::ImageInfo {
        let id = match &self.repo_digest {
            Some(d) => d.clone(),
            None if self.config.id.is_empty() => names.first().cloned().unwrap_or_default(),
            None => self.config.id.clone(),
        };
        kubelet_lite::runtime::ImageInfo { names: names.to_vec(), id, size_bytes: self.size_bytes() }
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

/// When unused pulled images are evicted: once more than `high_percent` of the node's
/// memory is in use, least recently used first, until at most `low_percent` is (the
/// kubelet's image GC thresholds, 85 and 80, applied to memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    pub high_percent: u64,
    pub low_percent: u64,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy { high_percent: 85, low_percent: 80 }
    }
}

struct Entry {
    /// What it answers to, normalised.
    names: Vec<String>,
    image: Arc<Image>,
    /// When a pod last used it (or it was pulled), in the caller's clock.
    last_used: u64,
}

/// The store.
#[derive(Default)]
pub struct Store {
    images: Vec<Entry>,
    /// The crx-guest pulled images run with: the first image bundle's.
    guest: Option<&'static [u8]>,
    /// Pulled layers, held once however many images have them.
    layers: LayerCache,
}

impl core::fmt::Debug for Store {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Store")
            .field("images", &self.images.len())
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl Store {
    /// A store of the image bundles in `modules`; each one left out is returned with its
    /// reason.
    pub fn from_modules(modules: &[&'static [u8]]) -> (Store, Vec<String>) {
        let mut store = Store::default();
        let mut refused = Vec::new();
        for (i, m) in modules.iter().enumerate() {
            match Self::parse(m) {
                Ok((names, image)) => {
                    store.guest.get_or_insert(image.guest);
                    store.images.push(Entry { names, image: Arc::new(image), last_used: 0 })
                }
                Err(e) => refused.push(format!("image bundle {i}: {e}")),
            }
        }
        (store, refused)
    }

    fn parse(m: &'static [u8]) -> Result<(Vec<String>, Image), String> {
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
        // The module is mapped where it lies (the direct map: its address is its host
        // physical address), so each layer must start on a page and its last page must be
        // the module's.
        let base = m.as_ptr() as u64;
        let mut layers = Vec::new();
        for (i, l) in bundle.layers().enumerate() {
            let hpa =
                base.checked_add(l.offset as u64).ok_or_else(|| format!("layer {i} past the module"))?;
            if !hpa.is_multiple_of(PAGE) {
                return Err(format!("layer {i} is not page-aligned in host memory (the boot module is not)"));
            }
            let end = (l.offset as u64)
                .checked_add(l.bytes.len() as u64)
                .and_then(|e| e.checked_next_multiple_of(PAGE));
            if end.is_none_or(|e| e > m.len() as u64) {
                return Err(format!(
                    "layer {i}'s last page runs past the boot module (pad the bundle to 4 KiB)"
                ));
            }
            layers.push(ImageLayer { hpa, len: l.bytes.len() as u64, kind: l.kind, hold: None });
        }
        Ok((names, Image { config, guest: bundle.guest(), layers, repo_digest: None }))
    }

    /// The layer cache pulls fill.
    pub fn layer_cache(&self) -> LayerCache {
        self.layers.clone()
    }

    /// Adds a pulled image: crx-guest, its description, and its layers (`stored`, in order,
    /// as the pull put them in the layer cache). Names the image answers to leave any older
    /// image that had them (a tag that moved). `now` marks it used. Returns what the node
    /// reports.
    pub fn add_pulled(
        &mut self,
        image: &kubelet_lite::registry::Image,
        stored: Vec<Arc<Held>>,
        now: u64,
    ) -> Result<kubelet_lite::runtime::ImageInfo, String> {
        let guest = self.guest.ok_or_else(|| {
            String::from("this node has no crx-guest to run pulled images with (its boot image carries no image bundle)")
        })?;
        if stored.len() != image.layers.len() {
            return Err(format!("{} layers pulled for an image of {}", stored.len(), image.layers.len()));
        }
        let layers = stored
            .into_iter()
            .map(|h| ImageLayer { hpa: h.phys, len: h.len, kind: LayerKind::Tar, hold: Some(h) })
            .collect();
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
        // The same image pulled by another name: one entry, answering to every name.
        if let Some(e) = self.images.iter_mut().find(|e| e.image.repo_digest.as_ref() == Some(&repo_digest)) {
            let new: Vec<String> = names.iter().filter(|n| !e.names.contains(n)).cloned().collect();
            e.names.extend(new.iter().cloned());
            e.last_used = now;
            let (names, info) = (e.names.clone(), e.image.info(&e.names));
            for other in &mut self.images {
                if other.image.repo_digest.as_ref() != Some(&repo_digest) {
                    other.names.retain(|n| !names.contains(n));
                }
            }
            self.images.retain(|e| !e.names.is_empty());
            return Ok(info);
        }
        for old in &mut self.images {
            old.names.retain(|n| !names.contains(n));
        }
        // An image left with no name can no longer be asked for (pod VMs that run it keep
        // its layers until they end).
        self.images.retain(|e| !e.names.is_empty());
        let added = Image { config: image.config.clone(), guest, layers, repo_digest: Some(repo_digest) };
        let info = added.info(&names);
        self.images.push(Entry { names, image: Arc::new(added), last_used: now });
        self.prune_layers();
        Ok(info)
    }

    fn prune_layers(&mut self) {
        self.layers.prune();
    }

    /// The image `reference` names (normalised first: `busybox` finds
    /// `docker.io/library/busybox:latest`).
    pub fn lookup(&self, reference: &str) -> Result<Arc<Image>, LookupError> {
        let r = Reference::parse(reference).map_err(|e| LookupError::BadReference(format!("{e}")))?;
        let want = format!("{r}");
        self.images.iter().find(|e| e.names.contains(&want)).map(|e| e.image.clone()).ok_or_else(|| {
            LookupError::NotFound {
                reference: want,
                have: self.images.iter().flat_map(|e| e.names.iter().cloned()).collect(),
            }
        })
    }

    /// What the node reports about the image `reference` names, if it holds it.
    pub fn info_of(&self, reference: &str) -> Option<kubelet_lite::runtime::ImageInfo> {
        let want = format!("{}", Reference::parse(reference).ok()?);
        self.images.iter().find(|e| e.names.contains(&want)).map(|e| e.image.info(&e.names))
    }

    /// Marks the image `reference` names as used at `now`.
    pub fn touch(&mut self, reference: &str, now: u64) {
        let Ok(r) = Reference::parse(reference) else { return };
        let want = format!("{r}");
        if let Some(e) = self.images.iter_mut().find(|e| e.names.contains(&want)) {
            e.last_used = now;
        }
    }

    /// Every image with the names it answers to.
    pub fn images(&self) -> impl Iterator<Item = (&[String], &Image)> {
        self.images.iter().map(|e| (e.names.as_slice(), &*e.image))
    }

    /// What the node reports about each image.
    pub fn infos(&self) -> Vec<kubelet_lite::runtime::ImageInfo> {
        self.images.iter().map(|e| e.image.info(&e.names)).collect()
    }

    /// Bytes the pulled layers hold (each once).
    pub fn pulled_bytes(&self) -> u64 {
        self.layers.bytes()
    }

    /// Evicts pulled images no pod VM holds, least recently used first, while `pressed()`
    /// says memory is short. An image in use is never evicted. Returns the evicted images'
    /// names.
    pub fn evict_unused(&mut self, mut pressed: impl FnMut() -> bool) -> Vec<String> {
        let mut evicted = Vec::new();
        while pressed() {
            let victim = self
                .images
                .iter()
                .enumerate()
                .filter(|(_, e)| e.image.pulled() && Arc::strong_count(&e.image) == 1)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            let e = self.images.remove(i);
            evicted.push(e.names.first().cloned().unwrap_or_default());
            drop(e);
            self.prune_layers();
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use crx_abi::pod::bundle::{pack, pack_image};
    use crx_abi::LayerKind;

    /// `v` zero-padded to whole pages at a page-aligned address, for good (as a boot loader
    /// places a module).
    fn leak(mut v: Vec<u8>) -> &'static [u8] {
        v.resize(v.len().next_multiple_of(PAGE as usize).max(PAGE as usize), 0);
        let buf: &'static mut [u8] = Box::leak(alloc::vec![0u8; v.len() + PAGE as usize].into_boxed_slice());
        let skew = (buf.as_ptr() as usize) % PAGE as usize;
        let at = if skew == 0 { 0 } else { PAGE as usize - skew };
        let out = &mut buf[at..at + v.len()];
        out.copy_from_slice(&v);
        out
    }

    std::thread_local! {
        /// Frames the fake holder has handed out and taken back on this thread.
        static FRAMES: core::cell::Cell<(usize, usize)> = const { core::cell::Cell::new((0, 0)) };
    }

    /// Holds a layer at a made-up address, counting frames out and back.
    fn fake_hold(b: &[u8]) -> Held {
        let frames = b.len().div_ceil(PAGE as usize).max(1);
        let (out, back) = FRAMES.get();
        FRAMES.set((out + frames, back));
        Held::new(0x1000_0000 + (out as u64) * PAGE, frames, b.len() as u64, |_, n| {
            let (out, back) = FRAMES.get();
            FRAMES.set((out, back + n));
        })
    }

    /// What a pull does with the layer cache: a layer it holds is reused, any other is
    /// held anew and noted; then the image goes into the store.
    fn pull_into_store(
        store: &mut Store,
        image: &kubelet_lite::registry::Image,
        now: u64,
    ) -> Result<kubelet_lite::runtime::ImageInfo, String> {
        let cache = store.layer_cache();
        let stored = image
            .layers
            .iter()
            .map(|l| {
                let diff_id = kubelet_lite::registry::sha256_digest(l.tar().unwrap());
                cache.get(&l.digest, &diff_id).unwrap_or_else(|| {
                    let h = Arc::new(fake_hold(l.tar().unwrap()));
                    cache.insert(&l.digest, &diff_id, &h);
                    h
                })
            })
            .collect();
        store.add_pulled(image, stored, now)
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
        use kubelet_lite::registry::{sha256_digest, Image, Layer};
        Image {
            manifest_digest: manifest.into(),
            config: ImageConfig {
                names: alloc::vec![format!("127.0.0.1:5000/tools/x:{tag}")],
                id: "sha256:c0".into(),
                cmd: alloc::vec!["sh".into()],
                ..Default::default()
            },
            layers: alloc::vec![Layer {
                digest: sha256_digest(layer),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                kind: LayerKind::TarGzip,
                bytes: b"gzip bytes".to_vec(),
                size: 10,
                unpacked: Some(layer.to_vec()),
            }],
            config_size: 100,
        }
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    #[test]
    fn pulled_images_answer_to_their_tag_and_digest_and_a_moved_tag_moves() {
        let (mut store, _) = Store::from_modules(&[image(r#"["busybox"]"#)]);
        let info = pull_into_store(&mut store, &pulled("v1", D1, b"tar one"), 1).unwrap();
        assert_eq!(info.id, format!("127.0.0.1:5000/tools/x@{D1}"));
        assert_eq!(info.names, [String::from("127.0.0.1:5000/tools/x:v1"), info.id.clone()]);
        let i = store.lookup("127.0.0.1:5000/tools/x:v1").unwrap();
        assert_eq!((i.layers[0].len, i.layers[0].kind), (7, LayerKind::Tar), "held inflated");
        assert_eq!(i.guest, b"\x7fELF", "the boot image's crx-guest");
        assert!(store.lookup(&format!("127.0.0.1:5000/tools/x@{D1}")).is_ok());
        // The tag moves to a new image; the old one keeps its digest.
        pull_into_store(&mut store, &pulled("v1", D2, b"tar two"), 2).unwrap();
        let now = store.lookup("127.0.0.1:5000/tools/x:v1").unwrap();
        assert_eq!(now.repo_digest.as_deref(), Some(&*format!("127.0.0.1:5000/tools/x@{D2}")));
        assert!(store.lookup(&format!("127.0.0.1:5000/tools/x@{D1}")).is_ok());
        assert_eq!(store.images().count(), 3);
        // The same image by digest: one entry, answering to its tag and its digest still.
        let by_digest = kubelet_lite::registry::Image {
            config: ImageConfig {
                names: alloc::vec![format!("127.0.0.1:5000/tools/x@{D2}")],
                ..pulled("v1", D2, b"tar two").config
            },
            ..pulled("v1", D2, b"tar two")
        };
        let count = store.images().count();
        let info = pull_into_store(&mut store, &by_digest, 3).unwrap();
        assert_eq!(store.images().count(), count);
        assert_eq!(
            info.names,
            [String::from("127.0.0.1:5000/tools/x:v1"), format!("127.0.0.1:5000/tools/x@{D2}")]
        );
        // Layers that do not match the image, or no crx-guest on the node.
        let e = store.add_pulled(&pulled("v2", D3, b"x"), Vec::new(), 3).unwrap_err();
        assert!(e.contains("0 layers pulled for an image of 1"), "{e}");
        let e = pull_into_store(&mut Store::default(), &pulled("v2", D3, b"x"), 3).unwrap_err();
        assert!(e.contains("no crx-guest"), "{e}");
    }

    #[test]
    fn a_layer_is_held_once_and_evicted_images_give_their_frames_back_unless_in_use() {
        FRAMES.set((0, 0));
        let (mut store, _) = Store::from_modules(&[image(r#"["busybox"]"#)]);
        let big = alloc::vec![7u8; 3 * PAGE as usize];
        pull_into_store(&mut store, &pulled("a", D1, &big), 10).unwrap();
        // Another image with the same layer does not copy it again.
        pull_into_store(&mut store, &pulled("b", D2, &big), 20).unwrap();
        assert_eq!(FRAMES.get(), (3, 0));
        assert_eq!(store.pulled_bytes(), 3 * PAGE);
        pull_into_store(&mut store, &pulled("c", D3, b"small"), 30).unwrap();
        assert_eq!(FRAMES.get(), (4, 0));
        // A pod VM holds "c"; the boot image's busybox is never evicted.
        let in_use = store.lookup("127.0.0.1:5000/tools/x:c").unwrap();
        let evicted = store.evict_unused(|| true);
        assert_eq!(
            evicted,
            ["127.0.0.1:5000/tools/x:a", "127.0.0.1:5000/tools/x:b"],
            "least recently used first"
        );
        assert_eq!(FRAMES.get(), (4, 3), "the shared layer went back once, with the last image using it");
        assert!(store.lookup("busybox").is_ok() && store.lookup("127.0.0.1:5000/tools/x:c").is_ok());
        // Evicting stops once the pressure is gone.
        drop(in_use);
        pull_into_store(&mut store, &pulled("a", D1, &big), 40).unwrap();
        let mut asked = 0;
        let evicted = store.evict_unused(|| {
            asked += 1;
            asked == 1
        });
        assert_eq!(evicted, ["127.0.0.1:5000/tools/x:c"], "c was used least recently");
        assert_eq!(FRAMES.get(), (7, 4));
        // A VM that still maps an evicted image keeps its frames until it lets go.
        let held = store.lookup("127.0.0.1:5000/tools/x:a").unwrap();
        store.touch("127.0.0.1:5000/tools/x:a", 50);
        assert!(store.evict_unused(|| true).is_empty(), "in use");
        drop(held);
        assert_eq!(store.evict_unused(|| true).len(), 1);
        assert_eq!(FRAMES.get(), (7, 7), "every frame is back");
        assert_eq!(store.pulled_bytes(), 0);
    }

    #[test]
    fn another_tag_of_a_held_manifest_takes_no_frames() {
        FRAMES.set((0, 0));
        let (mut store, _) = Store::from_modules(&[image(r#"["busybox"]"#)]);
        pull_into_store(&mut store, &pulled("v1", D1, b"tar one"), 1).unwrap();
        let first = store.lookup("127.0.0.1:5000/tools/x:v1").unwrap();
        for tag in ["v1-again", "v1"] {
            let info = pull_into_store(&mut store, &pulled(tag, D1, b"tar one"), 2).unwrap();
            assert_eq!(info.id, format!("127.0.0.1:5000/tools/x@{D1}"));
        }
        assert_eq!(FRAMES.get(), (1, 0), "held once");
        assert_eq!(store.images().count(), 2, "the boot image and one pulled image");
        for r in ["127.0.0.1:5000/tools/x:v1", "127.0.0.1:5000/tools/x:v1-again"] {
            assert!(Arc::ptr_eq(&store.lookup(r).unwrap(), &first), "{r}");
        }
        // A tag that moves to a new manifest leaves the held image, which keeps the others.
        pull_into_store(&mut store, &pulled("v1-again", D2, b"tar two"), 3).unwrap();
        assert!(Arc::ptr_eq(&store.lookup("127.0.0.1:5000/tools/x:v1").unwrap(), &first));
        assert!(!Arc::ptr_eq(&store.lookup("127.0.0.1:5000/tools/x:v1-again").unwrap(), &first));
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
