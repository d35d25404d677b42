//! Durations and byte sizes as users write them (`250ms`, `30s`, `1h`; `64MiB`, `512KiB`,
//! `10MB`) and as mcpvisor writes them back in messages and tables.

use std::time::Duration;

/// Parses `250ms`, `30s`, `1h`, `1m30s`, or a bare `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.chars().all(|c| c == '0') && !s.is_empty() {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 250ms, 30s, 5m, 1h)"))
}

/// Parses a byte size: `1048576`, `512K`, `512KiB`, `64M`, `64MiB`, `1G`, `10MB` (powers of 1000).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits.parse().map_err(|_| format!("`{s}` is not a size (write e.g. 64MiB, 512KiB or 1000000)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("unknown size unit in `{s}` (use B, KiB, MiB, GiB, KB, MB or GB)")),
    };
    let size = n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))?;
    if size == 0 {
        return Err("the size must be greater than zero".into());
    }
    Ok(size)
}

/// A duration for people: whole seconds from one second up (`5m 3s`), milliseconds below (`120ms`).
pub fn format_duration(d: Duration) -> String {
    let rounded = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(rounded).to_string()
}

/// [`format_duration`] for a number of seconds as it appears in status snapshots.
pub fn format_secs(secs: f64) -> String {
    format_duration(Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(Duration::from_millis(303_250)), "5m 3s");
        assert_eq!(format_duration(Duration::from_micros(120_500)), "120ms");
        assert_eq!(format_secs(-1.0), "0s");
        assert_eq!(format_secs(3600.0), "1h");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }
}
