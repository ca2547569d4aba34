//! Kubernetes-style resource quantities: CPU in cores or millicores
//! ("500m", "1.5"), memory in bytes with binary or decimal suffixes ("256Mi").

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("{what} {value:?} is not a number with an optional suffix ({hint})")]
    Malformed {
        what: &'static str,
        value: String,
        hint: &'static str,
    },
    #[error("{what} {value:?} must be greater than zero")]
    NotPositive { what: &'static str, value: String },
    #[error("{what} {value:?} is too large")]
    TooLarge { what: &'static str, value: String },
}

/// CPU as millicores: "500m" -> 500, "2" -> 2000, "0.25" -> 250.
pub fn parse_cpu(s: &str) -> Result<u64, QuantityError> {
    let bad = || QuantityError::Malformed {
        what: "cpu",
        value: s.to_string(),
        hint: "e.g. 500m or 1.5",
    };
    let millis = if let Some(m) = s.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        m.parse::<u64>().map_err(|_| QuantityError::TooLarge {
            what: "cpu",
            value: s.to_string(),
        })?
    } else {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 3
        {
            return Err(bad());
        }
        let int: u64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| QuantityError::TooLarge {
                what: "cpu",
                value: s.to_string(),
            })?
        };
        let frac: u64 = format!("{frac:0<3}").parse().unwrap_or(0);
        int.checked_mul(1000)
            .and_then(|v| v.checked_add(frac))
            .ok_or(QuantityError::TooLarge {
                what: "cpu",
                value: s.to_string(),
            })?
    };
    if millis == 0 {
        return Err(QuantityError::NotPositive {
            what: "cpu",
            value: s.to_string(),
        });
    }
    Ok(millis)
}

/// Memory in bytes: "256Mi", "1G", "1048576".
pub fn parse_memory(s: &str) -> Result<u64, QuantityError> {
    const SUFFIXES: [(&str, u64); 10] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
    ];
    let (digits, mult) = SUFFIXES
        .iter()
        .find_map(|(suf, m)| s.strip_suffix(suf).map(|d| (d, *m)))
        .unwrap_or((s, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QuantityError::Malformed {
            what: "memory",
            value: s.to_string(),
            hint: "e.g. 256Mi, 1Gi or bytes",
        });
    }
    let too_large = || QuantityError::TooLarge {
        what: "memory",
        value: s.to_string(),
    };
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    let bytes = n.checked_mul(mult).ok_or_else(too_large)?;
    if bytes == 0 {
        return Err(QuantityError::NotPositive {
            what: "memory",
            value: s.to_string(),
        });
    }
    if bytes > i64::MAX as u64 {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Formats bytes the way `kubectl` users read them.
pub fn format_memory(bytes: u64) -> String {
    for (suf, m) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{suf}", bytes / m);
        }
    }
    if bytes >= 1 << 20 {
        return format!("{:.1}Mi", bytes as f64 / (1u64 << 20) as f64);
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("500m"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("1.5"), Ok(1500));
        assert_eq!(parse_cpu(".25"), Ok(250));
        for bad in ["", "m", "-1", "1.2345", "abc", "1e3", "5 m"] {
            assert!(
                matches!(parse_cpu(bad), Err(QuantityError::Malformed { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_cpu("0m"),
            Err(QuantityError::NotPositive { .. })
        ));
        assert!(matches!(
            parse_cpu("99999999999999999999"),
            Err(QuantityError::TooLarge { .. })
        ));
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("256Mi"), Ok(256 << 20));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("4096"), Ok(4096));
        for bad in ["", "Mi", "-5Mi", "1.5Gi", "12XB"] {
            assert!(
                matches!(parse_memory(bad), Err(QuantityError::Malformed { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_memory("0"),
            Err(QuantityError::NotPositive { .. })
        ));
        assert!(matches!(
            parse_memory("99999999Pi"),
            Err(QuantityError::TooLarge { .. })
        ));
        let msg = parse_memory("lots").unwrap_err().to_string();
        assert!(msg.contains("\"lots\"") && msg.contains("256Mi"), "{msg}");
    }

    #[test]
    fn memory_is_formatted_readably() {
        assert_eq!(format_memory(256 << 20), "256Mi");
        assert_eq!(format_memory(1 << 30), "1Gi");
        assert_eq!(format_memory(1500), "1500");
    }
}
