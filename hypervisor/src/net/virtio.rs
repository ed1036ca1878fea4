//! virtio-net over PCI, polled, through the `virtio-drivers` crate (its raw driver, without
//! the crate's `alloc` feature).
//!
//! The crate's buffered `VirtIONet` keeps its receive buffers on the kernel heap and sends
//! through a header on the stack; neither is identity-mapped here (the heap and the stacks
//! live in the higher half, page by page), so the device could not be given their
//! addresses as they are. The raw driver takes buffers from us instead: every frame the
//! device reads or writes is in one of two [`DmaRegion`]s, identity-mapped, so the crate's
//! `share` is the identity. Sending does not wait for the device: a frame goes into a free
//! transmit slot and the slot is reclaimed on a later call.
//!
//! The device is found by our own scan and its configuration space is reached through
//! [`PortConfig`]; the crate sizes the BARs itself and asks for their MMIO windows, which
//! [`open`] maps beforehand (they may be above 4 GiB) so a failure is an error, not a panic.
#![allow(unsafe_code)]

use super::dma::DmaRegion;
use super::{Mac, Nic, NicError, MAX_FRAME, MIN_FRAME};
use crate::arch::pci::PortConfig;
use crate::mm::{self, PAGE_SIZE};
use crate::pci::{self, Bar, Bdf, Command, ConfigSpace, Function};
use crate::selftest::{Test, Verdict};
use core::ptr::NonNull;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The virtio vendor ID.
pub const VENDOR: u16 = 0x1af4;
/// Device IDs of virtio-net: transitional and modern.
pub const DEVICES: [u16; 2] = [0x1000, 0x1041];
/// Entries in each virtqueue, and receive and transmit slots.
pub const QUEUE_SIZE: usize = 16;
/// Bytes per slot: the virtio-net header (10 or 12 bytes) and a whole frame fit.
pub const BUF_LEN: usize = 2048;

/// Where the lower half ends: below it, every mapped address is identity-mapped.
const LOWER_HALF_END: u64 = 0x0000_8000_0000_0000;

/// The crate's view of our memory: contiguous frames from the frame allocator, identity
/// mapping everywhere below the higher half, cache-coherent DMA.
pub struct VirtioHal;

// SAFETY: `dma_alloc` returns frames the allocator gave to no one else, zeroed, page-aligned
// and identity-mapped (so the pointer is valid for the whole run); `mmio_phys_to_virt`
// returns the identity address of a range it has just mapped (uncached), and MMIO windows
// are not RAM, so they alias no allocation; `share` hands the device the identity address,
// which is the physical address of every lower-half byte.
unsafe impl Hal for VirtioHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // The crate reports a zero physical address as its `DmaError`.
        let Ok(phys) = mm::alloc_run(pages, PAGE_SIZE) else {
            return (0, NonNull::dangling());
        };
        let Some(ptr) = NonNull::new(phys as *mut u8) else { return (0, NonNull::dangling()) };
        // SAFETY: the allocator just gave us `pages` frames at `phys`, which no one else uses,
        // and all RAM is identity-mapped writable.
        unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, pages * PAGE_SIZE as usize) };
        (phys, ptr)
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        // The crate asserts on a non-zero answer, which would panic the kernel for what is
        // at worst a leak: report it and say done.
        if let Err(e) = mm::free_run(paddr, pages) {
            log::error!("virtio-net: returning DMA frames at {paddr:#x}: {e}");
        }
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // `open` mapped every memory BAR already, so this only confirms it; the trait has
        // no way to report an error.
        if let Err(e) = mm::map_mmio(paddr, size as u64) {
            panic!("virtio-net: mapping MMIO {paddr:#x}+{size:#x}: {e}");
        }
        match NonNull::new(paddr as *mut u8) {
            Some(p) => p,
            None => panic!("virtio-net: MMIO window at address 0"),
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        let start = buffer.cast::<u8>().as_ptr() as u64;
        // Only this driver's slots are ever shared (the crate's heap-backed paths are
        // compiled out), and they are in DMA regions.
        assert!(
            start.checked_add(buffer.len() as u64).is_some_and(|end| end <= LOWER_HALF_END),
            "virtio-net: a buffer outside the identity map was given to the device"
        );
        start
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {
        // Nothing was copied or mapped by `share`, and DMA is cache-coherent.
    }
}

