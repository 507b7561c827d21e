//! [`Number`]: DynamoDB's decimal numbers, parsed, range-checked and kept in
//! one canonical text per numeric value.
//!
//! Invariants: the wrapped string is always the canonical form produced by
//! [`format_canonical`] of a value with 1 to 38 significant digits whose
//! magnitude lies in `1E-130 ..= 9.99…E+125` (or zero). Hence two numbers are
//! numerically equal exactly when their strings are equal, which keeps the
//! derived `Eq`/`Hash` consistent with the numeric `Ord`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ValueError;

/// Most significant digits a DynamoDB number may have.
pub const MAX_NUMBER_DIGITS: usize = 38;
/// Largest decimal exponent of a number's leading digit (`9.99…E+125`).
pub const MAX_NUMBER_EXPONENT: i64 = 125;
/// Smallest decimal exponent of a non-zero number's leading digit (`1E-130`).
pub const MIN_NUMBER_EXPONENT: i64 = -130;

/// Canonical numbers whose leading-digit exponent lies in this range are
/// written as plain decimals (`0.000001`, `12.5`, 38-digit integers); the
/// others in scientific notation (`1E-7`, `1.5E+40`).
const PLAIN_EXPONENTS: std::ops::RangeInclusive<i64> = -6..=37;

/// Longest prefix of a refused input quoted in an error.
const MAX_QUOTED_INPUT: usize = 64;

/// A DynamoDB number: a decimal of up to 38 significant digits, kept in
/// canonical form so that equal numbers are equal values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Number(String);

/// A number taken apart: sign, significant digits (no leading zeros, no
/// trailing zeros, empty for zero) and the exponent of the leading digit.
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

fn quote(input: &str) -> String {
    match input.char_indices().nth(MAX_QUOTED_INPUT) {
        Some((cut, _)) => format!("{}…", &input[..cut]),
        None => input.to_owned(),
    }
}

fn invalid(input: &str, reason: &'static str) -> ValueError {
    ValueError::InvalidNumber {
        input: quote(input),
        reason,
    }
}

/// Parses `[+-]digits[.digits][(e|E)[+-]digits]` (either side of the point may
/// be empty, not both) without range checks.
fn parse_decimal(input: &str) -> Result<Decimal, ValueError> {
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut negative = false;
    if let Some(&sign) = bytes.first()
        && (sign == b'-' || sign == b'+')
    {
        negative = sign == b'-';
        pos = 1;
    }
    let int_start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let int_part = &input[int_start..pos];
    let mut frac_part = "";
    if pos < bytes.len() && bytes[pos] == b'.' {
        pos += 1;
        let frac_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        frac_part = &input[frac_start..pos];
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(invalid(input, "expected decimal digits"));
    }
    // Exponent, saturated far outside any valid range.
    let mut exp: i64 = 0;
    if pos < bytes.len() && (bytes[pos] == b'e' || bytes[pos] == b'E') {
        pos += 1;
        let mut exp_negative = false;
        if pos < bytes.len() && (bytes[pos] == b'-' || bytes[pos] == b'+') {
            exp_negative = bytes[pos] == b'-';
            pos += 1;
        }
        let exp_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            exp = (exp * 10 + i64::from(bytes[pos] - b'0')).min(1 << 40);
            pos += 1;
        }
        if pos == exp_start {
            return Err(invalid(input, "expected digits after the exponent marker"));
        }
        if exp_negative {
            exp = -exp;
        }
    }
    if pos != bytes.len() {
        return Err(invalid(
            input,
            "unexpected character (only digits, one '.', a sign and an exponent are allowed)",
        ));
    }
    // value = 0.<int_part frac_part> × 10^(int_part.len() + exp)
    let all = int_part.chars().chain(frac_part.chars());
    let leading_zeros = all.clone().take_while(|c| *c == '0').count();
    let digits: String = all.skip(leading_zeros).collect();
    let digits = digits.trim_end_matches('0').to_owned();
    if digits.is_empty() {
        return Ok(Decimal {
            negative: false,
            digits,
            exponent: 0,
        });
    }
    let point = int_part.len() as i64 - leading_zeros as i64;
    Ok(Decimal {
        negative,
        digits,
        exponent: point.saturating_add(exp) - 1,
    })
}

/// The canonical text of a decimal (see [`PLAIN_EXPONENTS`]).
fn format_canonical(d: &Decimal) -> String {
    if d.digits.is_empty() {
        return "0".to_owned();
    }
    let mut out = String::with_capacity(d.digits.len() + 8);
    if d.negative {
        out.push('-');
    }
    let last = d.digits.len() as i64 - 1;
    let e = d.exponent;
    if PLAIN_EXPONENTS.contains(&e) {
        if e >= last {
            out.push_str(&d.digits);
            out.extend(std::iter::repeat_n('0', (e - last) as usize));
        } else if e >= 0 {
            let (int, frac) = d.digits.split_at(e as usize + 1);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-e - 1) as usize));
            out.push_str(&d.digits);
        }
    } else {
        let (first, rest) = d.digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('E');
        out.push(if e < 0 { '-' } else { '+' });
        out.push_str(&e.unsigned_abs().to_string());
    }
    out
}

