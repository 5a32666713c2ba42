//! Human-readable output: aligned tables and `key: value` lists.

use serde_json::Value as Json;

pub use crate::cli::format::{clean, clean_lines};

/// A JSON value as a cell: strings bare (control characters escaped), null as `-`.
pub fn cell(value: &Json) -> String {
    match value {
        Json::Null => "-".into(),
        Json::String(s) => clean(s),
        other => other.to_string(),
    }
}

/// A table of `rows` (JSON objects) with the given columns (field paths `a.b`).
pub fn table(rows: &Json, columns: &[&str]) -> String {
    let rows = rows.as_array().cloned().unwrap_or_default();
    let cells: Vec<Vec<String>> =
        rows.iter().map(|row| columns.iter().map(|c| cell(&field(row, c))).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].chars().count()).chain([c.len()]).max().unwrap_or(0))
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in cells {
        out.push_str(&line(row));
    }
    out
}

/// One object as `key: value` lines, for the given fields. Times (`…_at`,
/// `postpone_until`: epoch milliseconds on the wire) are shown in RFC 3339, UTC; objects
/// (an output) as compact JSON.
pub fn fields(object: &Json, names: &[&str]) -> String {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let shown = |name: &str, value: Json| match value.as_i64() {
        Some(ms) if name.ends_with("_at") || name.ends_with("_until") => moment(ms),
        _ => cell(&value),
    };
    names.iter().map(|name| format!("{name:<width$}  {}\n", shown(name, field(object, name)))).collect()
}

/// Epoch milliseconds as an RFC 3339 UTC time (the number itself if out of range).
fn moment(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn field(object: &Json, path: &str) -> Json {
    path.split('.').fold(object.clone(), |value, key| value.get(key).cloned().unwrap_or(Json::Null))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn times_read_as_utc_and_outputs_as_json() {
        let job = json!({"created_at": 1_795_000_000_123_i64, "output": {"a": 1}, "postpone_until": null});
        let text = super::fields(&job, &["created_at", "output", "postpone_until"]);
        assert!(text.contains("2026-11-18T") && text.contains(".123Z"), "{text}");
        assert!(text.contains(r#"{"a":1}"#), "{text}");
        assert!(text.contains("postpone_until  -"), "{text}");
    }

    #[test]
    fn cells_escape_control_characters_from_the_server() {
        assert_eq!(super::cell(&json!("\u{1b}[2Jred\r\n\u{7}\u{9b}")), r"\u{1b}[2Jred\r\n\u{7}\u{9b}");
        assert_eq!(super::cell(&json!("bidi \u{202e}txt.exe")), r"bidi \u{202e}txt.exe");
        assert_eq!(super::cell(&json!("Contoso — ünïcode")), "Contoso — ünïcode");
    }
}
