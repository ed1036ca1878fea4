//! Setting VMs up from the guest module: what to start (one image for all VMs, a bundle
//! of images with a command line each, or a pod bundle), and each VM's memory, loaded
//! image and pod state. Pure over a [`FrameSource`], so all of it is tested on the host;
//! the manager passes the kernel's frames and the backend's formats.
//!
//! Pod mode: a pod bundle (`crx_abi::pod::bundle`) runs one VM with the bundle's
//! crx-guest image and `vm.mem` MiB (default [`POD_MEM_DEFAULT_MIB`]); its layers are
//! mapped read-only at `crx_abi::layout::LAYERS_BASE..` straight onto the boot module's
//! frames (never copied, never freed: they belong to the module).
//!
//! vCPUs: `vm.vcpus` when the command line gives it; else a plain VM has one and a pod VM
//! (a boot module's or a node's) what its CPU limit gives ([`super::podspec::pod_vcpus`]:
//! `vm.cpu`'s, or the pod's limits on a node), capped by the host CPUs that run vCPUs.
#![forbid(unsafe_code)]

use super::exit::NestedFormat;
use super::loader::{self, LoadSpec, Loaded};
use super::memory::{self, FrameSource, GuestMemory, MemError, PAGE_SIZE};
use super::pod::PodState;
use super::podspec::pod_vcpus;
use crate::cmdline::{Options, POD_MEM_DEFAULT_MIB, VM_MEM_DEFAULT_MIB};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use crx_abi::pod::bundle::{PodBundle, PodBundleError};
use crx_abi::pod::{PodSpec, SpecError};
use crx_abi::{HypercallInsn, LayerInfo};

/// The guests to start.
pub struct Guests<'m> {
    /// How many VMs.
    pub count: u32,
    single: &'m [u8],
    bundle: Option<crx_abi::bundle::Bundle<'m>>,
    /// The pod, in pod mode.
    pub pod: Option<PodParts<'m>>,
    cmdline: heapless::String<255>,
    /// Why a `vm.count` on the command line was not followed.
    pub ignored: Option<String>,
}

/// A checked pod bundle and its spec.
pub struct PodParts<'m> {
    /// The bundle.
    pub bundle: PodBundle<'m>,
    /// Its spec.
    pub spec: PodSpec,
}

/// A layer to map into a pod VM read-only: `len` bytes of host frames from `hpa` on (a
/// page boundary; the whole last page is the layer's holder's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerMap {
    pub hpa: u64,
    pub len: u64,
    pub kind: crx_abi::LayerKind,
}

/// Maps `layers` read-only into `mem`, each in its own page-rounded window of the layer
/// area from `crx_abi::layout::LAYERS_BASE` on, in order; returns the records the guest
/// reads.
pub fn map_layer_list<F: FrameSource>(
    mem: &mut GuestMemory<F>,
    layers: &[LayerMap],
) -> Result<Vec<LayerInfo>, PodSetupError> {
    let mut gpa = crx_abi::layout::LAYERS_BASE;
    let end = crx_abi::layout::LAYERS_BASE + crx_abi::layout::LAYERS_SIZE;
    let mut infos = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        if !l.hpa.is_multiple_of(PAGE_SIZE) {
            return Err(PodSetupError::LayerNotPageAligned(i));
        }
        let window = l.len.checked_next_multiple_of(PAGE_SIZE).ok_or(PodSetupError::LayerPastModule(i))?;
        if gpa.checked_add(window).is_none_or(|e| e > end) {
            return Err(PodSetupError::Map(i, MemError::BadShared { gpa, hpa: l.hpa, len: l.len }));
        }
        mem.map_shared_readonly(gpa, l.hpa, l.len).map_err(|e| PodSetupError::Map(i, e))?;
        infos.push(LayerInfo { gpa, len: l.len, kind: l.kind as u32, _pad: 0 });
        gpa += window;
    }
    Ok(infos)
}

