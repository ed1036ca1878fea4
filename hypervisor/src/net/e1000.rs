//! The Intel 82540EM (e1000) driver: polled, legacy descriptors, one receive and one
//! transmit ring of [`RING`] descriptors with a 2 KiB buffer each. The formats and the
//! ring bookkeeping are the pure [`super::e1000_regs`]; this module does the register
//! and DMA accesses.
//!
//! A device that answers nonsense (all ones, as a missing or hot-removed card does) gets
//! bounded waits and typed errors, never a hang or a panic. Dropping the driver resets the
//! card and turns bus mastering off before the rings go back to the frame allocator.
#![allow(unsafe_code)]

use super::dma::DmaRegion;
use super::e1000_regs::{self as r, RxDesc, RxOutcome, RxState, TxDesc, TxRing};
use super::{arp, Mac, Nic, NicError, MAX_FRAME, MIN_FRAME};
use crate::arch::pci::PortConfig;
use crate::arch::time::{now_ns, spin_ns};
use crate::pci::{self, Bar, Bdf, Command, ConfigSpace, Function};
use crate::selftest::{Test, Verdict};
use core::sync::atomic::{fence, Ordering};

/// The (vendor, device) IDs this driver takes: the 82540EM desktop adapter, which QEMU's
/// `e1000` model and Bochs's e1000 emulate.
pub const IDS: &[(u16, u16)] = &[(0x8086, 0x100e)];

/// Descriptors per ring.
pub const RING: usize = 32;

/// Bytes of each ring's buffer, per descriptor.
const BUF: usize = r::RX_BUFFER;

/// How long a reset may take.
const RESET_TIMEOUT_NS: u64 = 100_000_000;
/// How long an EEPROM word read may take.
const EERD_TIMEOUT_NS: u64 = 10_000_000;

/// The card's registers: BAR 0, mapped uncached.
struct Regs {
    base: usize,
    len: usize,
}

impl Regs {
    /// The register at `off`; all ones (what an absent device reads) when `off` is not
    /// an aligned offset inside the BAR.
    fn read(&self, off: usize) -> u32 {
        if !off.is_multiple_of(4) || off.checked_add(4).is_none_or(|e| e > self.len) {
            return u32::MAX;
        }
        // SAFETY: `base..base + len` is BAR 0 of the card this driver owns, mapped
        // uncached by `map_mmio` in `open`; `off` is aligned and inside it (checked above).
        // Reading a register has only the device's documented effects (ICR clears).
        unsafe { core::ptr::read_volatile((self.base + off) as *const u32) }
    }

    /// Writes the register at `off`; nothing when `off` is out of the BAR.
    fn write(&self, off: usize, value: u32) {
        if !off.is_multiple_of(4) || off.checked_add(4).is_none_or(|e| e > self.len) {
            return;
        }
        // SAFETY: as in `read`: an aligned register inside the mapped BAR of a card this
        // driver owns. The values written point the card's DMA only at this driver's own
        // `DmaRegion`s, which outlive the device's use of them (`Drop` resets it first).
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u32, value) }
    }
}

/// Waits until `done()` or `timeout_ns` has passed; whether `done()` held.
fn wait_for(timeout_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let until = now_ns().saturating_add(timeout_ns);
    loop {
        if done() {
            return true;
        }
        if now_ns() >= until {
            return false;
        }
        spin_ns(1_000);
    }
}

/// An opened 82540EM.
pub struct E1000 {
    regs: Regs,
    bdf: Bdf,
    mac: Mac,
    rx_ring: DmaRegion,
    rx_bufs: DmaRegion,
    rx_next: usize,
    rx_state: RxState,
    tx_ring: DmaRegion,
    tx_bufs: DmaRegion,
    tx: TxRing,
}

fn region(bytes: usize) -> Result<DmaRegion, NicError> {
    DmaRegion::new(bytes).ok_or(NicError::Device("out of memory for the e1000 rings"))
}

