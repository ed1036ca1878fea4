//! `control-plane --dir DIR [--listen ADDR] [--insecure-http] [--node NAME]... [LIMIT VALUE]...`,
//! where a LIMIT is one of `control_plane::server::Limits::FLAGS`.
#![forbid(unsafe_code)]

use control_plane::server::Limits;
use control_plane::Config;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: control-plane --dir DIR [--listen 127.0.0.1:PORT] [--insecure-http] [--node NAME]...
    [--max-connections N (1024)] [--max-connections-per-client N (128)]
    [--read-header-timeout D (32s)] [--request-timeout D (60s)] [--idle-timeout D (90s)]
  (a duration D is a number with ms, s, m or h; a bare number is seconds)";

fn main() -> ExitCode {
    let mut dir = None;
    let mut listen = "127.0.0.1:6443".to_string();
    let mut insecure_http = false;
    let mut nodes = Vec::new();
    let mut limits = Limits::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--listen" => listen = args.next().unwrap_or_default(),
            "--insecure-http" => insecure_http = true,
            "--node" => nodes.extend(args.next()),
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
    let (Some(dir), Ok(listen)) = (dir, listen.parse()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match control_plane::run(&Config { dir, listen, insecure_http, nodes, limits }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}
