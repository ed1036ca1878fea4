//! `cargo xtask cluster run -- COMMAND...`: the whole path a user takes, in one command. It
//! brings a cluster up as `cluster up` does, applies one pod running COMMAND with the real
//! kubectl, follows its phase, prints its output as `kubectl logs` gives it (on stdout) and
//! its end (on stderr), then tears the cluster down and exits with the container's code.

use crate::cluster::kubectl_output;
use crate::Error;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The pod's name.
pub const POD: &str = "run";

/// How often the pod is looked at.
const POLL: Duration = Duration::from_secs(1);

/// Waiting reasons that mean the pod will not start by itself.
const STUCK: &[&str] =
    &["ErrImagePull", "ImagePullBackOff", "CreateContainerError", "RunContainerError", "InvalidImageName"];

/// What the run asks for.
#[derive(Debug, Clone)]
pub struct RunPod {
    /// The pod's image.
    pub image: String,
    /// The container's command (argv).
    pub command: Vec<String>,
    /// How long the pod may take from apply to its end.
    pub timeout: Duration,
}

/// The pod's manifest: one container, restartPolicy Never, as JSON (which kubectl takes as
/// YAML).
pub fn manifest(p: &RunPod) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": p.image, "command": p.command}],
        },
    })
    .to_string()
}

/// What `kubectl get pod` says of the pod, as the job reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Seen {
    pub phase: String,
    pub node: String,
    pub waiting_reason: String,
    pub waiting_message: String,
    pub exit_code: Option<i32>,
    pub terminated_reason: String,
}

/// The jsonpath that [`Seen::parse`] reads: fields separated by a tab.
pub const JSONPATH: &str = "jsonpath={.status.phase}{\"\\t\"}{.spec.nodeName}{\"\\t\"}\
{.status.containerStatuses[0].state.waiting.reason}{\"\\t\"}\
{.status.containerStatuses[0].state.waiting.message}{\"\\t\"}\
{.status.containerStatuses[0].state.terminated.exitCode}{\"\\t\"}\
{.status.containerStatuses[0].state.terminated.reason}";

impl Seen {
    /// The fields of [`JSONPATH`]'s output.
    pub fn parse(s: &str) -> Seen {
        let mut f = s.split('\t').map(|v| v.trim().to_string());
        let mut next = || f.next().unwrap_or_default();
        Seen {
            phase: next(),
            node: next(),
            waiting_reason: next(),
            waiting_message: next(),
            exit_code: next().parse().ok(),
            terminated_reason: next(),
        }
    }
}

/// The run, advanced by [`Job::step`] while the cluster runs.
pub struct Job {
    pod: RunPod,
    kubectl: PathBuf,
    cache: PathBuf,
    dir: PathBuf,
    applied: Option<Instant>,
    last_poll: Option<Instant>,
    said_running: bool,
    /// The container's exit code, once the pod has ended.
    pub exit_code: Option<i32>,
}

fn say(what: &str) {
    eprintln!("cluster: {what}");
}

impl Job {
    /// A run of `pod` with `kubectl`, writing its manifest under `dir`.
    pub fn new(pod: RunPod, kubectl: &Path, dir: &Path) -> Job {
        Job {
            pod,
            kubectl: kubectl.to_path_buf(),
            cache: dir.join("kube-cache"),
            dir: dir.to_path_buf(),
            applied: None,
            last_poll: None,
            said_running: false,
            exit_code: None,
        }
    }

    fn kubectl(&self, kubeconfig: &Path, args: &[&str]) -> Result<String, Error> {
        kubectl_output(&self.kubectl, kubeconfig, &self.cache, args).map_err(Error::Missing)
    }

