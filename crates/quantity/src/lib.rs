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
    scaled(text, 3).unwrap_or(0)
}

/// The quantity rounded up to an integer (`Value`).
pub fn value(text: &str) -> i64 {
    scaled(text, 0).unwrap_or(0)
}

/// `ceil(quantity * 10^scale)`, saturated to `i64`: computed on the decimal digits as
/// written (as `resource.Quantity` does), so `700m` is 700 thousandths, not the 701 a
/// binary float would round up to.
fn scaled(text: &str, scale: i32) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (negative, unsigned) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = format!("{whole}{fraction}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (exp10, exp1024): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        s if s.starts_with(['e', 'E']) => (s[1..].parse().ok()?, 0),
        _ => return None,
    };
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        // Beyond exact arithmetic; no resource amount has that many digits.
        let v = parse(text)? * 10f64.powi(scale);
        return Some(v.ceil().clamp(i64::MIN as f64, i64::MAX as f64) as i64);
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut num = mantissa.checked_mul(1024i128.pow(exp1024))?;
    if negative {
        num = -num;
    }
    let shift = exp10 + scale - fraction.len() as i32;
    let result = if shift >= 0 {
        10i128
            .checked_pow(shift as u32)
            .and_then(|f| num.checked_mul(f))
            .unwrap_or(if num < 0 { i128::MIN } else { i128::MAX })
    } else if -shift > 38 {
        i128::from(num > 0)
    } else {
        let den = 10i128.pow((-shift) as u32);
        // Ceiling division (rounding toward +infinity).
        num.div_euclid(den) + i128::from(num.rem_euclid(den) != 0)
    };
    Some(result.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
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

    #[test]
    fn scaled_values_are_exact_decimals() {
        assert_eq!(milli("700m"), 700);
        assert_eq!(milli("1.1"), 1100);
        assert_eq!(milli("0.7"), 700);
        assert_eq!(milli("1n"), 1);
        assert_eq!(value("1.5Gi"), 1536 * 1024 * 1024);
        assert_eq!(value("0.5"), 1);
        assert_eq!(milli("12x"), 0);
        assert_eq!(value("1E"), 1_000_000_000_000_000_000);
        assert_eq!(value("100Ei"), i64::MAX);
    }
}
