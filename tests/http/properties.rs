//! The fuzz targets' models, run on pseudo-random inputs by `cargo test`
//! (the fuzzers in `fuzz/` explore the same models guided by coverage).

use crate::models;

/// xorshift64*: reproducible inputs without a dependency.
struct Inputs(u64);

impl Inputs {
    fn next_byte(&mut self) -> u8 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
    }

    fn input(&mut self, max_len: usize) -> Vec<u8> {
        let len = usize::from(self.next_byte()) % max_len + 1;
        (0..len).map(|_| self.next_byte()).collect()
    }
}

#[test]
fn manager_matches_its_sequential_model() {
    let mut inputs = Inputs(0x5eed_0001);
    for _ in 0..400 {
        models::manager::check(&inputs.input(96));
    }
}

#[test]
fn any_last_event_id_gets_a_stream_or_an_error() {
    let mut inputs = Inputs(0x5eed_0002);
    for fixed in [
        &b"0"[..],
        b"-1",
        b"18446744073709551616",
        b"99999999999999999999/1",
        b"3/",
        b"/3",
        b"1/2/3",
        b"",
        b"\xff\xfe",
    ] {
        models::last_event_id::check(fixed);
    }
    for _ in 0..300 {
        // Mostly digits and slashes, where the parser has its branches.
        let input: Vec<u8> = inputs
            .input(24)
            .into_iter()
            .map(|b| match b % 4 {
                0 => b'/',
                1 | 2 => b'0' + b % 10,
                _ => b,
            })
            .collect();
        models::last_event_id::check(&input);
    }
}
