//! How `wardenctl` prints what Warden answered: aligned tables for people (`-o table`, the
//! default), the API's JSON as is for scripts (`-o json`).

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// The API's JSON, pretty-printed.
    Json,
}

/// A column: its heading and how to read it from an item.
pub struct Column {
    pub heading: &'static str,
    pub read: fn(&Value) -> String,
}

/// The text of `v` at a JSON pointer: strings as they are, arrays joined by commas, other
/// values as JSON, nothing as empty.
pub fn text_at(v: &Value, pointer: &str) -> String {
    text(v.pointer(pointer).unwrap_or(&Value::Null))
}

pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The parts that are not empty, joined by `sep`.
pub fn join_present<const N: usize>(parts: [String; N], sep: &str) -> String {
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(sep)
}

/// Control characters (an escape sequence in a name someone chose) never reach the terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A value as the API's JSON, pretty-printed (`-o json`).
pub fn print_json(
    out: &mut (impl std::io::Write + ?Sized),
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )
}

/// The items as a table (or JSON), written to `out`.
pub fn print_items(
    out: &mut impl std::io::Write,
    items: &[Value],
    columns: &[Column],
    format: Format,
) -> std::io::Result<()> {
    if format == Format::Json {
        return print_json(out, &items);
    }
    if items.is_empty() {
        return writeln!(out, "No resources found.");
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| columns.iter().map(|c| printable(&(c.read)(i))).collect())
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.heading.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}   ", w = widths[i])
                }
            })
            .collect::<String>()
    };
    writeln!(
        out,
        "{}",
        line(columns.iter().map(|c| c.heading.to_owned()).collect())
    )?;
    for row in rows {
        writeln!(out, "{}", line(row).trim_end())?;
    }
    Ok(())
}

/// One item: JSON, or its fields one per line.
pub fn print_item(
    out: &mut impl std::io::Write,
    item: &Value,
    columns: &[Column],
    format: Format,
) -> std::io::Result<()> {
    if format == Format::Json {
        return print_json(out, &item);
    }
    let width = columns.iter().map(|c| c.heading.len()).max().unwrap_or(0);
    for c in columns {
        writeln!(
            out,
            "{:<width$}   {}",
            format!("{}:", c.heading),
            printable(&(c.read)(item)),
            width = width + 1
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const COLS: &[Column] = &[
        Column {
            heading: "NAME",
            read: |v| text_at(v, "/name"),
        },
        Column {
            heading: "GROUPS",
            read: |v| text_at(v, "/groups"),
        },
    ];

    #[test]
    fn tables_align_and_never_pass_control_characters() {
        let items = [
            json!({"name": "alice", "groups": ["a", "b"]}),
            json!({"name": "b\u{1b}[31mob", "groups": []}),
        ];
        let mut out = Vec::new();
        print_items(&mut out, &items, COLS, Format::Table).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, "NAME       GROUPS\nalice      a,b\nb?[31mob\n");
        assert!(!out.contains('\u{1b}'));
    }
}
