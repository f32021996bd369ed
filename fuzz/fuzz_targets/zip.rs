//! The hardened zip reader (every entry read, deflated ones inflated and CRC-checked), then the
//! archive as ferry opens it: PyTorch zip, TorchScript or npz by its entries, tensors read.
#![no_main]

use ferry_io::formats::{self, zip::ZipArchive};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = ferry_fuzz::write_input("archive.pth", data);
    if let Ok(archive) = ZipArchive::open(&path) {
        for e in archive.entries() {
            if e.uncompressed_size > ferry_fuzz::MAX_READ {
                continue;
            }
            if let Ok(s) = archive.entry_storage(&e.name) {
                if let Ok(bytes) = s.bytes() {
                    assert_eq!(bytes.len() as u64, s.len(), "entry `{}`", e.name);
                }
            }
            let _ = std::hint::black_box(archive.read_small(&e.name, 1 << 20));
        }
    }
    if let Ok(ck) = formats::open_zip(&path) {
        ferry_fuzz::exercise(&ck);
    }
});
