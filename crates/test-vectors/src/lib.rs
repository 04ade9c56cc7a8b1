//! Access to the official MLS test vectors for hsmls tests.
//!
//! The vectors are vendored in this crate's `vectors/` folder (see its
//! README.md for their source commit and licence). Tests find them at run
//! time with [`vectors_dir`]; the `HSMLS_TEST_VECTORS` environment variable
//! is an optional override. Every file is a JSON array of cases. Tests
//! deserialize cases into their own serde types and record how many they ran
//! with a [`CaseCounter`], which fails the test if it ran none.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// The optional override: a directory holding the vector files.
pub const VECTORS_ENV: &str = "HSMLS_TEST_VECTORS";

/// Where the vendored vectors sit, relative to the repository root.
pub const VENDORED_DIR: &str = "crates/test-vectors/vectors";

/// The directory holding the vector files.
///
/// Found at run time, never baked in at compile time (a shared target
/// directory may serve several clones of the repository): the directory
/// named by `HSMLS_TEST_VECTORS` if that is set, else the first
/// `crates/test-vectors/vectors` under an ancestor of the working directory
/// (cargo runs a test in its package directory, inside the repository).
/// Panics, naming where it looked, if there is none: a missing vector file is
/// a test failure.
pub fn vectors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(VECTORS_ENV) {
        return PathBuf::from(dir);
    }
    let start = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    find_vendored(&start).unwrap_or_else(|| {
        panic!(
            "no {VENDORED_DIR} found in {} or its ancestors; run the tests inside \
             the hsmls repository or set {VECTORS_ENV}",
            start.display()
        )
    })
}

/// The first `crates/test-vectors/vectors` directory under `start` or one
/// of its ancestors.
pub fn find_vendored(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|a| a.join(VENDORED_DIR))
        .find(|d| d.is_dir())
}

/// Reads and parses a vector file (e.g. `"tree-math.json"`) into cases of
/// type `T`. Panics with a clear message if the file is missing or malformed:
/// a missing vector file is a test failure, never a silent pass.
pub fn load<T: DeserializeOwned>(file: &str) -> Vec<T> {
    let path = vectors_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read test vectors {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("cannot parse test vectors {}: {e}", path.display()))
}

/// Decodes a hex string from a vector; panics on malformed hex.
pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex in test vector ({e}): {s:?}"))
}

/// serde helper: `#[serde(deserialize_with = "hsmls_test_vectors::hex_bytes")]`.
pub fn hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s: String = serde::Deserialize::deserialize(d)?;
    hex::decode(&s).map_err(serde::de::Error::custom)
}

/// `bytes` left-padded with zeros to `len` (longer input is returned
/// as is). Some vector files give P-521 private keys as the minimal
/// big-endian integer (65 bytes when the top byte is zero), where RFC 9180
/// §7.1.2 `SerializePrivateKey` and hsmls's custody take exactly `Nsk` = 66.
pub fn left_pad(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len.saturating_sub(bytes.len())];
    out.extend_from_slice(bytes);
    out
}

/// Counts the cases a vector test ran and asserts the count on drop-free
/// [`CaseCounter::finish`].
#[derive(Debug)]
pub struct CaseCounter {
    file: &'static str,
    ran: usize,
    skipped: usize,
    /// Cases run and skipped per cipher suite, for
    /// [`CaseCounter::finish_per_suite`].
    ran_by_suite: std::collections::BTreeMap<u16, usize>,
    skipped_by_suite: std::collections::BTreeMap<u16, usize>,
}

/// The cipher suites hsmls implements (RFC 9420 §17.1): 0x0001, 0x0002,
/// 0x0003, 0x0005, 0x0007.
pub const IMPLEMENTED_SUITES: [u16; 5] = [0x0001, 0x0002, 0x0003, 0x0005, 0x0007];

/// The only suites a vector test may skip: X448/Ed448 (0x0004, 0x0006),
/// which hsmls does not implement.
pub const UNIMPLEMENTED_SUITES: [u16; 2] = [0x0004, 0x0006];