fn bdf_of(f: DeviceFunction) -> Bdf {
    Bdf { bus: f.bus, device: f.device, function: f.function }
}

impl ConfigurationAccess for PortConfig {
    fn read_word(&self, f: DeviceFunction, offset: u8) -> u32 {
        self.read32(bdf_of(f), offset)
    }

    fn write_word(&mut self, f: DeviceFunction, offset: u8, data: u32) {
        self.write32(bdf_of(f), offset, data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortConfig
    }
}

/// Whether `f` is a virtio-net function this driver takes.
pub fn matches(f: &Function) -> bool {
    f.vendor == VENDOR && DEVICES.contains(&f.device)
}

/// Maps every memory BAR of `bdf` (the crate asks for windows inside them).
fn map_bars(bdf: Bdf) -> Result<(), NicError> {
    let mut index = 0;
    while index < 6 {
        let mut step = 1;
        match pci::read_bar(&PortConfig, bdf, index) {
            Ok(Bar::Memory { addr, size, wide, .. }) => {
                if wide {
                    step = 2;
                }
                log::debug!("virtio-net: {bdf} BAR{index} memory at {addr:#x}+{size:#x}");
                if let Err(e) = mm::map_mmio(addr, size) {
                    log::warn!("virtio-net: {bdf} BAR{index} at {addr:#x}+{size:#x}: {e}");
                    return Err(NicError::Device("cannot map a memory BAR"));
                }
            }
            Ok(Bar::Io { .. }) | Err(_) => {}
        }
        index += step;
    }
    Ok(())
}

fn pci_error(e: &virtio_drivers::transport::pci::VirtioPciError) -> NicError {
    use virtio_drivers::transport::pci::VirtioPciError as E;
    log::warn!("virtio-net: PCI transport: {e}");
    NicError::Device(match e {
        E::InvalidDeviceId(_) | E::InvalidVendorId(_) => "not a virtio device",
        E::MissingCommonConfig | E::MissingNotifyConfig | E::MissingIsrConfig => "virtio capability missing",
        E::InvalidNotifyOffMultiplier(_) => "bad notify offset multiplier",
        E::UnexpectedIoBar | E::BarNotAllocated(_) | E::BarOffsetOutOfRange => "bad virtio BAR",
        E::Misaligned { .. } => "misaligned virtio structure",
        E::Pci(_) => "PCI error",
    })
}

fn device_error(e: virtio_drivers::Error) -> NicError {
    use virtio_drivers::Error as E;
    NicError::Device(match e {
        E::QueueFull => "virtqueue full",
        E::NotReady => "device not ready",
        E::WrongToken => "device returned an unexpected buffer",
        E::AlreadyUsed => "virtqueue already in use",
        E::InvalidParam => "invalid parameter",
        E::DmaError => "out of DMA memory",
        E::IoError => "device I/O error",
        E::Unsupported => "unsupported request",
        E::ConfigSpaceTooSmall => "device configuration space too small",
        E::ConfigSpaceMissing => "device configuration space missing",
        E::SocketDeviceError(_) => "virtio socket error",
    })
}

/// An open virtio-net device.
pub struct VirtioNet {
    // Dropped first: the transport resets the device, then the rings are freed; only then
    // are the slots below returned.
    dev: VirtIONetRaw<VirtioHal, PciTransport, QUEUE_SIZE>,
    rx: DmaRegion,
    tx: DmaRegion,
    /// Receive slot of each token (descriptor head) the device holds.
    rx_slot: [Option<usize>; QUEUE_SIZE],
    /// Transmit slot and buffer length of each token the device holds.
    tx_slot: [Option<(usize, usize)>; QUEUE_SIZE],
    /// Transmit slots in flight.
    tx_busy: [bool; QUEUE_SIZE],
    bdf: Bdf,
    mac: Mac,
}

/// Opens the virtio-net function `f`: enables memory decoding and bus mastering, maps its
/// BARs, negotiates with the device and fills the receive queue.
pub fn open(f: &Function) -> Result<VirtioNet, NicError> {
    if !matches(f) {
        return Err(NicError::Device("not a virtio-net function"));
    }
    let bdf = f.bdf;
    // Polled: legacy interrupts stay off (MSI-X is never enabled).
    pci::enable(&PortConfig, bdf, Command::MEMORY | Command::BUS_MASTER | Command::INTX_DISABLE);
    map_bars(bdf)?;
    let df = DeviceFunction { bus: bdf.bus, device: bdf.device, function: bdf.function };
    let mut root = PciRoot::new(PortConfig);
    let transport = PciTransport::new::<VirtioHal, _>(&mut root, df).map_err(|e| pci_error(&e))?;
    let slots = QUEUE_SIZE * BUF_LEN;
    let rx = DmaRegion::new(slots).ok_or(NicError::Device("out of DMA memory"))?;
    let tx = DmaRegion::new(slots).ok_or(NicError::Device("out of DMA memory"))?;
    let mut dev =
        VirtIONetRaw::<VirtioHal, PciTransport, QUEUE_SIZE>::new(transport).map_err(device_error)?;
    dev.disable_interrupts();
    let mac = Mac(dev.mac_address());
    let mut nic = VirtioNet {
        dev,
        rx,
        tx,
        rx_slot: [None; QUEUE_SIZE],
        tx_slot: [None; QUEUE_SIZE],
        tx_busy: [false; QUEUE_SIZE],
        bdf,
        mac,
    };
    for slot in 0..QUEUE_SIZE {
        nic.post_rx(slot)?;
    }
    Ok(nic)
}

impl VirtioNet {
    /// Where the function is.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// Receive slot `slot`'s bytes.
    fn rx_buf(&mut self, slot: usize) -> &mut [u8] {
        assert!(slot < QUEUE_SIZE);
        // SAFETY: the slot lies inside `rx` (QUEUE_SIZE * BUF_LEN bytes), which this handle
        // owns; `&mut self` keeps the driver from making a second view of it at once. The
        // device writes it only while it holds the slot's token, and the driver reads it
        // only after the crate popped that token.
        unsafe { core::slice::from_raw_parts_mut(self.rx.ptr().as_ptr().add(slot * BUF_LEN), BUF_LEN) }
    }

