//! Request values that need exact parsing, and the JSON Schemas that say
//! exactly what they accept.
//!
//! - Amounts (`"19.99"` or `19.99`) are read from the JSON text itself, never
//!   through a float, by one small grammar ([`exact_decimal`]) rather than a
//!   library parser whose corners (rounding of long fractions, underscores)
//!   nobody could document.
//! - Whole numbers: their range is a business rule (422), not a type (400).
//! - Strings: the patterns below are what the domain's parsers accept, spelled
//!   as ECMA-262 regular expressions for the OpenAPI document. A test checks
//!   each pattern against its parser on generated strings, so the document
//!   and the server cannot drift apart.

use domain::values::{Email, Money, Quantity, ValueError};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};

use crate::error::ApiError;

// Character classes. `trim()` removes Unicode White_Space: \t \n \v \f \r,
// space, U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F,
// U+205F, U+3000. Control characters (Cc) are U+0000–U+001F and
// U+007F–U+009F. The classes are written out in each pattern because the
// OpenAPI document carries them as plain strings.

/// A display name (users, products): surrounding whitespace is trimmed; what
/// remains is 1 to 200 characters without control characters.
pub const NAME_PATTERN: &str = r"^[\t\n\u000b\u000c\r\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\u0000-\u001f\u007f-\u009f]{0,198}[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t\n\u000b\u000c\r\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$";

/// A cancellation reason: the same rule as a name (1 to 200 characters after
/// trimming, no control characters).
pub const REASON_PATTERN: &str = NAME_PATTERN;

/// An email: surrounding whitespace is trimmed; what remains has no
/// whitespace or control characters, one `@` with something before it and a
/// dotted domain (no empty label) after it. At most 254 characters in all.
pub const EMAIL_PATTERN: &str = r"^[\t\n\u000b\u000c\r\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^@\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+@[^@.\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+(?:\.[^@.\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+)+[\t\n\u000b\u000c\r\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$";

/// A SKU: surrounding whitespace is trimmed; what remains is 1 to 64 of
/// `A-Z a-z 0-9 . _ -`.
pub const SKU_PATTERN: &str = r"^[\t\n\u000b\u000c\r\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9._-]{1,64}[\t\n\u000b\u000c\r\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$";

/// An amount written as a string: surrounding whitespace is trimmed; then
/// digits, optionally a point and digits; not negative (`-0` is zero); below
/// 10^24; at most 4 decimal places once trailing zeros are dropped.
pub const AMOUNT_PATTERN: &str = r"^[\t\n\u000b\u000c\r\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*(?:-0+(?:\.0+)?|0*[0-9]{1,24}(?:\.[0-9]{1,4}0*)?)[\t\n\u000b\u000c\r\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$";

/// Amounts are below this (24 digits before the point, at most 4 after: 28
/// significant digits always fit a `Decimal` exactly).
const AMOUNT_INTEGER_DIGITS: usize = 24;

/// An amount: a JSON string or number, kept as its text.
#[derive(Debug, Clone)]
pub struct AmountInput(Box<RawValue>);

impl<'de> Deserialize<'de> for AmountInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get().trim_start();
        if text.starts_with('"')
            || text.starts_with('-')
            || text.starts_with(|c: char| c.is_ascii_digit())
        {
            Ok(AmountInput(raw))
        } else {
            Err(serde::de::Error::custom(
                "expected an amount as a string or a number, like \"19.99\"",
            ))
        }
    }
}

impl AmountInput {
    /// The amount, exactly as written: non-negative, below 10^24, at most 4
    /// decimals.
    pub fn money(&self, field: &str) -> Result<Money, ApiError> {
        let text = self.0.get().trim();
        let (decimal, shown) = if text.starts_with('"') {
            let inner: String =
                serde_json::from_str(text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            (exact_decimal(inner.trim(), false), inner)
        } else {
            (exact_decimal(text, true), text.to_owned())
        };
        let decimal = match decimal {
            Ok(decimal) => decimal,
            Err(DecimalError::Malformed) => return Err(invalid(field, &shown)),
            Err(DecimalError::Negative) => {
                return Err(ApiError::Validation(format!(
                    "{field}: amount must not be negative"
                )))
            }
            Err(DecimalError::TooPrecise) => {
                return Err(ApiError::Validation(format!(
                    "{field}: amount must have at most {} decimal places",
                    Money::MAX_SCALE
                )))
            }
            Err(DecimalError::TooLarge) => {
                return Err(ApiError::Validation(format!(
                    "{field}: amount must be below 10^{AMOUNT_INTEGER_DIGITS}"
                )))
            }
        };
        Money::new(decimal).map_err(validation(field))
    }

    /// The schema of an amount: a decimal string, or a JSON number that is a
    /// multiple of 0.0001 in `[0, 10^24)`.
    pub fn schema() -> RefOr<Schema> {
        let string = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(AMOUNT_PATTERN))
            .examples(["19.99"]);
        let number = ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(0.0))
            .exclusive_maximum(Some(1e24))
            .multiple_of(Some(0.0001));
        AnyOfBuilder::new()
            .item(string)
            .item(number)
            .description(Some(
                "An amount: a decimal string (`\"19.99\"`, the form answers use) or a JSON \
                 number, read exactly from its text. Not negative, below 10^24, at most 4 \
                 decimal places once trailing zeros are dropped.",
            ))
            .into()
    }
}