/// A canonical number seen as sign, leading-digit exponent and mantissa
/// digits (which may carry trailing zeros for plain integers). `None` for 0.
struct View<'a> {
    negative: bool,
    exponent: i64,
    mantissa: &'a str,
}

impl View<'_> {
    fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.mantissa.bytes().filter(u8::is_ascii_digit)
    }

    fn significant_digits(&self) -> usize {
        self.mantissa
            .trim_end_matches('0')
            .bytes()
            .filter(u8::is_ascii_digit)
            .count()
    }
}

fn view(canonical: &str) -> Option<View<'_>> {
    let (negative, body) = match canonical.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, canonical),
    };
    if body == "0" {
        return None;
    }
    if let Some((mantissa, exp)) = body.split_once('E') {
        return Some(View {
            negative,
            exponent: exp.parse().unwrap_or(0),
            mantissa,
        });
    }
    if let Some(frac) = body.strip_prefix("0.") {
        let zeros = frac.bytes().take_while(|b| *b == b'0').count();
        return Some(View {
            negative,
            exponent: -(zeros as i64) - 1,
            mantissa: &frac[zeros..],
        });
    }
    let int_len = body.find('.').unwrap_or(body.len());
    Some(View {
        negative,
        exponent: int_len as i64 - 1,
        mantissa: body,
    })
}

/// Compares two digit sequences as `0.d1d2…`, padding the shorter with zeros.
fn cmp_digits(mut a: impl Iterator<Item = u8>, mut b: impl Iterator<Item = u8>) -> Ordering {
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (x, y) => {
                let c = x.unwrap_or(b'0').cmp(&y.unwrap_or(b'0'));
                if c != Ordering::Equal {
                    return c;
                }
            }
        }
    }
}

impl Number {
    /// The canonical text, e.g. `"12.5"`, `"-3"`, `"0.001"`, `"1.5E+40"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The integer `v` exactly, or `None` when it has more than 38
    /// significant digits (only possible for `|v| ≥ 10^38`).
    pub fn try_from_i128(v: i128) -> Option<Number> {
        let n = Self::from_i128(v);
        (n.to_i128() == Some(v)).then_some(n)
    }

    /// The integer `v`. Exact for every `|v| < 10^38` (and for larger values
    /// with at most 38 significant digits); beyond DynamoDB's precision the
    /// value is truncated toward zero to 38 significant digits. Use
    /// [`Number::try_from_i128`] to detect that.
    pub fn from_i128(v: i128) -> Number {
        let magnitude = v.unsigned_abs().to_string();
        let exponent = magnitude.len() as i64 - 1;
        let mut digits: String = magnitude.chars().take(MAX_NUMBER_DIGITS).collect();
        digits.truncate(digits.trim_end_matches('0').len());
        let d = Decimal {
            negative: v < 0 && !digits.is_empty(),
            exponent: if digits.is_empty() { 0 } else { exponent },
            digits,
        };
        Number(format_canonical(&d))
    }

    /// The value as an `i128` when it is an integer that fits.
    pub fn to_i128(&self) -> Option<i128> {
        let Some(v) = view(&self.0) else {
            return Some(0);
        };
        let significant = v.significant_digits() as i64;
        if v.exponent < significant - 1 {
            return None;
        }
        let mut acc: i128 = 0;
        let mut digits = v.digits();
        for _ in 0..=v.exponent {
            let d = i128::from(digits.next().unwrap_or(b'0') - b'0');
            acc = acc.checked_mul(10)?;
            acc = if v.negative {
                acc.checked_sub(d)?
            } else {
                acc.checked_add(d)?
            };
        }
        Some(acc)
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.0 == "0"
    }

    /// Number of significant digits (1 for zero), as DynamoDB's size rules
    /// count them.
    pub fn significant_digits(&self) -> usize {
        view(&self.0).map_or(1, |v| v.significant_digits())
    }
}

impl FromStr for Number {
    type Err = ValueError;

