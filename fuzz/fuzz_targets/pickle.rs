//! The pickle machine on raw bytes (with and without TorchScript globals allowed), then the
//! same bytes as a legacy (non-zip) `torch.save` file, whose tensors are read.
#![no_main]

use std::path::Path;

use ferry_io::formats::{pickle, pytorch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for torchscript in [false, true] {
        let opts = pickle::Options {
            torchscript,
            ..Default::default()
        };
        if let Ok((pk, used)) = pickle::load(Path::new("fuzz.pkl"), data, &opts) {
            assert!(
                used <= data.len(),
                "pickle took {used} of {} bytes",
                data.len()
            );
            std::hint::black_box(pk.obj(&pk.root));
        }
    }
    let path = ferry_fuzz::write_input("legacy.pth", data);
    if let Ok(ck) = pytorch::open_legacy(&path) {
        ferry_fuzz::exercise(&ck);
    }
});
