//! The one duration syntax of every flag of every service: Go's `time.ParseDuration`, which the
//! official agent's flags use (`3h`, `1h30m`, `1.5h`, `90s`, `500ms`, `0`), so a value copied
//! from one service's flags means the same in another's.

use std::time::Duration;

/// Parse a Go `time.ParseDuration` string: `3h`, `1h30m`, `90s`, `500ms`, `0`. Negative values
/// are refused: no flag here has a use for one. For clap's `value_parser`.
pub fn parse(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{raw:?}: missing unit (use h, m, s, ms, us or ns)"))?;
        if num_len == 0 {
            return Err(format!(
                "{raw:?}: expected a number and a unit (h, m, s, ms, us or ns), e.g. 30s or 1h30m"
            ));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("{raw:?}: bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            other => return Err(format!("{raw:?}: unknown unit {other:?}")),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(value * unit_secs)
            .map_err(|_| format!("{raw:?}: out of range"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("3h").unwrap(), Duration::from_secs(10800));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_what_go_refuses_and_negatives() {
        for bad in ["", "3", "h", "3x", "-1h", "1h-", "1..5s", "5 s", "1e3s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("3").unwrap_err().contains("missing unit"));
        assert!(parse("9999999999999999999h").unwrap_err().contains("range"));
    }
}
