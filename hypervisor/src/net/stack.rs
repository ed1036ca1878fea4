//! The node's TCP/IP stack: smoltcp over one [`Nic`], configured by DHCPv4 or statically,
//! with a DNS resolver and TCP sockets. Pure: it is driven by [`Stack::poll`] with the
//! time, and tested on the host with made-up cards wired together.
#![forbid(unsafe_code)]

use super::config::{Ipv4, Mode, MAX_DNS};
use super::{Mac, Nic, MAX_FRAME};
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, dns, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};

/// Bytes of each TCP socket's receive and transmit buffers.
pub const TCP_BUFFER: usize = 64 * 1024;
/// Most TCP sockets open at once.
pub const MAX_TCP: usize = 64;
/// Most DNS queries in flight.
const MAX_QUERIES: usize = 4;
/// First local port handed out (the IANA dynamic range).
const EPHEMERAL: u16 = 49152;

/// Where the address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A DHCP lease.
    Dhcp,
    /// The command line.
    Static,
}

/// The interface's IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Config {
    /// Address.
    pub addr: Ipv4,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4>,
    /// DNS servers.
    pub dns: heapless::Vec<Ipv4, MAX_DNS>,
    /// Where it came from.
    pub source: Source,
}

impl fmt::Display for Ipv4Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::config::Dotted;
        write!(f, "{}/{}", Dotted(self.addr), self.prefix)?;
        match self.gateway {
            Some(g) => write!(f, " via {}", Dotted(g))?,
            None => f.write_str(" no gateway")?,
        }
        f.write_str(" dns")?;
        if self.dns.is_empty() {
            f.write_str(" none")?;
        }
        for d in &self.dns {
            write!(f, " {}", Dotted(*d))?;
        }
        f.write_str(match self.source {
            Source::Dhcp => " (dhcp)",
            Source::Static => " (static)",
        })
    }
}

/// A change of the interface's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An address is configured (a new lease or a changed one, or the static one).
    Up(Ipv4Config),
    /// The lease was lost.
    Down,
}

/// Why the stack refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// The card's MAC address is not a unicast address.
    BadMac(Mac),
    /// `net=off`: there is nothing to bring up.
    Off,
    /// No address yet.
    NoAddress,
    /// Too many sockets or queries open.
    NoRoom,
    /// The handle does not name an open socket or query.
    BadHandle,
    /// The connection was refused, reset or timed out, or is closed.
    Closed,
    /// The name cannot be looked up (empty, too long or malformed).
    BadName,
    /// No DNS server is known.
    NoDnsServer,
    /// The lookup failed or found no IPv4 address.
    NotFound,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::BadMac(m) => write!(f, "the card's MAC address {m} is not unicast"),
            NetError::Off => f.write_str("networking is off"),
            NetError::NoAddress => f.write_str("no address yet"),
            NetError::NoRoom => f.write_str("too many sockets or queries"),
            NetError::BadHandle => f.write_str("no such socket or query"),
            NetError::Closed => f.write_str("connection closed"),
            NetError::BadName => f.write_str("not a name that can be looked up"),
            NetError::NoDnsServer => f.write_str("no DNS server"),
            NetError::NotFound => f.write_str("name not found"),
        }
    }
}

/// Frame counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames received.
    pub rx: u64,
    /// Frames sent.
    pub tx: u64,
    /// Frames dropped because the transmit ring was full.
    pub tx_busy: u64,
    /// Frames the card refused or could not deliver.
    pub errors: u64,
}

/// The card as smoltcp sees it.
struct Port {
    nic: Box<dyn Nic>,
    rx: Box<[u8; MAX_FRAME]>,
    counters: Counters,
}

struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

struct TxToken<'a> {
    nic: &'a mut dyn Nic,
    counters: &'a mut Counters,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never asks for more than the MTU; a larger request gets a buffer of
        // its size and the card refuses the frame.
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        match self.nic.send(&buf) {
            Ok(()) => self.counters.tx += 1,
            Err(super::NicError::Busy) => self.counters.tx_busy += 1,
            Err(_) => self.counters.errors += 1,
        }
        r
    }
}

