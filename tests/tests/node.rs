//! The node's cluster configuration: made from the real control plane's node kubeconfig,
//! handed to the kernel as a boot module (QEMU's PVH `-initrd`, or `/boot/node.cfg` on the
//! GRUB ISO under UEFI), reported on the console without its token; a malformed one is
//! reported with its reason and the node runs on. With a forward to the control plane, the
//! node reaches its API server over TLS with its token, and refuses a wrong CA or name.

use qemu::emulator::Uefi;
use qemu::node::{from_kubeconfig, write_module, Reach};
use qemu::{image, Machine, Network, NicModel, Qemu};
use std::process::Stdio;
use tests::cluster::{ControlPlane, TempDir};
use tests::{emulator_slot, kernel, ok, QEMU_TIMEOUT};

/// The node configuration for `name` from a running control plane, as a node under QEMU
/// reaches it: through the forward at 10.0.2.100, verifying the certificate's 127.0.0.1.
fn config_for(cp: &ControlPlane, name: &str) -> kubelet_lite::nodecfg::NodeBootConfig {
    let port = cp.listen_addr().rsplit(':').next().unwrap().to_string();
    let reach = Reach {
        server: Some(format!("https://10.0.2.100:{port}")),
        tls_server_name: Some("127.0.0.1".into()),
    };
    ok(from_kubeconfig(&cp.dir.join("nodes").join(format!("{name}.kubeconfig")), name, &reach))
}

fn expected_line(c: &kubelet_lite::nodecfg::NodeBootConfig) -> String {
    format!(
        "node: {}, API server {} (certificate name 127.0.0.1), CA 1 certificate, token {} bytes",
        c.node_name,
        c.server,
        c.token.len()
    )
}

#[test]
fn a_node_reads_its_cluster_configuration_from_a_boot_module() {
    let dir = TempDir::new("node-cfg");
    let cp = ControlPlane::start_with_args(&dir.0, "127.0.0.1:0", Stdio::null(), &["--node", "n1"]);
    let c = config_for(&cp, "n1");
    let module = ok(write_module(&c));
    let node = Qemu {
        smp: 2,
        initrd: Some(module),
        net: Some(Network::new(NicModel::VirtioNet)),
        ..Qemu::new(kernel())
    };
    let _slot = emulator_slot();
    let mut m = ok(Machine::qemu("node-cfg", &node));
    ok(m.wait_for_str(&expected_line(&c), QEMU_TIMEOUT));
    // The node goes on to its network, and does not take the module for a guest.
    ok(m.wait_for_str("net: virtio-net 52:54:00:12:34:56 10.0.2.15/24", QEMU_TIMEOUT));
    let out = m.stop();
    out.check(!out.console().any(|l| l.contains(&c.token)), "the token was printed");
    out.check(!out.console().any(|l| l.starts_with("vm")), "the configuration was run as a guest");
}

#[test]
fn a_malformed_configuration_is_reported_and_the_node_runs_on() {
    let dir = TempDir::new("node-bad");
    let bad = [
        (&b"CRXNODE1\n{\"nodeName\":\"n1\"}"[..], "malformed: missing field `server`"),
        (
            &b"CRXNODE1\n{\"nodeName\":\"n1\",\"server\":\"http://10.0.2.100:6443\",\"certificateAuthority\":\"x\",\"token\":\"t\"}"[..],
            "server: must start with https://",
        ),
    ];
    for (i, (bytes, why)) in bad.iter().enumerate() {
        let path = dir.0.join(format!("bad{i}.cfg"));
        std::fs::write(&path, bytes).unwrap();
        let node = Qemu {
            smp: 2,
            initrd: Some(path),
            net: Some(Network::new(NicModel::E1000)),
            ..Qemu::new(kernel())
        };
        let _slot = emulator_slot();
        let mut m = ok(Machine::qemu(&format!("node-bad{i}"), &node));
        let line = ok(m.wait_for_str(
            &format!("node: boot module 0 is a malformed node configuration: {why}"),
            QEMU_TIMEOUT,
        ));
        assert!(line.text.ends_with("; not joining a cluster"), "{}", line.text);
        ok(m.wait_for_str("net: e1000 52:54:00:12:34:56 10.0.2.15/24", QEMU_TIMEOUT));
        m.stop();
    }
}

#[test]
fn the_iso_carries_the_configuration_to_a_uefi_machine() {
    let dir = TempDir::new("node-iso");
    let cp = ControlPlane::start_with_args(&dir.0, "127.0.0.1:0", Stdio::null(), &["--node", "iso-node"]);
    let c = config_for(&cp, "iso-node");
    let module = ok(write_module(&c));
    let iso = image::target_dir().join("test-iso").join("node-cfg.iso");
    ok(image::build_iso_with_modules(kernel(), "", &[("node.cfg", &module)], &iso));
    let node = Qemu { uefi: Some(ok(Uefi::new("node-iso", &iso))), ..Qemu::new(kernel()) };
    let _slot = emulator_slot();
    let mut m = ok(Machine::qemu("node-iso", &node));
    ok(m.wait_for_str(&expected_line(&c), QEMU_TIMEOUT));
    ok(m.wait_for_str("net: no network card found", QEMU_TIMEOUT));
    let out = m.stop();
    out.check(!out.console().any(|l| l.contains(&c.token)), "the token was printed");
}

