//! Validated value types.
//!
//! Each type can only hold a value that passes its rule, so once a command
//! carries an `Email` or a `Money` no code further in needs to check again.
//! Constructors return a [`ValueError`] naming the broken rule in words a user
//! can act on; the API answers it as 422.
//!
//! Deserialisation runs the same constructors, so a request body or a stored
//! event cannot smuggle in an invalid value.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::aggregate::{ErrorKind, ErrorKindOf};

/// A value broke one of the rules of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The email is empty after trimming.
    #[error("email must not be empty")]
    EmailEmpty,
    /// The email is longer than the 254 characters an address may have.
    #[error("email must be at most {max} characters")]
    EmailTooLong {
        /// The maximum length.
        max: usize,
    },
    /// The email contains whitespace or control characters.
    #[error("email must not contain spaces or control characters")]
    EmailWhitespace,
    /// The email has no `@` or more than one.
    #[error("email must contain exactly one @")]
    EmailAt,
    /// Nothing before the `@`.
    #[error("email must have a name before the @")]
    EmailLocalPart,
    /// The part after the `@` is not a domain such as `example.com`.
    #[error("email must have a domain with a dot after the @, like example.com")]
    EmailDomain,
    /// The SKU is empty after trimming.
    #[error("sku must not be empty")]
    SkuEmpty,
    /// The SKU is too long.
    #[error("sku must be at most {max} characters")]
    SkuTooLong {
        /// The maximum length.
        max: usize,
    },
    /// The SKU contains a character outside `A-Z a-z 0-9 . _ -`.
    #[error("sku may only contain letters, digits, '.', '_' and '-' (found {0:?})")]
    SkuCharacter(char),
    /// The name is empty after trimming.
    #[error("name must not be empty")]
    NameEmpty,
    /// The name is too long.
    #[error("name must be at most {max} characters")]
    NameTooLong {
        /// The maximum length, in characters.
        max: usize,
    },
    /// The name contains a control character (newline, tab, …).
    #[error("name must not contain control characters")]
    NameControl,
    /// The amount is not a decimal number.
    #[error("amount `{0}` is not a decimal number")]
    MoneyFormat(String),
    /// The amount is below zero.
    #[error("amount must not be negative")]
    MoneyNegative,
    /// The amount has more decimal places than money carries.
    #[error("amount must have at most {max} decimal places")]
    MoneyScale {
        /// The maximum number of decimal places.
        max: u32,
    },
    /// An amount computed from others does not fit in a decimal.
    #[error("amount is too large")]
    MoneyOverflow,
    /// The quantity is zero.
    #[error("quantity must be at least 1")]
    QuantityZero,
    /// The quantity is above the limit.
    #[error("quantity must be at most {max}")]
    QuantityTooLarge {
        /// The maximum quantity.
        max: u32,
    },
    /// A reason is empty after trimming.
    #[error("reason must not be empty")]
    ReasonEmpty,
    /// A reason is too long.
    #[error("reason must be at most {max} characters")]
    ReasonTooLong {
        /// The maximum length, in characters.
        max: usize,
    },
    /// A reason with control characters.
    #[error("reason must not contain control characters")]
    ReasonControl,
}

impl ErrorKindOf for ValueError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Validation
    }
}

/// Implements `Display`, `FromStr`, `as_str`, `TryFrom<String>` and
/// `From<T> for String` for a validated string newtype with a `parse` function.
macro_rules! string_value {
    ($name:ident) => {
        impl $name {
            /// The normalised text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = ValueError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// An email address, trimmed and lowercased.
///
/// Storing the lowercased form makes equality (and the store's uniqueness
/// claim) case-insensitive without every reader remembering to fold case.
/// The rule is deliberately pragmatic rather than RFC 5322: one `@`, something
/// before it, a dotted domain after it, no whitespace, at most 254 characters.
/// Whether the address exists is not the domain's business.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// The longest address SMTP can carry (RFC 5321 path limit minus brackets).
    pub const MAX_LEN: usize = 254;

    /// Validates and normalises an email address.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ValueError::EmailEmpty);
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err(ValueError::EmailTooLong { max: Self::MAX_LEN });
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValueError::EmailWhitespace);
        }
        let (local, domain) = match s.split_once('@') {
            Some((l, d)) if !d.contains('@') => (l, d),
            _ => return Err(ValueError::EmailAt),
        };
        if local.is_empty() {
            return Err(ValueError::EmailLocalPart);
        }
        // A dotted domain with no empty label: rejects `a@b`, `a@.b`, `a@b.`, `a@b..c`.
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return Err(ValueError::EmailDomain);
        }
        Ok(Self(s.to_lowercase()))
    }
}