/// Takes the card at `f` (which must match [`IDS`]): resets it, reads its MAC, sets up
/// both rings and turns receive and transmit on, interrupts masked.
pub fn open(f: &Function) -> Result<E1000, NicError> {
    let bdf = f.bdf;
    let (addr, size) = match pci::read_bar(&PortConfig, bdf, 0) {
        Ok(Bar::Memory { addr, size, .. }) => (addr, size),
        Ok(Bar::Io { .. }) => return Err(NicError::Device("e1000 BAR 0 is not a memory BAR")),
        Err(_) => return Err(NicError::Device("e1000 BAR 0 is unusable")),
    };
    let (Ok(base), Ok(len)) = (usize::try_from(addr), usize::try_from(size)) else {
        return Err(NicError::Device("e1000 BAR 0 is out of reach"));
    };
    if len < r::REGS_END {
        return Err(NicError::Device("e1000 BAR 0 is too small"));
    }
    crate::mm::map_mmio(addr, size).map_err(|_| NicError::Device("cannot map e1000 BAR 0"))?;
    let ring_len = r::ring_bytes(RING).ok_or(NicError::Device("bad ring size"))?;
    let mut nic = E1000 {
        regs: Regs { base, len },
        bdf,
        mac: Mac::default(),
        rx_ring: region(RING * r::DESC_LEN)?,
        rx_bufs: region(RING * BUF)?,
        rx_next: 0,
        rx_state: RxState::default(),
        tx_ring: region(RING * r::DESC_LEN)?,
        tx_bufs: region(RING * BUF)?,
        tx: TxRing::new(RING),
    };
    // From here on, an error drops `nic`, which resets the card and stops its DMA.
    pci::enable(&PortConfig, bdf, Command::MEMORY | Command::BUS_MASTER | Command::INTX_DISABLE);
    nic.reset()?;
    if r::absent(nic.regs.read(r::STATUS)) {
        return Err(NicError::Device("e1000 reads all ones"));
    }
    nic.regs.write(r::IMC, u32::MAX);
    let _ = nic.regs.read(r::ICR);
    nic.regs.write(r::CTRL, r::ctrl_link_up(nic.regs.read(r::CTRL)));
    nic.mac = nic.read_mac()?;
    for i in 0..r::MTA_LEN {
        nic.regs.write(r::MTA + 4 * i, 0);
    }

    for i in 0..RING {
        let d = RxDesc::empty(nic.rx_bufs.phys() + (i * BUF) as u64);
        nic.store_desc_rx(i, d.to_words());
    }
    let rx = nic.rx_ring.phys();
    nic.regs.write(r::RDBAL, rx as u32);
    nic.regs.write(r::RDBAH, (rx >> 32) as u32);
    nic.regs.write(r::RDLEN, ring_len);
    nic.regs.write(r::RDH, 0);
    // Every descriptor but the last is the card's: RDT == RDH would mean none are.
    nic.regs.write(r::RDT, (RING - 1) as u32);

    let tx = nic.tx_ring.phys();
    nic.regs.write(r::TDBAL, tx as u32);
    nic.regs.write(r::TDBAH, (tx >> 32) as u32);
    nic.regs.write(r::TDLEN, ring_len);
    nic.regs.write(r::TDH, 0);
    nic.regs.write(r::TDT, 0);

    fence(Ordering::SeqCst);
    nic.regs.write(r::RCTL, r::RCTL_VALUE);
    nic.regs.write(r::TCTL, r::TCTL_VALUE);
    nic.regs.write(r::TIPG, r::TIPG_VALUE);
    Ok(nic)
}

