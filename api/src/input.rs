//! Request values that need exact parsing: amounts ("19.99" or 19.99, read
//! from the JSON text itself, never through a float) and whole numbers whose
//! range is a business rule (422) rather than a type error (400).

use domain::values::{Money, Quantity};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::error::ApiError;

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
    /// The amount, validated by the domain (non-negative, at most 4 decimals).
    pub fn money(&self, field: &str) -> Result<Money, ApiError> {
        let text = self.0.get().trim();
        let decimal = if text.starts_with('"') {
            let inner: String =
                serde_json::from_str(text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            inner
                .trim()
                .parse::<Decimal>()
                .map_err(|_| invalid(field, &inner))?
        } else {
            Decimal::from_str_exact(text)
                .or_else(|_| Decimal::from_scientific(text))
                .map_err(|_| invalid(field, text))?
        };
        Money::new(decimal).map_err(|e| ApiError::Validation(format!("{field}: {e}")))
    }
}

fn invalid(field: &str, text: &str) -> ApiError {
    let shown: String = text.chars().take(40).collect();
    ApiError::Validation(format!("{field}: {shown:?} is not a decimal amount"))
}

/// A whole number; its range is checked by [`WholeInput::quantity`] and friends.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct WholeInput(serde_json::Number);

impl WholeInput {
    fn integer(&self, field: &str) -> Result<i64, ApiError> {
        match self.0.as_i64() {
            Some(n) => Ok(n),
            None if self.0.as_u64().is_some() => {
                Err(ApiError::Validation(format!("{field} is too large")))
            }
            None => Err(ApiError::Validation(format!(
                "{field} must be a whole number"
            ))),
        }
    }

    /// A quantity: at least 1.
    pub fn quantity(&self, field: &str) -> Result<Quantity, ApiError> {
        let n = self.integer(field)?;
        if n < 1 {
            return Err(ApiError::Validation(format!("{field} must be at least 1")));
        }
        let n =
            u32::try_from(n).map_err(|_| ApiError::Validation(format!("{field} is too large")))?;
        Quantity::new(n).map_err(|e| ApiError::Validation(format!("{field}: {e}")))
    }

    /// A stock level: zero or more.
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
    }

    #[test]
    fn bad_amounts_are_validation_errors_and_wrong_types_bad_requests() {
        assert!(matches!(amount("\"-1\""), Err(ApiError::Validation(_))));
        assert!(matches!(amount("-0.5"), Err(ApiError::Validation(_))));
        assert!(matches!(amount("\"abc\""), Err(ApiError::Validation(_))));
        assert!(matches!(amount("1.00001"), Err(ApiError::Validation(_))));
        assert!(matches!(amount("true"), Err(ApiError::BadRequest(_))));
        assert!(matches!(amount("{}"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn quantities_below_one_are_rule_breaks() {
        let q = |json: &str| {
            serde_json::from_str::<WholeInput>(json)
                .unwrap()
                .quantity("quantity")
        };
        assert_eq!(q("3").unwrap().get(), 3);
        assert!(matches!(q("0"), Err(ApiError::Validation(_))));
        assert!(matches!(q("-2"), Err(ApiError::Validation(_))));
        assert!(matches!(q("1.5"), Err(ApiError::Validation(_))));
        assert!(matches!(
            q("99999999999999999999"),
            Err(ApiError::Validation(_))
        ));
        assert!(serde_json::from_str::<WholeInput>("\"3\"").is_err());
    }
}
