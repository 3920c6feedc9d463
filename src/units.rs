//! Durations (`90s`, `10m`, `8h`, `1h30m`) and sizes (`512M`, `4G`, `50%`) as they are
//! written in profiles and on the command line. Pure parsing, no I/O.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Parses a duration such as `90s`, `10m`, `8h`, `2d` or a sum like `1h30m`.
///
/// A bare number is refused on purpose: `timeout: 60` is ambiguous to a reader, and a
/// unit costs one character.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write it like `90s`, `10m` or `8h`".into());
    }
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "duration `{text}` has no unit; write `{text}s`, `{text}m` or `{text}h`"
        ));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        if !c.is_alphabetic() {
            let what = if c.is_whitespace() {
                "space".to_string()
            } else {
                format!("`{c}`")
            };
            return Err(format!(
                "invalid duration `{text}`: unexpected {what}; write it like `90s`, `10m` or `1h30m`"
            ));
        }
        // The unit is every letter up to the next digit (`ms`, or a mistake like `min`).
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek().filter(|n| n.is_alphabetic()) {
            unit.push(n);
            chars.next();
        }
        if number.is_empty() {
            return Err(format!(
                "invalid duration `{text}`: a unit must follow a number (like `90s`, `10m`, `8h`)"
            ));
        }
        let value: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: number too large"))?;
        number.clear();
        let millis = match unit.as_str() {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{unit}` (use ms, s, m, h or d)"
                ))
            }
        };
        total = value
            .checked_mul(millis)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("invalid duration `{text}`: too long"))?;
    }
    if !number.is_empty() {
        return Err(format!(
            "invalid duration `{text}`: `{number}` has no unit (use s, m or h)"
        ));
    }
    if total == 0 {
        return Err(format!(
            "duration `{text}` is zero; leave the key out for no limit"
        ));
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration the way people write it: `1h30m`, `90s` is shown as `1m30s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if secs > 0 || out.is_empty() {
        out.push_str(&format!("{secs}s"));
    }
    out
}

/// A tmpfs size: an absolute number of bytes or a percentage of RAM, as tmpfs(5) takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    Bytes(u64),
    Percent(u8),
}

impl Size {
    /// The value for tmpfs's `size=` mount option.
    pub fn mount_option(&self) -> String {
        match self {
            Size::Bytes(b) => b.to_string(),
            Size::Percent(p) => format!("{p}%"),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Size::Percent(p) => write!(f, "{p}%"),
            Size::Bytes(b) => {
                for (unit, size) in [
                    ("T", 1u64 << 40),
                    ("G", 1 << 30),
                    ("M", 1 << 20),
                    ("K", 1 << 10),
                ] {
                    if b >= size && b % size == 0 {
                        return write!(f, "{}{unit}", b / size);
                    }
                }
                write!(f, "{b}")
            }
        }
    }
}

/// Parses `512M`, `4G`, `1T`, `64k`, `4GiB`, a plain byte count, or `50%`.
pub fn parse_size(text: &str) -> Result<Size, String> {
    let t = text.trim();
    if let Some(p) = t.strip_suffix('%') {
        return match p.parse::<u8>() {
            Ok(v) if (1..=100).contains(&v) => Ok(Size::Percent(v)),
            _ => Err(format!(
                "invalid size `{text}`: a percentage must be 1% to 100%"
            )),
        };
    }
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "invalid size `{text}`: write it like `512M`, `4G` or `50%`"
        ));
    }
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("iB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(unit);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "invalid size `{text}`: unknown unit `{unit}` (use K, M, G or T)"
            ))
        }
    };
    let value: u64 = num
        .parse()
        .map_err(|_| format!("invalid size `{text}`: number too large"))?;
    let bytes = value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size `{text}`: too large"))?;
    if bytes == 0 {
        return Err(format!("invalid size `{text}`: must be more than zero"));
    }
    Ok(Size::Bytes(bytes))
}

/// Parses a file mode written in octal, such as `1777` or `0755`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o7777 && !t.is_empty() => Ok(m),
        _ => Err(format!(
            "invalid mode `{text}`: write it in octal, like `1777` or `0755`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_units_and_sums() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("8h").unwrap(), Duration::from_secs(8 * 3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86400)
        );
    }

    #[test]
    fn durations_refuse_nonsense() {
        for bad in [
            "",
            "60",
            "m",
            "10x",
            "1h30",
            "0s",
            "99999999999999999999s",
            "-5s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_duration("60").unwrap_err().contains("no unit"));
        assert!(parse_duration("10 minutes")
            .unwrap_err()
            .contains("unexpected space"));
        assert!(parse_duration("10min")
            .unwrap_err()
            .contains("unknown unit `min`"));
    }

    #[test]
    fn durations_format_back() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(12)), "12ms");
    }

    #[test]
    fn sizes_parse_binary_units_and_percent() {
        assert_eq!(parse_size("512M").unwrap(), Size::Bytes(512 << 20));
        assert_eq!(parse_size("4G").unwrap(), Size::Bytes(4 << 30));
        assert_eq!(parse_size("4GiB").unwrap(), Size::Bytes(4 << 30));
        assert_eq!(parse_size("64k").unwrap(), Size::Bytes(64 << 10));
        assert_eq!(parse_size("4096").unwrap(), Size::Bytes(4096));
        assert_eq!(parse_size("50%").unwrap(), Size::Percent(50));
        assert_eq!(Size::Bytes(4 << 30).to_string(), "4G");
    }

    #[test]
    fn sizes_refuse_nonsense() {
        for bad in ["", "G", "4X", "0", "101%", "-1G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("1777").unwrap(), 0o1777);
        assert_eq!(parse_mode("0755").unwrap(), 0o755);
        assert!(parse_mode("789").is_err());
        assert!(parse_mode("77777").is_err());
    }
}
