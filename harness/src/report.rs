//! Renders a record: a terminal table, or JSON.

use std::fmt::Write as _;

use crate::record::{CellRecord, Record, Status};

/// Output formats of `threadleak run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One row per cell, a column per counter with its per-thread delta, and the verdict.
    Table,
    /// The versioned record (schema in `record.rs`).
    Json,
}

/// Renders `record` in `format`.
pub fn render(record: &Record, format: Format) -> String {
    match format {
        Format::Table => table(record),
        Format::Json => record.to_json() + "\n",
    }
}

/// A per-thread delta as the table shows it: `0`, `+1`, `-1`, `+8196`, `+0.50`.
pub fn delta(value: f64) -> String {
    if value == 0.0 {
        "0".to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:+.0}")
    } else {
        format!("{value:+.2}")
    }
}

/// The counters shown as columns: those of the first cell that has any, in its order.
fn columns(record: &Record) -> Vec<String> {
    record
        .cells
        .iter()
        .find(|c| !c.per_thread.is_empty())
        .map(|c| c.per_thread.names().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn outcome(cell: &CellRecord) -> &'static str {
    match cell.status {
        Status::Ok => cell.verdict.as_str(),
        other => other.as_str(),
    }
}

/// The terminal table, with a header line describing the run and the notes under it.
pub fn table(record: &Record) -> String {
    let cols = columns(record);
    let id_width = record.cells.iter().map(|c| c.cell.len()).max().unwrap_or(4).max(4);
    let col_width = |name: &str| name.len().max(6);
    let mut out = String::new();
    let os = &record.os;
    let p = &record.params;
    let backend = match &record.model {
        Some(m) => format!("{} (model {}, delay {})", record.backend, m.profile, m.delay),
        None => record.backend.clone(),
    };
    let _ = writeln!(
        out,
        "{} {} · backend {} · {} {} {} {} · {} cycles per cell after {} warm-up, K={}",
        record.tool.name,
        record.tool.version,
        backend,
        os.family,
        os.release,
        os.arch,
        os.libc,
        p.cycles,
        p.warmup,
        p.self_calls
    );
    let _ = write!(out, "{:<id_width$}  {:<12}", "cell", "verdict");
    for c in &cols {
        let _ = write!(out, "  {:>w$}", c, w = col_width(c));
    }
    out.push('\n');
    for cell in &record.cells {
        let _ = write!(out, "{:<id_width$}  {:<12}", cell.cell, outcome(cell));
        for c in &cols {
            let value = cell.per_thread.get(c).map_or_else(|| "-".to_owned(), delta);
            let _ = write!(out, "  {:>w$}", value, w = col_width(c));
        }
        out.push('\n');
    }
    let noted: Vec<&CellRecord> = record.cells.iter().filter(|c| c.note.is_some()).collect();
    if !noted.is_empty() {
        out.push_str("\nnotes:\n");
        for cell in noted {
            let _ = writeln!(out, "  {}: {}", cell.cell, cell.note.as_deref().unwrap_or_default());
        }
    }
    let _ = writeln!(
        out,
        "\ncolumns are the change per thread created, from the warmed-up baseline to the last checkpoint"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_signed_and_short() {
        assert_eq!(delta(0.0), "0");
        assert_eq!(delta(-0.0), "0");
        assert_eq!(delta(1.0), "+1");
        assert_eq!(delta(-2.0), "-2");
        assert_eq!(delta(8196.0), "+8196");
        assert_eq!(delta(0.5), "+0.50");
        assert_eq!(delta(-0.001), "-0.00");
    }
}