string_value!(Email);

/// A stock-keeping unit: 1–64 characters of `[A-Za-z0-9._-]`, stored uppercase
/// so that `ab-1` and `AB-1` are the same SKU for uniqueness.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    /// The longest SKU accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates and normalises a SKU.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ValueError::SkuEmpty);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ValueError::SkuCharacter(c));
        }
        // Only ASCII is left, so bytes are characters.
        if s.len() > Self::MAX_LEN {
            return Err(ValueError::SkuTooLong { max: Self::MAX_LEN });
        }
        Ok(Self(s.to_ascii_uppercase()))
    }
}

string_value!(Sku);

/// A display name for a user or product: trimmed, 1–200 characters, no
/// control characters (they break logs, CSV exports and terminals).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// The longest name accepted, in characters.
    pub const MAX_LEN: usize = 200;

    /// Validates and trims a name.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ValueError::NameEmpty);
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err(ValueError::NameTooLong { max: Self::MAX_LEN });
        }
        if s.chars().any(char::is_control) {
            return Err(ValueError::NameControl);
        }
        Ok(Self(s.to_owned()))
    }
}

string_value!(Name);

/// Why an order was cancelled: free text given by the caller, or one of the
/// well-known reasons below. Trimmed, 1–200 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CancelReason(String);

impl CancelReason {
    /// The longest reason accepted, in characters.
    pub const MAX_LEN: usize = 200;
    /// The reason the API uses when the customer gives none.
    pub const CUSTOMER_REQUEST: &'static str = "customer_request";
    /// The reason the fulfilment saga uses when a confirmed order goes unpaid.
    pub const PAYMENT_TIMEOUT: &'static str = "payment_timeout";

    /// Validates and trims a reason.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ValueError::ReasonEmpty);
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err(ValueError::ReasonTooLong { max: Self::MAX_LEN });
        }
        // They break logs and terminals, and PostgreSQL cannot store U+0000.
        if s.chars().any(char::is_control) {
            return Err(ValueError::ReasonControl);
        }
        Ok(Self(s.to_owned()))
    }

    /// `customer_request`, the API's default.
    pub fn customer_request() -> Self {
        Self(Self::CUSTOMER_REQUEST.to_owned())
    }

    /// `payment_timeout`, used by the saga.
    pub fn payment_timeout() -> Self {
        Self(Self::PAYMENT_TIMEOUT.to_owned())
    }
}

string_value!(CancelReason);

/// An amount of money: an exact decimal, never negative, at most 4 decimal
/// places (after dropping trailing zeros, so `1.50000` is fine).
///
/// The value is kept normalised (`1.50` is stored as `1.5`), so equal amounts
/// have equal representations. It serialises as a JSON string with at least
/// two decimals (`"19.99"`, `"20.00"`, `"0.1234"`), because a JSON number
/// would be read as a float by most clients. It deserialises from a string or,
/// for robustness, from a JSON number (see [`Money`]'s `Deserialize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(Decimal);

impl Money {
    /// The most decimal places an amount may carry.
    pub const MAX_SCALE: u32 = 4;
    /// Zero.
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// Validates a decimal as an amount.
    pub fn new(amount: Decimal) -> Result<Self, ValueError> {
        // normalize() also turns -0 into 0, so "-0.00" is accepted as zero.
        let d = amount.normalize();
        if d.is_sign_negative() {
            return Err(ValueError::MoneyNegative);
        }
        if d.scale() > Self::MAX_SCALE {
            return Err(ValueError::MoneyScale {
                max: Self::MAX_SCALE,
            });
        }
        Ok(Self(d))
    }

    /// Parses an amount exactly from its decimal text (`"19.99"`).
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let t = text.trim();
        let d = Decimal::from_str_exact(t).map_err(|_| ValueError::MoneyFormat(t.to_owned()))?;
        Self::new(d)
    }

    /// The amount as a decimal.
    pub const fn amount(&self) -> Decimal {
        self.0
    }

    /// `self + other`, or `MoneyOverflow` when the sum does not fit.
    pub fn checked_add(self, other: Money) -> Result<Money, ValueError> {
        self.0
            .checked_add(other.0)
            .map(|d| Money(d.normalize()))
            .ok_or(ValueError::MoneyOverflow)
    }

    /// `self × quantity` (a line total), or `MoneyOverflow`.
    pub fn checked_mul(self, quantity: Quantity) -> Result<Money, ValueError> {
        self.0
            .checked_mul(Decimal::from(quantity.get()))
            .map(|d| Money(d.normalize()))
            .ok_or(ValueError::MoneyOverflow)
    }
}

