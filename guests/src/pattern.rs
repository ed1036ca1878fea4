//! The SSE register pattern of the `fpu` guest: distinct for every VM and every register,
//! so a register that leaks between VMs (or between registers) is caught.

/// The 16 XMM registers' contents, 16 bytes each.
pub type XmmState = [[u8; 16]; 16];

/// The pattern VM `vm_index` keeps in its XMM registers.
pub fn xmm_pattern(vm_index: u32) -> XmmState {
    let mut state = [[0u8; 16]; 16];
    for (reg, bytes) in (0u64..).zip(state.iter_mut()) {
        let lo = 0xC0DE_0000_0000_0000 | (u64::from(vm_index) << 16) | (reg << 8) | 0x5A;
        let hi = !lo ^ (u64::from(vm_index).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        bytes[..8].copy_from_slice(&lo.to_le_bytes());
        bytes[8..].copy_from_slice(&hi.to_le_bytes());
    }
    state
}

/// The first register whose contents differ from the pattern.
pub fn first_mismatch(expected: &XmmState, actual: &XmmState) -> Option<usize> {
    expected.iter().zip(actual.iter()).position(|(e, a)| e != a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_between_vms_and_registers() {
        let mut seen = std::collections::HashSet::new();
        for vm in 0..64 {
            for reg in xmm_pattern(vm) {
                assert!(seen.insert(reg), "vm {vm} repeats a register value");
            }
        }
    }

    #[test]
    fn mismatch_names_the_register() {
        let a = xmm_pattern(1);
        let mut b = a;
        assert_eq!(first_mismatch(&a, &b), None);
        b[9][3] ^= 1;
        assert_eq!(first_mismatch(&a, &b), Some(9));
        assert_eq!(first_mismatch(&a, &xmm_pattern(2)), Some(0));
    }
}
