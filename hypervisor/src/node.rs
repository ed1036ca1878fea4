//! The node's cluster configuration: the boot module that says which API server to join,
//! how to trust it and as whom (`kubelet_lite::nodecfg`, written by `cargo xtask build
//! --kubeconfig FILE --node-name NAME`). Found by its header among the boot modules; the
//! other modules are the VMs' and pods', or the node's images.
//!
//! A module pack (`crx_abi::pack`, what the runner hands QEMU's PVH boot, which takes one
//! module) counts as the modules it holds; a malformed pack is reported and skipped.

use crate::kprintln;
use crate::mm::direct;
use alloc::vec::Vec;
use boot::BootInfo;
use kubelet_lite::nodecfg::NodeBootConfig;

/// Every boot module, packs opened, in order.
pub fn modules(boot: &BootInfo) -> Vec<&'static [u8]> {
    let mut out = Vec::new();
    for i in 0..boot.modules.len() {
        let Some(m) = direct::boot_module(boot, i) else { continue };
        if !crx_abi::bundle::is_pack(m) {
            out.push(m);
            continue;
        }
        match crx_abi::pack::modules(m) {
            Ok(inner) => out.extend(inner.map(|(bytes, _name)| bytes)),
            Err(e) => kprintln!("node: boot module {i}: {e}; ignored"),
        }
    }
    out
}

/// The node configuration among the boot modules, checked. A malformed one is reported on
/// the console with its reason, and the node runs on without joining a cluster.
pub fn config(boot: &BootInfo) -> Option<NodeBootConfig> {
    let found = modules(boot).into_iter().enumerate().find(|(_, m)| NodeBootConfig::is_module(m));
    let Some((i, module)) = found else {
        log::info!("node: no cluster configuration among the boot modules; not joining a cluster");
        return None;
    };
    match NodeBootConfig::from_module(module) {
        Ok(c) => {
            kprintln!("node: {c}");
            Some(c)
        }
        Err(e) => {
            kprintln!("node: boot module {i} is a malformed node configuration: {e}; not joining a cluster");
            None
        }
    }
}

/// The first boot module that is neither the node configuration nor an image of the
/// node's store: the VMs' or the pod's.
pub fn guest_module(boot: &BootInfo) -> Option<&'static [u8]> {
    modules(boot)
        .into_iter()
        .find(|m| !NodeBootConfig::is_module(m) && !crx_abi::pod::bundle::is_image_bundle(m))
}

/// The node's image store, from the image bundles among the boot modules; what it holds
/// and each bundle left out are reported.
pub fn image_store(boot: &BootInfo) -> crate::images::Store {
    let bundles: Vec<&'static [u8]> =
        modules(boot).into_iter().filter(|m| crx_abi::pod::bundle::is_image_bundle(m)).collect();
    let (store, refused) = crate::images::Store::from_modules(&bundles);
    for why in refused {
        kprintln!("node: {why}; left out of the image store");
    }
    let names: Vec<&str> = store.images().flat_map(|(names, _)| names.iter().map(|n| n.as_str())).collect();
    kprintln!("node: image store: {}", if names.is_empty() { "empty".into() } else { names.join(", ") });
    store
}