fn invalid(field: &str, text: &str) -> ApiError {
    let shown: String = text.chars().take(40).collect();
    ApiError::Validation(format!("{field}: {shown:?} is not a decimal amount"))
}

/// Why decimal text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// Not `digits[.digits]` (with `[eE][+-]digits` for JSON numbers).
    Malformed,
    /// Below zero (`-0` is zero).
    Negative,
    /// More than 4 decimal places after dropping trailing zeros.
    TooPrecise,
    /// 10^24 or more.
    TooLarge,
}

/// Reads `-?[0-9]+(\.[0-9]+)?` — and, when `exponent`, an optional
/// `[eE][+-]?[0-9]+` after it, as JSON numbers have — exactly into a
/// non-negative decimal below 10^24 with at most 4 decimal places.
pub fn exact_decimal(text: &str, exponent: bool) -> Result<Decimal, DecimalError> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (number, exp) = match rest.find(['e', 'E']) {
        Some(at) if exponent => (&rest[..at], Some(&rest[at + 1..])),
        Some(_) => return Err(DecimalError::Malformed),
        None => (rest, None),
    };
    let (int, frac) = match number.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (number, ""),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (number.contains('.') && !digits(frac)) {
        return Err(DecimalError::Malformed);
    }
    // The power of ten the written exponent adds, saturated: anything past a
    // few hundred only decides between "zero", "too large" and "too precise".
    let exp: i64 = match exp {
        None => 0,
        Some(e) => {
            let (sign, e) = match e.strip_prefix('-') {
                Some(e) => (-1, e),
                None => (1, e.strip_prefix('+').unwrap_or(e)),
            };
            if !digits(e) {
                return Err(DecimalError::Malformed);
            }
            let e = e.trim_start_matches('0');
            sign * if e.len() > 6 {
                1_000_000
            } else {
                e.parse::<i64>().unwrap_or(0)
            }
        }
    };
    // value = significant × 10^power
    let all: String = [int, frac].concat();
    let significant = all.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    if trimmed.is_empty() {
        return Ok(Decimal::ZERO);
    }
    if negative {
        return Err(DecimalError::Negative);
    }
    let power = exp - frac.len() as i64 + (significant.len() - trimmed.len()) as i64;
    let scale = (-power).max(0);
    if scale > i64::from(Money::MAX_SCALE) {
        return Err(DecimalError::TooPrecise);
    }
    let integer_digits = trimmed.len() as i64 + power;
    if integer_digits > AMOUNT_INTEGER_DIGITS as i64 {
        return Err(DecimalError::TooLarge);
    }
    // At most 28 digits now: they fit an i128, and a Decimal exactly.
    let padded = format!("{trimmed}{}", "0".repeat(power.max(0) as usize));
    let mantissa: i128 = padded.parse().map_err(|_| DecimalError::TooLarge)?;
    Decimal::try_from_i128_with_scale(mantissa, scale as u32).map_err(|_| DecimalError::TooLarge)
}

/// A whole number, as JSON number text; its range is checked by
/// [`WholeInput::quantity`] and friends. `3`, `3.0` and `3e0` are the same
/// number (JSON Schema's `integer` says so too); `3.5` is not whole.
#[derive(Debug, Clone)]
pub struct WholeInput(Box<RawValue>);

impl<'de> Deserialize<'de> for WholeInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get().trim_start();
        if text.starts_with('-') || text.starts_with(|c: char| c.is_ascii_digit()) {
            Ok(WholeInput(raw))
        } else {
            Err(serde::de::Error::custom("expected a whole number"))
        }
    }
}

