//! Bob Jenkins' lookup3 `jhash2`, bit-for-bit the same as `bpf/lb_hash.h` and Linux's
//! `include/linux/jhash.h`.
//!
//! The XDP program hashes a flow's 5-tuple with this function to pick its Maglev slot; user
//! space uses the same function to place backends in the table and, in tests, to predict which
//! backend a packet reaches. Every node must get the same answer for the same input, so this
//! module must never depend on anything but its arguments (no random state, no host endianness:
//! words are always read little-endian, which is what the BPF program does on the little-endian
//! hosts it supports).

const JHASH_INITVAL: u32 = 0xdead_beef;

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn finalize(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// `jhash2(words, words.len(), seed)`: the lookup3 hash of 32-bit words.
pub fn jhash2(words: &[u32], seed: u32) -> u32 {
    // The word count is part of the initial value; lengths here are tiny (≤ 10 words).
    let len = u32::try_from(words.len()).unwrap_or(u32::MAX);
    let init = JHASH_INITVAL
        .wrapping_add(len.wrapping_shl(2))
        .wrapping_add(seed);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut rest = words;
    while rest.len() > 3 {
        a = a.wrapping_add(rest[0]);
        b = b.wrapping_add(rest[1]);
        c = c.wrapping_add(rest[2]);
        mix(&mut a, &mut b, &mut c);
        rest = &rest[3..];
    }
    match *rest {
        [] => return c,
        [x] => a = a.wrapping_add(x),
        [x, y] => {
            a = a.wrapping_add(x);
            b = b.wrapping_add(y);
        }
        [x, y, z, ..] => {
            a = a.wrapping_add(x);
            b = b.wrapping_add(y);
            c = c.wrapping_add(z);
        }
    }
    finalize(&mut a, &mut b, &mut c);
    c
}

/// Reads `bytes` as little-endian 32-bit words (the length must be a multiple of 4; a short
/// tail is zero-padded).
pub fn le_words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|chunk| {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            u32::from_le_bytes(word)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_hashes_to_the_initial_value() {
        assert_eq!(jhash2(&[], 0), JHASH_INITVAL);
        assert_eq!(jhash2(&[], 7), JHASH_INITVAL.wrapping_add(7));
    }

    #[test]
    fn seed_and_every_word_change_the_hash() {
        let base = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let h = jhash2(&base, 0);
        assert_ne!(h, jhash2(&base, 1));
        for i in 0..base.len() {
            let mut changed = base;
            changed[i] ^= 1;
            assert_ne!(h, jhash2(&changed, 0), "word {i} ignored");
        }
    }

    #[test]
    fn le_words_pads_a_short_tail() {
        assert_eq!(le_words(&[1, 0, 0, 0, 2]), vec![1, 2]);
    }
}
