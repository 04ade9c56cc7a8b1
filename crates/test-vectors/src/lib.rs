//! Access to the official MLS test vectors for hsmls tests.
//!
//! The vectors live in `../shared/test-vectors/` beside the project root
//! (override with the `HSMLS_TEST_VECTORS` environment variable). Every file
//! is a JSON array of cases. Tests deserialize cases into their own serde
//! types and record how many they ran with a [`CaseCounter`], which fails the
//! test if it ran none.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use serde::de::DeserializeOwned;

/// The directory holding the vector files.
///
/// Found at run time, never baked in at compile time (a shared target
/// directory may serve several clones): `HSMLS_TEST_VECTORS` if set, else the
/// first `shared/test-vectors` beside an ancestor of the working directory
/// (cargo runs tests in the package directory, inside the project root).
pub fn vectors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HSMLS_TEST_VECTORS") {
        return PathBuf::from(dir);
    }
    let start = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    start
        .ancestors()
        .map(|a| a.join("shared/test-vectors"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no shared/test-vectors found above {}; set HSMLS_TEST_VECTORS",
                start.display()
            )
        })
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

/// Counts the cases a vector test ran and asserts the count on drop-free
/// [`CaseCounter::finish`].
#[derive(Debug)]
pub struct CaseCounter {
    file: &'static str,
    ran: usize,
    skipped: usize,
}

impl CaseCounter {
    /// A counter for the cases of `file`.
    pub fn new(file: &'static str) -> Self {
        CaseCounter {
            file,
            ran: 0,
            skipped: 0,
        }
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