impl E1000 {
    /// Resets the card (every register to its default, DMA stopped) and masks its
    /// interrupts.
    fn reset(&mut self) -> Result<(), NicError> {
        let ctrl = self.regs.read(r::CTRL);
        self.regs.write(r::CTRL, ctrl | r::CTRL_RST);
        // The manual asks for a pause before the first access after a reset.
        spin_ns(10_000);
        if !wait_for(RESET_TIMEOUT_NS, || self.regs.read(r::CTRL) & r::CTRL_RST == 0) {
            return Err(NicError::Device("e1000 reset did not complete"));
        }
        self.regs.write(r::IMC, u32::MAX);
        Ok(())
    }

    /// The MAC in receive address 0, or else in EEPROM words 0-2 (then also written to
    /// receive address 0 so that the card accepts frames sent to it).
    fn read_mac(&mut self) -> Result<Mac, NicError> {
        let mac = r::mac_from_ra(self.regs.read(r::RAL0), self.regs.read(r::RAH0));
        if mac.is_unicast() {
            return Ok(mac);
        }
        let mut words = [0u16; 3];
        for (i, w) in words.iter_mut().enumerate() {
            self.regs.write(r::EERD, r::eerd_start(i as u8));
            let mut got = None;
            if !wait_for(EERD_TIMEOUT_NS, || {
                got = r::eerd_data(self.regs.read(r::EERD));
                got.is_some()
            }) {
                return Err(NicError::Device("e1000 EEPROM read timed out"));
            }
            *w = got.unwrap_or(0);
        }
        let mac = r::mac_from_eeprom(words);
        if !mac.is_unicast() {
            return Err(NicError::Device("e1000 has no valid MAC address"));
        }
        let (ral, rah) = r::ra_from_mac(mac);
        self.regs.write(r::RAL0, ral);
        self.regs.write(r::RAH0, rah);
        Ok(mac)
    }

    fn store_desc_rx(&mut self, i: usize, w: [u64; 2]) {
        let at = i * r::DESC_LEN;
        self.rx_ring.store(at, w[0]);
        self.rx_ring.store(at + 8, w[1]);
    }

    /// The status half (bytes 8-15) of receive descriptor `i`.
    fn rx_status_word(&self, i: usize) -> u64 {
        self.rx_ring.load::<u64>(i * r::DESC_LEN + 8).unwrap_or(0)
    }

    /// Gives receive descriptor `i` (the next one) back to the card.
    fn recycle_rx(&mut self, i: usize) {
        let d = RxDesc::empty(self.rx_bufs.phys() + (i * BUF) as u64);
        self.store_desc_rx(i, d.to_words());
        fence(Ordering::SeqCst);
        self.regs.write(r::RDT, i as u32);
        self.rx_next = r::next(i, RING);
    }

    /// Frees the transmit descriptors the card has sent.
    fn reclaim_tx(&mut self) {
        let ring = &self.tx_ring;
        self.tx.reclaim(|i| {
            let hi = ring.load::<u64>(i * r::DESC_LEN + 8).unwrap_or(0);
            TxDesc::from_words([0, hi]).done()
        });
    }
}

