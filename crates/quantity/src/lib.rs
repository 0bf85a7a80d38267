//! Resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) as numbers, as
//! `resource.Quantity` parses them.

/// The value of a quantity in base units (cores, bytes), or `None` when malformed.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// Thousandths of the quantity, rounded up (`MilliValue`).
pub fn milli(text: &str) -> i64 {
    parse(text).map(|v| (v * 1000.0).ceil() as i64).unwrap_or(0)
}

/// The quantity rounded up to an integer (`Value`).
pub fn value(text: &str) -> i64 {
    parse(text).map(|v| v.ceil() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_binary_and_exponent_suffixes() {
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(value("128Mi"), 128 * 1024 * 1024);
        assert_eq!(value("1G"), 1_000_000_000);
        assert_eq!(value("2e3"), 2000);
        assert_eq!(parse("12x"), None);
    }
}
