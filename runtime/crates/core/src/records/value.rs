//! Typed record data: the host's side of `sluice:plugin/types`, with the JSON form
//! users write in context and record files.
//!
//! JSON form of a [`Value`]: `null`, a string, an integer, `true`/`false` map to the
//! obvious types; a number with a fraction becomes a decimal; the other types are an
//! object with one key: `{"decimal": "12.50"}`, `{"money": "100.00"}`,
//! `{"date-time": "2026-11-23T05:00:00Z"}`, `{"option-set": 3}`,
//! `{"entity-reference": {"entity": "account", "id": "...", "name": "Contoso"}}`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value as Json, json};

/// An exact decimal number: `units / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub units: i64,
    pub scale: u8,
}

impl Decimal {
    /// The largest scale a decimal may have: 18 places (Dataverse allows 10). A decimal
    /// with a larger scale is refused where it enters (the JSON form, a plug-in's values).
    pub const MAX_SCALE: u8 = 18;

    /// Compares by numeric value, whatever the scales (total: any two decimals, even
    /// past [`Decimal::MAX_SCALE`], compare without overflow).
    pub fn cmp_value(&self, other: &Decimal) -> std::cmp::Ordering {
        let scale = self.scale.max(other.scale);
        let widen = |d: &Decimal| {
            if d.units == 0 {
                return Some(0);
            }
            10i128.checked_pow(u32::from(scale - d.scale)).and_then(|p| i128::from(d.units).checked_mul(p))
        };
        match (widen(self), widen(other)) {
            (Some(a), Some(b)) => a.cmp(&b),
            // Only the side with the smaller scale is widened, so at most one overflows,
            // and then its magnitude is past any i64 the other side holds: its sign decides.
            (None, _) => self.units.cmp(&0),
            (_, None) => 0.cmp(&other.units),
        }
    }

    /// Whether the scale is at most [`Decimal::MAX_SCALE`].
    pub fn in_range(&self) -> bool {
        self.scale <= Self::MAX_SCALE
    }
}

impl FromStr for Decimal {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("'{text}' is not a decimal number");
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let scale = u8::try_from(fraction.len()).ok().filter(|s| *s <= Decimal::MAX_SCALE).ok_or_else(bad)?;
        // Read wider than i64 so that the most negative units (whose magnitude no i64
        // holds) read back too.
        let magnitude: i128 = format!("{whole}{fraction}").parse().map_err(|_| bad())?;
        let units = i64::try_from(if negative { -magnitude } else { magnitude }).map_err(|_| bad())?;
        Ok(Decimal { units, scale })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let digits = self.units.unsigned_abs().to_string();
        let scale = usize::from(self.scale);
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{whole}.{fraction}")
    }
}

/// A point in time, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime {
    pub seconds: i64,
    pub nanoseconds: u32,
}

impl DateTime {
    /// The earliest date-time the JSON form writes: 0000-01-01T00:00:00Z.
    pub const MIN_SECONDS: i64 = -62_167_219_200;
    /// The latest whole second the JSON form writes: 9999-12-31T23:59:59Z.
    pub const MAX_SECONDS: i64 = 253_402_300_799;

    /// Whether the JSON form (RFC 3339, years 0000 to 9999) can write it and read it
    /// back: seconds in that range, nanoseconds under one second.
    pub fn in_range(&self) -> bool {
        (Self::MIN_SECONDS..=Self::MAX_SECONDS).contains(&self.seconds) && self.nanoseconds < 1_000_000_000
    }
}

impl FromStr for DateTime {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("'{text}' is not an RFC 3339 date-time: {e}"))?;
        Ok(DateTime { seconds: parsed.unix_timestamp(), nanoseconds: parsed.nanosecond() })
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanoseconds);
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        {
            Some(text) => f.write_str(&text),
            None => write!(f, "@{}.{:09}", self.seconds, self.nanoseconds),
        }
    }
}

/// A reference to another record (a lookup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityReference {
    pub entity: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The value of one attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    String(String),
    Integer(i64),
    Decimal(Decimal),
    Boolean(bool),
    DateTime(DateTime),
    Money(Decimal),
    OptionSet(i32),
    EntityReference(EntityReference),
}

