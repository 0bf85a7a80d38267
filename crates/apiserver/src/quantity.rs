//! Resource quantities (`100m`, `1.5Gi`, `2e3`) with exact arithmetic, as apimachinery's
//! `resource.Quantity`: parsed into nano units (finer precision rounds up, as Kubernetes
//! does), compared by value, and printed in canonical form (`1000m` prints `1`, `1024Mi`
//! prints `1Gi`), which is how quantities appear in Kubernetes' messages and objects.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// How a quantity prints, chosen by the suffix it was written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Powers of ten with SI suffixes (`m`, `k`, `M`, ...); also plain numbers.
    DecimalSI,
    /// Powers of 1024 (`Ki`, `Mi`, ...).
    BinarySI,
    /// Powers of ten written as exponents (`1e3`).
    DecimalExponent,
}

/// A resource quantity: an exact amount in nano units and its format.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Zero, printed as `0`.
    pub const ZERO: Quantity = Quantity {
        nanos: 0,
        format: Format::DecimalSI,
    };

    /// Parses Kubernetes' quantity grammar; `None` when malformed or out of range.
    pub fn parse(text: &str) -> Option<Quantity> {
        let text = text.trim();
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return None;
        }
        let mut mantissa: i128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(i128::from(digit - b'0'))?;
        }
        // value = mantissa * 10^(exp10 - fraction digits) * 2^exp2
        let (format, exp10, exp2): (Format, i32, u32) = match suffix {
            "" => (Format::DecimalSI, 0, 0),
            "n" => (Format::DecimalSI, -9, 0),
            "u" => (Format::DecimalSI, -6, 0),
            "m" => (Format::DecimalSI, -3, 0),
            "k" => (Format::DecimalSI, 3, 0),
            "M" => (Format::DecimalSI, 6, 0),
            "G" => (Format::DecimalSI, 9, 0),
            "T" => (Format::DecimalSI, 12, 0),
            "P" => (Format::DecimalSI, 15, 0),
            "E" => (Format::DecimalSI, 18, 0),
            "Ki" => (Format::BinarySI, 0, 10),
            "Mi" => (Format::BinarySI, 0, 20),
            "Gi" => (Format::BinarySI, 0, 30),
            "Ti" => (Format::BinarySI, 0, 40),
            "Pi" => (Format::BinarySI, 0, 50),
            "Ei" => (Format::BinarySI, 0, 60),
            s if s.starts_with(['e', 'E']) => {
                let exp = &s[1..];
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (Format::DecimalExponent, exp.parse().ok()?, 0)
            }
            _ => return None,
        };
        let scaled = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
        let shift = 9 + exp10 - i32::try_from(fraction.len()).ok()?;
        let nanos = if shift >= 0 {
            scaled.checked_mul(10i128.checked_pow(shift.unsigned_abs())?)?
        } else {
            // Finer than a nano: round up, as Quantity does.
            let divisor = 10i128
                .checked_pow(shift.unsigned_abs())
                .unwrap_or(i128::MAX);
            (scaled + divisor - 1) / divisor
        };
        Some(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// A whole number of base units (`NewQuantity(n, DecimalSI)`).
    pub fn from_int(value: i64) -> Quantity {
        Quantity {
            nanos: i128::from(value) * NANO,
            format: Format::DecimalSI,
        }
    }

    /// Parses a JSON string or number (a quantity in an object); `None` otherwise.
    pub fn from_json(value: &Value) -> Option<Quantity> {
        match value {
            Value::String(s) => Quantity::parse(s),
            Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => None,
        }
    }

    /// The format the quantity prints with.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whether the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The amount in base units, rounded up (`Value`).
    pub fn value(&self) -> i64 {
        ceil_div(self.nanos, NANO)
    }

    /// The amount in thousandths of base units, rounded up (`MilliValue`).
    pub fn milli_value(&self) -> i64 {
        ceil_div(self.nanos, 1_000_000)
    }

    /// The amount in nano units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The sum; its format is this quantity's unless this one is zero (`Quantity.Add`).
    pub fn add(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        }
    }

    /// The difference, keeping this quantity's format (`Quantity.Sub`).
    pub fn sub(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_sub(other.nanos),
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        }
    }

    /// The canonical text: the largest suffix that keeps the number whole.
    pub fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".into();
        }
        let format = match self.format {
            Format::BinarySI if self.nanos.abs() < 1024 * NANO || self.nanos % NANO != 0 => {
                Format::DecimalSI
            }
            f => f,
        };
        if format == Format::BinarySI {
            let mut whole = self.nanos / NANO;
            let mut index = 0;
            while index < 6 && whole % 1024 == 0 {
                whole /= 1024;
                index += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][index];
            return format!("{whole}{suffix}");
        }
        // Decimal: mantissa * 10^exp with exp a multiple of three from -9 to 18.
        let mut mantissa = self.nanos;
        let mut exp = -9;
        while exp < 18 && mantissa % 1000 == 0 {
            mantissa /= 1000;
            exp += 3;
        }
        let suffix = match (format, exp) {
            (Format::DecimalExponent, 0) => String::new(),
            (Format::DecimalExponent, e) => format!("e{e}"),
            (_, e) => match e {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                0 => "",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                _ => "E",
            }
            .to_owned(),
        };
        format!("{mantissa}{suffix}")
    }
}