impl Device for Port {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let Port { nic, rx, counters } = self;
        // Bounded: a card that keeps failing gives up this poll, not the CPU.
        for _ in 0..8 {
            match nic.recv(&mut rx[..]) {
                Ok(Some(n)) if n <= MAX_FRAME => {
                    counters.rx += 1;
                    return Some((RxToken(&rx[..n]), TxToken { nic: &mut **nic, counters }));
                }
                Ok(None) => return None,
                Ok(Some(_)) | Err(_) => counters.errors += 1,
            }
        }
        None
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken { nic: &mut *self.nic, counters: &mut self.counters })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = MAX_FRAME;
        c
    }
}

/// An open TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp(SocketHandle);

/// A DNS lookup in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query(usize);

/// Where a TCP connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// Waiting for the peer (connecting, or listening).
    Opening,
    /// Data flows.
    Open,
    /// The peer closed its side; what it sent can still be read.
    PeerClosed,
    /// Closed, reset, refused or timed out.
    Closed,
}

/// The stack.
pub struct Stack {
    port: Port,
    iface: Interface,
    sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    dns: SocketHandle,
    queries: [Option<dns::QueryHandle>; MAX_QUERIES],
    config: Option<Ipv4Config>,
    pending: Option<Event>,
    tcp_open: usize,
    next_port: u16,
    now: Instant,
}

fn ip(a: Ipv4) -> Ipv4Address {
    Ipv4Address::from_octets(a)
}

fn instant(now_ms: u64) -> Instant {
    Instant::from_millis(i64::try_from(now_ms).unwrap_or(i64::MAX))
}

impl Stack {
    /// Brings up the stack on `nic`: starts DHCP, or configures the static address at once
    /// (reported by the first [`Stack::poll`]). `seed` varies TCP sequence numbers and
    /// ports between boots.
    pub fn new(nic: Box<dyn Nic>, mode: &Mode, seed: u64, now_ms: u64) -> Result<Stack, NetError> {
        let mac = nic.mac();
        if !mac.is_unicast() {
            return Err(NetError::BadMac(mac));
        }
        if *mode == Mode::Off {
            return Err(NetError::Off);
        }
        let mut port = Port { nic, rx: Box::new([0; MAX_FRAME]), counters: Counters::default() };
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        cfg.random_seed = seed;
        let iface = Interface::new(cfg, &mut port, instant(now_ms));
        let mut sockets = SocketSet::new(Vec::new());
        let dns = sockets.add(dns::Socket::new(&[], (0..MAX_QUERIES).map(|_| None).collect::<Vec<_>>()));
        let mut s = Stack {
            port,
            iface,
            sockets,
            dhcp: None,
            dns,
            queries: [None; MAX_QUERIES],
            config: None,
            pending: None,
            tcp_open: 0,
            next_port: EPHEMERAL + (seed % 16384) as u16,
            now: instant(now_ms),
        };
        match mode {
            Mode::Off => {}
            Mode::Dhcp => s.dhcp = Some(s.sockets.add(dhcpv4::Socket::new())),
            Mode::Static(st) => s.apply(Some(Ipv4Config {
                addr: st.addr,
                prefix: st.prefix,
                gateway: st.gateway,
                dns: st.dns.clone(),
                source: Source::Static,
            })),
        }
        Ok(s)
    }

    /// The card's driver name and MAC.
    pub fn card(&self) -> (&'static str, Mac) {
        (self.port.nic.driver(), self.port.nic.mac())
    }

    /// Frame counters.
    pub fn counters(&self) -> Counters {
        self.port.counters
    }

    /// The current configuration.
    pub fn config(&self) -> Option<&Ipv4Config> {
        self.config.as_ref()
    }