/// Why a pod could not be set up.
#[derive(Debug)]
pub enum PodSetupError {
    /// The bundle is malformed.
    Bundle(PodBundleError),
    /// The spec is malformed.
    Spec(SpecError),
    /// The boot loader placed a layer off a page boundary, so it cannot be mapped.
    LayerNotPageAligned(usize),
    /// A layer's last page runs past the end of the boot module.
    LayerPastModule(usize),
    /// The layer window could not be mapped.
    Map(usize, MemError),
}

impl fmt::Display for PodSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PodSetupError::Bundle(e) => write!(f, "{e}"),
            PodSetupError::Spec(e) => write!(f, "{e}"),
            PodSetupError::LayerNotPageAligned(i) => {
                write!(f, "layer {i} is not page-aligned in host memory (the boot module is not)")
            }
            PodSetupError::LayerPastModule(i) => {
                write!(f, "layer {i}'s last page runs past the boot module (pad the bundle to 4 KiB)")
            }
            PodSetupError::Map(i, e) => write!(f, "mapping layer {i}: {e}"),
        }
    }
}

impl<'m> PodParts<'m> {
    /// Checks a pod bundle and its spec.
    pub fn parse(module: &'m [u8]) -> Result<PodParts<'m>, PodSetupError> {
        let bundle = PodBundle::parse(module).map_err(PodSetupError::Bundle)?;
        let spec = PodSpec::from_json(bundle.spec()).map_err(PodSetupError::Spec)?;
        Ok(PodParts { bundle, spec })
    }

    /// Maps every layer read-only into `mem` straight from the boot module's frames (the
    /// module starts at host physical address `module_hpa`), and returns the records the
    /// guest reads.
    pub fn map_layers<F: FrameSource>(
        &self,
        mem: &mut GuestMemory<F>,
        module_hpa: u64,
    ) -> Result<Vec<LayerInfo>, PodSetupError> {
        let module_len = self.bundle.bytes().len() as u64;
        let mut maps = Vec::new();
        for (i, layer) in self.bundle.layers().enumerate() {
            let hpa = module_hpa.checked_add(layer.offset as u64).ok_or(PodSetupError::LayerPastModule(i))?;
            // The whole last page must be the module's, so the guest sees nothing else.
            let end = (layer.offset as u64).checked_add(layer.bytes.len() as u64);
            if end.and_then(|e| e.checked_next_multiple_of(PAGE_SIZE)).is_none_or(|e| e > module_len) {
                return Err(PodSetupError::LayerPastModule(i));
            }
            maps.push(LayerMap { hpa, len: layer.bytes.len() as u64, kind: layer.kind });
        }
        map_layer_list(mem, &maps)
    }
}

impl<'m> Guests<'m> {
    /// What `module` holds, with the command line's `vm.count` and `vm.cmdline`.
    pub fn from_module(module: &'m [u8], opts: &Options<'_>) -> Result<Guests<'m>, String> {
        let mut cmdline = heapless::String::new();
        if let Some(enc) = opts.vm_cmdline {
            let mut buf = [0u8; 255];
            let n = crx_abi::bundle::decode_cmdline(enc.as_bytes(), &mut buf).unwrap_or(0);
            for &b in buf.get(..n).unwrap_or_default() {
                let _ = cmdline.push(if b.is_ascii() { char::from(b) } else { '?' });
            }
        }
        if crx_abi::pod::bundle::is_pod_bundle(module) {
            let parts = PodParts::parse(module).map_err(|e| format!("pod bundle: {e}"))?;
            let ignored = opts
                .vm_count
                .filter(|&c| c != 1)
                .map(|asked| format!("vm.count={asked} ignored: a pod bundle runs one VM"));
            let single = parts.bundle.guest();
            return Ok(Guests { count: 1, single, bundle: None, pod: Some(parts), cmdline, ignored });
        }
        if !crx_abi::bundle::is_bundle(module) {
            let count = opts.vm_count.unwrap_or(1);
            return Ok(Guests { count, single: module, bundle: None, pod: None, cmdline, ignored: None });
        }
        let b = crx_abi::bundle::Bundle::parse(module).map_err(|e| format!("guest bundle: {e}"))?;
        let count = u32::try_from(b.len()).unwrap_or(u32::MAX);
        let ignored = opts
            .vm_count
            .filter(|&c| c != count)
            .map(|asked| format!("vm.count={asked} ignored: the guest bundle holds {count} guests"));
        Ok(Guests { count, single: module, bundle: Some(b), pod: None, cmdline, ignored })
    }