    /// Transmit slot `slot`'s bytes.
    fn tx_buf(&mut self, slot: usize) -> &mut [u8] {
        assert!(slot < QUEUE_SIZE);
        // SAFETY: as in `rx_buf`, inside `tx`; the driver writes a slot only while it is not
        // in flight, and the device only reads it.
        unsafe { core::slice::from_raw_parts_mut(self.tx.ptr().as_ptr().add(slot * BUF_LEN), BUF_LEN) }
    }

    /// Gives receive slot `slot` to the device.
    fn post_rx(&mut self, slot: usize) -> Result<(), NicError> {
        let buf: *mut [u8] = self.rx_buf(slot);
        // SAFETY: the slot is in a DMA region that outlives the device (field order), and
        // the driver touches it again only after the device returns its token.
        let token = unsafe { self.dev.receive_begin(&mut *buf) }.map_err(device_error)?;
        match self.rx_slot.get_mut(usize::from(token)) {
            Some(entry @ None) => {
                *entry = Some(slot);
                Ok(())
            }
            _ => Err(NicError::Device("device returned an unexpected buffer")),
        }
    }

    /// Takes back the transmit slots the device has finished with.
    fn reap_tx(&mut self) -> Result<(), NicError> {
        while let Some(token) = self.dev.poll_transmit() {
            let Some((slot, len)) = self.tx_slot.get_mut(usize::from(token)).and_then(Option::take) else {
                return Err(NicError::Device("device returned an unexpected buffer"));
            };
            let buf: *const [u8] = &self.tx_buf(slot)[..len];
            // SAFETY: the same slot and length as given to `transmit_begin` for this token.
            unsafe { self.dev.transmit_complete(token, &*buf) }.map_err(device_error)?;
            self.tx_busy[slot] = false;
        }
        Ok(())
    }
}

impl Nic for VirtioNet {
    fn driver(&self) -> &'static str {
        "virtio-net"
    }

