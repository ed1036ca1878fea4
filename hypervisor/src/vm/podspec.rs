//! From a Kubernetes pod to the pod VM that runs it: the crx-guest pod spec (each
//! container's argv, environment and working directory, resolved against its image as
//! the kubelet does), the VM's memory and its CPU limit.
//!
//! * argv: `command` replaces the image's Entrypoint and drops its Cmd; `args` replaces
//!   the Cmd; with neither, Entrypoint then Cmd (Kubernetes' rules).
//! * environment: the image's Env, then the container's `env` (a name given again
//!   replaces the earlier value; `valueFrom` is not read).
//! * working directory: the container's `workingDir`, else the image's, else `/`.
//! * memory: the sum of the containers' memory limits, a container without one counting
//!   [`DEFAULT_CONTAINER_MEM_BYTES`]; at least [`MIN_POD_MEM_BYTES`] (crx-guest and its
//!   root filesystem live there too) and at most `crx_abi::layout::MEM_MAX`, rounded up to
//!   a MiB.
//! * CPU: the sum of the containers' CPU limits in millicores, or no limit when a container
//!   has none.
//! * vCPUs ([`pod_vcpus`]): as many as the CPU limit has whole or part CPUs (1500
//!   millicores: 2), at most the host CPUs that can run vCPUs; a pod without a CPU limit
//!   gets all of those. The scheduler still holds the VM to its limit, whatever the count.
//!
//! Pure: a pod is an allegation from the API server; every malformed part is an error.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use crx_abi::pod::{valid_name, ContainerSpec, ImageConfig, PodSpec, DEFAULT_PROCESS_LIMIT, MAX_CONTAINERS};
use kubelet_lite::types::{Container, Pod};

/// Memory counted for a container without a memory limit.
pub const DEFAULT_CONTAINER_MEM_BYTES: u64 = 64 << 20;
/// Least memory a pod VM gets.
pub const MIN_POD_MEM_BYTES: u64 = 16 << 20;

/// How many vCPUs a pod VM with CPU limit `millicores` gets on a host where `cpus` CPUs run
/// vCPUs: `ceil(millicores / 1000)`, at most `cpus` (and at most `crx_abi::VCPUS_MAX`); all
/// of them without a limit. Never 0: a host with no such CPU runs no VM anyway.
pub fn pod_vcpus(millicores: Option<u32>, cpus: usize) -> u32 {
    let cpus = u32::try_from(cpus).unwrap_or(u32::MAX).clamp(1, crx_abi::VCPUS_MAX);
    match millicores {
        Some(m) => m.div_ceil(1000).clamp(1, cpus),
        None => cpus,
    }
}

/// A pod VM to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What crx-guest runs (managed: containers start on the node's commands).
    pub spec: PodSpec,
    /// Guest memory.
    pub mem_bytes: u64,
    /// CPU limit, if every container has one.
    pub millicores: Option<u32>,
}

/// The pod VM's name on the console: `namespace.pod` when that is a valid name, else the
/// pod's name, else `pod-` and the start of its uid.
pub fn vm_name(namespace: &str, pod: &str, uid: &str) -> String {
    let both = format!("{namespace}.{pod}");
    if valid_name(&both) {
        return both;
    }
    if valid_name(pod) {
        return pod.to_string();
    }
    let short: String = uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    format!("pod-{short}")
}

