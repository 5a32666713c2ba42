//! Human-readable numbers with units, and text made safe to print.

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

pub fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// 1234567 → "1,234,567".
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Text from the server or a tenant, safe to print on a terminal: control characters
/// (C0, DEL, C1: escape sequences, carriage returns, bells) and the bidirectional
/// overrides that reorder what is shown are written as escapes (`\u{1b}`, `\r`).
pub fn clean(text: &str) -> String {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| if unsafe_char(c) { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// Multi-line text (a trace log): each line cleaned, the line breaks kept.
pub fn clean_lines(text: &str) -> String {
    text.split('\n').map(clean).collect::<Vec<_>>().join("\n")
}

/// A database's address without its passwords, for messages: the URL form's
/// `user:password@` and any key ending in `password` (`password=`, `sslpassword=`), in
/// the URL's parameters or the key=value form, quoted or not.
pub fn redacted(database: &str) -> String {
    let mut shown = database.to_owned();
    if let Some(scheme) = database.find("://") {
        let rest = &database[scheme + 3..];
        let before_query = &rest[..rest.find('?').unwrap_or(rest.len())];
        if let Some(at) = before_query.rfind('@') {
            let user = before_query[..at].split(':').next().unwrap_or_default();
            shown = format!("{}{user}@{}", &database[..scheme + 3], &rest[at + 1..]);
        }
    }
    let mut from = 0;
    while let Some(found) = shown[from..].to_ascii_lowercase().find("password") {
        let key_end = from + found + "password".len();
        let Some(value) = shown[key_end..].trim_start().strip_prefix('=') else {
            from = key_end;
            continue;
        };
        let value = value.trim_start();
        let value_start = shown.len() - value.len();
        let value_len = match value.strip_prefix('\'') {
            // A quoted value ends at its closing quote (`\'` escapes one inside it).
            Some(quoted) => {
                let mut escaped = false;
                let close = quoted.char_indices().find(|&(_, c)| {
                    let closes = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                });
                close.map_or(value.len(), |(i, _)| i + 2)
            }
            None => value.find(|c: char| c == '&' || c.is_whitespace()).unwrap_or(value.len()),
        };
        shown.replace_range(value_start..value_start + value_len, "…");
        from = value_start + "…".len();
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_database_address_is_shown_without_its_passwords() {
        let cases = [
            ("postgres://sluice:s3cret@db:5432/sluice", "postgres://sluice@db:5432/sluice"),
            ("postgres://sluice:p@ss@db/sluice", "postgres://sluice@db/sluice"),
            (
                "postgres://sluice@db/sluice?password=s3cret&sslmode=require",
                "postgres://sluice@db/sluice?password=…&sslmode=require",
            ),
            ("postgresql://db/sluice?user=a&sslpassword=k3y", "postgresql://db/sluice?user=a&sslpassword=…"),
            (
                "host=db user=sluice password=s3cret dbname=sluice",
                "host=db user=sluice password=… dbname=sluice",
            ),
            ("host=db password = 'it\\'s secret' dbname=x", "host=db password = … dbname=x"),
            ("host=db PASSWORD='a b'", "host=db PASSWORD=…"),
            ("postgres://sluice@db/sluice", "postgres://sluice@db/sluice"),
            ("host=db dbname=passwords", "host=db dbname=passwords"),
        ];
        for (address, shown) in cases {
            assert_eq!(redacted(address), shown, "{address}");
        }
    }
}
