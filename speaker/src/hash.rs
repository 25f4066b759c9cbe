//! SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012), written out so
//! that the ownership weights are fixed by this file alone: the same on every node, every build,
//! every platform and every Rust release. std's `DefaultHasher`/`RandomState` promise none of that
//! and must not be used for anything that several nodes have to agree on.
//!
//! Input is read as little-endian 64-bit words, as the reference implementation does, so the
//! result does not depend on the host's byte order.

/// SipHash-2-4 of `data` under the 128-bit `key` (read as two little-endian words).
pub(crate) fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let (k0, k1) = key.split_at(8);
    let k0 = u64::from_le_bytes(word(k0));
    let k1 = u64::from_le_bytes(word(k1));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        compress(&mut v, u64::from_le_bytes(word(chunk)));
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    // The length byte: only the low 8 bits of the length are mixed in, as the spec says.
    last[7] = data.len() as u8;
    compress(&mut v, u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn word(bytes: &[u8]) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes);
    w
}

fn compress(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    round(v);
    round(v);
    v[0] ^= m;
}

fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REFERENCE_KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    fn reference_message(len: u8) -> Vec<u8> {
        (0..len).collect()
    }

    #[test]
    fn matches_the_reference_test_vectors() {
        // From the reference implementation's vectors.h (key 00..0f, message 00..len-1).
        assert_eq!(
            siphash24(&REFERENCE_KEY, &reference_message(0)),
            0x726f_db47_dd0e_0e31
        );
        assert_eq!(
            siphash24(&REFERENCE_KEY, &reference_message(1)),
            0x74f8_39c5_93dc_67fd
        );
        // The example of the paper's appendix A.
        assert_eq!(
            siphash24(&REFERENCE_KEY, &reference_message(15)),
            0xa129_ca61_49be_45e5
        );
    }

    proptest! {
        #[test]
        fn agrees_with_std_siphasher_on_any_input(key in any::<[u8; 16]>(), data in proptest::collection::vec(any::<u8>(), 0..64)) {
            #[allow(deprecated)]
            let expected = {
                use std::hash::Hasher;
                let k0 = u64::from_le_bytes(word(&key[..8]));
                let k1 = u64::from_le_bytes(word(&key[8..]));
                let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
                h.write(&data);
                h.finish()
            };
            prop_assert_eq!(siphash24(&key, &data), expected);
        }
    }
}
