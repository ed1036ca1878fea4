//! The Intel 8254x (82540EM) formats the `e1000` driver needs, pure: register offsets
//! and bits, the legacy receive and transmit descriptors, ring bookkeeping, the MAC
//! address registers and the EEPROM read register. From Intel's "PCI/PCI-X Family of
//! Gigabit Ethernet Controllers Software Developer's Manual" (8254x), sections 3.2-3.3
//! (descriptors), 13 (registers).
//!
//! Nothing here trusts the device: a descriptor with a length of 0 or past its buffer, a
//! frame spread over several descriptors (which the driver never asks for) or marked with
//! errors is reported as a drop, never a panic.
#![forbid(unsafe_code)]

use super::{Mac, MAX_FRAME};

/// Device control.
pub const CTRL: usize = 0x0000;
/// Device status.
pub const STATUS: usize = 0x0008;
/// EEPROM read (82540EM layout: address in bits 15:8, done in bit 4).
pub const EERD: usize = 0x0014;
/// Interrupt cause read (reading clears it).
pub const ICR: usize = 0x00c0;
/// Interrupt mask clear.
pub const IMC: usize = 0x00d8;
/// Receive control.
pub const RCTL: usize = 0x0100;
/// Transmit control.
pub const TCTL: usize = 0x0400;
/// Transmit inter-packet gap.
pub const TIPG: usize = 0x0410;
/// Receive descriptor base, low 32 bits.
pub const RDBAL: usize = 0x2800;
/// Receive descriptor base, high 32 bits.
pub const RDBAH: usize = 0x2804;
/// Receive descriptor ring length in bytes (a multiple of 128).
pub const RDLEN: usize = 0x2808;
/// Receive descriptor head (the device's).
pub const RDH: usize = 0x2810;
/// Receive descriptor tail (the driver's: one past the last descriptor given).
pub const RDT: usize = 0x2818;
/// Transmit descriptor base, low 32 bits.
pub const TDBAL: usize = 0x3800;
/// Transmit descriptor base, high 32 bits.
pub const TDBAH: usize = 0x3804;
/// Transmit descriptor ring length in bytes (a multiple of 128).
pub const TDLEN: usize = 0x3808;
/// Transmit descriptor head (the device's).
pub const TDH: usize = 0x3810;
/// Transmit descriptor tail (the driver's: one past the last descriptor queued).
pub const TDT: usize = 0x3818;
/// Multicast table array: [`MTA_LEN`] dwords.
pub const MTA: usize = 0x5200;
/// Dwords in the multicast table array.
pub const MTA_LEN: usize = 128;
/// Receive address 0, low: MAC bytes 0-3.
pub const RAL0: usize = 0x5400;
/// Receive address 0, high: MAC bytes 4-5 and [`RAH_AV`].
pub const RAH0: usize = 0x5404;
/// One past the highest register the driver touches: a BAR 0 smaller than this is
/// unusable (the 82540EM's is 128 KiB).
pub const REGS_END: usize = RAH0 + 4;
const _: () = assert!(REGS_END <= 128 * 1024);

/// CTRL: full duplex.
pub const CTRL_FD: u32 = 1 << 0;
/// CTRL: link reset.
pub const CTRL_LRST: u32 = 1 << 3;
/// CTRL: auto-speed detection enable.
pub const CTRL_ASDE: u32 = 1 << 5;
/// CTRL: set link up.
pub const CTRL_SLU: u32 = 1 << 6;
/// CTRL: invert loss-of-signal.
pub const CTRL_ILOS: u32 = 1 << 7;
/// CTRL: device reset (self-clearing).
pub const CTRL_RST: u32 = 1 << 26;
/// CTRL: VLAN mode enable.
pub const CTRL_VME: u32 = 1 << 30;
/// CTRL: PHY reset.
pub const CTRL_PHY_RST: u32 = 1 << 31;

/// STATUS: full duplex.
pub const STATUS_FD: u32 = 1 << 0;
/// STATUS: link up.
pub const STATUS_LU: u32 = 1 << 1;

/// EERD: start a read.
pub const EERD_START: u32 = 1 << 0;
/// EERD: the read is done and the data field holds the word.
pub const EERD_DONE: u32 = 1 << 4;
/// EERD: shift of the word address.
pub const EERD_ADDR_SHIFT: u32 = 8;
/// EERD: shift of the data.
pub const EERD_DATA_SHIFT: u32 = 16;