impl Nic for E1000 {
    fn driver(&self) -> &'static str {
        "e1000"
    }

    fn mac(&self) -> Mac {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        let status = self.regs.read(r::STATUS);
        !r::absent(status) && status & r::STATUS_LU != 0
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), NicError> {
        if frame.is_empty() || frame.len() > MAX_FRAME {
            return Err(NicError::BadLength(frame.len()));
        }
        self.reclaim_tx();
        let Some(i) = self.tx.slot() else { return Err(NicError::Busy) };
        let at = i * BUF;
        let len = frame.len().max(MIN_FRAME);
        if !self.tx_bufs.write(at, frame)
            || !self.tx_bufs.write(at + frame.len(), &[0; MIN_FRAME][..len - frame.len()])
        {
            return Err(NicError::Device("e1000 transmit buffer out of range"));
        }
        let d = TxDesc::frame(self.tx_bufs.phys() + at as u64, len as u16).to_words();
        let da = i * r::DESC_LEN;
        self.tx_ring.store(da, d[0]);
        self.tx_ring.store(da + 8, d[1]);
        // The frame and its descriptor are in memory before the card is told.
        fence(Ordering::SeqCst);
        let tail = self.tx.push();
        self.regs.write(r::TDT, tail as u32);
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NicError> {
        // At most one pass over the ring, however many bad descriptors the card offers.
        for _ in 0..RING {
            let i = self.rx_next;
            if !RxDesc::from_words([0, self.rx_status_word(i)]).done() {
                return Ok(None);
            }
            // Read the whole write-back only after seeing it done.
            fence(Ordering::SeqCst);
            let d = RxDesc::from_words([0, self.rx_status_word(i)]);
            match self.rx_state.classify(&d, BUF) {
                RxOutcome::Empty => return Ok(None),
                RxOutcome::Frame(n) => {
                    let copied = n <= buf.len() && self.rx_bufs.read(i * BUF, &mut buf[..n]);
                    self.recycle_rx(i);
                    return if copied { Ok(Some(n)) } else { Err(NicError::BadLength(n)) };
                }
                RxOutcome::Dropped(why) => {
                    log::debug!("e1000: dropped receive descriptor {i}: {why:?}");
                    self.recycle_rx(i);
                }
            }
        }
        Ok(None)
    }
}

impl Drop for E1000 {
    fn drop(&mut self) {
        self.regs.write(r::RCTL, 0);
        self.regs.write(r::TCTL, 0);
        if let Err(e) = self.reset() {
            log::warn!("e1000 {}: {e}", self.bdf);
        }
        let command = PortConfig.read32(self.bdf, pci::COMMAND) & 0xffff;
        PortConfig.write32(self.bdf, pci::COMMAND, command & !u32::from(Command::BUS_MASTER.bits()));
        // The rings are returned to the frame allocator after this, when the fields drop.
    }
}

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[Test { name: "e1000", in_all: true, run: selftest }];

const ME: [u8; 4] = [10, 0, 2, 15];
const GATEWAY: [u8; 4] = [10, 0, 2, 2];

/// On the first e1000 found: the link comes up, the user-mode network's gateway answers
/// ARP, many round trips wrap both rings, bad lengths are refused, and every DMA frame
/// comes back when the driver is dropped. Without an e1000 it passes, skipped.
fn selftest() -> Verdict {
    let scan = crate::arch::pci::enumerate();
    let Some(f) = scan.functions.iter().find(|f| IDS.contains(&(f.vendor, f.device))) else {
        log::info!("no e1000, skipped");
        return Ok(());
    };
    let before = crate::mm::free_frames();
    {
        let mut nic = open(f).map_err(|e| {
            log::warn!("e1000 {}: {e}", f.bdf);
            "the e1000 did not open"
        })?;
        if !wait_for(3_000_000_000, || nic.link_up()) {
            return Err("the e1000 link did not come up within 3 s");
        }
        let trip = |nic: &mut E1000, secs: u64| {
            arp::round_trip(nic, ME, GATEWAY, &now_ns, now_ns() + secs * 1_000_000_000).map_err(|e| {
                log::warn!("e1000: ARP for 10.0.2.2: {e:?}");
                "no ARP reply from the gateway 10.0.2.2"
            })
        };
        let (gw, others) = trip(&mut nic, 5)?;
        log::info!(
            "e1000: {} mac {}, link up, gateway 10.0.2.2 is at {gw} ({others} other frames)",
            f.bdf,
            nic.mac()
        );
        for _ in 0..2 * RING {
            if trip(&mut nic, 2)?.0 != gw {
                return Err("the gateway's MAC changed between ARP replies");
            }
        }
        if nic.send(&[]) != Err(NicError::BadLength(0))
            || nic.send(&[0; MAX_FRAME + 1]) != Err(NicError::BadLength(MAX_FRAME + 1))
        {
            return Err("the e1000 accepted a frame of a bad length");
        }
    }
    if crate::mm::free_frames() != before {
        return Err("the e1000's DMA frames did not all come back");
    }
    Ok(())
}
