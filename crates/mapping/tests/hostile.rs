//! Hostile input: thousands of deterministic mutations of the guideline samples (truncations,
//! flipped bytes, injected delimiters, escapes, multibyte characters in numeric fields) go
//! through decode → parse → map. Errors are fine; a panic is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{files, map_bytes, tables, workspace};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INJECTIONS: &[&[u8]] = &[
    b"|",
    b"^",
    b"~",
    b"\\",
    b"&",
    b"\r",
    b"\n",
    b"\x1c",
    b"\x0b",
    b"\\X\\",
    b"\\XZZ\\",
    b"\\.br\\",
    b"\"\"",
    b"MSH|^~\\&|",
    b"\x1b$B",
    b"\x1b(B",
    b"\x1b$B\x46\x7c\x1b(B",
    "７".as_bytes(),
    b"99999999999999999999",
    b"-",
    b"> ",
    b"+-",
    b"\x00",
    b"\xff",
];

#[test]
fn mutated_samples_never_panic() {
    let tables = tables("9999999999");
    let files =
        files(&workspace().join("../shared/testdata/ssmix2-guideline-samples/sampleData/999"));
    let mut rng = Rng(2026);
    let mut outcomes = [0usize; 2];
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let original = std::fs::read(path).unwrap();
        for _ in 0..150 {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(4) {
                    0 => bytes.truncate(rng.below(bytes.len() + 1)),
                    1 => {
                        if !bytes.is_empty() {
                            let at = rng.below(bytes.len());
                            bytes[at] = rng.next() as u8;
                        }
                    }
                    2 => {
                        let at = rng.below(bytes.len() + 1);
                        let injected = INJECTIONS[rng.below(INJECTIONS.len())];
                        bytes.splice(at..at, injected.iter().copied());
                    }
                    _ => {
                        if bytes.len() > 2 {
                            let from = rng.below(bytes.len());
                            let to = (from + rng.below(40)).min(bytes.len());
                            bytes.drain(from..to);
                        }
                    }
                }
            }
            let result = map_bytes("9999999999", &name, &bytes, &tables);
            outcomes[usize::from(result.get("error").is_some())] += 1;
        }
    }
    // Both outcomes occur: the mutations are real, and most are still tolerated.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}