/// RCTL: receiver enable.
pub const RCTL_EN: u32 = 1 << 1;
/// RCTL: store bad packets.
pub const RCTL_SBP: u32 = 1 << 2;
/// RCTL: unicast promiscuous.
pub const RCTL_UPE: u32 = 1 << 3;
/// RCTL: multicast promiscuous.
pub const RCTL_MPE: u32 = 1 << 4;
/// RCTL: long packet enable.
pub const RCTL_LPE: u32 = 1 << 5;
/// RCTL: accept broadcast.
pub const RCTL_BAM: u32 = 1 << 15;
/// RCTL: buffer size 2048 bytes (BSIZE = 00b, BSEX = 0).
pub const RCTL_BSIZE_2048: u32 = 0;
/// RCTL: buffer size extension (multiplies BSIZE by 16).
pub const RCTL_BSEX: u32 = 1 << 25;
/// RCTL: strip the Ethernet CRC.
pub const RCTL_SECRC: u32 = 1 << 26;

/// TCTL: transmitter enable.
pub const TCTL_EN: u32 = 1 << 1;
/// TCTL: pad short packets.
pub const TCTL_PSP: u32 = 1 << 3;
/// TCTL: shift of the collision threshold field.
pub const TCTL_CT_SHIFT: u32 = 4;
/// TCTL: shift of the collision distance field.
pub const TCTL_COLD_SHIFT: u32 = 12;

/// RAH: address valid.
pub const RAH_AV: u32 = 1 << 31;

/// The receive buffer size the driver programs.
pub const RX_BUFFER: usize = 2048;

/// What the driver writes to RCTL: on, broadcasts accepted, CRC stripped, 2 KiB buffers;
/// no long packets, so one frame always fits one buffer.
pub const RCTL_VALUE: u32 = RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_BSIZE_2048;
/// What the driver writes to TCTL: on, short packets padded, collision threshold 0x10,
/// collision distance 0x40 (full duplex).
pub const TCTL_VALUE: u32 = TCTL_EN | TCTL_PSP | 0x10 << TCTL_CT_SHIFT | 0x40 << TCTL_COLD_SHIFT;
/// What the driver writes to TIPG: IPGT 10, IPGR1 8, IPGR2 6 (the manual's values for
/// the 82540EM on copper).
pub const TIPG_VALUE: u32 = 10 | 8 << 10 | 6 << 20;

/// CTRL after reset with the link forced up: SLU and ASDE set; link reset, PHY reset,
/// loss-of-signal inversion and VLAN mode cleared.
pub fn ctrl_link_up(ctrl: u32) -> u32 {
    (ctrl | CTRL_SLU | CTRL_ASDE) & !(CTRL_LRST | CTRL_PHY_RST | CTRL_ILOS | CTRL_VME | CTRL_RST)
}

/// Bytes of one descriptor, receive or transmit.
pub const DESC_LEN: usize = 16;

/// The bytes a ring of `n` descriptors takes, when that is a valid RDLEN/TDLEN: `n` a
/// positive multiple of 8 (the length must be a multiple of 128 bytes) that fits 32 bits.
pub fn ring_bytes(n: usize) -> Option<u32> {
    if n == 0 || !n.is_multiple_of(8) {
        return None;
    }
    u32::try_from(n.checked_mul(DESC_LEN)?).ok()
}

/// RX status: descriptor done.
pub const RXS_DD: u8 = 1 << 0;
/// RX status: end of packet.
pub const RXS_EOP: u8 = 1 << 1;
/// RX errors: CRC error.
pub const RXE_CE: u8 = 1 << 0;
/// RX errors: symbol error.
pub const RXE_SE: u8 = 1 << 1;
/// RX errors: sequence error.
pub const RXE_SEQ: u8 = 1 << 2;
/// RX errors: carrier extension error.
pub const RXE_CXE: u8 = 1 << 4;
/// RX errors: TCP/UDP checksum error.
pub const RXE_TCPE: u8 = 1 << 5;
/// RX errors: IP checksum error.
pub const RXE_IPE: u8 = 1 << 6;
/// RX errors: RX data error.
pub const RXE_RXE: u8 = 1 << 7;

