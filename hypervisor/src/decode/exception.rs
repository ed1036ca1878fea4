//! Exception vectors (Intel SDM Vol. 3A 6.15, AMD APM Vol. 2 8.2), page-fault error codes,
//! IDT gate encoding and the frame-pointer walk used by the exception report.

use core::fmt;

/// Facts about one of the 32 architecturally defined vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorInfo {
    /// Long name, as the report prints it.
    pub name: &'static str,
    /// Mnemonic such as `#PF`.
    pub mnemonic: &'static str,
    /// Whether the CPU pushes an error code for it.
    pub has_error_code: bool,
}

const fn v(name: &'static str, mnemonic: &'static str, has_error_code: bool) -> VectorInfo {
    VectorInfo { name, mnemonic, has_error_code }
}

/// Vectors 0..=31 in order (SDM Vol. 3A Table 6-1; #VC and #SX from the AMD APM).
static VECTORS: [VectorInfo; 32] = [
    v("divide error", "#DE", false),
    v("debug", "#DB", false),
    v("non-maskable interrupt", "NMI", false),
    v("breakpoint", "#BP", false),
    v("overflow", "#OF", false),
    v("bound range exceeded", "#BR", false),
    v("invalid opcode", "#UD", false),
    v("device not available", "#NM", false),
    v("double fault", "#DF", true),
    v("coprocessor segment overrun", "#CSO", false),
    v("invalid TSS", "#TS", true),
    v("segment not present", "#NP", true),
    v("stack-segment fault", "#SS", true),
    v("general protection", "#GP", true),
    v("page fault", "#PF", true),
    v("reserved vector 15", "#15", false),
    v("x87 floating-point error", "#MF", false),
    v("alignment check", "#AC", true),
    v("machine check", "#MC", false),
    v("SIMD floating-point exception", "#XM", false),
    v("virtualization exception", "#VE", false),
    v("control protection", "#CP", true),
    v("reserved vector 22", "#22", false),
    v("reserved vector 23", "#23", false),
    v("reserved vector 24", "#24", false),
    v("reserved vector 25", "#25", false),
    v("reserved vector 26", "#26", false),
    v("reserved vector 27", "#27", false),
    v("hypervisor injection exception", "#HV", false),
    v("VMM communication exception", "#VC", true),
    v("security exception", "#SX", true),
    v("reserved vector 31", "#31", false),
];

/// Number of architecturally defined exception vectors.
pub const EXCEPTION_VECTORS: usize = 32;

/// Vector numbers the kernel refers to by name.
pub mod vector {
    /// Breakpoint (`int3`).
    pub const BREAKPOINT: u8 = 3;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Double fault.
    pub const DOUBLE_FAULT: u8 = 8;
    /// Page fault.
    pub const PAGE_FAULT: u8 = 14;
    /// Machine check.
    pub const MACHINE_CHECK: u8 = 18;
}

/// Facts about `vector`, or `None` above 31 (those are interrupts, not exceptions).
pub fn info(vector: u64) -> Option<&'static VectorInfo> {
    usize::try_from(vector).ok().and_then(|i| VECTORS.get(i))
}

/// A page-fault error code (SDM Vol. 3A 4.7) that prints as
/// `[not-present read supervisor]`, with extra words for the rarer bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFaultCode(pub u64);

impl fmt::Display for PageFaultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let bit = |n: u32| c & (1 << n) != 0;
        f.write_str(if bit(0) { "protection" } else { "not-present" })?;
        f.write_str(if bit(4) {
            " execute"
        } else if bit(1) {
            " write"
        } else {
            " read"
        })?;
        f.write_str(if bit(2) { " user" } else { " supervisor" })?;
        for (n, word) in [(3, "reserved-bit"), (5, "protection-key"), (6, "shadow-stack"), (15, "sgx")] {
            if bit(n) {
                write!(f, " {word}")?;
            }
        }
        Ok(())
    }
}

/// Gate type of a 64-bit interrupt gate (IF cleared on entry), SDM Vol. 3A 6.14.1.
pub const GATE_INTERRUPT: u8 = 0xE;

/// Encodes a present 64-bit IDT gate as its two quadwords (SDM Vol. 3A Figure 6-8).
/// `ist` is 0 (no stack switch) or 1..=7; larger values are truncated to three bits.
pub fn encode_gate(handler: u64, selector: u16, ist: u8, gate_type: u8, dpl: u8) -> [u64; 2] {
    let low = (handler & 0xffff)
        | (u64::from(selector) << 16)
        | (u64::from(ist & 7) << 32)
        | (u64::from(gate_type & 0xf) << 40)
        | (u64::from(dpl & 3) << 45)
        | (1 << 47)
        | ((handler >> 16) & 0xffff) << 48;
    [low, handler >> 32]
}

/// Most frames a backtrace lists.
pub const MAX_FRAMES: usize = 32;