    /// VM `i`'s image and command line.
    pub fn get(&self, i: u32) -> (&'m [u8], &str) {
        match self.bundle.and_then(|b| b.entry(i as usize)) {
            Some((image, cmd)) => (image, core::str::from_utf8(cmd).unwrap_or("")),
            None => (self.single, self.cmdline.as_str()),
        }
    }

    /// Guest memory per VM: `vm.mem` MiB, else the default for a pod or a plain VM.
    pub fn mem_bytes(&self, opts: &Options<'_>) -> u64 {
        let default_mib = if self.pod.is_some() { POD_MEM_DEFAULT_MIB } else { VM_MEM_DEFAULT_MIB };
        u64::from(opts.vm_mem_mib.unwrap_or(default_mib)) << 20
    }

    /// vCPUs per VM on a host where `cpus` CPUs run vCPUs: `vm.vcpus`, else one for a
    /// plain VM and, for a pod, what `vm.cpu` gives ([`pod_vcpus`]).
    pub fn vcpus(&self, opts: &Options<'_>, cpus: usize) -> u32 {
        match (opts.vm_vcpus, &self.pod) {
            (Some(n), _) => n,
            (None, Some(_)) => pod_vcpus(opts.vm_cpu_millicores, cpus),
            (None, None) => 1,
        }
    }
}

/// What a VM is built for: the backend's formats and the machine's state.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The nested page-table format.
    pub format: NestedFormat,
    /// The hypercall instruction.
    pub insn: HypercallInsn,
    /// Frames the host has free now.
    pub free_frames: u64,
    /// The guest module's host physical address (where pod layers are mapped from).
    pub module_hpa: u64,
    /// How many CPUs run vCPUs (a pod VM gets at most that many).
    pub cpus: usize,
}

/// A VM ready to run.
pub struct Prepared<F: FrameSource> {
    /// Its memory, image loaded and layers mapped.
    pub mem: GuestMemory<F>,
    /// What the loader wrote (`loaded.params.vcpus`: the vCPUs to place for it).
    pub loaded: Loaded,
    /// Its pod, in pod mode.
    pub pod: Option<PodState>,
}

/// Builds VM `i` of `guests`: memory (if the host keeps its reserve), the image, and in
/// pod mode the layers and the pod state. The error is the VM's stop reason.
pub fn prepare<F: FrameSource>(
    guests: &Guests<'static>,
    i: u32,
    opts: &Options<'_>,
    frames: F,
    target: &Target,
) -> Result<Prepared<F>, String> {
    let mem_bytes = guests.mem_bytes(opts);
    if !memory::leaves_host_reserve(target.free_frames, mem_bytes) {
        return Err(format!(
            "{} MiB of guest memory would leave the host less than {} MiB",
            mem_bytes >> 20,
            memory::HOST_RESERVE_BYTES >> 20
        ));
    }
    let mut mem = GuestMemory::new(frames, mem_bytes, target.format).map_err(|e| format!("{e}"))?;
    let (image, cmdline) = guests.get(i);
    let vcpus = guests.vcpus(opts, target.cpus);
    let spec = LoadSpec { vm_index: i, vm_count: guests.count, vcpus, insn: target.insn, cmdline };
    let loaded = loader::load(&mut mem, image, &spec).map_err(|e| format!("{e}"))?;
    let pod = match &guests.pod {
        None => None,
        Some(parts) => {
            let layers = parts.map_layers(&mut mem, target.module_hpa).map_err(|e| format!("pod: {e}"))?;
            log::info!(
                "vm{i}: pod {}, {} container(s), {} layer(s), {} KiB shared read-only",
                parts.spec.name,
                parts.spec.containers.len(),
                layers.len(),
                mem.shared_bytes() >> 10
            );
            Some(PodState::new(&parts.spec, alloc::sync::Arc::from(parts.bundle.spec()), layers))
        }
    };
    Ok(Prepared { mem, loaded, pod })
}