/// A legacy receive descriptor (manual 3.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxDesc {
    /// Bus address of the buffer.
    pub addr: u64,
    /// Bytes the device stored in the buffer.
    pub length: u16,
    /// Packet checksum.
    pub checksum: u16,
    /// `RXS_*` bits.
    pub status: u8,
    /// `RXE_*` bits.
    pub errors: u8,
    /// VLAN tag.
    pub special: u16,
}

impl RxDesc {
    /// A descriptor handed to the device: the buffer at `addr`, everything else zero.
    pub fn empty(addr: u64) -> RxDesc {
        RxDesc { addr, ..RxDesc::default() }
    }

    /// Its 16 bytes as two little-endian quadwords (the order the device reads them).
    pub fn to_words(&self) -> [u64; 2] {
        let hi = u64::from(self.length)
            | u64::from(self.checksum) << 16
            | u64::from(self.status) << 32
            | u64::from(self.errors) << 40
            | u64::from(self.special) << 48;
        [self.addr, hi]
    }

    /// Decodes the two quadwords of a descriptor.
    pub fn from_words(w: [u64; 2]) -> RxDesc {
        let hi = w[1];
        RxDesc {
            addr: w[0],
            length: hi as u16,
            checksum: (hi >> 16) as u16,
            status: (hi >> 32) as u8,
            errors: (hi >> 40) as u8,
            special: (hi >> 48) as u16,
        }
    }

    /// Its 16 bytes.
    pub fn encode(&self) -> [u8; DESC_LEN] {
        words_to_bytes(self.to_words())
    }

    /// Decodes 16 bytes.
    pub fn decode(b: &[u8; DESC_LEN]) -> RxDesc {
        RxDesc::from_words(bytes_to_words(b))
    }

    /// The device has written it back.
    pub fn done(&self) -> bool {
        self.status & RXS_DD != 0
    }

    /// It holds the last (here: the only) part of a frame.
    pub fn end_of_packet(&self) -> bool {
        self.status & RXS_EOP != 0
    }
}

/// TX command: end of packet.
pub const TXC_EOP: u8 = 1 << 0;
/// TX command: insert the FCS.
pub const TXC_IFCS: u8 = 1 << 1;
/// TX command: report status (write DD back when sent).
pub const TXC_RS: u8 = 1 << 3;
/// TX command: extended descriptor (not legacy).
pub const TXC_DEXT: u8 = 1 << 5;
/// TX status: descriptor done.
pub const TXS_DD: u8 = 1 << 0;

/// A legacy transmit descriptor (manual 3.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxDesc {
    /// Bus address of the data.
    pub addr: u64,
    /// Bytes to send from it.
    pub length: u16,
    /// Checksum offset (unused: no offload).
    pub cso: u8,
    /// `TXC_*` bits.
    pub cmd: u8,
    /// `TXS_*` bits (low nibble; the high one is reserved).
    pub status: u8,
    /// Checksum start (unused).
    pub css: u8,
    /// VLAN tag.
    pub special: u16,
}

impl TxDesc {
    /// A whole frame of `length` bytes at `addr`: end of packet, FCS inserted, status
    /// reported.
    pub fn frame(addr: u64, length: u16) -> TxDesc {
        TxDesc { addr, length, cmd: TXC_EOP | TXC_IFCS | TXC_RS, ..TxDesc::default() }
    }

    /// Its 16 bytes as two little-endian quadwords.
    pub fn to_words(&self) -> [u64; 2] {
        let hi = u64::from(self.length)
            | u64::from(self.cso) << 16
            | u64::from(self.cmd) << 24
            | u64::from(self.status) << 32
            | u64::from(self.css) << 40
            | u64::from(self.special) << 48;
        [self.addr, hi]
    }

    /// Decodes the two quadwords of a descriptor.
    pub fn from_words(w: [u64; 2]) -> TxDesc {
        let hi = w[1];
        TxDesc {
            addr: w[0],
            length: hi as u16,
            cso: (hi >> 16) as u8,
            cmd: (hi >> 24) as u8,
            status: (hi >> 32) as u8,
            css: (hi >> 40) as u8,
            special: (hi >> 48) as u16,
        }
    }

    /// Its 16 bytes.
    pub fn encode(&self) -> [u8; DESC_LEN] {
        words_to_bytes(self.to_words())
    }