    fn apply(&mut self, c: Option<Ipv4Config>) {
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            if let Some(c) = &c {
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(ip(c.addr), c.prefix)));
            }
        });
        let routes = self.iface.routes_mut();
        routes.remove_default_ipv4_route();
        if let Some(g) = c.as_ref().and_then(|c| c.gateway) {
            let _ = routes.add_default_ipv4_route(ip(g));
        }
        let servers: Vec<IpAddress> =
            c.iter().flat_map(|c| c.dns.iter()).map(|d| IpAddress::Ipv4(ip(*d))).collect();
        self.sockets.get_mut::<dns::Socket>(self.dns).update_servers(&servers);
        if c != self.config {
            self.pending = Some(match &c {
                Some(c) => Event::Up(c.clone()),
                None => Event::Down,
            });
        }
        self.config = c;
    }

    /// Moves frames and timers along; returns a configuration change when there is one.
    pub fn poll(&mut self, now_ms: u64) -> Option<Event> {
        let now = instant(now_ms);
        self.now = now;
        self.iface.poll(now, &mut self.port, &mut self.sockets);
        if let Some(h) = self.dhcp {
            let change = match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
                None => None,
                Some(dhcpv4::Event::Configured(c)) => Some(Some(Ipv4Config {
                    addr: c.address.address().octets(),
                    prefix: c.address.prefix_len(),
                    gateway: c.router.map(|r| r.octets()),
                    dns: c.dns_servers.iter().take(MAX_DNS).map(|d| d.octets()).collect(),
                    source: Source::Dhcp,
                })),
                Some(dhcpv4::Event::Deconfigured) => Some(None),
            };
            if let Some(c) = change {
                self.apply(c);
                // Send what the new address allows (e.g. queued DNS) without waiting.
                self.iface.poll(now, &mut self.port, &mut self.sockets);
            }
        }
        self.pending.take()
    }

    /// How long the caller may wait before the next [`Stack::poll`] is due, in ms (frames
    /// arriving earlier are only noticed when it polls).
    pub fn poll_delay_ms(&mut self, now_ms: u64) -> Option<u64> {
        self.iface.poll_delay(instant(now_ms), &self.sockets).map(|d| d.total_millis())
    }

    fn new_tcp(&mut self) -> Result<tcp::Socket<'static>, NetError> {
        if self.tcp_open >= MAX_TCP {
            return Err(NetError::NoRoom);
        }
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
        );
        s.set_timeout(Some(Duration::from_secs(60)));
        s.set_keep_alive(Some(Duration::from_secs(30)));
        Ok(s)
    }

    fn ephemeral(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p == u16::MAX { EPHEMERAL } else { p + 1 };
        p
    }

    /// TCP sockets open (connections and listeners).
    pub fn tcp_sockets(&self) -> usize {
        self.tcp_open
    }

    /// Opens a connection to `addr:port`; [`Stack::tcp_state`] says when it is open.
    pub fn tcp_connect(&mut self, addr: Ipv4, port: u16) -> Result<Tcp, NetError> {
        if self.config.is_none() {
            return Err(NetError::NoAddress);
        }
        let mut s = self.new_tcp()?;
        let local = self.ephemeral();
        s.connect(self.iface.context(), (IpAddress::Ipv4(ip(addr)), port), local)
            .map_err(|_| NetError::Closed)?;
        self.tcp_open += 1;
        Ok(Tcp(self.sockets.add(s)))
    }

    /// Listens for one connection on `port`.
    pub fn tcp_listen(&mut self, port: u16) -> Result<Tcp, NetError> {
        let mut s = self.new_tcp()?;
        s.listen(port).map_err(|_| NetError::Closed)?;
        self.tcp_open += 1;
        Ok(Tcp(self.sockets.add(s)))
    }

    fn tcp(&mut self, t: Tcp) -> Result<&mut tcp::Socket<'static>, NetError> {
        match self.sockets.iter_mut().find(|(h, _)| *h == t.0) {
            Some((_, smoltcp::socket::Socket::Tcp(s))) => Ok(s),
            _ => Err(NetError::BadHandle),
        }
    }

    /// Where the connection stands.
    pub fn tcp_state(&mut self, t: Tcp) -> Result<TcpState, NetError> {
        use tcp::State::*;
        let s = self.tcp(t)?;
        Ok(match s.state() {
            Listen | SynSent | SynReceived => TcpState::Opening,
            Established | FinWait1 | FinWait2 => TcpState::Open,
            CloseWait | LastAck if s.can_recv() => TcpState::PeerClosed,
            Closing | TimeWait if s.can_recv() => TcpState::PeerClosed,
            CloseWait => TcpState::PeerClosed,
            Closed | Closing | LastAck | TimeWait => TcpState::Closed,
        })
    }

    /// Whether the socket is still waiting for its peer (connecting or listening).
    fn opening(s: &tcp::Socket<'_>) -> bool {
        matches!(s.state(), tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived)
    }

    /// Queues as much of `data` as fits; the count queued (0 while the connection opens).
    pub fn tcp_send(&mut self, t: Tcp, data: &[u8]) -> Result<usize, NetError> {
        let s = self.tcp(t)?;
        if Self::opening(s) {
            return Ok(0);
        }
        if !s.may_send() {
            return Err(NetError::Closed);
        }
        s.send_slice(data).map_err(|_| NetError::Closed)
    }

    /// Reads what has arrived into `buf`; 0 when nothing is waiting, [`NetError::Closed`]
    /// when nothing more will come.
    pub fn tcp_recv(&mut self, t: Tcp, buf: &mut [u8]) -> Result<usize, NetError> {
        let s = self.tcp(t)?;
        if Self::opening(s) {
            return Ok(0);
        }
        if !s.can_recv() && !s.may_recv() {
            return Err(NetError::Closed);
        }
        s.recv_slice(buf).map_err(|_| NetError::Closed)
    }

    /// Closes our side (what is queued is still sent).
    pub fn tcp_close(&mut self, t: Tcp) -> Result<(), NetError> {
        self.tcp(t)?.close();
        Ok(())
    }

    /// Forgets the socket (resetting the connection if it is still open).
    pub fn tcp_remove(&mut self, t: Tcp) -> Result<(), NetError> {
        self.tcp(t)?.abort();
        self.iface.poll(self.now, &mut self.port, &mut self.sockets);
        self.sockets.remove(t.0);
        self.tcp_open -= 1;
        Ok(())
    }

    /// Starts looking up `name`'s IPv4 address.
    pub fn resolve(&mut self, name: &str) -> Result<Query, NetError> {
        if self.config.as_ref().is_none_or(|c| c.dns.is_empty()) {
            return Err(NetError::NoDnsServer);
        }
        let slot = self.queries.iter().position(Option::is_none).ok_or(NetError::NoRoom)?;
        let s = self.sockets.get_mut::<dns::Socket>(self.dns);
        let q = s.start_query(self.iface.context(), name, smoltcp::wire::DnsQueryType::A).map_err(
            |e| match e {
                dns::StartQueryError::NoFreeSlot => NetError::NoRoom,
                _ => NetError::BadName,
            },
        )?;
        self.queries[slot] = Some(q);
        Ok(Query(slot))
    }

    /// The lookup's answer: `None` while it is in flight.
    pub fn resolved(&mut self, q: Query) -> Result<Option<Ipv4>, NetError> {
        let h = self.queries.get(q.0).copied().flatten().ok_or(NetError::BadHandle)?;
        let s = self.sockets.get_mut::<dns::Socket>(self.dns);
        let r = match s.get_query_result(h) {
            Err(dns::GetQueryResultError::Pending) => return Ok(None),
            Err(dns::GetQueryResultError::Failed) => Err(NetError::NotFound),
            // Only A records are asked for, so every address is IPv4.
            Ok(addrs) => addrs
                .iter()
                .map(|a| match a {
                    IpAddress::Ipv4(a) => Some(a.octets()),
                })
                .next()
                .ok_or(NetError::NotFound),
        };
        self.queries[q.0] = None;
        r
    }
}