/// Boots a node with `config` and a forward from 10.0.2.100:PORT to the control plane, and
/// returns the `node: API server ...` line.
fn api_line(cp: &ControlPlane, name: &str, c: &kubelet_lite::nodecfg::NodeBootConfig) -> String {
    api_lines(cp, name, c, None).0
}

/// As [`api_line`], then waits for a console line containing `then` and returns it too.
fn api_lines(
    cp: &ControlPlane,
    name: &str,
    c: &kubelet_lite::nodecfg::NodeBootConfig,
    then: Option<&str>,
) -> (String, String) {
    let port: u16 = cp.listen_addr().rsplit(':').next().unwrap().parse().unwrap();
    let module = ok(write_module(c));
    let mut net = Network::new(NicModel::VirtioNet);
    net.guest_forwards.push((port, port));
    let node = Qemu { smp: 2, initrd: Some(module), net: Some(net), ..Qemu::new(kernel()) };
    let _slot = emulator_slot();
    let mut m = ok(Machine::qemu(name, &node));
    let line = ok(m.wait_for_str(&format!("node: API server {}: ", c.server), QEMU_TIMEOUT));
    let second = then.map(|t| ok(m.wait_for_str(t, QEMU_TIMEOUT)).text).unwrap_or_default();
    let out = m.stop();
    out.check(!out.console().any(|l| l.contains(&c.token)), "the token was printed");
    (line.text, second)
}

