//! The node's cluster configuration: the boot module that says which API server to join,
//! how to trust it and as whom (`kubelet_lite::nodecfg`, written by `cargo xtask build
//! --kubeconfig FILE --node-name NAME`). Found by its header among the boot modules; the
//! other modules are the VMs' and pods'.

use crate::kprintln;
use crate::mm::direct;
use boot::BootInfo;
use kubelet_lite::nodecfg::NodeBootConfig;

/// The node configuration among the boot modules, checked. A malformed one is reported on
/// the console with its reason, and the node runs on without joining a cluster.
pub fn config(boot: &BootInfo) -> Option<NodeBootConfig> {
    let found = (0..boot.modules.len())
        .filter_map(|i| direct::boot_module(boot, i).map(|m| (i, m)))
        .find(|(_, m)| NodeBootConfig::is_module(m));
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

/// The first boot module that is not the node configuration: the VMs' or the pods'.
pub fn guest_module(boot: &BootInfo) -> Option<&'static [u8]> {
    (0..boot.modules.len())
        .filter_map(|i| direct::boot_module(boot, i))
        .find(|m| !NodeBootConfig::is_module(m))
}