/// Two stacks joined by a made-up cable, for tests here and of what runs over the stack.
#[cfg(test)]
pub mod testnet {
    use super::*;
    use crate::net::config::parse_mode;
    use crate::net::NicError;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    pub type Queue = Arc<Mutex<VecDeque<Vec<u8>>>>;

    /// One end of a made-up cable; `drop_every` loses every Nth frame sent.
    pub struct End {
        pub mac: Mac,
        pub out: Queue,
        pub inbox: Queue,
        pub sent: usize,
        pub drop_every: usize,
    }

    impl Nic for End {
        fn driver(&self) -> &'static str {
            "cable"
        }
        fn mac(&self) -> Mac {
            self.mac
        }
        fn link_up(&mut self) -> bool {
            true
        }
        fn send(&mut self, frame: &[u8]) -> Result<(), NicError> {
            if frame.is_empty() || frame.len() > MAX_FRAME {
                return Err(NicError::BadLength(frame.len()));
            }
            self.sent += 1;
            if self.drop_every != 0 && self.sent.is_multiple_of(self.drop_every) {
                return Err(NicError::Busy);
            }
            self.out.lock().unwrap().push_back(frame.to_vec());
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NicError> {
            let Some(f) = self.inbox.lock().unwrap().pop_front() else { return Ok(None) };
            if f.len() > buf.len() {
                return Err(NicError::BadLength(f.len()));
            }
            buf[..f.len()].copy_from_slice(&f);
            Ok(Some(f.len()))
        }
    }

