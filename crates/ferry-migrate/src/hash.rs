//! Streaming SHA-256 of files, for the report's input and output hashes.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{fs_err, Result};

/// The SHA-256 of a file as lower-case hex, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| fs_err(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| fs_err(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
