//! `control-plane --dir DIR [--listen ADDR] [--insecure-http] [--node NAME]...
//! [--kubelet-certificate-authority FILE]`.
#![forbid(unsafe_code)]

use control_plane::Config;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: control-plane --dir DIR [--listen 127.0.0.1:PORT] [--insecure-http] [--node NAME]... \
     [--kubelet-certificate-authority FILE]";

fn main() -> ExitCode {
    let mut dir = None;
    let mut listen = "127.0.0.1:6443".to_string();
    let mut insecure_http = false;
    let mut nodes = Vec::new();
    let mut kubelet_ca = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--listen" => listen = args.next().unwrap_or_default(),
            "--insecure-http" => insecure_http = true,
            "--node" => nodes.extend(args.next()),
            "--kubelet-certificate-authority" => kubelet_ca = args.next().map(PathBuf::from),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(dir), Ok(listen)) = (dir, listen.parse()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match control_plane::run(&Config { dir, listen, insecure_http, nodes, kubelet_ca }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}