    pub fn cable(drop_every: usize) -> (Box<End>, Box<End>, Queue) {
        let ab: Queue = Default::default();
        let ba: Queue = Default::default();
        let a = End { mac: Mac([2, 0, 0, 0, 0, 1]), out: ab.clone(), inbox: ba.clone(), sent: 0, drop_every };
        let b = End { mac: Mac([2, 0, 0, 0, 0, 2]), out: ba, inbox: ab.clone(), sent: 0, drop_every };
        (Box::new(a), Box::new(b), ab)
    }

    pub fn pair(drop_every: usize) -> (Stack, Stack, Queue) {
        let (a, b, ab) = cable(drop_every);
        let a = Stack::new(a, &parse_mode("10.0.0.1/24,10.0.0.254,10.0.0.53").unwrap(), 1, 0).unwrap();
        let b = Stack::new(b, &parse_mode("10.0.0.2/24").unwrap(), 2, 0).unwrap();
        (a, b, ab)
    }

    pub fn pump(a: &mut Stack, b: &mut Stack, t: &mut u64, rounds: usize) {
        for _ in 0..rounds {
            *t += 10;
            a.poll(*t);
            b.poll(*t);
        }
    }

    /// Some inputs of the fuzz corpus `name`, and a few cuts and flips of each.
    pub fn corpus(name: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(name);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "{} is empty", dir.display());
        let mut all = Vec::new();
        for s in seeds {
            for cut in [s.len() / 3, s.len() / 2, s.len().saturating_sub(1)] {
                all.push(s[..cut].to_vec());
            }
            for at in [0, s.len() / 4, s.len() / 2] {
                let mut f = s.clone();
                if let Some(b) = f.get_mut(at) {
                    *b ^= 0x5a;
                }
                all.push(f);
            }
            all.push(s);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::testnet::*;
    use super::*;
    use crate::net::config::parse_mode;

    #[test]
    fn a_static_address_is_reported_once() {
        let (mut a, _, _) = pair(0);
        let Some(Event::Up(c)) = a.poll(1) else { panic!("no Up event") };
        assert_eq!(c.to_string(), "10.0.0.1/24 via 10.0.0.254 dns 10.0.0.53 (static)");
        assert_eq!(a.poll(2), None);
        assert_eq!(a.card(), ("cable", Mac([2, 0, 0, 0, 0, 1])));
    }

    fn talk(drop_every: usize) {
        let (mut a, mut b, _) = pair(drop_every);
        let server = b.tcp_listen(80).unwrap();
        let client = a.tcp_connect([10, 0, 0, 2], 80).unwrap();
        // Before the handshake: nothing to read, nothing taken, and not an error.
        assert_eq!(a.tcp_recv(client, &mut [0u8; 8]), Ok(0));
        assert_eq!(a.tcp_send(client, b"early"), Ok(0));
        assert_eq!(b.tcp_recv(server, &mut [0u8; 8]), Ok(0));
        let mut t = 0;
        for _ in 0..2000 {
            pump(&mut a, &mut b, &mut t, 1);
            if a.tcp_state(client) == Ok(TcpState::Open) && b.tcp_state(server) == Ok(TcpState::Open) {
                break;
            }
        }
        assert_eq!(a.tcp_state(client), Ok(TcpState::Open));
        let request: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let (mut sent, mut got) = (0, Vec::new());
        let mut buf = vec![0u8; 4096];
        for _ in 0..20_000 {
            if sent < request.len() {
                sent += a.tcp_send(client, &request[sent..]).unwrap();
            }
            pump(&mut a, &mut b, &mut t, 1);
            let n = b.tcp_recv(server, &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            if got.len() == request.len() {
                break;
            }
        }
        assert!(got == request, "{} of {} bytes arrived intact", got.len(), request.len());
        b.tcp_send(server, b"thanks").unwrap();
        b.tcp_close(server).unwrap();
        let mut reply = Vec::new();
        for _ in 0..2000 {
            pump(&mut a, &mut b, &mut t, 1);
            match a.tcp_recv(client, &mut buf) {
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(NetError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(reply, b"thanks");
        assert!(matches!(a.tcp_state(client), Ok(TcpState::PeerClosed | TcpState::Closed)));
        a.tcp_remove(client).unwrap();
        assert_eq!(a.tcp_state(client), Err(NetError::BadHandle));
        assert_eq!(a.tcp_remove(client), Err(NetError::BadHandle));
        assert!(a.counters().tx > 0 && b.counters().rx > 0);
    }

    #[test]
    fn tcp_carries_data_both_ways_and_closes() {
        talk(0);
    }

    #[test]
    fn tcp_survives_a_card_that_drops_frames() {
        talk(7);
    }

    #[test]
    fn a_port_nobody_listens_on_refuses() {
        let (mut a, mut b, _) = pair(0);
        let c = a.tcp_connect([10, 0, 0, 2], 81).unwrap();
        let mut t = 0;
        pump(&mut a, &mut b, &mut t, 50);
        assert_eq!(a.tcp_state(c), Ok(TcpState::Closed));
        assert_eq!(a.tcp_send(c, b"x"), Err(NetError::Closed));
    }

    #[test]
    fn garbage_frames_do_not_hurt() {
        let (mut a, mut b, ab) = pair(0);
        let mut t = 0;
        let mut x: u32 = 12345;
        for i in 0..3000usize {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x as usize) % (MAX_FRAME + 1);
            let mut f: Vec<u8> = (0..len).map(|j| (x as usize).wrapping_mul(j + 7) as u8).collect();
            if len >= 14 && i % 3 == 0 {
                // Addressed to b, as IPv4 or ARP, so the parsers above Ethernet see it.
                f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
                f[12..14].copy_from_slice(if i % 2 == 0 { &[8, 0] } else { &[8, 6] });
            }
            ab.lock().unwrap().push_back(f);
            if i % 100 == 0 {
                pump(&mut a, &mut b, &mut t, 1);
            }
        }
        pump(&mut a, &mut b, &mut t, 10);
        // b still works.
        let s = b.tcp_listen(80).unwrap();
        let c = a.tcp_connect([10, 0, 0, 2], 80).unwrap();
        pump(&mut a, &mut b, &mut t, 50);
        assert_eq!((a.tcp_state(c), b.tcp_state(s)), (Ok(TcpState::Open), Ok(TcpState::Open)));
    }

    /// Answers DNS queries that reach `b`'s UDP port 53: `api.cluster.test` is 10.0.0.9,
    /// every other name does not exist.
    fn serve_dns(b: &mut Stack, udp: SocketHandle) {
        use smoltcp::socket::udp;
        let s = b.sockets.get_mut::<udp::Socket>(udp);
        let mut q = [0u8; 512];
        while let Ok((n, meta)) = s.recv_slice(&mut q) {
            let q = &q[..n];
            let question_end = 12 + q[12..].iter().position(|&b| b == 0).unwrap() + 1 + 4;
            let name = &q[12..question_end - 4];
            let found = name == b"\x03api\x07cluster\x04test\x00";
            let mut r = Vec::from(&q[..question_end]);
            r[2..4].copy_from_slice(if found { &[0x81, 0x80] } else { &[0x81, 0x83] });
            r[6..8].copy_from_slice(&[0, found as u8]);
            r[8..12].fill(0);
            if found {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 9]);
            }
            s.send_slice(&r, meta.endpoint).unwrap();
        }
    }

    #[test]
    fn names_are_looked_up_with_the_configured_server() {
        use smoltcp::socket::udp;
        let (a, b, _) = cable(0);
        let mut a = Stack::new(a, &parse_mode("10.0.0.1/24,10.0.0.254,10.0.0.2").unwrap(), 1, 0).unwrap();
        let mut b = Stack::new(b, &parse_mode("10.0.0.2/24").unwrap(), 2, 0).unwrap();
        let buffer = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0u8; 4096]);
        let udp = b.sockets.add(udp::Socket::new(buffer(), buffer()));
        b.sockets.get_mut::<udp::Socket>(udp).bind(53).unwrap();
        let mut t = 0;
        let mut ask = |a: &mut Stack, b: &mut Stack, name: &str| {
            let q = a.resolve(name).unwrap();
            for _ in 0..500 {
                pump(a, b, &mut t, 1);
                serve_dns(b, udp);
                if let Some(r) = a.resolved(q).transpose() {
                    return r;
                }
            }
            panic!("no answer for {name}");
        };
        assert_eq!(ask(&mut a, &mut b, "api.cluster.test"), Ok([10, 0, 0, 9]));
        assert_eq!(ask(&mut a, &mut b, "api.cluster.test."), Ok([10, 0, 0, 9]));
        assert_eq!(ask(&mut a, &mut b, "missing.cluster.test"), Err(NetError::NotFound));
        // A finished query's handle is spent.
        let q = a.resolve("api.cluster.test").unwrap();
        let r = loop {
            pump(&mut a, &mut b, &mut t, 1);
            serve_dns(&mut b, udp);
            if let Some(r) = a.resolved(q).transpose() {
                break r;
            }
        };
        assert_eq!(r, Ok([10, 0, 0, 9]));
        assert_eq!(a.resolved(q), Err(NetError::BadHandle));
    }