/// The argv of `c` run from an image described by `image`.
pub fn argv(c: &Container, image: &ImageConfig) -> Vec<String> {
    match (&c.command, &c.args) {
        (Some(cmd), Some(args)) => cmd.iter().chain(args).cloned().collect(),
        (Some(cmd), None) => cmd.clone(),
        (None, Some(args)) => image.entrypoint.iter().chain(args).cloned().collect(),
        (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// The environment of `c`: the image's, then the container's.
pub fn env(c: &Container, image: &ImageConfig) -> Vec<String> {
    let mut out: Vec<String> = image.env.clone();
    for v in c.env.iter().flatten() {
        let entry = format!("{}={}", v.name, v.value.as_deref().unwrap_or(""));
        let prefix = format!("{}=", v.name);
        match out.iter_mut().find(|e| e.starts_with(&prefix)) {
            Some(e) => *e = entry,
            None => out.push(entry),
        }
    }
    out
}

fn limit<'c>(c: &'c Container, name: &str) -> Option<&'c String> {
    c.resources.as_ref()?.limits.as_ref()?.get(name)
}

/// The plan for `pod`, whose containers run from the image each names, found by `image_of`.
pub fn plan<'i>(
    pod: &Pod,
    vm: &str,
    image_of: impl Fn(&Container) -> Result<&'i ImageConfig, String>,
) -> Result<Plan, String> {
    let cs = &pod.spec.containers;
    if cs.is_empty() || cs.len() > MAX_CONTAINERS {
        return Err(format!("a pod VM runs 1 to {MAX_CONTAINERS} containers, not {}", cs.len()));
    }
    let mut containers = Vec::new();
    let mut mem: u64 = 0;
    let mut cpu: Option<u64> = Some(0);
    for c in cs {
        let image = image_of(c)?;
        let command = argv(c, image);
        if command.first().is_none_or(|w| w.is_empty()) {
            return Err(format!("container {:?} has no command and its image none", c.name));
        }
        let working_dir = match c.working_dir.as_deref().filter(|w| !w.is_empty()) {
            Some(w) => w.to_string(),
            None if !image.working_dir.is_empty() => image.working_dir.clone(),
            None => String::from("/"),
        };
        containers.push(ContainerSpec { name: c.name.clone(), command, env: env(c, image), working_dir });
        let m = match limit(c, "memory") {
            Some(q) => wire::quantity::bytes(q)
                .map_err(|e| format!("container {:?}: memory limit {q:?}: {e}", c.name))?,
            None => DEFAULT_CONTAINER_MEM_BYTES,
        };
        mem = mem.saturating_add(m);
        cpu = match (cpu, limit(c, "cpu")) {
            (Some(sum), Some(q)) => Some(
                sum.saturating_add(
                    wire::quantity::cpu_millis(q)
                        .map_err(|e| format!("container {:?}: cpu limit {q:?}: {e}", c.name))?,
                ),
            ),
            _ => None,
        };
    }
    let mem_bytes = mem
        .max(MIN_POD_MEM_BYTES)
        .checked_next_multiple_of(1 << 20)
        .filter(|&m| m <= crx_abi::layout::MEM_MAX)
        .ok_or_else(|| {
            format!(
                "the pod's memory limits add up to more than a pod VM's {} GiB",
                crx_abi::layout::MEM_MAX >> 30
            )
        })?;
    let spec =
        PodSpec { name: vm.to_string(), containers, process_limit: DEFAULT_PROCESS_LIMIT, managed: true };
    spec.check().map_err(|e| format!("{e}"))?;
    let millicores = cpu.map(|m| u32::try_from(m.max(1)).unwrap_or(u32::MAX));
    Ok(Plan { spec, mem_bytes, millicores })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpus_come_from_the_cpu_limit_capped_by_the_host() {
        assert_eq!(pod_vcpus(Some(1), 4), 1, "a sliver of a CPU is one vCPU");
        assert_eq!(pod_vcpus(Some(1000), 4), 1);
        assert_eq!(pod_vcpus(Some(1001), 4), 2, "rounded up");
        assert_eq!(pod_vcpus(Some(1500), 4), 2);
        assert_eq!(pod_vcpus(Some(2000), 4), 2);
        assert_eq!(pod_vcpus(Some(3500), 4), 4);
        assert_eq!(pod_vcpus(Some(64_000), 4), 4, "no more than the host's CPUs");
        assert_eq!(pod_vcpus(Some(u32::MAX), 2), 2);
        assert_eq!(pod_vcpus(None, 4), 4, "no limit: every CPU that runs vCPUs");
        assert_eq!(pod_vcpus(None, 1), 1);
        assert_eq!(pod_vcpus(None, 200), crx_abi::VCPUS_MAX, "one bit each in VCPU_KICK's mask");
        assert_eq!(pod_vcpus(Some(100_000), 200), crx_abi::VCPUS_MAX);
        assert_eq!(pod_vcpus(Some(40_000), 200), 40);
        assert_eq!(pod_vcpus(None, 0), 1, "never 0");
        assert_eq!(pod_vcpus(Some(0), 4), 1);
    }
    use alloc::vec;
    use kubelet_lite::types::{EnvVar, ResourceRequirements};

    fn image() -> ImageConfig {
        ImageConfig {
            names: vec!["docker.io/library/busybox:latest".into()],
            entrypoint: vec!["/bin/ep".into()],
            cmd: vec!["sh".into()],
            env: vec!["PATH=/bin".into(), "A=image".into()],
            working_dir: "/srv".into(),
            ..Default::default()
        }
    }

    fn ctr(name: &str) -> Container {
        Container { name: name.into(), image: Some("busybox".into()), ..Default::default() }
    }

    fn strs(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn argv_env_and_working_dir_follow_the_kubelet() {
        let img = image();
        let mut c = ctr("c");
        assert_eq!(argv(&c, &img), ["/bin/ep", "sh"]);
        c.args = strs(&["-c", "x"]);
        assert_eq!(argv(&c, &img), ["/bin/ep", "-c", "x"]);
        c.command = strs(&["/bin/busybox", "echo"]);
        assert_eq!(argv(&c, &img), ["/bin/busybox", "echo", "-c", "x"]);
        c.args = None;
        assert_eq!(argv(&c, &img), ["/bin/busybox", "echo"]);
        c.env = Some(vec![
            EnvVar { name: "A".into(), value: Some("pod".into()) },
            EnvVar { name: "B".into(), value: None },
        ]);
        assert_eq!(env(&c, &img), ["PATH=/bin", "A=pod", "B="]);
        let p = Pod {
            spec: kubelet_lite::types::PodSpec { containers: vec![c.clone()], ..Default::default() },
            ..Default::default()
        };
        let made = plan(&p, "default.p", |_| Ok(&img)).unwrap();
        assert_eq!(made.spec.containers[0].working_dir, "/srv");
        assert!(made.spec.managed);
        c.working_dir = Some("/tmp".into());
        let p = Pod {
            spec: kubelet_lite::types::PodSpec { containers: vec![c], ..Default::default() },
            ..Default::default()
        };
        assert_eq!(plan(&p, "default.p", |_| Ok(&img)).unwrap().spec.containers[0].working_dir, "/tmp");
    }

    fn with_limits(name: &str, mem: Option<&str>, cpu: Option<&str>) -> Container {
        let mut limits = alloc::collections::BTreeMap::new();
        if let Some(m) = mem {
            limits.insert("memory".to_string(), m.to_string());
        }
        if let Some(c) = cpu {
            limits.insert("cpu".to_string(), c.to_string());
        }
        Container {
            resources: Some(ResourceRequirements { limits: Some(limits), requests: None }),
            ..ctr(name)
        }
    }

    fn pod_of(cs: Vec<Container>) -> Pod {
        Pod {
            spec: kubelet_lite::types::PodSpec { containers: cs, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn memory_and_cpu_come_from_the_limits() {
        let img = image();
        let p = pod_of(vec![
            with_limits("a", Some("32Mi"), Some("250m")),
            with_limits("b", Some("100M"), Some("1")),
        ]);
        let made = plan(&p, "x", |_| Ok(&img)).unwrap();
        // 32 MiB + 100 MB, rounded up to a MiB.
        assert_eq!(made.mem_bytes, 128 << 20);
        assert_eq!(made.millicores, Some(1250));
        let p = pod_of(vec![with_limits("a", Some("1Mi"), None), ctr("b")]);
        let made = plan(&p, "x", |_| Ok(&img)).unwrap();
        assert_eq!((made.mem_bytes, made.millicores), ((1 << 20) + DEFAULT_CONTAINER_MEM_BYTES, None));
        let p = pod_of(vec![with_limits("a", Some("1Mi"), Some("1m"))]);
        assert_eq!(plan(&p, "x", |_| Ok(&img)).unwrap().mem_bytes, MIN_POD_MEM_BYTES);
        assert_eq!(
            plan(&pod_of(vec![ctr("a")]), "x", |_| Ok(&img)).unwrap().mem_bytes,
            DEFAULT_CONTAINER_MEM_BYTES
        );
    }

    #[test]
    fn bad_pods_are_reasons() {
        let img = image();
        let none = ImageConfig { entrypoint: vec![], cmd: vec![], ..image() };
        let cases: Vec<(Pod, &ImageConfig, &str)> = vec![
            (pod_of(vec![]), &img, "1 to 16 containers"),
            (pod_of(vec![with_limits("a", Some("lots"), None)]), &img, "memory limit"),
            (pod_of(vec![with_limits("a", None, Some("-x"))]), &img, "cpu limit"),
            (pod_of(vec![with_limits("a", Some("5Gi"), None)]), &img, "more than a pod VM's"),
            (pod_of(vec![with_limits("a", Some("99999999999999999999Ei"), None)]), &img, "memory limit"),
            (pod_of(vec![ctr("a")]), &none, "no command"),
            (pod_of(vec![ctr("a"), ctr("a")]), &img, "two containers"),
            (pod_of(vec![ctr("Bad Name")]), &img, "bad container name"),
            (pod_of((0..17).map(|i| ctr(&format!("c{i}"))).collect()), &img, "1 to 16"),
        ];
        for (p, i, want) in cases {
            let e = plan(&p, "x", |_| Ok(i)).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        let e = plan(&pod_of(vec![ctr("a")]), "x", |_| Err(String::from("not in the store"))).unwrap_err();
        assert_eq!(e, "not in the store");
    }

    #[test]
    fn vm_names_fit_the_console() {
        assert_eq!(vm_name("default", "hello", "u"), "default.hello");
        let long = "p".repeat(60);
        assert_eq!(vm_name("default", &long, "u"), long);
        assert_eq!(vm_name("default", &"p".repeat(70), "0a1b-2c3d-4e5f-6789"), "pod-0a1b2c3d4e5f");
    }
}