fn ceil_div(value: i128, divisor: i128) -> i64 {
    let quotient = value.div_euclid(divisor) + i128::from(value.rem_euclid(divisor) != 0);
    i64::try_from(quotient).unwrap_or(if quotient < 0 { i64::MIN } else { i64::MAX })
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Quantity) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Quantity) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Quantity) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|| panic!("{text} does not parse"))
    }

    #[test]
    fn parses_every_suffix_exactly() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("128Mi").value(), 128 * 1024 * 1024);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("2e3").value(), 2000);
        assert_eq!(q("1E-3").milli_value(), 1);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("5.").value(), 5);
        assert_eq!(q("-1").value(), -1);
        assert_eq!(q("+2k").value(), 2000);
        assert_eq!(q("10u").nanos(), 10_000);
        assert_eq!(q("1.5n").nanos(), 2, "below a nano rounds up");
        assert_eq!(q("1.5Gi").value(), 1_610_612_736);
    }

    #[test]
    fn refuses_malformed_quantities() {
        for bad in [
            "", "x", "12x", "1..2", ".", "1Ki2", "1e", "1e1.5", "--1", "1 Mi",
        ] {
            assert!(Quantity::parse(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn rounds_up_to_whole_and_milli_units() {
        assert_eq!(q("1m").value(), 1);
        assert_eq!(q("1500m").value(), 2);
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q("-1500m").value(), -1);
    }

    #[test]
    fn prints_canonical_forms_as_kubernetes() {
        for (input, canonical) in [
            ("1000m", "1"),
            ("1", "1"),
            ("0.5", "500m"),
            ("1.5", "1500m"),
            ("1000", "1k"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("1536", "1536"),
            ("1000Ki", "1000Ki"),
            ("512Ki", "512Ki"),
            ("0.5Ki", "512"),
            ("100Mi", "100Mi"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("1e3", "1e3"),
            ("0", "0"),
            ("0Mi", "0"),
            ("-500m", "-500m"),
            ("1.5n", "2n"),
        ] {
            assert_eq!(q(input).canonical(), canonical, "{input}");
        }
    }

    #[test]
    fn sums_keep_the_first_nonzero_format() {
        let sum = q("64Mi").add(&q("64Mi"));
        assert_eq!(sum.canonical(), "128Mi");
        assert_eq!(Quantity::ZERO.add(&q("1Gi")).canonical(), "1Gi");
        assert_eq!(q("500m").add(&q("500m")).canonical(), "1");
        assert_eq!(q("1Gi").sub(&q("512Mi")).canonical(), "512Mi");
        assert_eq!(q("1").add(&q("1Ki")).canonical(), "1025");
    }

    #[test]
    fn compares_by_value_across_formats() {
        assert!(q("1") > q("500m"));
        assert_eq!(q("1000m"), q("1"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("64Mi") > q("32Mi"));
        assert_eq!(
            Quantity::from_json(&serde_json::json!(2)),
            Some(Quantity::from_int(2))
        );
    }
}