/// About how many bytes attributes take in memory and on disk: what the host charges a
/// plug-in for moving them (see the engine's host-call costs).
pub fn weight(attributes: &Attributes) -> u64 {
    attributes.iter().map(|(name, value)| (name.len() + value.weight()) as u64).sum()
}

impl Value {
    /// About how many bytes the value takes (strings by length, the rest a few words).
    pub fn weight(&self) -> usize {
        match self {
            Value::String(text) => text.len(),
            Value::EntityReference(r) => r.entity.len() + r.id.len() + r.name.as_ref().map_or(0, String::len),
            _ => 16,
        }
    }

    /// Orders two values of the same type; `None` when they cannot be compared.
    pub fn partial_cmp_value(&self, other: &Value) -> Option<std::cmp::Ordering> {
        use Value::*;
        match (self, other) {
            (String(a), String(b)) => Some(a.cmp(b)),
            (Integer(a), Integer(b)) => Some(a.cmp(b)),
            (Decimal(a) | Money(a), Decimal(b) | Money(b)) => Some(a.cmp_value(b)),
            (Integer(a), Decimal(b) | Money(b)) => Some(self::Decimal { units: *a, scale: 0 }.cmp_value(b)),
            (Decimal(a) | Money(a), Integer(b)) => Some(a.cmp_value(&self::Decimal { units: *b, scale: 0 })),
            (Boolean(a), Boolean(b)) => Some(a.cmp(b)),
            (DateTime(a), DateTime(b)) => Some(a.cmp(b)),
            (OptionSet(a), OptionSet(b)) => Some(a.cmp(b)),
            (EntityReference(a), EntityReference(b)) if a.entity == b.entity => Some(a.id.cmp(&b.id)),
            _ => None,
        }
    }

    /// The size this value takes in an output, for the output-size limit.
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::String(s) => s.len(),
            Value::EntityReference(r) => r.entity.len() + r.id.len() + r.name.as_ref().map_or(0, String::len),
            _ => 16,
        }
    }

    fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::String(s) => json!(s),
            Value::Integer(i) => json!(i),
            Value::Boolean(b) => json!(b),
            Value::Decimal(d) => json!({ "decimal": d.to_string() }),
            Value::Money(d) => json!({ "money": d.to_string() }),
            Value::DateTime(t) => json!({ "date-time": t.to_string() }),
            Value::OptionSet(o) => json!({ "option-set": o }),
            Value::EntityReference(r) => json!({ "entity-reference": r }),
        }
    }

    fn from_json(json: Json) -> Result<Value, String> {
        Ok(match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Boolean(b),
            Json::String(s) => Value::String(s),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Decimal(n.to_string().parse()?),
            },
            Json::Array(_) => return Err("a value cannot be a list".into()),
            Json::Object(map) => Self::typed_from_json(map)?,
        })
    }

    fn typed_from_json(map: Map<String, Json>) -> Result<Value, String> {
        let mut entries = map.into_iter();
        let (Some((kind, inner)), None) = (entries.next(), entries.next()) else {
            return Err("a typed value is an object with exactly one key, e.g. {\"money\": \"12.50\"}".into());
        };
        let text = |inner: &Json| match inner {
            Json::String(s) => Ok(s.clone()),
            Json::Number(n) => Ok(n.to_string()),
            _ => Err(format!("'{kind}' takes a string")),
        };
        Ok(match kind.as_str() {
            "decimal" => Value::Decimal(text(&inner)?.parse()?),
            "money" => Value::Money(text(&inner)?.parse()?),
            "date-time" => Value::DateTime(text(&inner)?.parse()?),
            "option-set" => Value::OptionSet(
                inner
                    .as_i64()
                    .and_then(|o| i32::try_from(o).ok())
                    .ok_or("'option-set' takes a 32-bit integer")?,
            ),
            "entity-reference" => Value::EntityReference(
                serde_json::from_value(inner).map_err(|e| format!("bad entity-reference: {e}"))?,
            ),
            other => {
                return Err(format!(
                    "unknown value type '{other}' (expected decimal, money, date-time, option-set or entity-reference)"
                ));
            }
        })
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::from_json(Json::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.into())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}