    /// Decodes 16 bytes.
    pub fn decode(b: &[u8; DESC_LEN]) -> TxDesc {
        TxDesc::from_words(bytes_to_words(b))
    }

    /// The device has sent it.
    pub fn done(&self) -> bool {
        self.status & TXS_DD != 0
    }
}

fn words_to_bytes(w: [u64; 2]) -> [u8; DESC_LEN] {
    let mut b = [0u8; DESC_LEN];
    b[..8].copy_from_slice(&w[0].to_le_bytes());
    b[8..].copy_from_slice(&w[1].to_le_bytes());
    b
}

fn bytes_to_words(b: &[u8; DESC_LEN]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

/// The index after `i` in a ring of `n` (`n` > 0).
pub fn next(i: usize, n: usize) -> usize {
    if i + 1 >= n {
        0
    } else {
        i + 1
    }
}

/// The driver's side of a transmit ring of `n` descriptors: `tail` is the next one to
/// fill (what TDT is set to after filling), `clean` the oldest queued one not yet seen
/// done. One descriptor always stays empty, so that a full ring (TDT one behind TDH) is
/// never mistaken by the device for an empty one (TDT == TDH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxRing {
    n: usize,
    clean: usize,
    tail: usize,
}

impl TxRing {
    /// An empty ring of `n` descriptors (`n` >= 2).
    pub fn new(n: usize) -> TxRing {
        TxRing { n: n.max(2), clean: 0, tail: 0 }
    }

    /// Descriptors queued and not yet seen done.
    pub fn in_flight(&self) -> usize {
        (self.tail + self.n - self.clean) % self.n
    }

    /// Descriptors that can be filled now.
    pub fn free(&self) -> usize {
        self.n - 1 - self.in_flight()
    }

    /// The descriptor to fill next, or `None` when the ring is full. Call [`TxRing::push`]
    /// once it is filled.
    pub fn slot(&self) -> Option<usize> {
        (self.free() > 0).then_some(self.tail)
    }

    /// Marks the slot from [`TxRing::slot`] filled; returns the new tail for TDT.
    pub fn push(&mut self) -> usize {
        if self.free() > 0 {
            self.tail = next(self.tail, self.n);
        }
        self.tail
    }

    /// Frees the queued descriptors, oldest first, while `done(index)` says the device
    /// has sent them; returns how many were freed. Indexes never queued are not asked.
    pub fn reclaim(&mut self, mut done: impl FnMut(usize) -> bool) -> usize {
        let mut freed = 0;
        while self.clean != self.tail && done(self.clean) {
            self.clean = next(self.clean, self.n);
            freed += 1;
        }
        freed
    }
}

/// What one receive descriptor holds for the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// Not written back yet: nothing received.
    Empty,
    /// A whole good frame of this many bytes.
    Frame(usize),
    /// Something to recycle without delivering.
    Dropped(RxDrop),
}

/// Why a received descriptor is not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDrop {
    /// The first part of a frame spanning descriptors (the driver never enables frames
    /// longer than a buffer, so this is the device misbehaving).
    NotEndOfPacket,
    /// A later part of a frame spanning descriptors.
    Continuation,
    /// The device flagged errors (`RXE_*` bits).
    Errors(u8),
    /// The length is 0 or more than the buffer (or [`MAX_FRAME`] plus a VLAN tag).
    BadLength(u16),
}

/// The longest frame accepted from a receive descriptor: [`MAX_FRAME`] and a 4-byte VLAN
/// tag, which the device may leave in place.
pub const MAX_RX_FRAME: usize = MAX_FRAME + 4;

/// Reads receive descriptors in ring order and remembers whether a frame spanning
/// several of them is being skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxState {
    discarding: bool,
}

impl RxState {
    /// Classifies the next descriptor `d`, whose buffer holds `buffer` bytes.
    pub fn classify(&mut self, d: &RxDesc, buffer: usize) -> RxOutcome {
        if !d.done() {
            return RxOutcome::Empty;
        }
        if self.discarding {
            if d.end_of_packet() {
                self.discarding = false;
            }
            return RxOutcome::Dropped(RxDrop::Continuation);
        }
        if !d.end_of_packet() {
            self.discarding = true;
            return RxOutcome::Dropped(RxDrop::NotEndOfPacket);
        }
        if d.errors != 0 {
            return RxOutcome::Dropped(RxDrop::Errors(d.errors));
        }
        let len = usize::from(d.length);
        if len == 0 || len > buffer || len > MAX_RX_FRAME {
            return RxOutcome::Dropped(RxDrop::BadLength(d.length));
        }
        RxOutcome::Frame(len)
    }
}

