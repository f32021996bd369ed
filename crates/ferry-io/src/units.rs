//! Byte counts for people: what error messages and reports print.

/// `bytes` in the largest binary unit that keeps it at or above 1 (`16.0 GiB`).
pub fn human(bytes: u64) -> String {
    human_with(bytes, 1)
}

/// [`human`] with `decimals` digits after the point (`1.50 KiB`; whole bytes have none).
pub fn human_with(bytes: u64, decimals: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.decimals$} {}", UNITS[u])
    }
}