impl WholeInput {
    fn integer(&self, field: &str) -> Result<i64, ApiError> {
        let text = self.0.get().trim();
        let (negative, magnitude) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let value = match exact_decimal(magnitude, true) {
            Ok(value) if value.fract().is_zero() => value,
            Ok(_) | Err(DecimalError::TooPrecise) => {
                return Err(ApiError::Validation(format!(
                    "{field} must be a whole number"
                )))
            }
            Err(DecimalError::TooLarge) => {
                return Err(ApiError::Validation(format!("{field} is too large")))
            }
            Err(DecimalError::Malformed | DecimalError::Negative) => {
                return Err(ApiError::Validation(format!(
                    "{field} must be a whole number"
                )))
            }
        };
        let n = i64::try_from(value.trunc().mantissa() / 10i128.pow(value.scale()))
            .map_err(|_| ApiError::Validation(format!("{field} is too large")))?;
        Ok(if negative { -n } else { n })
    }

    /// A quantity: 1 to 1 000 000.
    pub fn quantity(&self, field: &str) -> Result<Quantity, ApiError> {
        let n = self.integer(field)?;
        if n < 1 {
            return Err(ApiError::Validation(format!("{field} must be at least 1")));
        }
        let n =
            u32::try_from(n).map_err(|_| ApiError::Validation(format!("{field} is too large")))?;
        Quantity::new(n).map_err(validation(field))
    }

    /// A stock level: 0 to 1 000 000.
    pub fn stock(&self, field: &str) -> Result<u32, ApiError> {
        let n = self.integer(field)?;
        if n < 0 {
            return Err(ApiError::Validation(format!(
                "{field} must not be negative"
            )));
        }
        let n =
            u32::try_from(n).map_err(|_| ApiError::Validation(format!("{field} is too large")))?;
        if n > Quantity::MAX {
            return Err(ApiError::Validation(format!(
                "{field} is larger than {}",
                Quantity::MAX
            )));
        }
        Ok(n)
    }

    /// The schema of a quantity.
    pub fn quantity_schema() -> RefOr<Schema> {
        whole_schema(1, "Units: a whole number from 1 to 1 000 000.")
    }

    /// The schema of a stock level.
    pub fn stock_schema() -> RefOr<Schema> {
        whole_schema(0, "Units in stock: a whole number from 0 to 1 000 000.")
    }
}

fn whole_schema(minimum: u32, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Integer))
        .minimum(Some(minimum))
        .maximum(Some(Quantity::MAX))
        .description(Some(description))
        .into()
}

/// The domain's refusal of a request value as a 422 naming the field.
pub fn validation(field: &str) -> impl FnOnce(ValueError) -> ApiError + '_ {
    move |e| ApiError::Validation(format!("{field}: {e}"))
}

/// Checks what the email pattern cannot: at most 254 characters as written
/// (the domain counts after trimming; counting the raw text keeps the rule
/// one a schema can state).
pub fn email_length(raw: &str) -> Result<(), ApiError> {
    if raw.chars().count() > Email::MAX_LEN {
        return Err(ApiError::Validation(format!(
            "email: email must be at most {} characters",
            Email::MAX_LEN
        )));
    }
    Ok(())
}