/// The MAC address held in RAL/RAH (bytes in wire order, low byte of RAL first). The
/// address-valid bit is not looked at: callers check [`Mac::is_unicast`].
pub fn mac_from_ra(ral: u32, rah: u32) -> Mac {
    let l = ral.to_le_bytes();
    let h = rah.to_le_bytes();
    Mac([l[0], l[1], l[2], l[3], h[0], h[1]])
}

/// RAL and RAH (with [`RAH_AV`]) for `mac`.
pub fn ra_from_mac(mac: Mac) -> (u32, u32) {
    let m = mac.0;
    (u32::from_le_bytes([m[0], m[1], m[2], m[3]]), u32::from_le_bytes([m[4], m[5], 0, 0]) | RAH_AV)
}

/// The MAC address in EEPROM words 0-2 (each word low byte first).
pub fn mac_from_eeprom(words: [u16; 3]) -> Mac {
    let [a, b] = words[0].to_le_bytes();
    let [c, d] = words[1].to_le_bytes();
    let [e, f] = words[2].to_le_bytes();
    Mac([a, b, c, d, e, f])
}

/// The EERD value that starts reading EEPROM word `word`.
pub fn eerd_start(word: u8) -> u32 {
    EERD_START | u32::from(word) << EERD_ADDR_SHIFT
}

/// The word an EERD read returned, once its done bit is set.
pub fn eerd_data(eerd: u32) -> Option<u16> {
    (eerd & EERD_DONE != 0).then_some((eerd >> EERD_DATA_SHIFT) as u16)
}

