fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        println!("cargo:rustc-link-arg-bins=--gc-sections");
    }
    // A test build may carry one root-filesystem layer inside the image, for running the
    // kernel before the hypervisor serves layers (`CRX_GUEST_EMBED_LAYER=path/to/layer.tar`).
    println!("cargo:rustc-check-cfg=cfg(crx_embedded_layer)");
    println!("cargo:rerun-if-env-changed=CRX_GUEST_EMBED_LAYER");
    if let Ok(path) = std::env::var("CRX_GUEST_EMBED_LAYER") {
        if !path.is_empty() {
            println!("cargo:rustc-cfg=crx_embedded_layer");
            println!("cargo:rustc-env=CRX_GUEST_LAYER_PATH={path}");
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=linker.ld");
}