    /// Moves the run along: `None` while it goes on, `Some` when it is over (Ok once the
    /// pod ended and its output was printed, whatever its exit code).
    pub fn step(&mut self, kubeconfig: &Path) -> Option<Result<(), Error>> {
        let Some(applied) = self.applied else {
            let file = self.dir.join("run-pod.yaml");
            if let Err(e) = fs::write(&file, manifest(&self.pod)) {
                return Some(Err(Error::io(format!("writing {}", file.display()), e)));
            }
            say(&format!(
                "kubectl apply -f {} (pod {POD}: {} {:?})",
                file.display(),
                self.pod.image,
                self.pod.command
            ));
            if let Err(e) = self.kubectl(kubeconfig, &["apply", "-f", &file.display().to_string()]) {
                return Some(Err(e));
            }
            self.applied = Some(Instant::now());
            return None;
        };
        if self.last_poll.is_some_and(|t| t.elapsed() < POLL) {
            return None;
        }
        self.last_poll = Some(Instant::now());
        let seen = match self.kubectl(kubeconfig, &["get", "pod", POD, "-o", JSONPATH]) {
            Ok(out) => Seen::parse(&out),
            Err(e) => return Some(Err(e)),
        };
        match seen.phase.as_str() {
            "Succeeded" | "Failed" => Some(self.finish(kubeconfig, &seen, applied.elapsed())),
            _ if STUCK.contains(&seen.waiting_reason.as_str()) => Some(Err(Error::Missing(format!(
                "pod {POD} cannot start on {}: {}: {}",
                seen.node, seen.waiting_reason, seen.waiting_message
            )))),
            _ if applied.elapsed() > self.pod.timeout => Some(Err(Error::Missing(format!(
                "pod {POD} did not end within {} s (phase {}); `kubectl describe pod {POD}` while the cluster runs shows why",
                self.pod.timeout.as_secs(),
                seen.phase
            )))),
            "Running" if !self.said_running => {
                self.said_running = true;
                say(&format!("pod {POD} is Running on node {} ({:.1} s after apply)", seen.node, applied.elapsed().as_secs_f64()));
                None
            }
            _ => None,
        }
    }

    fn finish(&mut self, kubeconfig: &Path, seen: &Seen, took: Duration) -> Result<(), Error> {
        say(&format!("kubectl logs {POD} (from node {}'s kubelet endpoint):", seen.node));
        let logs = self.kubectl(kubeconfig, &["logs", POD])?;
        print!("{logs}");
        let _ = std::io::stdout().flush();
        let code = seen.exit_code.unwrap_or(125);
        say(&format!(
            "pod {POD}: {} ({}, exit code {code}) {:.1} s after apply",
            seen.phase,
            if seen.terminated_reason.is_empty() { "no reason given" } else { &seen.terminated_reason },
            took.as_secs_f64()
        ));
        self.exit_code = Some(code);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_is_one_never_restarting_container() {
        let p = RunPod {
            image: "busybox".into(),
            command: vec!["sh".into(), "-c".into(), "echo \"hi\"; exit 3".into()],
            timeout: Duration::from_secs(1),
        };
        let v: serde_json::Value = serde_json::from_str(&manifest(&p)).unwrap();
        assert_eq!(v["metadata"]["name"], POD);
        assert_eq!(v["spec"]["restartPolicy"], "Never");
        assert_eq!(v["spec"]["containers"][0]["image"], "busybox");
        assert_eq!(v["spec"]["containers"][0]["command"][2], "echo \"hi\"; exit 3");
    }

    #[test]
    fn pod_states_are_read_from_kubectl() {
        let s = Seen::parse("Failed\tn1\t\t\t3\tError");
        assert_eq!(
            (s.phase.as_str(), s.node.as_str(), s.exit_code, s.terminated_reason.as_str()),
            ("Failed", "n1", Some(3), "Error")
        );
        let w = Seen::parse("Pending\tn1\tErrImagePull\timage \"x\" is not in this node's image store\t\t");
        assert_eq!(w.waiting_reason, "ErrImagePull");
        assert!(w.waiting_message.contains("image store"));
        assert_eq!(w.exit_code, None);
        assert_eq!(Seen::parse(""), Seen::default());
    }
}