    fn mac(&self) -> Mac {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        // The crate's raw driver does not expose the status field; QEMU's link is up.
        true
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), NicError> {
        if frame.is_empty() || frame.len() > MAX_FRAME {
            return Err(NicError::BadLength(frame.len()));
        }
        self.reap_tx()?;
        let Some(slot) = self.tx_busy.iter().position(|busy| !busy) else { return Err(NicError::Busy) };
        let padded = frame.len().max(MIN_FRAME);
        // The header's layout depends on what was negotiated (10 or 12 bytes, all zero:
        // no offloads).
        let mut header = [0u8; 16];
        let hdr = self.dev.fill_buffer_header(&mut header).map_err(device_error)?;
        let buf = self.tx_buf(slot);
        buf[..hdr].copy_from_slice(&header[..hdr]);
        buf[hdr..hdr + frame.len()].copy_from_slice(frame);
        buf[hdr + frame.len()..hdr + padded].fill(0);
        let len = hdr + padded;
        let buf: *const [u8] = &self.tx_buf(slot)[..len];
        // SAFETY: the slot is in a DMA region that outlives the device, and it is not written
        // again until `reap_tx` has seen the device return this token.
        let token = match unsafe { self.dev.transmit_begin(&*buf) } {
            Ok(t) => t,
            Err(virtio_drivers::Error::QueueFull) => return Err(NicError::Busy),
            Err(e) => return Err(device_error(e)),
        };
        match self.tx_slot.get_mut(usize::from(token)) {
            Some(entry @ None) => *entry = Some((slot, len)),
            _ => return Err(NicError::Device("device returned an unexpected buffer")),
        }
        self.tx_busy[slot] = true;
        Ok(())
    }

    fn recv(&mut self, out: &mut [u8]) -> Result<Option<usize>, NicError> {
        self.reap_tx()?;
        let Some(token) = self.dev.poll_receive() else { return Ok(None) };
        let Some(slot) = self.rx_slot.get_mut(usize::from(token)).and_then(Option::take) else {
            return Err(NicError::Device("device returned an unexpected buffer"));
        };
        let buf: *mut [u8] = self.rx_buf(slot);
        // SAFETY: the same slot as given to `receive_begin` for this token.
        let done = unsafe { self.dev.receive_complete(token, &mut *buf) };
        let verdict = match done {
            Ok((hdr, len)) if hdr.checked_add(len).is_some_and(|end| end <= BUF_LEN) => {
                if len > out.len() {
                    Err(NicError::BadLength(len))
                } else {
                    out[..len].copy_from_slice(&self.rx_buf(slot)[hdr..hdr + len]);
                    Ok(Some(len))
                }
            }
            // A length past the buffer, or shorter than the header: dropped.
            Ok(_) | Err(virtio_drivers::Error::IoError) => Ok(None),
            // The crate did not take the token back: the slot stays the device's.
            Err(e) => {
                self.rx_slot[usize::from(token)] = Some(slot);
                return Err(device_error(e));
            }
        };
        self.post_rx(slot)?;
        verdict
    }
}

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[Test { name: "virtio-net", in_all: true, run: selftest }];

