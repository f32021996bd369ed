//! GGUF v1-v3: header, metadata, tensor infos, tensors read and dequantized; then the view with
//! Hugging Face names (`ferry_io::arch`, what the runtime loads), permuted rows read too.
#![no_main]

use ferry_io::arch;
use ferry_io::formats::gguf::{self, names::Direction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = ferry_fuzz::write_input("model.gguf", data);
    let Ok(ck) = gguf::open(&path) else {
        return;
    };
    let _ = gguf::unsupported_tensors(&ck.metadata);
    let _ = gguf::check_supported(&ck);
    ferry_fuzz::exercise(&ck);
    if let Ok(Some(layout)) = arch::detect(&ck) {
        let _ = arch::hf_config(&ck, &layout);
        if let Ok((hf, _)) = arch::relayout(&ck, layout, Direction::ToHf) {
            ferry_fuzz::exercise(&hf);
        }
    }
});
