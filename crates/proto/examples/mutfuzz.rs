//! A dependency-free mutation fuzzer for the decoder, for machines where
//! cargo-fuzz/libFuzzer cannot be installed. Not coverage-guided: it mutates
//! valid seed messages (bit flips, byte stores, length-field tweaks,
//! truncation, splicing, inserted TLVs) and checks, for every input that
//! decodes, that encode(decode(b)) == b and decode is stable.
//! `cargo run --release -p lq6-proto --example mutfuzz -- SECONDS`

use lq6_proto::{pretty, Message};
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn h(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        // INTEROP.md QUERY_BY_RELAY_ID.
        h("0e123456 0001000a00030001020000000001 002c001f03 00000000000000000000000000000000 0035000a0002000009bf0a0b0c0d"),
        // RELAY-FORW(SOLICIT IA_NA IA_PD RAPID_COMMIT) with Interface-ID and Remote-ID.
        h("0c00 20010db8000100000000000000000001 fe800000000000000000000000000001 0012000400000005 00250007000000090a0b0c
           0009 0059 01010203 0001000a0003000102000000aa01 00080002 0000 000e0000 0003000c000000010000000000000000
           00190029 000000020000000000000000 001a0019 0000000000000000 38 00000000000000000000000000000000"),
        // LEASEQUERY-REPLY with CLIENT_DATA and LQ_RELAY_DATA.
        h("0f abcdef 0002000a0002000009bf0a0b0c0d 0001000a00030001020000000001
           002d 00a6 0001000a0003000102000000aa07 0005001820010db8000100000000000000000064 00000e10 00001c20
           001a0019 00000708 00000e10 38 20010db8ff0000000000000000000000 002e0004 0000003c
           002f 0053 20010db8ffff00000000000000000002 0c00 20010db8000100000000000000000001 fe800000000000000000000000000007
           0012000400000005 0035000a0002000009bf0a0b0c0d 00250007000000090a0b0c"),
        // DONE, ACTIVELEASEQUERY, ADVERTISE with DNS and domain list.
        h("10 abcdef 000d 0006 000b 646f6e65 0064 0004 30000000"),
        h("16 000101 0001000a00030001020000000001 0006 0004 002f 0064 0065 0004 2a2b2c2d"),
        h("02 000001 0007 0001 ff 0017 0010 20010db8000000000000000000000053 0018 0012 076578616d706c6503636f6d00036c713600"),
    ]
}

fn mutate(r: &mut Rng, seeds: &[Vec<u8>], b: &mut Vec<u8>) {
    for _ in 0..1 + r.below(4) {
        let n = b.len().max(1);
        match r.below(8) {
            0 => {
                let i = r.below(n);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << r.below(8);
                }
            }
            1 => {
                let i = r.below(n);
                if let Some(x) = b.get_mut(i) {
                    *x = r.next() as u8;
                }
            }
            2 => {
                // Nudge a 16-bit field (most are option lengths).
                let i = r.below(n);
                if i + 1 < b.len() {
                    let v = u16::from_be_bytes([b[i], b[i + 1]])
                        .wrapping_add(r.below(5) as u16)
                        .wrapping_sub(2);
                    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            3 => b.truncate(r.below(n + 1)),
            4 => {
                let s = &seeds[r.below(seeds.len())];
                let (a, c) = (r.below(s.len()), r.below(s.len()));
                let (a, c) = (a.min(c), a.max(c));
                let at = r.below(b.len() + 1);
                b.splice(at..at, s[a..c].iter().copied());
            }
            5 => {
                // Insert a random TLV with a plausible code.
                let code = [
                    1u16, 2, 3, 5, 9, 13, 25, 26, 37, 44, 45, 46, 47, 48, 53, 79, 100, 135,
                ][r.below(18)];
                let len = r.below(24);
                let at = r.below(b.len() + 1);
                let mut t = code.to_be_bytes().to_vec();
                t.extend((len as u16).to_be_bytes());
                t.extend((0..len).map(|_| r.next() as u8));
                b.splice(at..at, t);
            }
            6 => {
                let i = r.below(n);
                if i < b.len() {
                    b.remove(i);
                }
            }
            _ => {
                let i = r.below(b.len() + 1);
                b.insert(i, r.next() as u8);
            }
        }
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seeds = seeds();
    for s in &seeds {
        if let Err(e) = Message::decode(s) {
            panic!("seed {} does not decode: {e}", hex(s));
        }
    }
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64);
    let (start, limit) = (Instant::now(), Duration::from_secs(secs));
    let (mut execs, mut ok) = (0u64, 0u64);
    let mut b = Vec::new();
    while start.elapsed() < limit {
        for _ in 0..10_000 {
            b.clear();
            b.extend_from_slice(&seeds[r.below(seeds.len())]);
            mutate(&mut r, &seeds, &mut b);
            execs += 1;
            if let Ok(m) = Message::decode(&b) {
                ok += 1;
                let again = m.to_vec().expect("a decoded message re-encodes");
                assert_eq!(again, b, "round trip differs for {}", hex(&b));
                assert_eq!(Message::decode(&again).expect("re-decodes"), m);
                let _ = pretty::tree(&m);
            }
        }
    }
    println!(
        "mutfuzz: {execs} executions in {:.0} s ({:.0}/s), {ok} decoded and round-tripped, no crash",
        start.elapsed().as_secs_f64(),
        execs as f64 / start.elapsed().as_secs_f64()
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
