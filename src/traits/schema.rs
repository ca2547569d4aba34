//! The schema of a trait's properties: a small, strict subset of OpenAPI v3,
//! the language of OAM's TraitDefinition parameters.
//!
//! Objects never take properties their schema does not name (OpenAPI's
//! `additionalProperties: false` is implied), so a misspelt property is an
//! error, not a silently ignored wish. Every string, array and object has a
//! bound, so an annotation cannot make the shim do unbounded work.

use std::collections::BTreeMap;

use crate::ids::shorten;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest string any property may hold unless its schema says less.
pub const MAX_STRING: usize = 256;
/// Most items in any array unless its schema says less.
pub const MAX_ITEMS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Object,
    String,
    Boolean,
    Integer,
    Array,
}

/// The value formats tidal checks beyond the JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A Kubernetes CPU quantity: `500m`, `2`.
    Cpu,
    /// A Kubernetes memory quantity: `256Mi`, `1G`.
    Memory,
    /// A cron schedule: `0 8 * * 1-5`, six fields with seconds first, or
    /// a descriptor (`@daily`).
    Cron,
    /// A Linux capability name, with or without `CAP_`, or `ALL`.
    Capability,
    /// A lower-case DNS label (RFC 1123): `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
    Name,
    /// A duration: a number (at most 3 decimals) and a unit, `ms`, `s` or
    /// `m`: `250ms`, `1.5s`, `2m`; from 1ms to 1h (see `parse_duration`).
    Duration,
    /// A time zone of the system's zoneinfo: `UTC`, `Europe/Berlin`.
    #[serde(rename = "timezone")]
    TimeZone,
    /// How long something lasts, in whole units largest first, each at
    /// most once: `8h`, `1h30m`, `90s`, `1d12h`; from 1s to 7d (see
    /// `parse_span`).
    Span,
}

/// Longest `span` a property may hold: a week.
pub const MAX_SPAN_SECONDS: u64 = 7 * 24 * 3600;

/// Parses a `span` (`8h`, `1h30m`, `90s`) into seconds: whole numbers each
/// followed by `d`, `h`, `m` or `s`, the units largest first and each at
/// most once; nothing else (no sign, no spaces, no decimals), from 1s to
/// `MAX_SPAN_SECONDS`.
pub fn parse_span(s: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        Err(format!(
            "{:?} is not a span of time ({why}; e.g. 90s, 30m, 1h30m, 8h)",
            shorten(s)
        ))
    };
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3600), ('m', 60), ('s', 1)];
    let mut total: u64 = 0;
    let mut next_unit = 0;
    let mut rest = s;
    if rest.is_empty() {
        return bad("it is empty");
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return bad("each unit needs a whole number of at most 6 digits before it");
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| "unreachable".to_string())?;
        let Some(unit) = rest[digits..].chars().next() else {
            return bad("the last number needs a unit: d, h, m or s");
        };
        let Some(i) = UNITS[next_unit..].iter().position(|(u, _)| *u == unit) else {
            return bad("units are d, h, m and s, largest first, each once");
        };
        total = total.saturating_add(n.saturating_mul(UNITS[next_unit + i].1));
        next_unit += i + 1;
        rest = &rest[digits + unit.len_utf8()..];
    }
    if total == 0 {
        return bad("it must be at least 1s");
    }
    if total > MAX_SPAN_SECONDS {
        return bad("it must be at most 7d");
    }
    Ok(total)
}

/// Longest duration a `duration` property may hold.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(3600);

/// Parses a `duration` (`250ms`, `1.5s`, `2m`): digits, optionally a point
/// and one to three more, then `ms`, `s` or `m`; nothing else (no sign, no
/// spaces, no exponent), at least 1ms and at most `MAX_DURATION`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = |why: &str| {
        Err(format!(
            "{:?} is not a duration ({why}; e.g. 250ms, 1.5s, 2m)",
            shorten(s)
        ))
    };
    let (num, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1u64)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        return bad("it needs a unit: ms, s or m");
    };
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, f),
        None => (num, ""),
    };
    let digits = |t: &str| !t.is_empty() && t.len() <= 9 && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (num.contains('.') && (!digits(frac) || frac.len() > 3)) {
        return bad("it must be a number with at most 3 decimals");
    }
    // In microseconds: exact for 3 decimals of any unit.
    let whole: u64 = whole.parse().map_err(|_| "unreachable".to_string())?;
    let frac_us: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().unwrap_or(0) * 10u64.pow(3 - frac.len() as u32) * unit_ms
    };
    let us = whole.saturating_mul(unit_ms * 1000).saturating_add(frac_us);
    let d = std::time::Duration::from_micros(us);
    if d < std::time::Duration::from_millis(1) {
        return bad("it must be at least 1ms");
    }
    if d > MAX_DURATION {
        return bad("it must be at most 1h");
    }
    Ok(d)
}

