//! Byte sizes: parsing `--shard-size 2GB` and printing `1.5 GiB`.

use anyhow::{bail, Context, Result};

/// Parses `5GB`, `500MB`, `2GiB`, `1024` (bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .with_context(|| format!("`{s}` is not a size like 2GB or 500MiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("unknown size unit `{other}` in `{s}` (use B, KB, MB, GB, KiB, MiB, GiB)"),
    };
    let bytes = v * mult;
    if !(1.0..=1e15).contains(&bytes) {
        bail!("size `{s}` is out of range");
    }
    Ok(bytes as u64)
}

/// `1.50 GiB`, `12.00 KiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    ferry_io::units::human_with(n, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("300").unwrap(), 300);
        assert!(parse_size("2XB").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}