impl fmt::Display for Money {
    /// At least two decimals: `20.00`, `19.99`, `0.1234`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = self.0;
        if d.scale() < 2 {
            d.rescale(2);
        }
        fmt::Display::fmt(&d, f)
    }
}

impl FromStr for Money {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<Decimal> for Money {
    type Error = ValueError;

    fn try_from(d: Decimal) -> Result<Self, Self::Error> {
        Self::new(d)
    }
}

impl From<Money> for Decimal {
    fn from(m: Money) -> Decimal {
        m.0
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Accepts `"19.99"` (the canonical form) and also a JSON number.
    ///
    /// A number is read exactly when it reaches us as text: with serde_json's
    /// `arbitrary_precision` feature (which any crate in the build may turn
    /// on) numbers arrive as a one-entry map holding their digits. Without it
    /// serde_json has already parsed the number into an `f64`; we then take its
    /// shortest round-trip text, which is exact for every amount with at most
    /// 15 significant digits. The API reads bodies as raw text when it needs
    /// more than that.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MoneyVisitor;

        impl<'de> Visitor<'de> for MoneyVisitor {
            type Value = Money;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount as a decimal string such as \"19.99\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                Money::parse(v).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                Money::new(Decimal::from(v)).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                Money::new(Decimal::from(v)).map_err(E::custom)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                if !v.is_finite() {
                    return Err(E::custom(ValueError::MoneyFormat(v.to_string())));
                }
                Money::parse(&v.to_string()).map_err(E::custom)
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Money, A::Error> {
                // serde_json's arbitrary_precision representation of a number.
                let key: Option<String> = map.next_key()?;
                match key.as_deref() {
                    Some("$serde_json::private::Number") => {
                        let digits: String = map.next_value()?;
                        Money::parse(&digits).map_err(de::Error::custom)
                    }
                    _ => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
                }
            }
        }

        deserializer.deserialize_any(MoneyVisitor)
    }
}