    #[test]
    fn refusals_are_typed() {
        let (a, _, _) = cable(0);
        let bad = End { mac: Mac([1, 0, 0, 0, 0, 1]), ..*a };
        assert_eq!(
            Stack::new(Box::new(bad), &Mode::Dhcp, 0, 0).err(),
            Some(NetError::BadMac(Mac([1, 0, 0, 0, 0, 1])))
        );
        let (a, b, _) = cable(0);
        assert_eq!(Stack::new(a, &Mode::Off, 0, 0).err(), Some(NetError::Off));
        let mut d = Stack::new(b, &Mode::Dhcp, 0, 0).unwrap();
        assert_eq!(d.poll(1), None);
        assert_eq!(d.tcp_connect([10, 0, 0, 1], 80), Err(NetError::NoAddress));
        assert_eq!(d.resolve("example.com"), Err(NetError::NoDnsServer));
        let (mut a, _, _) = pair(0);
        assert_eq!(a.resolved(Query(0)), Err(NetError::BadHandle));
        assert_eq!(a.resolved(Query(99)), Err(NetError::BadHandle));
        assert_eq!(a.resolve(""), Err(NetError::BadName));
        for _ in 0..MAX_QUERIES {
            a.resolve("example.com").unwrap();
        }
        assert_eq!(a.resolve("example.com"), Err(NetError::NoRoom));
        let mut n = 0;
        while a.tcp_listen(1000 + n as u16).is_ok() {
            n += 1;
        }
        assert_eq!(n, MAX_TCP);
    }
}
