//! `control-plane --dir DIR [--listen ADDR] [--insecure-http] [--node NAME]... [--event-ttl DURATION]
//! [--history-bytes N] [--store-bytes N] [--compact-min-bytes N] [--kubelet-certificate-authority FILE]
//! [LIMIT VALUE]...`, where a LIMIT is one of `control_plane::server::Limits::FLAGS`.
#![forbid(unsafe_code)]

use control_plane::server::Limits;
use control_plane::store::{self, parse_duration};
use control_plane::Config;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: control-plane --dir DIR [--listen 127.0.0.1:PORT] [--insecure-http] [--node NAME]...
       [--event-ttl DURATION (1h; 0 keeps events)] [--history-bytes N (64 MiB)]
       [--store-bytes N (256 MiB)] [--compact-min-bytes N (64 MiB)]
       [--kubelet-certificate-authority FILE]
       [--max-connections N (1024)] [--max-connections-per-client N (128)]
       [--read-header-timeout D (32s)] [--request-timeout D (60s)] [--idle-timeout D (90s)]
     (a duration D as Go writes one: 500ms, 90s, 2m, 1h)";

fn main() -> ExitCode {
    let mut dir = None;
    let mut listen = "127.0.0.1:6443".to_string();
    let mut insecure_http = false;
    let mut nodes = Vec::new();
    let mut kubelet_ca = None;
    let mut store = store::Limits::default();
    let mut limits = Limits::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--listen" => listen = args.next().unwrap_or_default(),
            "--insecure-http" => insecure_http = true,
            "--node" => nodes.extend(args.next()),
            "--kubelet-certificate-authority" => kubelet_ca = args.next().map(PathBuf::from),
            "--event-ttl" => match args.next().as_deref().and_then(parse_duration) {
                Some(d) => store.event_ttl = (!d.is_zero()).then_some(d),
                None => return usage(),
            },
            "--history-bytes" | "--store-bytes" | "--compact-min-bytes" => {
                let Some(n) = args.next().and_then(|n| n.parse::<usize>().ok()) else { return usage() };
                match a.as_str() {
                    "--history-bytes" => store.history_bytes = n,
                    "--store-bytes" => store.max_live_bytes = n,
                    _ => store.compact_min_bytes = n as u64,
                }
            }
            flag if Limits::FLAGS.contains(&flag) => {
                if let Err(e) = limits.set(flag, &args.next().unwrap_or_default()) {
                    eprintln!("control-plane: {e}\n{USAGE}");
                    return ExitCode::from(2);
                }
            }
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(dir), Ok(listen)) = (dir, listen.parse()) else { return usage() };
    match control_plane::run(&Config { dir, listen, insecure_http, nodes, store, kubelet_ca, limits }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