/// Walks saved frame pointers: each frame is `[rbp] = caller's rbp`, `[rbp+8] = return
/// address`. Starts with `rip` as frame #0 and follows `rbp` only while `on_stack` accepts
/// the 16 bytes at it, it is 8-byte aligned, and it grows (so a loop cannot recur).
/// `read` returns `None` where it cannot read. Fills `out` and returns how many entries
/// it wrote (at most `out.len()`).
pub fn walk_frames(
    rip: u64,
    mut rbp: u64,
    on_stack: impl Fn(u64, u64) -> bool,
    read: impl Fn(u64) -> Option<u64>,
    out: &mut [u64],
) -> usize {
    let mut n = 0;
    let Some(first) = out.first_mut() else {
        return 0;
    };
    *first = rip;
    n += 1;
    while n < out.len() {
        if rbp == 0 || !rbp.is_multiple_of(8) || !on_stack(rbp, 16) {
            break;
        }
        let (Some(next), Some(ret)) = (read(rbp), rbp.checked_add(8).and_then(&read)) else {
            break;
        };
        if ret == 0 {
            break;
        }
        if let Some(slot) = out.get_mut(n) {
            *slot = ret;
        }
        n += 1;
        if next <= rbp {
            break;
        }
        rbp = next;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_table_matches_the_manual() {
        let pf = info(14).expect("vector 14 exists");
        assert_eq!((pf.name, pf.mnemonic, pf.has_error_code), ("page fault", "#PF", true));
        let with_code: Vec<u64> = (0..32).filter(|&i| info(i).is_some_and(|v| v.has_error_code)).collect();
        assert_eq!(with_code, vec![8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
        assert_eq!(info(3).map(|v| v.mnemonic), Some("#BP"));
        assert_eq!(info(29).map(|v| v.mnemonic), Some("#VC"));
        assert_eq!(info(30).map(|v| v.mnemonic), Some("#SX"));
        assert!(info(32).is_none());
        assert!(info(u64::MAX).is_none());
    }

    #[test]
    fn page_fault_codes_decode() {
        assert_eq!(PageFaultCode(0).to_string(), "not-present read supervisor");
        assert_eq!(PageFaultCode(0b111).to_string(), "protection write user");
        assert_eq!(PageFaultCode(0b1_0001).to_string(), "protection execute supervisor");
        assert_eq!(PageFaultCode(0b1001).to_string(), "protection read supervisor reserved-bit");
        assert_eq!(PageFaultCode(1 << 15).to_string(), "not-present read supervisor sgx");
    }

    #[test]
    fn gates_encode_like_the_manual_figure() {
        let [lo, hi] = encode_gate(0xffff_8000_1234_5678, 0x08, 2, GATE_INTERRUPT, 0);
        assert_eq!(lo & 0xffff, 0x5678);
        assert_eq!((lo >> 16) & 0xffff, 0x08);
        assert_eq!((lo >> 32) & 7, 2);
        assert_eq!((lo >> 40) & 0xf, 0xe);
        assert_eq!((lo >> 47) & 1, 1);
        assert_eq!(lo >> 48, 0x1234);
        assert_eq!(hi, 0xffff_8000);
    }

    fn fake_memory(words: &[(u64, u64)]) -> impl Fn(u64) -> Option<u64> + '_ {
        move |a| words.iter().find(|(k, _)| *k == a).map(|(_, v)| *v)
    }

    #[test]
    fn walk_follows_a_chain_and_stops_outside_the_stack() {
        let mem = [(0x1000, 0x1020), (0x1008, 0xaaa), (0x1020, 0x9000), (0x1028, 0xbbb)];
        let on_stack = |a: u64, len: u64| a >= 0x1000 && a + len <= 0x2000;
        let mut out = [0u64; MAX_FRAMES];
        let n = walk_frames(0x42, 0x1000, on_stack, fake_memory(&mem), &mut out);
        assert_eq!(&out[..n], &[0x42, 0xaaa, 0xbbb]);
    }

    #[test]
    fn walk_rejects_misaligned_looping_and_null_frames() {
        let on_stack = |a: u64, len: u64| a >= 0x1000 && a + len <= 0x2000;
        let mut out = [0u64; MAX_FRAMES];
        assert_eq!(walk_frames(1, 0x1004, on_stack, fake_memory(&[]), &mut out), 1);
        let looping = [(0x1000, 0x1000), (0x1008, 0xccc)];
        let n = walk_frames(1, 0x1000, on_stack, fake_memory(&looping), &mut out);
        assert_eq!(&out[..n], &[1, 0xccc]);
        let null_ret = [(0x1000, 0x1100), (0x1008, 0)];
        assert_eq!(walk_frames(1, 0x1000, on_stack, fake_memory(&null_ret), &mut out), 1);
        let mut none: [u64; 0] = [];
        assert_eq!(walk_frames(1, 0x1000, on_stack, fake_memory(&null_ret), &mut none), 0);
    }

    #[test]
    fn walk_stops_at_the_frame_limit() {
        let mem: Vec<(u64, u64)> = (0..100u64)
            .flat_map(|i| [(0x1000 + 16 * i, 0x1000 + 16 * (i + 1)), (0x1008 + 16 * i, 0x500 + i)])
            .collect();
        let on_stack = |a: u64, len: u64| a >= 0x1000 && a + len <= 0x4000;
        let mut out = [0u64; MAX_FRAMES];
        let n = walk_frames(7, 0x1000, on_stack, fake_memory(&mem), &mut out);
        assert_eq!(n, MAX_FRAMES);
        assert_eq!(out[1], 0x500);
        assert_eq!(out[MAX_FRAMES - 1], 0x500 + MAX_FRAMES as u64 - 2);
    }
}
