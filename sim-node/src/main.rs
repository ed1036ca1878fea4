//! `sim-node --kubeconfig FILE --name NAME [--pull-images] [--insecure-registry HOST[:PORT]]...
//! [--registry-ca FILE]`: kubelet-lite on the host with a simulated runtime.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use sim_node::images::{PullConfig, DEFAULT_MAX_IMAGE_BYTES};

const USAGE: &str = "usage: sim-node --kubeconfig FILE --name NAME [--pull-images] \
[--insecure-registry HOST[:PORT]]... [--registry-ca FILE]

Containers run in a simulated runtime. Images are simulated too (every pull succeeds at
once) unless --pull-images is given: then each is pulled from its registry and verified
before its containers start. Registries are reached over HTTPS, verified against the CA
bundle --registry-ca names; --insecure-registry lets a registry be reached over plain HTTP
instead (either option implies --pull-images).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut kubeconfig = None;
    let mut name = None;
    let mut pull = false;
    let mut cfg = PullConfig { max_image_bytes: DEFAULT_MAX_IMAGE_BYTES, ..PullConfig::default() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kubeconfig" => kubeconfig = it.next().cloned(),
            "--name" => name = it.next().cloned(),
            "--pull-images" => pull = true,
            "--insecure-registry" => match it.next() {
                Some(r) => {
                    pull = true;
                    cfg.insecure.push(r.clone());
                }
                None => return usage_error("--insecure-registry needs a registry"),
            },
            "--registry-ca" => {
                let Some(path) = it.next() else { return usage_error("--registry-ca needs a file") };
                let pem = match std::fs::read(path) {
                    Ok(p) => p,
                    Err(e) => return usage_error(&format!("{path}: {e}")),
                };
                match sim_node::transport::tls_config(&pem) {
                    Ok(tls) => cfg.tls = Some(tls),
                    Err(e) => return usage_error(&format!("{path}: {e}")),
                }
                pull = true;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let (Some(kubeconfig), Some(name)) = (kubeconfig, name) else {
        return usage_error("--kubeconfig and --name are required");
    };
    match sim_node::run(std::path::Path::new(&kubeconfig), &name, pull.then_some(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sim-node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("sim-node: {why}\n{USAGE}");
    ExitCode::from(2)
}
