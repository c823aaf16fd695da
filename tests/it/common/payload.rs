//! Backup payloads for the store and volume tests: reproducible incompressible bytes, cut
//! into uneven chunks as a snapshot stream delivers them, and the checks on the outcome.

use bytes::Bytes;
use futures::stream;
use sha2::{Digest, Sha256};

use counterstack::backup::store::StoreError;

/// `len` pseudo-random (incompressible, reproducible) bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `data` cut into uneven chunks (empty to 2 MiB, never aligned with S3 parts).
pub fn uneven_chunks(data: &[u8]) -> Vec<Bytes> {
    let sizes = [1, 4093, 65_536, 1_048_579, 333_333, 17, 2_000_003, 0, 777_777];
    let mut out = Vec::new();
    let mut i = 0;
    for size in sizes.iter().cycle() {
        if i >= data.len() {
            break;
        }
        let end = (i + size).min(data.len());
        out.push(Bytes::copy_from_slice(&data[i..end]));
        i = end;
    }
    out
}

pub fn ok_stream(chunks: Vec<Bytes>) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    stream::iter(chunks.into_iter().map(Ok))
}

pub fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The error's reason and message, or a panic naming what succeeded.
pub fn reason<T: std::fmt::Debug>(r: Result<T, StoreError>) -> (&'static str, String) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            eprintln!("{}: {e}", e.reason());
            (e.reason(), e.to_string())
        }
    }
}