#[test]
fn the_node_reaches_its_api_server_over_tls_and_refuses_impostors() {
    let dir = TempDir::new("node-api");
    let cp = ControlPlane::start_with_args(&dir.0, "127.0.0.1:0", Stdio::null(), &["--node", "api-1"]);
    let good = config_for(&cp, "api-1");
    // Not registered yet: the server knows the node's token and says there is no such Node.
    let line = api_line(&cp, "node-api", &good);
    assert!(
        line.ends_with(r#"TLSv1.3, GET /api/v1/nodes/api-1: 404 Not Found: nodes "api-1" not found"#)
            && line.contains(&good.server),
        "{line}"
    );
    // A token the server does not know: its refusal, with its message.
    let wrong_token =
        kubelet_lite::nodecfg::NodeBootConfig { token: "api-1.not-the-token".into(), ..good.clone() };
    let (line, agent) = api_lines(&cp, "node-api-token", &wrong_token, Some("node: API server refuses "));
    assert!(line.contains(": 401 Unauthorized"), "{line}");
    // The agent says so once, and keeps trying with back-off.
    assert!(agent.ends_with("refuses RegisterNode: 401 Unauthorized: Unauthorized"), "{agent}");
    // Another cluster's CA: no connection.
    let other_dir = TempDir::new("node-api-other");
    let other =
        ControlPlane::start_with_args(&other_dir.0, "127.0.0.1:0", Stdio::null(), &["--node", "api-1"]);
    let wrong_ca = kubelet_lite::nodecfg::NodeBootConfig {
        certificate_authority: config_for(&other, "api-1").certificate_authority,
        ..good.clone()
    };
    let line = api_line(&cp, "node-api-ca", &wrong_ca);
    // Both clusters' CAs carry the same name, so the chain fails on the signature.
    assert!(line.contains("TLS: tls: invalid peer certificate: BadSignature"), "{line}");
    // A name the certificate does not carry: no connection.
    let wrong_name =
        kubelet_lite::nodecfg::NodeBootConfig { tls_server_name: Some("api.elsewhere.test".into()), ..good };
    let line = api_line(&cp, "node-api-name", &wrong_name);
    assert!(line.contains("TLS: ") && line.contains("NotValidForName"), "{line}");
}

#[test]
fn the_node_registers_and_keeps_its_lease() {
    use tests::cluster::kubectl_ok;
    let dir = TempDir::new("node-join");
    let cp = ControlPlane::start_with_args(&dir.0, "127.0.0.1:0", Stdio::null(), &["--node", "join-1"]);
    let c = config_for(&cp, "join-1");
    let port: u16 = cp.listen_addr().rsplit(':').next().unwrap().parse().unwrap();
    let mut net = Network::new(NicModel::VirtioNet);
    net.guest_forwards.push((port, port));
    let node = Qemu { smp: 2, initrd: Some(ok(write_module(&c))), net: Some(net), ..Qemu::new(kernel()) };
    let _slot = emulator_slot();
    let mut m = ok(Machine::qemu("node-join", &node));
    ok(m.wait_for_str("node: registered join-1 (uid ", QEMU_TIMEOUT));
    // kubectl sees it Ready, with the machine's CPUs and no room for pods yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ready = loop {
        let s = kubectl_ok(
            &cp,
            &["get", "node", "join-1", "-o", r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#],
        );
        if s == "True" || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    assert_eq!(ready, "True", "the node never became Ready\n{}", m.log());
    let cap = kubectl_ok(
        &cp,
        &["get", "node", "join-1", "-o", "jsonpath={.status.capacity.cpu} {.status.capacity.pods}"],
    );
    // A node that runs pod VMs admits the kubelet's default of 110 pods.
    assert_eq!(cap, "2 110");
    let lease = |cp: &ControlPlane| {
        let o = tests::cluster::kubectl(
            cp,
            &["get", "lease", "-n", "kube-node-lease", "join-1", "-o", "jsonpath={.spec.renewTime}"],
        );
        o.ok.then_some(o.stdout)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let first = loop {
        match lease(&cp) {
            Some(t) => break t,
            None if std::time::Instant::now() > deadline => panic!("no lease after 30 s\n{}", m.log()),
            None => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while lease(&cp).as_ref() == Some(&first) {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease was not renewed in 40 s (still {first})\n{}",
            m.log()
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let out = m.stop();
    out.check(!out.console().any(|l| l.contains(&c.token)), "the token was printed");
}

#[test]
fn a_cpu_without_a_random_source_makes_no_keys() {
    let dir = TempDir::new("node-nornd");
    let cp = ControlPlane::start_with_args(&dir.0, "127.0.0.1:0", Stdio::null(), &["--node", "nornd-1"]);
    let c = config_for(&cp, "nornd-1");
    let node = Qemu {
        smp: 2,
        // TCG's qemu64 without +rdrand has neither RDRAND nor RDSEED.
        cpu: "qemu64,+svm,+npt".into(),
        initrd: Some(ok(write_module(&c))),
        net: Some(Network::new(NicModel::VirtioNet)),
        ..Qemu::new(kernel())
    };
    let _slot = emulator_slot();
    let mut m = ok(Machine::qemu("node-nornd", &node));
    ok(m.wait_for_str(
        &format!(
            "node: API server {}: TLS: this CPU has neither RDSEED nor RDRAND, and without them the node has no \
             unpredictable keys; not connecting",
            c.server
        ),
        QEMU_TIMEOUT,
    ));
    let line = ok(m.wait_for_str("; not joining the cluster", QEMU_TIMEOUT));
    assert!(line.text.starts_with("node: "), "{}", line.text);
    m.stop();
}

#[test]
fn the_node_stays_ready_while_spinning_vms_fill_every_cpu() {
    use tests::cluster::kubectl_ok;
    let dir = TempDir::new("node-busy");
    let cp = ControlPlane::start_with_args(&dir.0, "127.0.0.1:0", Stdio::null(), &["--node", "busy-1"]);
    let c = config_for(&cp, "busy-1");
    let port: u16 = cp.listen_addr().rsplit(':').next().unwrap().parse().unwrap();
    // The ISO holds the node configuration and the `spin` guest, four of which spin on the
    // node's four CPUs for as long as it runs.
    tests::guests_dir();
    let spin = image::guest_path("spin");
    let module = ok(write_module(&c));
    let iso = image::target_dir().join("test-iso").join("node-busy.iso");
    ok(image::build_iso_with_modules(
        kernel(),
        "vm.count=4",
        &[("node.cfg", &module), ("spin", &spin)],
        &iso,
    ));
    let mut net = Network::new(NicModel::VirtioNet);
    net.guest_forwards.push((port, port));
    let node = Qemu { uefi: Some(ok(Uefi::new("node-busy", &iso))), net: Some(net), ..Qemu::new(kernel()) };
    assert_eq!(node.smp, 4);
    let _slot = emulator_slot();
    let mut m = ok(Machine::qemu("node-busy", &node));
    ok(m.wait_for_str("node: registered busy-1 (uid ", QEMU_TIMEOUT));
    let ready = || {
        kubectl_ok(
            &cp,
            &["get", "node", "busy-1", "-o", r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#],
        )
    };
    let renew = || {
        let o = tests::cluster::kubectl(
            &cp,
            &["get", "lease", "-n", "kube-node-lease", "busy-1", "-o", "jsonpath={.spec.renewTime}"],
        );
        o.ok.then_some(o.stdout)
    };
    // For 45 s the lease keeps moving (the agent renews it every 10 s) and the node stays
    // Ready, while every CPU has a spinning VM to run.
    let start = std::time::Instant::now();
    let mut renewals = std::collections::BTreeSet::new();
    while start.elapsed() < std::time::Duration::from_secs(45) {
        if let Some(t) = renew() {
            renewals.insert(t);
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    let out_ready = ready();
    let log = m.log();
    for i in 0..4 {
        assert!(log.contains(&format!("vm{i}> spinning")), "vm{i} did not start spinning\n{log}");
    }
    assert!(!log.contains("vms: "), "the spinning VMs ended\n{log}");
    assert!(
        renewals.len() >= 3,
        "the lease was renewed {} times in 45 s: {renewals:?}\n{log}",
        renewals.len()
    );
    assert_eq!(out_ready, "True", "the node is not Ready beside the spinning VMs\n{log}");
    m.stop();
}
