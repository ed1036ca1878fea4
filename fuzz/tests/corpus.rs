//! Runs every fuzz target over its seed corpus (`corpus/<target>/`) and a fixed-seed series of
//! mutations of it: bit flips, byte changes, insertions and deletions, repeats, truncation,
//! splices of two inputs, tokens that parsers treat specially, and deep nesting. The series is
//! the same on every run, so a failure reproduces; `FUZZ_ITERATIONS` sets its length per
//! target (default 2000). An input that panics is written to `target/fuzz-failures/` and
//! named in the failure.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
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

/// Byte strings that mean something to an HTTP, JSON, patch or selector parser.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1e999",
    b"\\u0000",
    b"\\ud800",
    b"%",
    b"%zz",
    b"%00",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 99999999999\r\n",
    b"ffffffffffffffff\r\n",
    b"$patch",
    b"\"$patch\":\"delete\"",
    b"$setElementOrder/conditions",
    b"$retainKeys",
    b"!=",
    b"==",
    b" in (",
    b" notin (",
    b"=",
    b"!",
    b"~",
    b"/",
    b"..",
    b"?",
    b"&",
    b"\xff\xfe",
    b"\xc3\x28",
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(i..i, t.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                v.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let piece = v[a..b].to_vec();
                for _ in 0..=rng.below(8) {
                    v.splice(a..a, piece.iter().copied());
                }
            }
            5 => v.truncate(rng.below(len + 1)),
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            7 => {
                let i = rng.below(len + 1);
                let depth = 1 + rng.below(3000);
                let open = if rng.below(2) == 0 { b"[" } else { b"{\"a\":".as_slice() };
                let nest: Vec<u8> = open.iter().copied().cycle().take(open.len() * depth).collect();
                v.splice(i..i, nest);
            }
            8 => {
                let i = rng.below(len + 1);
                let b = rng.next() as u8;
                v.splice(i..i, std::iter::repeat_n(b, 1 + rng.below(64)));
            }
            _ => {
                let i = rng.below(len + 1);
                let digits = format!("{}", rng.next());
                v.splice(i..i, digits.bytes());
            }
        }
    }
    v
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)
}

fn load(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()))).collect()
}

fn iterations() -> usize {
    std::env::var("FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

fn run(target: &str, f: fn(&[u8])) {
    let corpus = load(target);
    assert!(!corpus.is_empty(), "{target}: empty seed corpus in {}", corpus_dir(target).display());
    let seed = target
        .bytes()
        .fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut rng = Rng(seed);
    let inputs = corpus.iter().cloned().chain((0..iterations()).map(|_| {
        let base = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &base, &corpus)
    }));
    for (i, input) in inputs.enumerate() {
        if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{target}-{i}"));
            let _ = std::fs::write(&file, &input);
            panic!("{target}: input {i} panicked; saved to {}", file.display());
        }
    }
}

macro_rules! target_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name), fuzz_targets::$name);
            }
        )*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in fuzz_targets::TARGETS {
                assert!(tested.contains(&name), "{name} has no test");
            }
        }
    };
}

target_tests!(
    http_response,
    watch_lines,
    agent_replies,
    http_request,
    api_request,
    patch,
    selectors,
    log_request,
    protobuf,
    registry_manifest,
    pull_secrets
);

#[test]
fn mutations_are_deterministic_and_varied() {
    let corpus = vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()];
    let a: Vec<Vec<u8>> = {
        let mut r = Rng(7);
        (0..50).map(|_| mutate(&mut r, &corpus[0], &corpus)).collect()
    };
    let b: Vec<Vec<u8>> = {
        let mut r = Rng(7);
        (0..50).map(|_| mutate(&mut r, &corpus[0], &corpus)).collect()
    };
    assert_eq!(a, b);
    let distinct: std::collections::BTreeSet<_> = a.iter().collect();
    assert!(distinct.len() > 40, "only {} distinct mutations", distinct.len());
}
