//! `.npy` (inputs not starting with a zip signature) and `.npz` (those that do), arrays read,
//! as `ferry run` reads its feeds.
#![no_main]

use ferry_io::formats::numpy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ck = if data.starts_with(b"PK") {
        numpy::open_npz(&ferry_fuzz::write_input("arrays.npz", data))
    } else {
        numpy::open_npy(&ferry_fuzz::write_input("array.npy", data))
    };
    if let Ok(ck) = ck {
        ferry_fuzz::exercise(&ck);
    }
});