/// The schema of a string matching `pattern`, at most `max_length` long.
pub fn pattern_schema(
    pattern: &str,
    max_length: Option<usize>,
    description: &str,
    example: &str,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .max_length(max_length)
        .description(Some(description))
        .examples([example])
        .into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use domain::values::{CancelReason, Name, Sku};
    use proptest::prelude::*;

    fn amount(json: &str) -> Result<Money, ApiError> {
        serde_json::from_str::<AmountInput>(json)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?
            .money("price")
    }

    #[test]
    fn amounts_are_read_exactly_from_strings_and_numbers() {
        assert_eq!(amount("\"19.99\"").unwrap().to_string(), "19.99");
        assert_eq!(amount("19.99").unwrap().to_string(), "19.99");
        // a float would make this 0.30000000000000004
        assert_eq!(amount("0.3").unwrap().amount(), Decimal::new(3, 1));
        assert_eq!(
            amount("123456789012345678.25").unwrap().to_string(),
            "123456789012345678.25"
        );
        assert_eq!(amount("1e2").unwrap().to_string(), "100.00");
        assert_eq!(amount("1.5E-1").unwrap().to_string(), "0.15");
        assert_eq!(amount("\" 1.50000 \"").unwrap().to_string(), "1.50");
        assert_eq!(amount("\"-0.00\"").unwrap().to_string(), "0.00");
        assert_eq!(amount("-0").unwrap().to_string(), "0.00");
        assert_eq!(amount("0e999999999999").unwrap().to_string(), "0.00");
        assert_eq!(
            amount("\"999999999999999999999999.9999\"")
                .unwrap()
                .to_string(),
            "999999999999999999999999.9999"
        );
    }

    #[test]
    fn bad_amounts_are_validation_errors_and_wrong_types_bad_requests() {
        assert!(matches!(amount("\"-1\""), Err(ApiError::Validation(_))));
        assert!(matches!(amount("-0.5"), Err(ApiError::Validation(_))));
        assert!(matches!(amount("\"abc\""), Err(ApiError::Validation(_))));
        assert!(matches!(amount("1.00001"), Err(ApiError::Validation(_))));
        assert!(matches!(amount("true"), Err(ApiError::BadRequest(_))));
        assert!(matches!(amount("{}"), Err(ApiError::BadRequest(_))));
        // What a library parser would have rounded or skipped over:
        for bad in [
            "\"19.99999999999999999999999999999\"",
            "\"1_000\"",
            "\"1e2\"",
            "\"+1\"",
            "\".5\"",
            "\"5.\"",
            "\"1000000000000000000000000\"",
            "1e24",
            "1e-5",
            "1e999999999999",
        ] {
            assert!(
                matches!(amount(bad), Err(ApiError::Validation(_))),
                "{bad} is refused"
            );
        }
    }

    #[test]
    fn quantities_below_one_are_rule_breaks() {
        let q = |json: &str| {
            serde_json::from_str::<WholeInput>(json)
                .unwrap()
                .quantity("quantity")
        };
        assert_eq!(q("3").unwrap().get(), 3);
        assert_eq!(q("3.0").unwrap().get(), 3);
        assert_eq!(q("3e0").unwrap().get(), 3);
        assert_eq!(q("1E6").unwrap().get(), 1_000_000);
        assert!(matches!(q("0"), Err(ApiError::Validation(_))));
        assert!(matches!(q("-2"), Err(ApiError::Validation(_))));
        assert!(matches!(q("1.5"), Err(ApiError::Validation(_))));
        assert!(matches!(q("1000001"), Err(ApiError::Validation(_))));
        assert!(matches!(
            q("99999999999999999999"),
            Err(ApiError::Validation(_))
        ));
        assert!(matches!(q("1e400"), Err(ApiError::Validation(_))));
        assert!(serde_json::from_str::<WholeInput>("\"3\"").is_err());
        let stock = |json: &str| {
            serde_json::from_str::<WholeInput>(json)
                .unwrap()
                .stock("stock")
        };
        assert_eq!(stock("-0").unwrap(), 0);
        assert!(matches!(stock("-1"), Err(ApiError::Validation(_))));
    }

    fn regex(pattern: &str) -> regex::Regex {
        regex::Regex::new(pattern).unwrap()
    }

    /// Characters that sit on the edges of the patterns' classes.
    fn tricky_string() -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            'a', 'Z', '0', '9', '.', '_', '-', '@', ' ', '\t', '\n', '\u{0}', '\u{1f}', '\u{7f}',
            '\u{85}', '\u{9f}', '\u{a0}', '\u{a1}', '\u{1680}', '\u{2000}', '\u{200a}', '\u{200b}',
            '\u{2028}', '\u{3000}', 'é', '😀', '+', 'e',
        ]);
        prop_oneof![
            prop::collection::vec(chars.clone(), 0..12),
            prop::collection::vec(chars, 190..260),
        ]
        .prop_map(|v| v.into_iter().collect())
    }

    /// Like [`tricky_string`], shaped like an amount more often than not.
    fn amount_like() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "0", "1", "9", "00", "5", ".", "-", " ", "\u{a0}", "\t", "e", "+", "_", "0000",
            "12345678",
        ]);
        prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn the_name_pattern_is_the_name_rule(s in tricky_string()) {
            prop_assert_eq!(regex(NAME_PATTERN).is_match(&s), Name::parse(&s).is_ok(), "{:?}", s);
            prop_assert_eq!(regex(REASON_PATTERN).is_match(&s), CancelReason::parse(&s).is_ok(), "{:?}", s);
        }

        #[test]
        fn the_email_pattern_and_length_are_the_email_rule(s in tricky_string()) {
            let documented = regex(EMAIL_PATTERN).is_match(&s) && s.chars().count() <= Email::MAX_LEN;
            let accepted = email_length(&s).is_ok() && Email::parse(&s).is_ok();
            prop_assert_eq!(documented, accepted, "{:?}", s);
        }

        #[test]
        fn the_sku_pattern_is_the_sku_rule(s in tricky_string()) {
            prop_assert_eq!(regex(SKU_PATTERN).is_match(&s), Sku::parse(&s).is_ok(), "{:?}", s);
        }

        #[test]
        fn the_amount_pattern_is_the_string_amount_rule(s in amount_like()) {
            let json = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(regex(AMOUNT_PATTERN).is_match(&s), amount(&json).is_ok(), "{:?}", s);
        }
    }
}
