//! A single safetensors file: header, tensors read. A file the safetensors reader accepts must
//! also be sniffed as safetensors (issue 14, finding 1: some were taken for pickles).
#![no_main]

use ferry_io::formats::{self, safetensors, Sniffed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = ferry_fuzz::write_input("model.safetensors", data);
    let sniffed = formats::sniff(&path);
    if let Ok(ck) = safetensors::open(&path) {
        assert_eq!(
            sniffed.ok(),
            Some(Sniffed::Safetensors),
            "the safetensors reader accepts this file but the sniffer does not pick it"
        );
        ferry_fuzz::exercise(&ck);
    }
});