/// `n` cases for each implemented suite: the expectation of the vector
/// files with the same number of cases per suite.
pub fn per_suite(n: usize) -> Vec<(u16, usize)> {
    IMPLEMENTED_SUITES.iter().map(|&s| (s, n)).collect()
}

impl CaseCounter {
    /// A counter for the cases of `file`.
    pub fn new(file: &'static str) -> Self {
        CaseCounter {
            file,
            ran: 0,
            skipped: 0,
            ran_by_suite: Default::default(),
            skipped_by_suite: Default::default(),
        }
    }

    /// One case of cipher suite `suite` was run and passed.
    pub fn ran_suite(&mut self, suite: u16) {
        self.ran += 1;
        *self.ran_by_suite.entry(suite).or_default() += 1;
    }

    /// One case of cipher suite `suite` was skipped; fails unless the suite
    /// is one hsmls does not implement ([`UNIMPLEMENTED_SUITES`]).
    pub fn skipped_suite(&mut self, suite: u16) {
        assert!(
            UNIMPLEMENTED_SUITES.contains(&suite),
            "{}: a case of suite 0x{suite:04x} was skipped; only 0x0004 and 0x0006 may be",
            self.file
        );
        self.skipped += 1;
        *self.skipped_by_suite.entry(suite).or_default() += 1;
    }

    /// Prints the tally per suite and fails if the cases run per suite
    /// differ from `expected` (every listed suite must run exactly its
    /// count, which must not be zero; no other suite may run).
    pub fn finish_per_suite(self, expected: &[(u16, usize)]) -> usize {
        for (suite, n) in &self.ran_by_suite {
            println!("{}: suite 0x{suite:04x}: {n} cases run", self.file);
        }
        for (suite, n) in &self.skipped_by_suite {
            println!("{}: suite 0x{suite:04x}: {n} cases skipped", self.file);
        }
        println!(
            "{}: {} cases run, {} skipped",
            self.file, self.ran, self.skipped
        );
        assert!(
            expected.iter().all(|&(_, n)| n > 0),
            "{}: an expected count is zero",
            self.file
        );
        let expected: std::collections::BTreeMap<u16, usize> = expected.iter().copied().collect();
        assert_eq!(
            self.ran_by_suite, expected,
            "{}: cases run per suite (left) differ from the expected (right)",
            self.file
        );
        self.ran
    }

    /// One case was run and passed.
    pub fn ran(&mut self) {
        self.ran += 1;
    }

    /// One case was skipped (e.g. another cipher suite).
    pub fn skipped(&mut self) {
        self.skipped += 1;
    }

    /// Prints the tally and fails if no case ran, or if `expected` is given
    /// and the number of cases run differs from it.
    pub fn finish(self, expected: Option<usize>) -> usize {
        println!(
            "{}: {} cases run, {} skipped",
            self.file, self.ran, self.skipped
        );
        assert!(self.ran > 0, "{}: no test-vector case was run", self.file);
        if let Some(n) = expected {
            assert_eq!(
                self.ran, n,
                "{}: expected to run {n} cases, ran {}",
                self.file, self.ran
            );
        }
        self.ran
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_vectors_are_found_from_inside_the_repository() {
        // cargo runs this in crates/test-vectors: the search goes up to the
        // repository root and down into the vendored folder.
        let here = std::env::current_dir().unwrap();
        let dir = find_vendored(&here).expect("vendored vectors not found");
        assert!(dir.ends_with(VENDORED_DIR), "{}", dir.display());
        assert!(dir.join("tree-math.json").is_file());
        // From a deeper folder too (a test's own working directory may be
        // anywhere below the root).
        let deeper = find_vendored(&dir.join("no/such/sub/dir")).unwrap();
        assert_eq!(deeper, dir);
    }

    #[test]
    fn nothing_is_found_outside_a_repository() {
        // The filesystem root has no ancestors holding a clone.
        assert_eq!(find_vendored(Path::new("/")), None);
    }
}
