//! wrk's report, parsed: requests per second, the latency percentiles of
//! `--latency`, the request count and the errors it counted.
//!
//! wrk prints times with a unit (`us`, `ms`, `s`, `m`, `h`), counts with an
//! SI suffix (`k`, `M`, `G`, base 1000) and pads with spaces on both sides
//! (`99%    1.49s `); a report it could not time (every request timed out)
//! says `0.00us`. The fixtures in `wrk-fixtures/` are real wrk 4 output.

/// One wrk run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WrkReport {
    /// `Requests/sec:`.
    pub rps: f64,
    /// Latency percentiles, ms (0 when wrk printed none).
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests completed (`N requests in …`).
    pub requests: u64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx answers.
    pub errors: u64,
}

/// A wrk time (`512.34us`, `1.02ms`, `1.49s`, `2.00m`, `1.00h`), in ms.
pub(crate) fn parse_time_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60e3)
    } else if let Some(v) = s.strip_suffix('h') {
        (v, 3600e3)
    } else {
        return None;
    };
    let v: f64 = num.parse().ok()?;
    v.is_finite().then_some(v * scale)
}

/// A wrk count (`24.98k`, `611.00`, `1.2M`).
pub(crate) fn parse_count(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = match s.char_indices().last() {
        Some((i, 'k')) => (&s[..i], 1e3),
        Some((i, 'M')) => (&s[..i], 1e6),
        Some((i, 'G')) => (&s[..i], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    v.is_finite().then_some(v * scale)
}

/// The value after `label` on the first line that starts with it
/// (leading spaces ignored).
fn field<'a>(out: &'a str, label: &str) -> Option<&'a str> {
    out.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
}

/// Parses wrk's report. An error names what is missing (wrk failed to
/// connect, or ran without `--latency` when `latency` is asked for).
pub(crate) fn parse(out: &str, latency: bool) -> Result<WrkReport, String> {
    let short = || out.lines().take(3).collect::<Vec<_>>().join(" / ");
    let rps = field(out, "Requests/sec:")
        .and_then(parse_count)
        .ok_or_else(|| format!("wrk: no Requests/sec in its output: {}", short()))?;
    let pct = |p: &str| field(out, p).and_then(parse_time_ms);
    let (p50_ms, p99_ms) = match (pct("50%"), pct("99%")) {
        (Some(a), Some(b)) => (a, b),
        _ if latency => {
            return Err(format!(
                "wrk: no latency distribution (--latency) in its output: {}",
                short()
            ));
        }
        _ => (0.0, 0.0),
    };
    let requests = out
        .lines()
        .map(str::trim)
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut errors = 0u64;
    for l in out.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 8"
            errors += rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1))
                .filter_map(|v| v.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok(WrkReport {
        rps,
        p50_ms,
        p99_ms,
        requests,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEPALIVE: &str = include_str!("wrk-fixtures/keepalive-fast.txt");
    const SECONDS: &str = include_str!("wrk-fixtures/slow-seconds.txt");
    const TIMEOUTS: &str = include_str!("wrk-fixtures/slow-timeouts.txt");
    const NON2XX: &str = include_str!("wrk-fixtures/non2xx.txt");
    const LAB: &str = include_str!("wrk-fixtures/lab-keepalive.txt");

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn times_in_every_unit() {
        assert!(close(parse_time_ms("512.34us").unwrap(), 0.51234));
        assert!(close(parse_time_ms("47.98ms").unwrap(), 47.98));
        assert!(close(parse_time_ms("1.49s ").unwrap(), 1490.0));
        assert!(close(parse_time_ms("2.00m").unwrap(), 120_000.0));
        assert!(close(parse_time_ms("1.00h").unwrap(), 3_600_000.0));
        for bad in ["", "ms", "1.2", "1.2x", "nanms", "-nan%"] {
            assert_eq!(parse_time_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn counts_with_suffixes() {
        assert!(close(parse_count("24.98k").unwrap(), 24_980.0));
        assert!(close(parse_count("611.00").unwrap(), 611.0));
        assert!(close(parse_count("1.50M").unwrap(), 1_500_000.0));
        assert!(close(parse_count("2G").unwrap(), 2e9));
        assert_eq!(parse_count("k"), None);
        assert_eq!(parse_count("12x"), None);
    }

    #[test]
    fn keep_alive_report_with_seconds_in_the_tail() {
        let r = parse(KEEPALIVE, true).unwrap();
        assert!(close(r.rps, 497.20));
        assert!(close(r.p50_ms, 47.98));
        assert!(close(r.p99_ms, 1490.0));
        assert_eq!(r.requests, 1537);
        assert_eq!(r.errors, 0);
    }

    #[test]
    fn every_percentile_in_seconds() {
        let r = parse(SECONDS, true).unwrap();
        assert!(close(r.rps, 5.45));
        assert!(close(r.p50_ms, 1240.0));
        assert!(close(r.p99_ms, 1250.0));
        assert_eq!(r.requests, 22);
    }

    #[test]
    fn timeouts_are_errors() {
        let r = parse(TIMEOUTS, true).unwrap();
        assert_eq!(r.errors, 8);
        assert_eq!(r.requests, 8);
        assert!(close(r.p99_ms, 0.0));
    }

    #[test]
    fn non_2xx_answers_are_errors() {
        let r = parse(NON2XX, true).unwrap();
        assert_eq!(r.errors, 178);
        assert!(close(r.p99_ms, 52.06));
    }

    #[test]
    fn lab_report_with_k_suffixes() {
        let r = parse(LAB, true).unwrap();
        assert!(r.rps > 1000.0, "{r:?}");
        assert!(r.p99_ms > 0.0 && r.p50_ms <= r.p99_ms, "{r:?}");
        assert_eq!(r.errors, 0);
        assert!(LAB.contains('k'), "the fixture has k-suffixed counts");
    }

    #[test]
    fn failures_are_errors_not_zeros() {
        let refused = "unable to connect to 198.18.0.2:80 Connection refused\n";
        assert!(parse(refused, false).is_err());
        assert!(parse("", true).is_err());
        // Without the latency distribution: an error only when it is asked for.
        let no_lat: String = NON2XX
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with(|c: char| c.is_ascii_digit())
                    || l.contains("requests in")
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse(&no_lat, true).is_err());
        let r = parse(&no_lat, false).unwrap();
        assert!(close(r.rps, 88.44));
        assert!(close(r.p99_ms, 0.0));
    }
}