/// Whether a register value is what a missing or hot-removed device answers.
pub fn absent(value: u32) -> bool {
    value == u32::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_layout_is_the_manuals() {
        assert_eq!((CTRL, STATUS, EERD, ICR, IMC), (0, 8, 0x14, 0xc0, 0xd8));
        assert_eq!((RCTL, TCTL, TIPG), (0x100, 0x400, 0x410));
        assert_eq!([RDBAL, RDBAH, RDLEN, RDH, RDT], [0x2800, 0x2804, 0x2808, 0x2810, 0x2818]);
        assert_eq!([TDBAL, TDBAH, TDLEN, TDH, TDT], [0x3800, 0x3804, 0x3808, 0x3810, 0x3818]);
        assert_eq!(MTA + 4 * MTA_LEN, RAL0);
        assert_eq!((RAL0, RAH0, REGS_END), (0x5400, 0x5404, 0x5408));
    }

    #[test]
    fn control_values() {
        assert_eq!(RCTL_VALUE, 0x0400_8002);
        assert_eq!(RCTL_VALUE & (RCTL_LPE | RCTL_BSEX | RCTL_SBP | RCTL_UPE | RCTL_MPE), 0);
        assert_eq!(TCTL_VALUE, 0x0004_010a);
        assert_eq!(TIPG_VALUE, 0x0060_200a);
        assert_eq!(CTRL_RST, 0x0400_0000);
        assert_eq!(ctrl_link_up(0), 0x60);
        assert_eq!(ctrl_link_up(u32::MAX) & (CTRL_RST | CTRL_LRST | CTRL_PHY_RST), 0);
        assert_eq!(ctrl_link_up(CTRL_FD | CTRL_LRST), CTRL_FD | CTRL_SLU | CTRL_ASDE);
        assert_eq!(STATUS_LU, 2);
    }

    #[test]
    fn ring_lengths() {
        assert_eq!(ring_bytes(32), Some(512));
        assert_eq!(ring_bytes(8), Some(128));
        assert_eq!(ring_bytes(0), None);
        assert_eq!(ring_bytes(12), None);
        assert_eq!(ring_bytes(usize::MAX / 8 * 8), None);
    }

    #[test]
    fn rx_descriptor_layout() {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&0x1234_5678_9abc_def0u64.to_le_bytes());
        b[8..10].copy_from_slice(&60u16.to_le_bytes());
        b[10..12].copy_from_slice(&0xbeefu16.to_le_bytes());
        b[12] = RXS_DD | RXS_EOP;
        b[13] = RXE_CE;
        b[14..16].copy_from_slice(&0x0042u16.to_le_bytes());
        let d = RxDesc::decode(&b);
        assert_eq!(
            d,
            RxDesc {
                addr: 0x1234_5678_9abc_def0,
                length: 60,
                checksum: 0xbeef,
                status: 3,
                errors: 1,
                special: 0x42
            }
        );
        assert!(d.done() && d.end_of_packet());
        assert_eq!(d.encode(), b);
        assert_eq!(RxDesc::from_words(d.to_words()), d);
        let e = RxDesc::empty(0x10_0000);
        assert_eq!(e.to_words(), [0x10_0000, 0]);
        assert!(!e.done());
    }

    #[test]
    fn tx_descriptor_layout() {
        let d = TxDesc::frame(0xdead_b000, 60);
        let b = d.encode();
        assert_eq!(&b[..8], &0xdead_b000u64.to_le_bytes());
        assert_eq!(&b[8..10], &60u16.to_le_bytes());
        assert_eq!(b[10], 0, "cso");
        assert_eq!(b[11], 0b1011, "cmd: EOP | IFCS | RS");
        assert_eq!(&b[12..], &[0, 0, 0, 0]);
        assert_eq!(d.cmd & TXC_DEXT, 0, "legacy");
        assert!(!d.done());
        let mut sent = b;
        sent[12] = TXS_DD;
        assert!(TxDesc::decode(&sent).done());
        assert_eq!(TxDesc::from_words(d.to_words()), d);
        let odd = TxDesc { addr: 1, length: 2, cso: 3, cmd: 4, status: 5, css: 6, special: 7 };
        assert_eq!(TxDesc::decode(&odd.encode()), odd);
    }

    #[test]
    fn ring_indexes_wrap() {
        assert_eq!(next(0, 32), 1);
        assert_eq!(next(31, 32), 0);
        assert_eq!(next(0, 1), 0);
        // A device that wrote a nonsense index into the driver's hands cannot push it
        // out of the ring.
        assert_eq!(next(1000, 32), 0);
    }

    #[test]
    fn tx_ring_keeps_one_free_and_reclaims_in_order() {
        let mut r = TxRing::new(4);
        assert_eq!((r.free(), r.in_flight()), (3, 0));
        for want in 1..=3 {
            assert!(r.slot().is_some());
            assert_eq!(r.push(), want % 4);
        }
        assert_eq!(r.slot(), None, "full with one left empty");
        assert_eq!(r.push(), 3, "pushing a full ring does nothing");
        // Nothing is done yet.
        assert_eq!(r.reclaim(|_| false), 0);
        // The device finished 0 and 2 but not 1: only 0 is freed (in order).
        assert_eq!(r.reclaim(|i| i == 0 || i == 2), 1);
        assert_eq!(r.slot(), Some(3));
        assert_eq!(r.push(), 0, "wraps");
        let mut asked = vec![];
        assert_eq!(
            r.reclaim(|i| {
                asked.push(i);
                true
            }),
            3
        );
        assert_eq!(asked, [1, 2, 3], "never asks about slots not queued");
        assert_eq!((r.free(), r.in_flight()), (3, 0));
        // A device that claims everything done at once does no harm.
        assert_eq!(r.reclaim(|_| true), 0);
    }

    fn rx(length: u16, status: u8, errors: u8) -> RxDesc {
        RxDesc { addr: 0x1000, length, status, errors, ..RxDesc::default() }
    }

    #[test]
    fn good_frames_are_delivered() {
        let mut s = RxState::default();
        assert_eq!(s.classify(&rx(0, 0, 0), 2048), RxOutcome::Empty);
        assert_eq!(s.classify(&rx(60, RXS_DD | RXS_EOP, 0), 2048), RxOutcome::Frame(60));
        assert_eq!(s.classify(&rx(1514, RXS_DD | RXS_EOP, 0), 2048), RxOutcome::Frame(1514));
        assert_eq!(s.classify(&rx(1518, RXS_DD | RXS_EOP, 0), 2048), RxOutcome::Frame(1518));
    }

    #[test]
    fn malformed_descriptors_are_dropped() {
        let mut s = RxState::default();
        let done = RXS_DD | RXS_EOP;
        assert_eq!(s.classify(&rx(0, done, 0), 2048), RxOutcome::Dropped(RxDrop::BadLength(0)));
        assert_eq!(s.classify(&rx(2049, done, 0), 2048), RxOutcome::Dropped(RxDrop::BadLength(2049)));
        assert_eq!(s.classify(&rx(1519, done, 0), 2048), RxOutcome::Dropped(RxDrop::BadLength(1519)));
        assert_eq!(s.classify(&rx(100, done, 0), 64), RxOutcome::Dropped(RxDrop::BadLength(100)));
        assert_eq!(s.classify(&rx(u16::MAX, 0xff, 0), 2048), RxOutcome::Dropped(RxDrop::BadLength(u16::MAX)));
        // An all-ones descriptor (a device gone mad, or memory it scribbled on).
        let ones = RxDesc::from_words([u64::MAX; 2]);
        assert_eq!(s.classify(&ones, 2048), RxOutcome::Dropped(RxDrop::Errors(0xff)));
        assert_eq!(s.classify(&rx(60, done, RXE_CE), 2048), RxOutcome::Dropped(RxDrop::Errors(RXE_CE)));
        assert_eq!(s.classify(&rx(60, done, RXE_RXE), 2048), RxOutcome::Dropped(RxDrop::Errors(RXE_RXE)));
        // Nothing was left half-skipped.
        assert_eq!(s, RxState::default());
    }

    #[test]
    fn frames_spanning_descriptors_are_dropped_whole() {
        let mut s = RxState::default();
        // Three parts: first, middle, last; then a good frame.
        assert_eq!(s.classify(&rx(2048, RXS_DD, 0), 2048), RxOutcome::Dropped(RxDrop::NotEndOfPacket));
        assert_eq!(s.classify(&rx(0, 0, 0), 2048), RxOutcome::Empty, "waiting keeps the state");
        assert_eq!(s.classify(&rx(2048, RXS_DD, 0), 2048), RxOutcome::Dropped(RxDrop::Continuation));
        assert_eq!(
            s.classify(&rx(10, RXS_DD | RXS_EOP, 0), 2048),
            RxOutcome::Dropped(RxDrop::Continuation),
            "the tail is not taken for a frame of its own"
        );
        assert_eq!(s.classify(&rx(60, RXS_DD | RXS_EOP, 0), 2048), RxOutcome::Frame(60));
        // A continuation with a bad length or errors is still just skipped.
        assert_eq!(s.classify(&rx(0, RXS_DD, 0xff), 2048), RxOutcome::Dropped(RxDrop::NotEndOfPacket));
        assert_eq!(
            s.classify(&rx(0, RXS_DD | RXS_EOP, 0xff), 2048),
            RxOutcome::Dropped(RxDrop::Continuation)
        );
        assert_eq!(s.classify(&rx(42, RXS_DD | RXS_EOP, 0), 2048), RxOutcome::Frame(42));
    }

    #[test]
    fn mac_from_registers_and_eeprom() {
        let qemu = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(mac_from_ra(0x1200_5452, 0x8000_5634), qemu);
        assert_eq!(ra_from_mac(qemu), (0x1200_5452, 0x8000_5634));
        let (l, h) = ra_from_mac(qemu);
        assert_eq!(mac_from_ra(l, h), qemu);
        assert_eq!(mac_from_eeprom([0x5452, 0x1200, 0x5634]), qemu);
        // What an absent device or a blank EEPROM gives is not usable.
        assert!(!mac_from_ra(u32::MAX, u32::MAX).is_unicast());
        assert!(!mac_from_ra(0, RAH_AV).is_unicast());
        assert!(!mac_from_eeprom([0xffff; 3]).is_unicast());
        assert!(!mac_from_eeprom([0x0001, 0, 0]).is_unicast(), "multicast bit");
    }

    #[test]
    fn eeprom_read_register() {
        assert_eq!(eerd_start(0), 1);
        assert_eq!(eerd_start(2), 0x201);
        assert_eq!(eerd_data(0x5452_0201), None, "not done");
        assert_eq!(eerd_data(0x5452_0211), Some(0x5452));
        assert_eq!(eerd_data(u32::MAX), Some(0xffff), "an absent device: the MAC check rejects it");
        assert!(absent(u32::MAX) && !absent(0x8008_0783));
    }
}