/// One node of a properties schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Schema {
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Schema>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<Schema>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

impl Schema {
    /// Checks that the schema itself is usable: names exist, bounds make sense.
    pub fn check(&self, at: &str) -> Result<(), String> {
        for r in &self.required {
            if !self.properties.contains_key(r) {
                return Err(format!("{at}: required property {r:?} is not defined"));
            }
        }
        if self.kind != Kind::Object && !self.properties.is_empty() {
            return Err(format!("{at}: only an object has properties"));
        }
        if self.kind == Kind::Array && self.items.is_none() {
            return Err(format!("{at}: an array needs items"));
        }
        if let (Some(lo), Some(hi)) = (self.minimum, self.maximum) {
            if lo > hi {
                return Err(format!("{at}: minimum {lo} is above maximum {hi}"));
            }
        }
        for (name, p) in &self.properties {
            p.check(&format!("{at}.{name}"))?;
        }
        if let Some(items) = &self.items {
            items.check(&format!("{at}[]"))?;
        }
        if let Some(d) = &self.default {
            validate(d, self, &format!("{at} (default)"))?;
        }
        Ok(())
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks `value` against `schema`; `at` names where it is (for messages).
/// Every problem found is reported, joined by "; " ([`problems`] lists
/// them one by one).
pub fn validate(value: &Value, schema: &Schema, at: &str) -> Result<(), String> {
    let found = problems(value, schema, at);
    if found.is_empty() {
        Ok(())
    } else {
        Err(found.join("; "))
    }
}

/// Every way `value` breaks `schema`, in document order: a value of the
/// wrong type is one problem (its contents are not looked into); an object
/// reports each unknown, missing and bad property.
pub fn problems(value: &Value, schema: &Schema, at: &str) -> Vec<String> {
    let mut found = Vec::new();
    check(value, schema, at, &mut found);
    found
}

fn check(value: &Value, schema: &Schema, at: &str, found: &mut Vec<String>) {
    let before = found.len();
    let wrong = |want: &str| format!("{at} must be {want}, not {}", type_name(value));
    let here = if at.is_empty() { "properties" } else { at };
    match (schema.kind, value) {
        (Kind::Object, Value::Object(map)) => {
            for key in map.keys() {
                if !schema.properties.contains_key(key) {
                    let known: Vec<&str> = schema.properties.keys().map(String::as_str).collect();
                    found.push(format!(
                        "{here}: unknown property {:?} (known: {})",
                        shorten(key),
                        known.join(", ")
                    ));
                }
            }
            for r in &schema.required {
                if !map.contains_key(r) {
                    found.push(format!("{here}: property {r:?} is required"));
                }
            }
            for (key, v) in map {
                let Some(child_schema) = schema.properties.get(key) else {
                    continue;
                };
                let child = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                check(v, child_schema, &child, found);
            }
        }
        (Kind::Object, _) => found.push(wrong("an object")),
        (Kind::Boolean, Value::Bool(_)) => {}
        (Kind::Boolean, _) => found.push(wrong("true or false")),
        (Kind::Integer, Value::Number(n)) => match n.as_i64() {
            None => found.push(wrong("an integer")),
            Some(i) => {
                if let Some(lo) = schema.minimum.filter(|lo| i < *lo) {
                    found.push(format!("{at} must be at least {lo}, not {i}"));
                }
                if let Some(hi) = schema.maximum.filter(|hi| i > *hi) {
                    found.push(format!("{at} must be at most {hi}, not {i}"));
                }
            }
        },
        (Kind::Integer, _) => found.push(wrong("an integer")),
        (Kind::String, Value::String(s)) => {
            let max = schema.max_length.unwrap_or(MAX_STRING).min(MAX_STRING);
            if s.len() > max {
                found.push(format!(
                    "{at} is {} bytes long, at most {max} are allowed",
                    s.len()
                ));
            } else if let Some(f) = schema.format {
                if let Err(e) = check_format(s, f) {
                    found.push(format!("{at}: {e}"));
                }
            }
        }
        (Kind::String, _) => found.push(wrong("a string")),
        (Kind::Array, Value::Array(items)) => {
            let max = schema.max_items.unwrap_or(MAX_ITEMS).min(MAX_ITEMS);
            if items.len() > max {
                found.push(format!(
                    "{at} has {} items, at most {max} are allowed",
                    items.len()
                ));
            } else if let Some(item_schema) = schema.items.as_deref() {
                for (i, v) in items.iter().enumerate() {
                    check(v, item_schema, &format!("{at}[{i}]"), found);
                }
            } else {
                found.push(format!("{at}: schema has no items"));
            }
        }
        (Kind::Array, _) => found.push(wrong("an array")),
    }
    // A value already wrong in itself is not also held against the list of
    // allowed values.
    if found.len() == before {
        if let Some(allowed) = &schema.one_of {
            if !allowed.contains(value) {
                let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
                found.push(format!(
                    "{at} must be one of {}, not {}",
                    names.join(", "),
                    shorten(&value.to_string())
                ));
            }
        }
    }
}

fn check_format(s: &str, f: Format) -> Result<(), String> {
    match f {
        Format::Cpu => crate::quantity::parse_cpu(s)
            .map(|_| ())
            .map_err(|e| format!("{:?} is not a CPU quantity: {e}", shorten(s))),
        Format::Memory => crate::quantity::parse_memory(s)
            .map(|_| ())
            .map_err(|e| format!("{:?} is not a memory quantity: {e}", shorten(s))),
        Format::Cron => check_cron(s),
        Format::Duration => parse_duration(s).map(|_| ()),
        Format::TimeZone => super::cron::Zone::named(Some(s)).map(|_| ()),
        Format::Span => parse_span(s).map(|_| ()),
        Format::Capability => capability(s)
            .map(|_| ())
            .ok_or_else(|| format!("{:?} is not a Linux capability", shorten(s))),
        Format::Name => {
            let ok = !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-');
            if ok {
                Ok(())
            } else {
                Err(format!("{:?} is not a lower-case DNS label", shorten(s)))
            }
        }
    }
}

/// Every capability Linux knows, as the OCI spec names them.
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The OCI name of capability `s` (`net_raw`, `NET_RAW`, `CAP_NET_RAW`), or
/// `ALL`; `None` for anything else.
pub fn capability(s: &str) -> Option<String> {
    let upper = s.to_ascii_uppercase();
    if upper == "ALL" {
        return Some(upper);
    }
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAPABILITIES.contains(&name.as_str()).then_some(name)
}

/// Checks a cron schedule (`super::cron::Schedule`: five fields, or six
/// with seconds first, or a descriptor).
pub fn check_cron(s: &str) -> Result<(), String> {
    super::cron::Schedule::parse(s).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> Schema {
        let s: Schema = serde_json::from_value(v).unwrap();
        s.check("test").unwrap();
        s
    }

    #[test]
    fn objects_refuse_unknown_and_missing_properties() {
        let s = schema(json!({"type": "object", "required": ["a"],
            "properties": {"a": {"type": "boolean"}, "b": {"type": "integer", "minimum": 1, "maximum": 9}}}));
        assert!(validate(&json!({"a": true, "b": 3}), &s, "").is_ok());
        let e = validate(&json!({"a": true, "c": 1}), &s, "").unwrap_err();
        assert!(
            e.contains("unknown property \"c\"") && e.contains("known: a, b"),
            "{e}"
        );
        let e = validate(&json!({"b": 1}), &s, "").unwrap_err();
        assert!(e.contains("\"a\" is required"), "{e}");
        let e = validate(&json!({"a": "yes"}), &s, "").unwrap_err();
        assert_eq!(e, "a must be true or false, not a string");
        let e = validate(&json!({"a": true, "b": 10}), &s, "").unwrap_err();
        assert_eq!(e, "b must be at most 9, not 10");
        let e = validate(&json!({"a": true, "b": 1.5}), &s, "").unwrap_err();
        assert_eq!(e, "b must be an integer, not a number");
        assert!(validate(&json!([1]), &s, "").is_err());
    }

    #[test]
    fn strings_are_bounded_and_formatted() {
        let s = schema(json!({"type": "string", "format": "cpu"}));
        assert!(validate(&json!("500m"), &s, "cpu").is_ok());
        assert!(validate(&json!("lots"), &s, "cpu")
            .unwrap_err()
            .contains("not a CPU quantity"));
        let long = "x".repeat(10_000);
        let e = validate(&json!(long), &s, "cpu").unwrap_err();
        assert!(e.contains("10000 bytes long") && e.len() < 200, "{e}");
        let e = schema(json!({"type": "string", "enum": ["a", "b"]}));
        let err = validate(&json!("c"), &e, "p").unwrap_err();
        assert_eq!(err, "p must be one of \"a\", \"b\", not \"c\"");
    }

    #[test]
    fn arrays_are_bounded() {
        let s = schema(
            json!({"type": "array", "maxItems": 2, "items": {"type": "string", "format": "capability"}}),
        );
        assert!(validate(&json!(["net_raw", "CAP_SYS_ADMIN"]), &s, "caps").is_ok());
        assert!(validate(&json!(["a", "b", "c"]), &s, "caps")
            .unwrap_err()
            .contains("3 items"));
        assert!(validate(&json!(["CAP_NOPE"]), &s, "caps")
            .unwrap_err()
            .contains("caps[0]"));
    }

    #[test]
    fn spans_are_strict() {
        for (ok, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("8h", 8 * 3600),
            ("1h30m", 5400),
            ("1d12h", 36 * 3600),
            ("1h0m5s", 3605),
            ("7d", 7 * 86_400),
            ("1s", 1),
        ] {
            assert_eq!(parse_span(ok), Ok(secs), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("8", "needs a unit"),
            ("h", "whole number"),
            ("30m1h", "largest first"),
            ("1h1h", "largest first"),
            ("1.5h", "units are"),
            ("-1h", "whole number"),
            ("1 h", "units are"),
            ("1w", "units are"),
            ("0s", "at least 1s"),
            ("7d1s", "at most 7d"),
            ("9999999h", "at most 6 digits"),
            ("1h\u{e9}", "whole number"),
        ] {
            let e = parse_span(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let s = schema(json!({"type": "string", "format": "span"}));
        assert_eq!(
            validate(&json!("a while"), &s, "jobs[0].duration").unwrap_err(),
            "jobs[0].duration: \"a while\" is not a span of time (each unit needs a whole number of at most 6 digits before it; e.g. 90s, 30m, 1h30m, 8h)"
        );
    }

    #[test]
    fn durations_are_strict() {
        use std::time::Duration;
        for (ok, d) in [
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25s", Duration::from_millis(250)),
            ("2m", Duration::from_secs(120)),
            ("1ms", Duration::from_millis(1)),
            ("60m", Duration::from_secs(3600)),
            ("0.001s", Duration::from_millis(1)),
        ] {
            assert_eq!(parse_duration(ok), Ok(d), "{ok}");
        }
        for (bad, why) in [
            ("250", "unit"),
            ("", "unit"),
            ("ms", "number"),
            ("-1s", "number"),
            ("+1s", "number"),
            ("1 s", "number"),
            ("1e3ms", "number"),
            ("1.s", "number"),
            (".5s", "number"),
            ("1.2345s", "number"),
            ("0s", "at least 1ms"),
            ("0.5ms", "at least 1ms"),
            ("61m", "at most 1h"),
            ("99999999999999999999s", "number"),
            ("250µs", "number"),
            ("1h", "unit"),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let s = schema(json!({"type": "string", "format": "duration"}));
        assert_eq!(
            validate(&json!("soon"), &s, "latencyObjective").unwrap_err(),
            "latencyObjective: \"soon\" is not a duration (it needs a unit: ms, s or m; e.g. 250ms, 1.5s, 2m)"
        );
    }

    #[test]
    fn time_zones_are_names_of_the_zoneinfo() {
        let s = schema(json!({"type": "string", "format": "timezone"}));
        validate(&json!("UTC"), &s, "timeZone").unwrap();
        if std::path::Path::new("/usr/share/zoneinfo/Asia/Shanghai").exists() {
            validate(&json!("Asia/Shanghai"), &s, "timeZone").unwrap();
        }
        let e = validate(&json!("Mars/Base"), &s, "timeZone").unwrap_err();
        assert!(e.contains("time zone \"Mars/Base\""), "{e}");
        let e = validate(&json!("../../etc/shadow"), &s, "timeZone").unwrap_err();
        assert!(e.contains("is not a zone name"), "{e}");
    }

    #[test]
    fn cron_schedules() {
        for ok in ["0 8 * * 1-5", "*/15 * * * *", "0,30 0-6/2 1 1,6 0"] {
            check_cron(ok).unwrap();
        }
        for (bad, why) in [
            ("0 8 * *", "5 fields"),
            ("61 * * * *", "outside 0-59"),
            ("* * * * 5-1", "backwards"),
            ("*/0 * * * *", "must not be 0"),
            ("a * * * *", "not a number"),
        ] {
            let e = check_cron(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_schema_must_be_coherent() {
        let bad: Schema =
            serde_json::from_value(json!({"type": "object", "required": ["x"]})).unwrap();
        assert!(bad.check("t").is_err());
        let bad: Schema =
            serde_json::from_value(json!({"type": "integer", "minimum": 5, "maximum": 1})).unwrap();
        assert!(bad.check("t").is_err());
        let bad: Schema =
            serde_json::from_value(json!({"type": "string", "enum": ["a"], "default": "b"}))
                .unwrap();
        assert!(bad.check("t").is_err());
        assert!(
            serde_json::from_value::<Schema>(json!({"type": "string", "pattern": "x"})).is_err()
        );
    }
}