/// A number of units ordered, reserved or restocked: 1 to 1 000 000.
///
/// The upper bound keeps products of quantities and prices far from overflow
/// and catches typos; stock levels themselves are plain `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    /// The largest quantity accepted.
    pub const MAX: u32 = 1_000_000;

    /// Validates a quantity.
    pub fn new(n: u32) -> Result<Self, ValueError> {
        match n {
            0 => Err(ValueError::QuantityZero),
            n if n > Self::MAX => Err(ValueError::QuantityTooLarge { max: Self::MAX }),
            n => Ok(Self(n)),
        }
    }

    /// The quantity as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Quantity {
    type Error = ValueError;

    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Self::new(n)
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> u32 {
        q.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;
    use serde_json::json;

    #[test]
    fn email_is_trimmed_lowercased_and_compared_case_insensitively() {
        let a = Email::parse("  Alice@Example.COM ").unwrap();
        assert_eq!(a.as_str(), "alice@example.com");
        assert_eq!(a, Email::parse("alice@example.com").unwrap());
    }

    #[test]
    fn email_rules() {
        let long = format!("{}@example.com", "a".repeat(250));
        let cases: &[(&str, ValueError)] = &[
            ("", ValueError::EmailEmpty),
            ("   ", ValueError::EmailEmpty),
            (&long, ValueError::EmailTooLong { max: 254 }),
            ("a b@example.com", ValueError::EmailWhitespace),
            ("alice.example.com", ValueError::EmailAt),
            ("a@b@example.com", ValueError::EmailAt),
            ("@example.com", ValueError::EmailLocalPart),
            ("alice@localhost", ValueError::EmailDomain),
            ("alice@.com", ValueError::EmailDomain),
            ("alice@example.", ValueError::EmailDomain),
            ("alice@example..com", ValueError::EmailDomain),
        ];
        for (raw, err) in cases {
            assert_eq!(Email::parse(raw), Err(err.clone()), "{raw:?}");
        }
        assert_eq!(
            ValueError::EmailAt.to_string(),
            "email must contain exactly one @"
        );
    }

    #[test]
    fn sku_is_uppercased_and_restricted() {
        assert_eq!(Sku::parse(" ab-1.x_2 ").unwrap().as_str(), "AB-1.X_2");
        assert_eq!(Sku::parse(""), Err(ValueError::SkuEmpty));
        assert_eq!(Sku::parse("a b"), Err(ValueError::SkuCharacter(' ')));
        assert_eq!(Sku::parse("é"), Err(ValueError::SkuCharacter('é')));
        assert_eq!(
            Sku::parse(&"A".repeat(65)),
            Err(ValueError::SkuTooLong { max: 64 })
        );
        assert!(Sku::parse(&"A".repeat(64)).is_ok());
    }

    #[test]
    fn name_rules() {
        assert_eq!(Name::parse("  Alice  ").unwrap().as_str(), "Alice");
        assert_eq!(Name::parse(" "), Err(ValueError::NameEmpty));
        assert_eq!(Name::parse("a\nb"), Err(ValueError::NameControl));
        assert_eq!(
            Name::parse(&"é".repeat(201)),
            Err(ValueError::NameTooLong { max: 200 })
        );
        assert!(Name::parse(&"é".repeat(200)).is_ok());
    }

    #[test]
    fn cancel_reason_rules() {
        assert_eq!(CancelReason::parse(""), Err(ValueError::ReasonEmpty));
        assert_eq!(
            CancelReason::parse(&"x".repeat(201)),
            Err(ValueError::ReasonTooLong { max: 200 })
        );
        assert_eq!(
            CancelReason::parse("a\u{0}b"),
            Err(ValueError::ReasonControl)
        );
        assert_eq!(CancelReason::parse("a\nb"), Err(ValueError::ReasonControl));
        assert_eq!(
            CancelReason::payment_timeout().as_str(),
            CancelReason::PAYMENT_TIMEOUT
        );
    }

    #[test]
    fn money_rules() {
        assert_eq!(Money::new(dec!(-0.01)), Err(ValueError::MoneyNegative));
        assert_eq!(
            Money::new(dec!(0.00001)),
            Err(ValueError::MoneyScale { max: 4 })
        );
        assert_eq!(
            Money::new(dec!(1.50000)).unwrap(),
            Money::parse("1.5").unwrap()
        );
        assert_eq!(Money::parse("-0.00").unwrap(), Money::ZERO);
        assert_eq!(
            Money::parse("abc"),
            Err(ValueError::MoneyFormat("abc".into()))
        );
    }

    #[test]
    fn money_serialises_as_a_string_with_two_or_more_decimals() {
        for (text, json) in [
            ("20", "20.00"),
            ("19.99", "19.99"),
            ("0.1234", "0.1234"),
            ("1.5", "1.50"),
        ] {
            let m = Money::parse(text).unwrap();
            assert_eq!(serde_json::to_value(m).unwrap(), json!(json));
            let back: Money = serde_json::from_value(json!(json)).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn money_deserialises_from_numbers_exactly() {
        let m: Money = serde_json::from_str("19.99").unwrap();
        assert_eq!(m.amount(), dec!(19.99));
        let m: Money = serde_json::from_str("0.1").unwrap();
        assert_eq!(m.amount(), dec!(0.1));
        let m: Money = serde_json::from_str("42").unwrap();
        assert_eq!(m.amount(), dec!(42));
        assert!(serde_json::from_str::<Money>("-1").is_err());
        assert!(serde_json::from_str::<Money>("\"1.23456\"").is_err());
        assert!(serde_json::from_str::<Money>("true").is_err());
    }

    #[test]
    fn money_arithmetic_is_exact_and_checked() {
        let p = Money::parse("0.1").unwrap();
        let total = p
            .checked_mul(Quantity::new(3).unwrap())
            .unwrap()
            .checked_add(Money::parse("0.2").unwrap())
            .unwrap();
        assert_eq!(total, Money::parse("0.5").unwrap());
        let big = Money::new(Decimal::MAX).unwrap();
        assert_eq!(big.checked_add(big), Err(ValueError::MoneyOverflow));
    }

    #[test]
    fn quantity_rules() {
        assert_eq!(Quantity::new(0), Err(ValueError::QuantityZero));
        assert_eq!(
            Quantity::new(1_000_001),
            Err(ValueError::QuantityTooLarge { max: 1_000_000 })
        );
        assert_eq!(Quantity::new(5).unwrap().get(), 5);
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert_eq!(
            serde_json::to_string(&Quantity::new(7).unwrap()).unwrap(),
            "7"
        );
    }

    #[test]
    fn validation_runs_on_deserialisation() {
        assert!(serde_json::from_value::<Email>(json!("nope")).is_err());
        assert!(serde_json::from_value::<Sku>(json!("a b")).is_err());
        assert!(serde_json::from_value::<Name>(json!("")).is_err());
    }
}
