//! The node's network under QEMU's restricted user networking: each card gets a DHCP lease,
//! reaches a host server only through a forward, and takes a static configuration; bad
//! settings are refused with a reason. Bochs's e1000 is in bochs.rs.

use qemu::{Machine, Network, NicModel, Qemu};
use regex::Regex;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use tests::{emulator_slot, kernel, ok, QEMU_TIMEOUT};

/// A host HTTP server on 127.0.0.1 that answers every connection with one line and
/// records each request line it gets.
struct HostServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HostServer {
    fn start(answer: &'static str) -> HostServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a host port");
        let port = listener.local_addr().expect("local address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
                let mut line = String::new();
                let _ = BufReader::new(&conn).read_line(&mut line);
                seen.lock().unwrap().push(line.trim_end().to_string());
                let _ = conn.write_all(format!("{answer}\r\n\r\n").as_bytes());
            }
        });
        HostServer { port, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn node(net: Network, cmdline: &str) -> Qemu {
    Qemu { smp: 2, cmdline: cmdline.into(), net: Some(net), ..Qemu::new(kernel()) }
}

/// The lease of restricted user networking: slirp then leaves out the router and DNS
/// options, as the guest may reach neither.
fn lease_line(driver: &str) -> Regex {
    Regex::new(&format!(r"^net: {driver} 52:54:00:12:34:56 10\.0\.2\.15/24 no gateway dns none \(dhcp\)$"))
        .unwrap()
}

/// Boots with `model`, a forward from 10.0.2.100:80 to a host server, and
/// `net.check=10.0.2.100:80`: the lease line, then the server's answer on the console.
fn lease_and_forward(model: NicModel, driver: &str) {
    let server = HostServer::start("HTTP/1.0 200 OK from the host");
    let mut net = Network::new(model);
    net.guest_forwards.push((80, server.port));
    let _slot = emulator_slot();
    let mut m = ok(Machine::qemu(&format!("net-{driver}"), &node(net, "net.check=10.0.2.100:80")));
    ok(m.wait_for_regex(&lease_line(driver), QEMU_TIMEOUT));
    let answer = Regex::new(
        r#"^net: check 10\.0\.2\.100:80: connected in \d+ ms, answer "HTTP/1\.0 200 OK from the host"$"#,
    )
    .unwrap();
    ok(m.wait_for_regex(&answer, QEMU_TIMEOUT));
    let out = m.stop();
    let got = server.requests();
    out.check(got == ["GET / HTTP/1.0"], &format!("the host server saw {got:?}"));
}

#[test]
fn virtio_net_gets_a_lease_and_reaches_a_forwarded_host_server() {
    lease_and_forward(NicModel::VirtioNet, "virtio-net");
}

#[test]
fn e1000_gets_a_lease_and_reaches_a_forwarded_host_server() {
    lease_and_forward(NicModel::E1000, "e1000");
}

#[test]
fn a_host_port_that_is_not_forwarded_is_out_of_reach() {
    let server = HostServer::start("HTTP/1.0 200 OK");
    let cmdline = format!("net.check=10.0.2.2:{}", server.port);
    let _slot = emulator_slot();
    let mut m = ok(Machine::qemu("net-restricted", &node(Network::new(NicModel::VirtioNet), &cmdline)));
    ok(m.wait_for_regex(&lease_line("virtio-net"), QEMU_TIMEOUT));
    let refused = Regex::new(&format!(
        r"^net: check 10\.0\.2\.2:{}: (no connection \(timed out\)|connection refused or reset)$",
        server.port
    ))
    .unwrap();
    ok(m.wait_for_regex(&refused, QEMU_TIMEOUT));
    let out = m.stop();
    out.check(server.requests().is_empty(), "the host server was reached without a forward");
}

#[test]
fn a_static_address_needs_no_dhcp_and_bad_settings_say_why() {
    let server = HostServer::start("HTTP/1.0 204 static");
    let mut net = Network::new(NicModel::E1000);
    net.guest_forwards.push((8080, server.port));
    let cmdline = "net.check=10.0.2.100 net=10.0.2.15/24,10.0.2.2 net.check=10.0.2.100:8080";
    let _slot = emulator_slot();
    let mut m = ok(Machine::qemu("net-static", &node(net, cmdline)));
    ok(m.wait_for_str(
        "cmdline: bad value `10.0.2.100` for `net.check` ignored: expected HOST:PORT",
        QEMU_TIMEOUT,
    ));
    ok(m.wait_for_regex(
        &Regex::new(r"^net: e1000 52:54:00:12:34:56 10\.0\.2\.15/24 via 10\.0\.2\.2 dns none \(static\)$")
            .unwrap(),
        QEMU_TIMEOUT,
    ));
    ok(m.wait_for_str(r#"net: check 10.0.2.100:8080: connected in "#, QEMU_TIMEOUT));
    let out = m.stop();
    out.check(out.console().any(|l| l.ends_with(r#"answer "HTTP/1.0 204 static""#)), "no answer line");
    out.check(!out.console().any(|l| l.contains("DHCP")), "a static node asked for DHCP");

    let mut m = ok(Machine::qemu("net-bad", &node(Network::new(NicModel::VirtioNet), "net=10.0.2.15/33")));
    ok(m.wait_for_str(
        "cmdline: bad value `10.0.2.15/33` for `net` ignored: the prefix length is not 1 to 32",
        QEMU_TIMEOUT,
    ));
    ok(m.wait_for_regex(&lease_line("virtio-net"), QEMU_TIMEOUT));
    m.stop();
}

#[test]
fn a_node_without_a_card_says_so() {
    let _slot = emulator_slot();
    let mut m = ok(Machine::qemu("net-none", &Qemu { smp: 2, ..Qemu::new(kernel()) }));
    ok(m.wait_for_str("net: no network card found (drivers: virtio-net, e1000)", QEMU_TIMEOUT));
    m.stop();
}

#[test]
fn the_drivers_self_tests_pass_on_their_cards() {
    for (model, name) in [(NicModel::VirtioNet, "virtio-net"), (NicModel::E1000, "e1000")] {
        let _slot = emulator_slot();
        let m = ok(Machine::qemu(
            &format!("net-selftest-{name}"),
            &node(Network::new(model), &format!("selftest={name}")),
        ));
        let out = ok(m.wait_exit(QEMU_TIMEOUT));
        out.check(out.code() == Some(qemu::EXIT_SUCCESS), "expected exit status 33 (success)");
        out.check(
            out.console().any(|l| l == format!("selftest: {name} ... ok")),
            "the self-test did not pass",
        );
        out.check(
            out.console().any(|l| l.contains("gateway 10.0.2.2 is at 52:55:0a:00:02:02")),
            "no ARP answer from the gateway logged",
        );
    }
}