fn selftest() -> Verdict {
    let Some(f) = crate::arch::pci::enumerate().functions.iter().find(|f| matches(f)) else {
        log::info!("no virtio-net, skipped");
        return Ok(());
    };
    // Mapping a BAR above 4 GiB takes page-table frames that stay (MMIO mappings are
    // never removed): map first, so the count below is the driver's own.
    map_bars(f.bdf).map_err(|_| "cannot map the BARs")?;
    let before = mm::free_frames();
    {
        let mut nic = open(f).map_err(|e| {
            log::warn!("virtio-net: open {}: {e}", f.bdf);
            "open failed"
        })?;
        if !nic.mac().is_unicast() {
            return Err("the device's MAC is not unicast");
        }
        if nic.send(&[]) != Err(NicError::BadLength(0))
            || nic.send(&[0; MAX_FRAME + 1]) != Err(NicError::BadLength(MAX_FRAME + 1))
        {
            return Err("bad lengths were not refused");
        }
        let now = crate::arch::time::now_ns;
        let deadline = now() + 5_000_000_000;
        let (gw, others) = super::arp::round_trip(&mut nic, [10, 0, 2, 15], [10, 0, 2, 2], &now, deadline)
            .map_err(|e| {
                log::warn!("virtio-net: ARP: {e:?}");
                "no ARP reply from 10.0.2.2"
            })?;
        log::info!(
            "virtio-net: {} mac {}, gateway 10.0.2.2 is at {gw} ({others} other frames)",
            nic.bdf(),
            nic.mac()
        );
        burst(&mut nic, &now)?;
        short_buffer(&mut nic, &now)?;
    }
    let after = mm::free_frames();
    if after != before {
        log::warn!("virtio-net: {before} frames free before open, {after} after drop");
        return Err("DMA frames leaked");
    }
    Ok(())
}

/// Ask the gateway this many times in a row: every slot of both queues is used and
/// reused several times.
const BURST: usize = 4 * QUEUE_SIZE;

/// Sends [`BURST`] ARP requests as fast as the transmit slots allow (unpadded, so the
/// driver pads them) and waits for as many replies.
fn burst(nic: &mut VirtioNet, now: &dyn Fn() -> u64) -> Verdict {
    let request = super::arp::request(nic.mac(), [10, 0, 2, 15], [10, 0, 2, 2]);
    let deadline = now() + 5_000_000_000;
    let (mut sent, mut replies, mut busy) = (0, 0, 0u64);
    let mut buf = [0u8; MAX_FRAME];
    while replies < BURST && now() < deadline {
        if sent < BURST {
            match nic.send(&request) {
                Ok(()) => sent += 1,
                Err(NicError::Busy) => busy += 1,
                Err(_) => return Err("sending a burst failed"),
            }
        }
        match nic.recv(&mut buf) {
            Ok(Some(n)) if super::arp::reply_from(&buf[..n], nic.mac(), [10, 0, 2, 2]).is_some() => {
                replies += 1
            }
            Ok(_) => {}
            Err(_) => return Err("receiving a burst failed"),
        }
    }
    log::info!("virtio-net: burst of {BURST}: {sent} sent, {replies} replies, {busy} times busy");
    if replies < BURST {
        return Err("replies to a burst went missing");
    }
    Ok(())
}

/// A frame longer than the caller's buffer is reported and dropped, and its slot is given
/// back: the next frame arrives as usual.
fn short_buffer(nic: &mut VirtioNet, now: &dyn Fn() -> u64) -> Verdict {
    let request = super::arp::request(nic.mac(), [10, 0, 2, 15], [10, 0, 2, 2]);
    let deadline = now() + 5_000_000_000;
    let mut tiny = [0u8; 8];
    nic.send(&request).map_err(|_| "sending failed")?;
    loop {
        match nic.recv(&mut tiny) {
            Err(NicError::BadLength(n)) if n > tiny.len() => break,
            Ok(None) if now() < deadline => core::hint::spin_loop(),
            Ok(None) => return Err("no frame for the short buffer"),
            _ => return Err("a frame longer than the buffer was not refused"),
        }
    }
    super::arp::round_trip(nic, [10, 0, 2, 15], [10, 0, 2, 2], now, now() + 5_000_000_000)
        .map(|_| ())
        .map_err(|_| "no reply after a refused frame")
}
