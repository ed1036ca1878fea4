//! `sim-node --kubeconfig FILE --name NAME`: kubelet-lite on the host with a simulated runtime.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut kubeconfig = None;
    let mut name = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kubeconfig" => kubeconfig = it.next().cloned(),
            "--name" => name = it.next().cloned(),
            "-h" | "--help" => {
                println!("usage: sim-node --kubeconfig FILE --name NAME");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("sim-node: unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(kubeconfig), Some(name)) = (kubeconfig, name) else {
        eprintln!("usage: sim-node --kubeconfig FILE --name NAME");
        return ExitCode::from(2);
    };
    match sim_node::run(std::path::Path::new(&kubeconfig), &name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sim-node: {e}");
            ExitCode::FAILURE
        }
    }
}