    /// Parses DynamoDB's number syntax: optional sign, digits with an
    /// optional fraction, an optional exponent (`1e5`, `-0.5E-3`). Refuses
    /// empty input, `NaN`, `Infinity`, hex, white space, more than 38
    /// significant digits and magnitudes outside `1E-130 ..= 9.99…E+125`.
    fn from_str(input: &str) -> Result<Number, ValueError> {
        let d = parse_decimal(input)?;
        if d.digits.len() > MAX_NUMBER_DIGITS {
            return Err(invalid(input, "more than 38 significant digits"));
        }
        if !d.digits.is_empty()
            && !(MIN_NUMBER_EXPONENT..=MAX_NUMBER_EXPONENT).contains(&d.exponent)
        {
            return Err(ValueError::NumberOutOfRange {
                input: quote(input),
            });
        }
        Ok(Number(format_canonical(&d)))
    }
}

impl TryFrom<String> for Number {
    type Error = ValueError;

    fn try_from(value: String) -> Result<Number, ValueError> {
        value.parse()
    }
}

impl From<Number> for String {
    fn from(value: Number) -> String {
        value.0
    }
}

impl From<i64> for Number {
    fn from(value: i64) -> Number {
        Number::from_i128(i128::from(value))
    }
}

impl From<u64> for Number {
    fn from(value: u64) -> Number {
        Number::from_i128(i128::from(value))
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Number {
    /// Numeric order.
    fn cmp(&self, other: &Self) -> Ordering {
        let sign = |v: &Option<View<'_>>| match v {
            None => 0,
            Some(v) if v.negative => -1,
            Some(_) => 1,
        };
        let (a, b) = (view(&self.0), view(&other.0));
        match sign(&a).cmp(&sign(&b)) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
        let (Some(a), Some(b)) = (a, b) else {
            return Ordering::Equal;
        };
        let magnitude = a
            .exponent
            .cmp(&b.exponent)
            .then_with(|| cmp_digits(a.digits(), b.digits()));
        if a.negative {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> Number {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn canonical_forms() {
        let table = [
            ("0", "0"),
            ("-0", "0"),
            ("+0.000", "0"),
            ("0e999999999999999999999", "0"),
            ("1", "1"),
            ("1.0", "1"),
            ("10E-1", "1"),
            ("+1", "1"),
            ("001.500", "1.5"),
            ("12.5", "12.5"),
            ("-3", "-3"),
            ("-3.", "-3"),
            (".5", "0.5"),
            ("0.001", "0.001"),
            ("1e-3", "0.001"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1E-7"),
            ("-0.5E-3", "-0.0005"),
            ("1e5", "100000"),
            ("1200", "1200"),
            ("1.2e3", "1200"),
            ("15e39", "1.5E+40"),
            ("1.5E+40", "1.5E+40"),
            (
                "99999999999999999999999999999999999999",
                "99999999999999999999999999999999999999",
            ),
            ("1E+38", "1E+38"),
            ("1E37", "10000000000000000000000000000000000000"),
            ("123.456e-10", "1.23456E-8"),
            ("-9.99E+125", "-9.99E+125"),
            ("1E-130", "1E-130"),
            ("100000000000000000000000000000000000000000", "1E+41"),
            (
                "0.0000000000000000000000000000000000000000000000000001",
                "1E-52",
            ),
        ];
        for (input, want) in table {
            assert_eq!(n(input).as_str(), want, "canonical form of {input:?}");
        }
        assert_eq!(n("1.0"), n("10E-1"));
        assert_eq!(n("1.0"), n("1"));
    }

    #[test]
    fn malformed_numbers_are_refused() {
        for input in [
            "",
            "-",
            "+",
            ".",
            "e5",
            "1e",
            "1e+",
            "NaN",
            "nan",
            "Infinity",
            "-Infinity",
            "inf",
            "0x1F",
            " 1",
            "1 ",
            "1 0",
            "1.2.3",
            "--1",
            "+-1",
            "1,5",
            "1_000",
            "١",
        ] {
            assert!(
                matches!(
                    input.parse::<Number>(),
                    Err(ValueError::InvalidNumber { .. })
                ),
                "{input:?} should be refused as malformed"
            );
        }
    }

    #[test]
    fn limits_follow_dynamodb() {
        let digits38 = "12345678901234567890123456789012345678";
        assert_eq!(n(digits38).as_str(), digits38);
        let digits39 = "123456789012345678901234567890123456789";
        assert!(matches!(
            digits39.parse::<Number>(),
            Err(ValueError::InvalidNumber { .. })
        ));
        // Trailing zeros are not significant.
        assert_eq!(
            n("1234567890123456789012345678901234567800").as_str(),
            "1.2345678901234567890123456789012345678E+39"
        );
        assert!(n("9.9999999999999999999999999999999999999E+125") > n("1E+125"));
        for out in [
            "1E+126",
            "-1E+126",
            "1E-131",
            "-1E-131",
            "1e999999999999999999999",
        ] {
            assert!(
                matches!(
                    out.parse::<Number>(),
                    Err(ValueError::NumberOutOfRange { .. })
                ),
                "{out} should be out of range"
            );
        }
        let long = "1".repeat(500);
        match long.parse::<Number>() {
            Err(ValueError::InvalidNumber { input, .. }) => assert!(input.len() < 100),
            other => panic!("expected InvalidNumber, got {other:?}"),
        }
    }

    #[test]
    fn order_is_numeric() {
        let sorted = [
            "-1E+100",
            "-1000",
            "-12.5",
            "-2",
            "-1.5",
            "-1",
            "-0.001",
            "-1E-100",
            "0",
            "1E-130",
            "0.0000001",
            "0.001",
            "0.5",
            "1",
            "1.0000001",
            "2",
            "9",
            "10",
            "12.5",
            "100",
            "1E+38",
            "1.5E+40",
        ];
        let nums: Vec<Number> = sorted.iter().map(|s| n(s)).collect();
        for (i, a) in nums.iter().enumerate() {
            for (j, b) in nums.iter().enumerate() {
                assert_eq!(a.cmp(b), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn integer_conversions() {
        for v in [
            0i128,
            1,
            -1,
            10,
            1200,
            -1200,
            i64::MAX as i128,
            i64::MIN as i128,
        ] {
            assert_eq!(Number::from_i128(v).to_i128(), Some(v));
        }
        let big = 10i128.pow(38);
        assert_eq!(Number::from_i128(big).as_str(), "1E+38");
        assert_eq!(Number::from_i128(big).to_i128(), Some(big));
        assert_eq!(
            Number::try_from_i128(big - 1).map(|x| x.to_i128()),
            Some(Some(big - 1))
        );
        assert_eq!(Number::try_from_i128(i128::MAX), None);
        assert_eq!(
            Number::from_i128(i128::MAX).as_str(),
            "1.7014118346046923173168730371588410572E+38"
        );
        assert!(Number::from_i128(i128::MIN) < Number::from_i128(-big));
        assert_eq!(n("1.5").to_i128(), None);
        assert_eq!(n("1E+40").to_i128(), None);
        assert_eq!(n("-1.2e3").to_i128(), Some(-1200));
        assert_eq!(n("1E-7").to_i128(), None);
        assert_eq!(Number::from(42u64), n("42"));
    }

    #[test]
    fn serde_revalidates() {
        let x: Number = serde_json::from_str("\"10E-1\"").expect("valid number");
        assert_eq!(x.as_str(), "1");
        assert!(serde_json::from_str::<Number>("\"NaN\"").is_err());
        assert_eq!(
            serde_json::to_string(&n("12.50")).expect("serializes"),
            "\"12.5\""
        );
    }

    fn decimal_strategy() -> impl Strategy<Value = String> {
        (
            prop_oneof![Just(""), Just("-"), Just("+")],
            "[0-9]{1,20}",
            proptest::option::of("[0-9]{0,18}"),
            proptest::option::of(-90i32..90),
        )
            .prop_map(|(sign, int, frac, exp)| {
                let mut s = format!("{sign}{int}");
                if let Some(f) = frac {
                    s.push('.');
                    s.push_str(&f);
                }
                if let Some(e) = exp {
                    s.push_str(&format!("e{e}"));
                }
                s
            })
    }

    proptest! {
        #[test]
        fn parse_display_parse_is_identity(s in decimal_strategy()) {
            let a: Number = s.parse().expect("generated numbers are in range");
            let b: Number = a.to_string().parse().expect("canonical text parses");
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.as_str(), b.as_str());
        }

        #[test]
        fn shifting_the_point_keeps_the_value(m in -1_000_000_000i64..1_000_000_000, k in 0u32..30) {
            let shifted = format!("{m}{}e-{k}", "0".repeat(k as usize));
            prop_assert_eq!(n(&shifted), Number::from(m));
        }

        #[test]
        fn order_agrees_with_exact_arithmetic(
            a in -1_000_000_000_000_000i64..1_000_000_000_000_000,
            ka in 0u32..6,
            b in -1_000_000_000_000_000i64..1_000_000_000_000_000,
            kb in 0u32..6,
        ) {
            // a / 10^ka versus b / 10^kb, compared exactly in i128.
            let x = n(&format!("{a}e-{ka}"));
            let y = n(&format!("{b}e-{kb}"));
            let lhs = i128::from(a) * 10i128.pow(kb);
            let rhs = i128::from(b) * 10i128.pow(ka);
            prop_assert_eq!(x.cmp(&y), lhs.cmp(&rhs));
            prop_assert_eq!(x == y, lhs == rhs);
            if ka == 0 && kb == 0 {
                prop_assert_eq!(x.partial_cmp(&y), (a as f64).partial_cmp(&(b as f64)));
            }
        }
    }
}
