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

/// One object as `key: value` lines, for the given fields.
pub fn fields(object: &Json, names: &[&str]) -> String {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    names.iter().map(|name| format!("{name:<width$}  {}\n", cell(&field(object, name)))).collect()
}

fn field(object: &Json, path: &str) -> Json {
    path.split('.').fold(object.clone(), |value, key| value.get(key).cloned().unwrap_or(Json::Null))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn cells_escape_control_characters_from_the_server() {
        assert_eq!(super::cell(&json!("\u{1b}[2Jred\r\n\u{7}\u{9b}")), r"\u{1b}[2Jred\r\n\u{7}\u{9b}");
        assert_eq!(super::cell(&json!("bidi \u{202e}txt.exe")), r"bidi \u{202e}txt.exe");
        assert_eq!(super::cell(&json!("Contoso — ünïcode")), "Contoso — ünïcode");
    }
}
