//! Human-friendly units: in the config file, durations like `90s`, `5m`, `2h`, `1d`, and sizes like
//! `500MB`, `50GiB` or a plain number of bytes; for people reading the operator commands and the
//! status page, short sizes (`1.5 MiB`) and ages (`3h ago`).

use std::time::Duration;

/// Parses `<number><unit>` with unit `ms`, `s`, `m`, `h` or `d`; a bare number is seconds.
// Not humantime: it takes no bare numbers, and it also accepts "5 minutes", "1h30m", "1.5h",
// months and years, so keeping this short list would mean checking the input here first anyway.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like \"30s\", \"5m\" or \"1h\""))?;
    let unit_secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use ms, s, m, h or d)"
            ))
        }
    };
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("{s:?} is too long a duration"))?;
    Ok(Duration::from_secs(secs))
}

/// Parses a size: a number of bytes, optionally with a fraction (rounded to the nearest byte),
/// followed by a unit. `B`, `KB`, `MB`, `GB`, `TB` (also `K`, `M`, `G`, `T`) are powers of 1000;
/// `KiB`, `MiB`, `GiB`, `TiB` (also `Ki`, `Mi`, `Gi`, `Ti`) powers of 1024. Units are
/// case-insensitive. The `parse-size` crate does the parsing, exactly (no floating point), and
/// also takes `PB`/`EB`, exponents (`1.5e9`) and `_` between digits.
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s.trim()).map_err(|e| match e {
        parse_size::Error::PosOverflow => format!("{s:?} is more bytes than fit in 64 bits"),
        _ => format!(
            "{s:?} is not a size like \"500MB\", \"50GiB\" or a number of bytes \
             (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        ),
    })
}

/// `1.5 MiB`, `512 B`.
pub fn short_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", UNITS[u]),
    }
}

/// `45s ago`, `12m ago`, `3h ago`, `2d ago`: from `then` to `now`, milliseconds since the epoch.
pub fn age(then: u64, now: u64) -> String {
    let s = now.saturating_sub(then) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A duration as it is configured: `30d`, `12h`, `90m`, `45s`, `250ms` (the largest whole unit).
pub fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let unit = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")]
        .into_iter()
        .find(|(size, _)| ms >= *size && ms.is_multiple_of(*size));
    match unit {
        Some((size, name)) => format!("{}{name}", ms / size),
        None if ms == 0 => "0s".to_string(),
        None => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_for_people() {
        assert_eq!(short_size(512), "512 B");
        assert_eq!(short_size(1536), "1.5 KiB");
        assert_eq!(short_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(age(0, 45_000), "45s ago");
        assert_eq!(age(0, 3 * 3_600_000), "3h ago");
        assert_eq!(age(10, 5), "0s ago");
        for text in ["30d", "12h", "90m", "45s", "250ms", "0s"] {
            assert_eq!(short_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("64kib"), Ok(65536));
        assert_eq!(parse_size("2T"), Ok(2_000_000_000_000));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn sizes_are_exact_and_errors_name_the_value() {
        // 256.23 * 2^40 = 281727864385044.48: floating point would round to ...045.
        assert_eq!(parse_size("256.23TiB"), Ok(281_727_864_385_044));
        assert_eq!(parse_size("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse_size(" 2.5k "), Ok(2500));
        assert_eq!(
            parse_size("5 parsecs"),
            Err(
                "\"5 parsecs\" is not a size like \"500MB\", \"50GiB\" or a number of bytes \
                 (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                    .into()
            )
        );
        assert_eq!(
            parse_size("20EiB"),
            Err("\"20EiB\" is more bytes than fit in 64 bits".into())
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn an_overlong_duration_is_an_error_not_an_overflow() {
        assert_eq!(
            parse_duration("999999999999999999d"),
            Err("\"999999999999999999d\" is too long a duration".into())
        );
    }
}