/// Named values: a record's attributes, input or output parameters, shared variables.
pub type Attributes = BTreeMap<String, Value>;

/// One record of an organisation's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    /// The entity's logical name, e.g. `account`.
    pub logical_name: String,
    pub id: String,
    #[serde(default)]
    pub attributes: Attributes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_through_text() {
        for text in
            ["0", "12.50", "-0.05", "1000000.125", "-7", "-9.223372036854775808", "9223372036854775807"]
        {
            assert_eq!(text.parse::<Decimal>().unwrap().to_string(), text);
        }
        assert!("1.2.3".parse::<Decimal>().is_err());
        assert!("".parse::<Decimal>().is_err());
        assert!("abc".parse::<Decimal>().is_err());
        assert!("99999999999999999999".parse::<Decimal>().is_err());
    }

    #[test]
    fn decimals_compare_by_value_across_scales() {
        let a: Decimal = "12.5".parse().unwrap();
        let b: Decimal = "12.50".parse().unwrap();
        let c: Decimal = "12.49".parse().unwrap();
        assert_eq!(a.cmp_value(&b), std::cmp::Ordering::Equal);
        assert_eq!(c.cmp_value(&a), std::cmp::Ordering::Less);
    }

    #[test]
    fn values_have_a_readable_json_form() {
        let json = r#"{"name":"Contoso","employees":120,"active":true,"rate":0.25,
            "limit":{"money":"5000.00"},"founded":{"date-time":"1999-04-01T00:00:00Z"},
            "tier":{"option-set":2},"parent":{"entity-reference":{"entity":"account","id":"a1"}},
            "fax":null}"#;
        let attributes: Attributes = serde_json::from_str(json).unwrap();
        assert_eq!(attributes["employees"], Value::Integer(120));
        assert_eq!(attributes["rate"], Value::Decimal(Decimal { units: 25, scale: 2 }));
        assert_eq!(attributes["limit"], Value::Money(Decimal { units: 500000, scale: 2 }));
        assert_eq!(attributes["tier"], Value::OptionSet(2));
        assert_eq!(attributes["fax"], Value::Null);
        let again: Attributes = serde_json::from_str(&serde_json::to_string(&attributes).unwrap()).unwrap();
        assert_eq!(again, attributes);
    }

    #[test]
    fn bad_typed_values_are_named() {
        let err = serde_json::from_str::<Value>(r#"{"euros":"1"}"#).unwrap_err().to_string();
        assert!(err.contains("unknown value type 'euros'"), "{err}");
        let err = serde_json::from_str::<Value>(r#"{"date-time":"yesterday"}"#).unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
        assert!(serde_json::from_str::<Value>("[1,2]").is_err());
    }

    #[test]
    fn decimals_compare_totally_whatever_their_scales() {
        use std::cmp::Ordering::*;
        let d = |units: i64, scale: u8| Decimal { units, scale };
        for (a, b, expected) in [
            (d(1, 0), d(1, 255), Greater),
            (d(-1, 0), d(1, 255), Less),
            (d(0, 0), d(0, 255), Equal),
            (d(0, 200), d(-1, 0), Greater),
            (d(i64::MAX, 255), d(i64::MIN, 0), Greater),
            (d(i64::MIN, 0), d(i64::MAX, 255), Less),
            (d(i64::MAX, 0), d(i64::MAX, 38), Greater),
            (d(i64::MIN, 0), d(i64::MIN, 39), Less),
            (d(5, 1), d(50, 2), Equal),
            (d(i64::MAX, 18), d(i64::MAX, 0), Less),
        ] {
            assert_eq!(a.cmp_value(&b), expected, "{a:?} vs {b:?}");
            assert_eq!(b.cmp_value(&a), expected.reverse(), "{b:?} vs {a:?}");
        }
    }
}
