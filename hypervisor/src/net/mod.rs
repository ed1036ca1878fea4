//! The node's network: NIC drivers behind one [`Nic`] interface, the TCP/IP stack
//! above it, and TLS client sessions over its TCP connections (`tls`).
//!
//! Each driver is its own hardware module: `virtio` (virtio-net over PCI, through the
//! `virtio-drivers` crate) and `e1000` (Intel 82540EM, written here; its register and
//! descriptor formats are the pure `e1000_regs`). `dma` gives them physically contiguous
//! memory. Drivers poll: they never take interrupts.
#![deny(unsafe_code)]

use core::fmt;

pub mod answer;
pub mod arp;
pub mod config;
#[cfg(target_os = "none")]
pub mod dma;
#[cfg(target_os = "none")]
pub mod e1000;
pub mod e1000_regs;
pub mod https;
pub mod kubelet;
#[cfg(target_os = "none")]
pub mod node;
pub mod pipe;
pub mod registry;
pub mod stack;
pub mod tls;
#[cfg(target_os = "none")]
pub mod virtio;

/// The largest Ethernet frame a driver sends or receives, without the FCS: 14 bytes of
/// header and a 1500-byte payload.
pub const MAX_FRAME: usize = 1514;

/// The smallest frame a driver sends: shorter ones are padded to it (60 bytes + FCS).
pub const MIN_FRAME: usize = 60;

/// Why a NIC refused or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicError {
    /// No transmit descriptor is free: try again after the device has sent some frames.
    Busy,
    /// A frame of this length cannot be sent (empty or over [`MAX_FRAME`]), or a receive
    /// buffer is shorter than the frame waiting.
    BadLength(usize),
    /// The device misbehaved or could not be set up.
    Device(&'static str),
}

impl fmt::Display for NicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicError::Busy => f.write_str("transmit ring full"),
            NicError::BadLength(n) => write!(f, "bad frame length {n}"),
            NicError::Device(why) => f.write_str(why),
        }
    }
}

/// A network interface card: whole Ethernet frames in and out, polled.
pub trait Nic: Send {
    /// The driver's name, e.g. `e1000`.
    fn driver(&self) -> &'static str;
    /// The card's MAC address.
    fn mac(&self) -> Mac;
    /// Whether the link is up.
    fn link_up(&mut self) -> bool;
    /// Queues `frame` (an Ethernet frame without FCS, 1 to [`MAX_FRAME`] bytes) for
    /// sending; [`NicError::Busy`] when the transmit ring is full.
    fn send(&mut self, frame: &[u8]) -> Result<(), NicError>;
    /// Copies the next received frame into `buf` and returns its length, or `None` when
    /// none is waiting. A frame longer than `buf` is dropped and reported as
    /// [`NicError::BadLength`]; a frame the device marked as bad is dropped silently.
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NicError>;
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Whether it can be a card's own address: not all zeroes, not multicast.
    pub fn is_unicast(&self) -> bool {
        self.0 != [0; 6] && self.0[0] & 1 == 0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_print_and_classify() {
        let m = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(m.to_string(), "52:54:00:12:34:56");
        assert!(m.is_unicast());
        assert!(!Mac([0; 6]).is_unicast());
        assert!(!Mac([0xff; 6]).is_unicast());
        assert!(!Mac([0x01, 0, 0x5e, 0, 0, 1]).is_unicast());
    }
}