/// What a node's pod VM is made of: its memory and its CPU limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodSize {
    /// Guest memory.
    pub mem_bytes: u64,
    /// The CPU limit, if the pod has one (its vCPUs follow from it: [`pod_vcpus`]).
    pub millicores: Option<u32>,
}

/// Builds a node's pod VM: `size.mem_bytes` of memory (if the host keeps its reserve), as
/// many vCPUs as its CPU limit gives on the target, the crx-guest `guest`, its image's
/// `layers` mapped read-only from the frames that hold them, and the pod state for
/// `pod_spec`. The error is the reason the pod cannot run.
pub fn prepare_pod<F: FrameSource>(
    guest: &[u8],
    layers: &[LayerMap],
    pod_spec: &PodSpec,
    index: u32,
    size: PodSize,
    frames: F,
    target: &Target,
) -> Result<Prepared<F>, String> {
    let mem_bytes = size.mem_bytes;
    if !memory::leaves_host_reserve(target.free_frames, mem_bytes) {
        return Err(format!(
            "the node has no room for a pod VM of {} MiB (it keeps {} MiB for itself)",
            mem_bytes >> 20,
            memory::HOST_RESERVE_BYTES >> 20
        ));
    }
    let json = pod_spec.to_json().map_err(|e| format!("{e}"))?;
    let mut mem = GuestMemory::new(frames, mem_bytes, target.format).map_err(|e| format!("{e}"))?;
    let vcpus = pod_vcpus(size.millicores, target.cpus);
    let spec = LoadSpec { vm_index: index, vm_count: 1, vcpus, insn: target.insn, cmdline: "" };
    let loaded = loader::load(&mut mem, guest, &spec).map_err(|e| format!("crx-guest: {e}"))?;
    let layers = map_layer_list(&mut mem, layers).map_err(|e| format!("image: {e}"))?;
    let pod = PodState::new(pod_spec, alloc::sync::Arc::from(json), layers);
    Ok(Prepared { mem, loaded, pod: Some(pod) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline;
    use crate::vm::loader::image::code_at_1mib;
    use crate::vm::memory::arena::Arena;
    use alloc::boxed::Box;
    use crx_abi::LayerKind;

    const MODULE_HPA: u64 = 0x1000_0000;

    fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }

    fn target(free_frames: u64) -> Target {
        Target {
            format: NestedFormat::Npt,
            insn: HypercallInsn::Vmmcall,
            free_frames,
            module_hpa: MODULE_HPA,
            cpus: 4,
        }
    }

    /// A 4 MiB pod VM with CPU limit `millicores`.
    fn mib4(millicores: Option<u32>) -> PodSize {
        PodSize { mem_bytes: 4 << 20, millicores }
    }

    fn pod_bundle(layers: &[(&[u8], LayerKind)], pad: bool) -> &'static [u8] {
        let spec = br#"{"name":"demo","containers":[{"name":"main","command":["/bin/true"]}]}"#;
        let mut b = crx_abi::pod::bundle::pack(&code_at_1mib(&[0xf4]), spec, layers);
        if pad {
            b.resize(b.len().next_multiple_of(PAGE_SIZE as usize), 0);
        }
        leak(b)
    }

    #[test]
    fn a_plain_image_runs_vm_count_vms_with_the_command_line() {
        let image = leak(code_at_1mib(&[0xf4]));
        let opts = cmdline::parse("vm.count=3 vm.cmdline=hello%20world").options;
        let g = Guests::from_module(image, &opts).unwrap();
        assert_eq!((g.count, g.pod.is_none(), g.ignored.is_none()), (3, true, true));
        assert_eq!(g.get(2), (image, "hello world"));
        assert_eq!(g.mem_bytes(&opts), u64::from(VM_MEM_DEFAULT_MIB) << 20);
        let vm = prepare(&g, 1, &opts, Arena::new(64), &target(1 << 20)).unwrap();
        assert_eq!((vm.loaded.params.vm_index, vm.loaded.params.vm_count), (1, 3));
        assert_eq!(vm.loaded.params.cmdline(), "hello world");
        assert!(vm.pod.is_none());
    }

    #[test]
    fn vcpus_are_vm_vcpus_else_one_for_a_plain_vm_and_the_cpu_limits_for_a_pod() {
        let image = leak(code_at_1mib(&[0xf4]));
        let pod = pod_bundle(&[(b"layer", LayerKind::Tar)], true);
        let cases = [
            (image, "", 1),
            (image, "vm.cpu=2500", 1),
            (image, "vm.vcpus=3", 3),
            (pod, "", 4),
            (pod, "vm.cpu=1500", 2),
            (pod, "vm.cpu=100", 1),
            (pod, "vm.cpu=64000", 4),
            (pod, "vm.cpu=1500 vm.vcpus=1", 1),
            (pod, "vm.vcpus=3", 3),
        ];
        for (module, words, vcpus) in cases {
            let opts = cmdline::parse(words).options;
            let g = Guests::from_module(module, &opts).unwrap();
            assert_eq!(g.vcpus(&opts, 4), vcpus, "`{words}`, pod {}", g.pod.is_some());
            let vm = prepare(&g, 0, &opts, Arena::new(128), &target(1 << 20)).unwrap();
            assert_eq!(vm.loaded.params.vcpus, vcpus, "`{words}`: the loader was told");
        }
        let opts = cmdline::parse("").options;
        let g = Guests::from_module(pod, &opts).unwrap();
        assert_eq!(g.vcpus(&opts, 1), 1, "a one-CPU host");
    }

    #[test]
    fn a_pod_bundle_runs_one_vm_with_its_layers_mapped_from_the_module() {
        let module =
            pod_bundle(&[(b"first layer", LayerKind::Tar), (&[7u8; 5000], LayerKind::TarGzip)], true);
        let opts = cmdline::parse("vm.count=4").options;
        let g = Guests::from_module(module, &opts).unwrap();
        assert_eq!(g.count, 1);
        assert!(g.ignored.as_deref().is_some_and(|w| w.contains("vm.count=4 ignored")));
        assert_eq!(g.mem_bytes(&opts), u64::from(POD_MEM_DEFAULT_MIB) << 20);
        let vm = prepare(&g, 0, &opts, Arena::new(128), &target(1 << 20)).unwrap();
        let pod = vm.pod.as_ref().unwrap();
        assert_eq!((pod.name.as_str(), pod.containers.len(), pod.layers.len()), ("demo", 1, 2));
        let parts = g.pod.as_ref().unwrap();
        for (i, layer) in parts.bundle.layers().enumerate() {
            assert_eq!(pod.layers[i], layer.info());
            assert_eq!(vm.mem.translate_shared(layer.gpa), Some(MODULE_HPA + layer.offset as u64));
        }
        assert_eq!(vm.mem.shared_bytes(), 3 * PAGE_SIZE, "one page and two pages");
    }

    #[test]
    fn a_node_pod_vm_runs_its_image_bundles_guest_and_layers() {
        let mut b = crx_abi::pod::bundle::pack_image(
            &code_at_1mib(&[0xf4]),
            br#"{"names":["busybox"]}"#,
            &[(b"layer", LayerKind::Tar)],
        );
        b.resize(b.len().next_multiple_of(PAGE_SIZE as usize), 0);
        let bundle = PodBundle::parse(leak(b)).unwrap();
        let spec = PodSpec::from_json(
            br#"{"name":"default.p","managed":true,"containers":[{"name":"c","command":["sh"]}]}"#,
        )
        .unwrap();
        let parts = PodParts { bundle, spec };
        let l0 = bundle.layer(0).unwrap();
        let layers =
            [LayerMap { hpa: MODULE_HPA + l0.offset as u64, len: l0.bytes.len() as u64, kind: l0.kind }];
        let guest = bundle.guest();
        let vm = prepare_pod(guest, &layers, &parts.spec, 7, mib4(None), Arena::new(64), &target(1 << 20))
            .unwrap();
        let pod = vm.pod.as_ref().unwrap();
        assert!(pod.managed);
        assert_eq!(PodSpec::from_json(&pod.spec_json).unwrap(), parts.spec);
        assert_eq!(
            vm.mem.translate_shared(crx_abi::layout::LAYERS_BASE),
            Some(MODULE_HPA + bundle.layer(0).unwrap().offset as u64)
        );
        assert_eq!(vm.loaded.params.vm_index, 7);
        assert_eq!(vm.loaded.params.vcpus, 4, "no CPU limit: every CPU of the target");
        for (millicores, vcpus) in [(Some(1500), 2), (Some(250), 1), (Some(2000), 2), (Some(64_000), 4)] {
            let vm = prepare_pod(
                guest,
                &layers,
                &parts.spec,
                7,
                mib4(millicores),
                Arena::new(64),
                &target(1 << 20),
            )
            .unwrap();
            assert_eq!(vm.loaded.params.vcpus, vcpus, "{millicores:?} millicores");
        }
        let e = prepare_pod(guest, &layers, &parts.spec, 7, mib4(None), Arena::new(64), &target(100))
            .err()
            .unwrap();
        assert!(e.contains("no room for a pod VM of 4 MiB"), "{e}");
        // A layer off a page boundary, or past the layer window.
        let skewed = [LayerMap { hpa: MODULE_HPA + 8, ..layers[0] }];
        let e = prepare_pod(guest, &skewed, &parts.spec, 7, mib4(None), Arena::new(64), &target(1 << 20))
            .err()
            .unwrap();
        assert!(e.contains("not page-aligned"), "{e}");
        let huge = [LayerMap { len: crx_abi::layout::LAYERS_SIZE + 1, ..layers[0] }];
        let e = prepare_pod(guest, &huge, &parts.spec, 7, mib4(None), Arena::new(64), &target(1 << 20))
            .err()
            .unwrap();
        assert!(e.contains("mapping layer 0"), "{e}");
    }

    #[test]
    fn bad_modules_and_placements_are_reasons_not_panics() {
        let opts = cmdline::parse("").options;
        // A bundle cut short, and a pod bundle whose spec is not JSON.
        let module = pod_bundle(&[(b"x", LayerKind::Tar)], true);
        for cut in [9, 40, 64] {
            let e = Guests::from_module(leak(module[..cut].to_vec()), &opts).err().unwrap();
            assert!(e.starts_with("pod bundle: "), "{e}");
        }
        let junk = leak(crx_abi::pod::bundle::pack(&[0xf4], b"{not json", &[]));
        assert!(Guests::from_module(junk, &opts).err().unwrap().starts_with("pod bundle: "));
        // The last layer's page runs past an unpadded module.
        let g = Guests::from_module(pod_bundle(&[(b"x", LayerKind::Tar)], false), &opts).unwrap();
        let e = prepare(&g, 0, &opts, Arena::new(128), &target(1 << 20)).err().unwrap();
        assert!(e.contains("runs past the boot module"), "{e}");
        // A module the loader placed off a page boundary.
        let g = Guests::from_module(module, &opts).unwrap();
        let t = Target { module_hpa: MODULE_HPA + 8, ..target(1 << 20) };
        let e = prepare(&g, 0, &opts, Arena::new(128), &t).err().unwrap();
        assert!(e.contains("not page-aligned"), "{e}");
        // Too little host memory left, and a guest that is no ELF.
        let e = prepare(&g, 0, &opts, Arena::new(128), &target(100)).err().unwrap();
        assert!(e.contains("would leave the host less than"), "{e}");
        let g = Guests::from_module(leak(b"not an elf at all".to_vec()), &opts).unwrap();
        assert!(prepare(&g, 0, &opts, Arena::new(64), &target(1 << 20)).is_err());
        // Guest memory the frame source cannot give.
        let g = Guests::from_module(leak(code_at_1mib(&[0xf4])), &opts).unwrap();
        assert!(prepare(&g, 0, &opts, Arena::new(2), &target(1 << 20)).is_err());
    }
}
