//! Failures in a `cargo xtask cluster up --nodes 2 --smp 2` cluster, judged through the real
//! kubectl and the nodes' consoles, one boot for every scenario, in this order:
//!
//! 1. kubectl delete returns every frame: the free-frame count n1 prints when a `sleep 3600`
//!    pod's VM is released is the count it printed before the VM was built, once the frames
//!    the kernel's heap took meanwhile (printed beside it) are counted;
//! 2. busy-loop pods on every CPU of n1 do not make it NotReady: for 60 s it stays Ready
//!    and its Lease's renewTime keeps moving;
//! 3. the control plane is SIGKILLed: `cluster up` says so and restarts it on the same state
//!    and port, both nodes come back Ready as the same Node objects, a running pod is not
//!    restarted, a finished pod's status is intact, a pod created afterwards runs, and each
//!    pod exists (and ran its VM) once;
//! 4. n2's emulator is killed: `cluster up` reports it and runs on, and n2 turns NotReady
//!    (Ready=Unknown, NodeStatusUnknown) after the control plane's grace period while n1
//!    stays Ready.
//!
//! Finally a SIGTERM stops the run with status 0 and leaves nothing running.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use regex::Regex;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tests::cluster::unix_seconds;
use tests::emulator_slot;
use tests::up::{
    apply_pod, build_cluster_parts, get_json, kubectl, pod_yaml, try_kubectl, wait_pod, Up, POD_TIMEOUT,
};

/// The control plane's node grace period (control-plane/src/scheduler.rs `NODE_GRACE`).
const NODE_GRACE: Duration = Duration::from_secs(50);
/// How long a node's agent waits between Lease renewals.
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How long the spinning pods run while the node is watched.
const SPIN_WATCH: Duration = Duration::from_secs(60);
/// How long `cluster up` may take to notice an ended process and say so.
const REPORT_TIMEOUT: Duration = Duration::from_secs(15);

