//! ARP frames for the drivers' self-tests: ask who has an address, recognise the answer.
//! Built and parsed with smoltcp's wire types.
#![forbid(unsafe_code)]

use super::{Mac, Nic};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr,
    Ipv4Address,
};

/// Length of an ARP request frame (Ethernet header + ARP for IPv4), before padding.
pub const REQUEST_LEN: usize = 14 + 28;

/// The frame a host at `ip` with `mac` broadcasts to ask for `target`'s MAC.
pub fn request(mac: Mac, ip: [u8; 4], target: [u8; 4]) -> [u8; REQUEST_LEN] {
    let mut buf = [0u8; REQUEST_LEN];
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac.0),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac.0),
        source_protocol_addr: Ipv4Address::from_octets(ip),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: Ipv4Address::from_octets(target),
    };
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

/// `target`'s MAC, when `frame` is an ARP reply from `target` to `mac`.
pub fn reply_from(frame: &[u8], mac: Mac, target: [u8; 4]) -> Option<Mac> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Arp || eth.dst_addr() != EthernetAddress(mac.0) {
        return None;
    }
    let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
    match arp {
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr,
            source_protocol_addr,
            target_hardware_addr,
            ..
        } if source_protocol_addr == Ipv4Address::from_octets(target)
            && target_hardware_addr == EthernetAddress(mac.0) =>
        {
            Some(Mac(source_hardware_addr.0))
        }
        _ => None,
    }
}

/// Why an ARP round trip failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpError {
    /// The card refused the request.
    Send(super::NicError),
    /// Receiving failed.
    Recv(super::NicError),
    /// No reply within the deadline.
    NoReply,
}

/// Sends an ARP request for `target` from `ip` and waits for the reply until
/// `now_ns() >= deadline_ns`, skipping other frames; returns the target's MAC and how many
/// other frames were seen.
pub fn round_trip(
    nic: &mut dyn Nic,
    ip: [u8; 4],
    target: [u8; 4],
    now_ns: &dyn Fn() -> u64,
    deadline_ns: u64,
) -> Result<(Mac, usize), ArpError> {
    let mac = nic.mac();
    let mut frame = [0u8; super::MIN_FRAME];
    frame[..REQUEST_LEN].copy_from_slice(&request(mac, ip, target));
    nic.send(&frame).map_err(ArpError::Send)?;
    let mut buf = [0u8; super::MAX_FRAME];
    let mut others = 0;
    let mut resent = false;
    while now_ns() < deadline_ns {
        match nic.recv(&mut buf).map_err(ArpError::Recv)? {
            Some(n) => match reply_from(&buf[..n], mac, target) {
                Some(found) => return Ok((found, others)),
                None => others += 1,
            },
            None => {
                // A second request halfway, in case the first went out before the link.
                if !resent && deadline_ns.saturating_sub(now_ns()) < 1_000_000_000 {
                    resent = true;
                    let _ = nic.send(&frame);
                }
                core::hint::spin_loop();
            }
        }
    }
    Err(ArpError::NoReply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NicError;
    use std::cell::Cell;
    use std::collections::VecDeque;

    const ME: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const GW: Mac = Mac([0x52, 0x55, 0x0a, 0, 2, 2]);

    fn reply(to: Mac, from: Mac, from_ip: [u8; 4]) -> Vec<u8> {
        let mut r = request(from, from_ip, [10, 0, 2, 15]).to_vec();
        r[0..6].copy_from_slice(&to.0);
        r[21] = 2; // operation: reply
        r[32..38].copy_from_slice(&to.0);
        r
    }

    #[test]
    fn a_request_is_a_broadcast_who_has() {
        let r = request(ME, [10, 0, 2, 15], [10, 0, 2, 2]);
        assert_eq!(&r[0..6], &[0xff; 6]);
        assert_eq!(&r[6..12], &ME.0);
        assert_eq!(&r[12..14], &[0x08, 0x06]);
        assert_eq!(&r[20..22], &[0, 1]);
        assert_eq!(&r[28..32], &[10, 0, 2, 15]);
        assert_eq!(&r[38..42], &[10, 0, 2, 2]);
    }

    #[test]
    fn only_the_right_reply_counts() {
        assert_eq!(reply_from(&reply(ME, GW, [10, 0, 2, 2]), ME, [10, 0, 2, 2]), Some(GW));
        assert_eq!(reply_from(&reply(ME, GW, [10, 0, 2, 3]), ME, [10, 0, 2, 2]), None);
        assert_eq!(reply_from(&reply(GW, ME, [10, 0, 2, 2]), ME, [10, 0, 2, 2]), None);
        assert_eq!(reply_from(&request(GW, [10, 0, 2, 2], [10, 0, 2, 15]), ME, [10, 0, 2, 2]), None);
        for n in 0..REQUEST_LEN {
            assert_eq!(reply_from(&reply(ME, GW, [10, 0, 2, 2])[..n], ME, [10, 0, 2, 2]), None);
        }
    }

    struct Fake {
        sent: Vec<Vec<u8>>,
        inbox: VecDeque<Vec<u8>>,
    }

    impl Nic for Fake {
        fn driver(&self) -> &'static str {
            "fake"
        }
        fn mac(&self) -> Mac {
            ME
        }
        fn link_up(&mut self) -> bool {
            true
        }
        fn send(&mut self, frame: &[u8]) -> Result<(), NicError> {
            self.sent.push(frame.to_vec());
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NicError> {
            let Some(f) = self.inbox.pop_front() else { return Ok(None) };
            buf[..f.len()].copy_from_slice(&f);
            Ok(Some(f.len()))
        }
    }

    #[test]
    fn round_trip_skips_noise_and_times_out() {
        let mut nic =
            Fake { sent: vec![], inbox: VecDeque::from([vec![0u8; 60], reply(ME, GW, [10, 0, 2, 2])]) };
        let t = Cell::new(0u64);
        let now = || {
            t.set(t.get() + 1000);
            t.get()
        };
        assert_eq!(round_trip(&mut nic, [10, 0, 2, 15], [10, 0, 2, 2], &now, 1_000_000), Ok((GW, 1)));
        assert_eq!(nic.sent.len(), 1);
        assert_eq!(nic.sent[0].len(), 60);
        let mut quiet = Fake { sent: vec![], inbox: VecDeque::new() };
        assert_eq!(
            round_trip(&mut quiet, [10, 0, 2, 15], [10, 0, 2, 2], &now, t.get() + 2_000_000_000),
            Err(ArpError::NoReply)
        );
        assert_eq!(quiet.sent.len(), 2, "one request, and one more before the deadline");
    }
}