/// The number in `line` after `key=`.
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(&format!("{key}="))? + key.len() + 1..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The number after `(pid ` in `line`.
fn pid_in(line: &str) -> Option<i32> {
    let rest = &line[line.find("(pid ")? + 5..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The pid in a `cluster up` line holding `needle` followed by a number.
fn pid_after(up: &mut Up, needle: &str) -> i32 {
    let line = up.wait_line_containing(needle, REPORT_TIMEOUT);
    let at = line.find(needle).map_or(0, |i| i + needle.len());
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid after {needle:?} in {line:?}\n{}", up.output()))
}

/// Whether process `pid` still runs a command line containing `marker` (so a reused pid is
/// never signalled).
fn runs(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
}

/// SIGKILL to a process `cluster up` started, after checking it is still that process.
fn sigkill(up: &Up, pid: i32, marker: &str) {
    assert!(runs(pid, marker), "pid {pid} does not run {marker:?}\n{}", up.output());
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap_or_else(|e| panic!("SIGKILL to {pid}: {e}"));
}

/// Node `name`'s Ready condition (status, reason), or what went wrong.
fn ready(kubeconfig: &str, name: &str) -> Result<(String, String), String> {
    let n = get_json(kubeconfig, &["node", name])?;
    let c = n["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .ok_or_else(|| format!("node {name} has no Ready condition: {n}"))?;
    Ok((c["status"].as_str().unwrap_or("").to_string(), c["reason"].as_str().unwrap_or("").to_string()))
}

/// Node `name`'s Lease renewTime.
fn renew_time(kubeconfig: &str, name: &str) -> Result<String, String> {
    try_kubectl(
        kubeconfig,
        &["get", "lease", "-n", "kube-node-lease", name, "-o", "jsonpath={.spec.renewTime}"],
    )
    .map(|s| s.trim().to_string())
}

/// Polls `probe` every second until it yields a value; a failure after `timeout` shows
/// what it last saw and everything `cluster up` printed.
#[track_caller]
fn wait_until<T>(up: &Up, what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last seen:\n{last}\n{}", up.output())
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// The start line `cluster up` echoes from `node` for the pod VM of pod `name` (namespace
/// default): its VM index and the frame counts before it was built.
fn vm_start(up: &mut Up, node: &str, name: &str) -> (u64, u64, u64) {
    let re = Regex::new(&format!(
        r"^{node}\| node: pod VM vm(\d+) for default\.{name} starts: frames_free=(\d+) kernel_frames=(\d+)$"
    ))
    .expect("the start line pattern is valid");
    let line =
        up.wait_for(|l| re.is_match(l), &format!("the start line of {name}'s VM on {node}"), POD_TIMEOUT);
    let c = re.captures(&line).expect("the line matched");
    let n = |i: usize| c[i].parse::<u64>().expect("digits");
    (n(1), n(2), n(3))
}

/// The release line of VM `vm` on `node`: the frame counts once it is gone.
fn vm_released(up: &mut Up, node: &str, vm: u64) -> (u64, u64) {
    let prefix = format!("{node}| node: pod VM vm{vm} released: ");
    let line = up.wait_line(&prefix, POD_TIMEOUT);
    let get = |k: &str| field(&line, k).unwrap_or_else(|| panic!("no {k} in {line:?}"));
    (get("frames_free"), get("kernel_frames"))
}

/// How many VM start lines pod `name` got on any node.
fn vm_starts(up: &Up, name: &str) -> usize {
    let needle = format!(" for default.{name} starts: ");
    up.lines().iter().filter(|l| l.contains("| node: pod VM vm") && l.contains(&needle)).count()
}

/// 1: a pod VM's frames all come back when kubectl deletes its pod.
fn delete_returns_every_frame(up: &mut Up, kc: &str) {
    let yaml = pod_yaml("frames", "Never", 5, "busybox", "echo frames pod running; sleep 3600", Some("n1"));
    apply_pod(kc, &yaml, "frames");
    let (vm, free_before, kernel_before) = vm_start(up, "n1", "frames");
    wait_pod(up, kc, "frames", "{.status.phase}", "Running", |p| p == "Running");
    up.wait_line_containing("n1| default.frames/main> frames pod running", POD_TIMEOUT);
    kubectl(kc, &["delete", "pod", "frames", "--timeout=60s"]);
    let (free_after, kernel_after) = vm_released(up, "n1", vm);
    // The heap grows by mapping fresh frames and never shrinks: what it took while the pod
    // ran is not free any more, and is not the VM's either.
    let heap_grew = kernel_after.checked_sub(kernel_before).unwrap_or_else(|| {
        panic!("kernel_frames went down from {kernel_before} to {kernel_after}\n{}", up.output())
    });
    eprintln!(
        "frames: vm{vm} before {free_before} free ({kernel_before} kernel), after {free_after} free \
         ({kernel_after} kernel, heap grew {heap_grew})"
    );
    assert_eq!(
        free_after + heap_grew,
        free_before,
        "vm{vm} on n1 did not return every frame: {free_before} free before it, {free_after} after it \
         with {heap_grew} taken by the kernel's heap meanwhile\n{}",
        up.output()
    );
}

/// 2: busy-loop pods on every CPU of n1 leave it Ready, its Lease renewed.
fn spinning_pods_leave_the_node_ready(up: &mut Up, kc: &str) {
    // One pod more than n1 has CPUs, so each CPU has a spinning vCPU whatever the placement.
    let pods = ["spin-1", "spin-2", "spin-3"];
    for name in pods {
        let yaml = pod_yaml(name, "Never", 5, "busybox", "echo spinning; while :; do :; done", Some("n1"));
        apply_pod(kc, &yaml, name);
    }
    let mut vms = Vec::new();
    for name in pods {
        vms.push(vm_start(up, "n1", name).0);
        up.wait_line_containing(&format!("n1| default.{name}/main> spinning"), POD_TIMEOUT);
        wait_pod(up, kc, name, "{.status.phase}", "Running", |p| p == "Running");
    }
    let started = Instant::now();
    let mut last = renew_time(kc, "n1").unwrap_or_default();
    let mut last_change = Instant::now();
    let mut renewals = Vec::new();
    let mut longest = Duration::ZERO;
    while started.elapsed() < SPIN_WATCH {
        std::thread::sleep(Duration::from_secs(2));
        let (status, reason) = ready(kc, "n1").unwrap_or_else(|e| panic!("reading n1: {e}\n{}", up.output()));
        assert_eq!(
            status,
            "True",
            "n1 is not Ready ({reason}) {:?} into the spin\n{}",
            started.elapsed(),
            up.output()
        );
        let renew =
            renew_time(kc, "n1").unwrap_or_else(|e| panic!("reading n1's lease: {e}\n{}", up.output()));
        if renew != last {
            renewals.push(renew.clone());
            last = renew;
            last_change = Instant::now();
        }
        longest = longest.max(last_change.elapsed());
        assert!(
            last_change.elapsed() < 3 * LEASE_RENEW,
            "n1's lease renewTime stuck at {last} for {:?} while its CPUs spin (renewals {renewals:?})\n{}",
            last_change.elapsed(),
            up.output()
        );
    }
    eprintln!("spin: n1 Ready for {SPIN_WATCH:?}; lease renewals {renewals:?}, longest gap seen {longest:?}");
    let want = SPIN_WATCH.as_secs() / LEASE_RENEW.as_secs() - 2;
    assert!(
        renewals.len() as u64 >= want,
        "only {} lease renewals in {SPIN_WATCH:?} ({renewals:?}); expected at least {want}\n{}",
        renewals.len(),
        up.output()
    );
    let mut args = vec!["delete", "pod"];
    args.extend(pods);
    args.push("--timeout=90s");
    kubectl(kc, &args);
    for vm in vms {
        vm_released(up, "n1", vm);
    }
}

/// The container status fields that must survive a control plane restart.
fn container_facts(pod: &Value) -> BTreeMap<&'static str, Value> {
    let c = &pod["status"]["containerStatuses"][0];
    BTreeMap::from([
        ("phase", pod["status"]["phase"].clone()),
        ("containerID", c["containerID"].clone()),
        ("restartCount", c["restartCount"].clone()),
        ("state", c["state"].clone()),
        ("nodeName", pod["spec"]["nodeName"].clone()),
        ("uid", pod["metadata"]["uid"].clone()),
    ])
}

/// 3: the control plane is killed and `cluster up` restarts it; nothing is lost or doubled.
fn control_plane_restart_loses_and_duplicates_nothing(up: &mut Up, kc: &str) {
    apply_pod(
        kc,
        &pod_yaml("long", "Never", 5, "busybox", "echo long runner; sleep 3600", Some("n2")),
        "long",
    );
    apply_pod(
        kc,
        &pod_yaml("finisher", "Never", 5, "busybox", "echo finishing; exit 0", Some("n1")),
        "finisher",
    );
    wait_pod(up, kc, "long", "{.status.phase}", "Running", |p| p == "Running");
    wait_pod(up, kc, "finisher", "{.status.phase}", "Succeeded", |p| p == "Succeeded");
    up.wait_line_containing("n2| default.long/main> long runner", POD_TIMEOUT);
    let uid = |n: &str| get_json(kc, &["node", n]).map(|v| v["metadata"]["uid"].clone()).expect("a node");
    let uids = (uid("n1"), uid("n2"));
    let long = container_facts(&get_json(kc, &["pod", "long"]).expect("pod long"));
    let finisher = container_facts(&get_json(kc, &["pod", "finisher"]).expect("pod finisher"));
    assert_eq!(long["restartCount"], 0, "{long:?}");
    assert!(long["state"]["running"]["startedAt"].is_string(), "{long:?}");
    assert_eq!(finisher["state"]["terminated"]["exitCode"], 0, "{finisher:?}");

    // `cluster: control plane ready: URL (pid N, state DIR, log FILE)`.
    let ready_line = up.wait_line("cluster: control plane ready: ", REPORT_TIMEOUT);
    let url = ready_line.split_whitespace().nth(4).unwrap_or_default().to_string();
    let pid = pid_in(&ready_line).unwrap_or_else(|| panic!("no pid in {ready_line:?}"));
    let mark = up.line_count();
    let killed_at = Instant::now();
    sigkill(up, pid, "control-plane");
    let exited = format!("cluster: the control plane (pid {pid}) exited (signal: 9 (SIGKILL))");
    up.wait_for_from(mark, |l| l.starts_with(&exited), &format!("`{exited}`"), REPORT_TIMEOUT);
    let again = up.wait_for_from(
        mark,
        |l| l.starts_with("cluster: control plane ready again: "),
        "the restart",
        POD_TIMEOUT,
    );
    assert!(again.contains(&format!("ready again: {url} (pid ")), "another address: {again} (was {url})");
    let new_pid = pid_in(&again).unwrap_or(0);
    assert!(new_pid > 0 && new_pid != pid, "{again} (was pid {pid})");
    eprintln!("control plane: pid {pid} killed, {again} after {:?}", killed_at.elapsed());
    let back = wait_until(up, "kubectl answers again", POD_TIMEOUT, || {
        try_kubectl(kc, &["get", "--raw", "/readyz"])
    });
    assert!(back.contains("ok"), "{back}");

    // Both nodes renew their Leases on the new server, as the same Node objects, and are Ready.
    let restarted_at = now_secs();
    for node in ["n1", "n2"] {
        wait_until(up, &format!("{node}'s lease renewed after the restart"), Duration::from_secs(90), || {
            let t = renew_time(kc, node)?;
            match unix_seconds(&t) {
                Some(s) if s >= restarted_at => Ok(()),
                _ => Err(format!("renewTime {t}, restarted at {restarted_at}")),
            }
        });
        let ready_now = || match ready(kc, node)? {
            (s, _) if s == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        };
        wait_until(up, &format!("{node} Ready after the restart"), Duration::from_secs(60), ready_now);
    }
    assert_eq!((uid("n1"), uid("n2")), uids, "a node was registered anew\n{}", up.output());
    let names = kubectl(kc, &["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(names.split_whitespace().collect::<Vec<_>>(), ["n1", "n2"], "{names}");

    // The running pod was not restarted; the finished one kept its status.
    let long_now = container_facts(&get_json(kc, &["pod", "long"]).expect("pod long"));
    assert_eq!(long_now, long, "pod long changed across the restart\n{}", up.output());
    let finisher_now = container_facts(&get_json(kc, &["pod", "finisher"]).expect("pod finisher"));
    assert_eq!(finisher_now, finisher, "pod finisher changed across the restart\n{}", up.output());

    // The nodes' watches broke with the server; a pod created now is run.
    apply_pod(kc, &pod_yaml("after", "Never", 5, "busybox", "echo after the restart; exit 0", None), "after");
    wait_pod(up, kc, "after", "{.status.phase}", "Succeeded", |p| p == "Succeeded");
    let code = kubectl(
        kc,
        &["get", "pod", "after", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"],
    );
    assert_eq!(code, "0", "exit code of after");

    // Each pod exists once, and each ran in one VM on one node.
    let listed =
        kubectl(kc, &["get", "pods", "-o", "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}"]);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in listed.lines() {
        *counts.entry(n).or_default() += 1;
    }
    for name in ["long", "finisher", "after"] {
        assert_eq!(counts.get(name), Some(&1), "pod {name} in the list:\n{listed}");
        assert_eq!(vm_starts(up, name), 1, "pod {name}'s VM starts on the consoles\n{}", up.output());
    }
    assert!(counts.values().all(|&c| c == 1), "a pod is listed twice:\n{listed}");

    // No event about these pods was posted twice.
    let events = get_json(kc, &["events"]).expect("events");
    let mut groups: BTreeMap<(String, String), (usize, i64)> = BTreeMap::new();
    for e in events["items"].as_array().into_iter().flatten() {
        let name = e["involvedObject"]["name"].as_str().unwrap_or("").to_string();
        if !["long", "finisher", "after"].contains(&name.as_str()) {
            continue;
        }
        let g = groups.entry((name, e["reason"].as_str().unwrap_or("").to_string())).or_default();
        g.0 += 1;
        g.1 += e["count"].as_i64().unwrap_or(1);
    }
    for pod in ["long", "finisher", "after"] {
        let g = groups.get(&(pod.to_string(), "Started".to_string()));
        assert_eq!(g, Some(&(1, 1)), "{pod}'s Started events: {g:?}\n{groups:?}");
    }
    for ((name, reason), (objects, count)) in &groups {
        assert!(
            *objects == 1 && *count == 1,
            "{name} {reason}: {objects} objects, count {count}\n{groups:?}"
        );
    }
    kubectl(kc, &["delete", "pod", "long", "finisher", "after", "--timeout=60s"]);
}

/// 4: n2 is powered off (its emulator killed): `cluster up` says so and runs on, and n2
/// turns NotReady after the grace period while n1 stays Ready.
fn powered_off_node_becomes_not_ready(up: &mut Up, kc: &str) {
    let pid = pid_after(up, "cluster: n2: QEMU pid ");
    let n1_pid = pid_after(up, "cluster: n1: QEMU pid ");
    assert_eq!(ready(kc, "n2").map(|r| r.0), Ok("True".to_string()), "n2 before the power-off");
    let mark = up.line_count();
    let killed_at = Instant::now();
    sigkill(up, pid, "qemu-system-x86_64");
    let ended =
        format!("cluster: node n2's emulator (pid {pid}) exited (signal: 9 (SIGKILL)); the others run on");
    up.wait_for_from(mark, |l| l.starts_with(&ended), &format!("`{ended}`"), REPORT_TIMEOUT);
    let (status, reason) =
        wait_until(up, "n2 NotReady", NODE_GRACE + Duration::from_secs(40), || match ready(kc, "n2")? {
            (s, r) if s == "Unknown" => Ok((s, r)),
            other => Err(format!("n2 Ready={other:?} {:?} after the power-off", killed_at.elapsed())),
        });
    let after = killed_at.elapsed();
    assert_eq!(reason, "NodeStatusUnknown", "n2's Ready reason");
    eprintln!("power-off: n2 Ready={status} ({reason}) {after:?} after its emulator was killed");
    // Its last renewal was at most one renewal period before the kill.
    assert!(
        after + LEASE_RENEW + Duration::from_secs(2) >= NODE_GRACE,
        "n2 was NotReady {after:?} after the power-off, before the {NODE_GRACE:?} grace period\n{}",
        up.output()
    );
    let table = kubectl(kc, &["get", "nodes"]);
    let row = |n: &str| table.lines().find(|l| l.starts_with(&format!("{n} "))).unwrap_or("").to_string();
    assert!(row("n2").split_whitespace().nth(1) == Some("NotReady"), "kubectl get nodes:\n{table}");
    assert!(row("n1").split_whitespace().nth(1) == Some("Ready"), "kubectl get nodes:\n{table}");
    assert!(up.exited().is_none(), "cluster up ended with n2:\n{}", up.output());
    assert!(runs(n1_pid, "qemu-system-x86_64"), "n1's emulator is gone too\n{}", up.output());
    assert!(!runs(pid, "qemu-system-x86_64"), "n2's emulator still runs");
}

/// Seconds since the epoch now.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Runs one scenario and says how long it took.
fn scenario(name: &str, f: impl FnOnce()) {
    let started = Instant::now();
    eprintln!("scenario: {name} ...");
    f();
    eprintln!("scenario: {name} ok in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn node_failures_in_a_two_node_cluster() {
    build_cluster_parts();
    let _slot = emulator_slot();
    let started = Instant::now();
    let mut up = Up::start(&["--nodes", "2", "--smp", "2"]);
    let kc = up.kubeconfig();
    eprintln!("scenario: cluster up in {:.1} s", started.elapsed().as_secs_f64());
    scenario("delete returns every frame", || delete_returns_every_frame(&mut up, &kc));
    scenario("spinning pods leave the node Ready", || spinning_pods_leave_the_node_ready(&mut up, &kc));
    scenario("control plane restart", || control_plane_restart_loses_and_duplicates_nothing(&mut up, &kc));
    scenario("powered-off node", || powered_off_node_becomes_not_ready(&mut up, &kc));

    up.stop_cleanly(2);
    eprintln!("scenario: all in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn fields_and_times_are_read() {
    assert_eq!(field("node: pod VM vm3 released: frames_free=120 kernel_frames=7", "frames_free"), Some(120));
    assert_eq!(field("a kernel_frames=7", "kernel_frames"), Some(7));
    assert_eq!(field("a b=", "b"), None);
    assert_eq!(pid_in("cluster: control plane ready: https://127.0.0.1:1 (pid 42, state d)"), Some(42));
    assert_eq!(pid_in("no pid"), None);
    assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(unix_seconds("2024-12-11T10:00:10.123456Z"), Some(1_733_911_210));
    assert_eq!(unix_seconds("garbage"), None);
}
