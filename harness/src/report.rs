//! Renders a record: a terminal table, markdown, JUnit XML, or JSON.

use std::fmt::Write as _;

use crate::expect;
use crate::record::{CellRecord, Counters, ProcessRecord, Record, SiteRecord, Verdict};
use crate::text;

/// Output formats of `threadleak run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Format {
    /// One row per cell, a column per counter with its per-thread delta, and the verdict.
    Table,
    /// The versioned record (schema in `record.rs`).
    Json,
    /// The table as markdown, for a CI job summary.
    Markdown,
    /// One test case per cell: failed when it leaks (or, with --expect, differs), errored when it could
    /// not be measured.
    #[cfg(feature = "junit")]
    Junit,
}

/// Renders `record` in `format`; `judged` is the `--expect` judgement, if there is one.
pub fn render(record: &Record, format: Format, judged: Option<&expect::Report>) -> String {
    match format {
        Format::Table => table(record),
        Format::Json => record.to_json() + "\n",
        Format::Markdown => markdown(record) + &judged.map(judgement_markdown).unwrap_or_default(),
        #[cfg(feature = "junit")]
        Format::Junit => junit(record, judged),
    }
}

/// A one-line description of the run.
fn heading(record: &Record) -> String {
    let os = &record.os;
    let p = &record.params;
    let backend = match &record.model {
        Some(m) => format!("{} (model {}, delay {}, {} task)", record.backend, m.profile, m.delay, m.task),
        None => record.backend.clone(),
    };
    let version = if os.family == "macos" { &os.version } else { &os.release };
    if let Some(cell) = record.cells.first().filter(|c| c.command.is_some()) {
        let processes = match cell.processes.len() {
            0 | 1 => String::new(),
            n => format!(" in {n} processes"),
        };
        return format!(
            "{} {} exec `{}` · backend {backend} · {} {version} {} {} · {} threads created{processes}, censuses at \
             16, 32, 48, ... threads ended (four each time the count doubles), then every {}",
            record.tool.name,
            record.tool.version,
            shell_words(cell.command.as_deref().unwrap_or_default()),
            os.family,
            os.arch,
            os.libc,
            p.cycles,
            p.warmup
        );
    }
    if let Some(cell) = record.cells.first().filter(|c| is_check(c)) {
        return format!(
            "{} {} check `{}` · backend {backend} · {} {version} {} {} · {} calls after {} warm-up, {} censuses",
            record.tool.name,
            record.tool.version,
            cell.cell,
            os.family,
            os.arch,
            os.libc,
            p.cycles,
            p.warmup,
            cell.checkpoints.len()
        );
    }
    format!(
        "{} {} · backend {backend} · {} {version} {} {} · {} cycles per cell after {} warm-up, K={}",
        record.tool.name, record.tool.version, os.family, os.arch, os.libc, p.cycles, p.warmup, p.self_calls
    )
}

/// A command line as one line a shell would read back: arguments with spaces, quotes or newlines quoted.
pub fn shell_words(command: &[String]) -> String {
    let word = |a: &String| {
        if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', "'\\''").replace('\n', "\\n"))
        }
    };
    command.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// One row of a table: a cell, or one process of an `exec` program.
struct Row<'a> {
    label: String,
    outcome: String,
    per_thread: &'a Counters<f64>,
    note: Option<String>,
}

/// A row's note: the record's, and for a clean verdict what it rules out (its limits).
fn row_note(
    note: Option<&str>,
    verdict: Verdict,
    judged: bool,
    limits: &Counters<f64>,
    per: (&str, &str),
) -> Option<String> {
    let seen = (verdict == Verdict::Clean && judged).then(|| sensitivity(limits, per)).flatten();
    match (note.filter(|n| !n.is_empty()), seen) {
        (Some(note), Some(seen)) => Some(format!("{note}; clean: {seen}")),
        (None, Some(seen)) => Some(format!("clean: {seen}")),
        (note, None) => note.map(str::to_owned),
    }
}

impl Row<'_> {
    /// The label in markdown: a cell id as code, a process (its command line) as escaped text.
    fn markdown_label(&self) -> String {
        text::markdown_code(self.label.trim())
    }
}

/// A process's label: its pid, and its command or the process it was forked from.
fn process_label(p: &ProcessRecord) -> String {
    match &p.command {
        Some(command) if p.origin != "fork" => format!("pid {} {}", p.pid, shell_words(command)),
        _ => format!("pid {} (fork of {})", p.pid, p.parent),
    }
}

/// The rows of a record: each cell, and under an `exec` cell of several processes, each process.
fn rows(record: &Record) -> Vec<Row<'_>> {
    let mut rows = Vec::new();
    for cell in &record.cells {
        // A program that crashed after it was measured keeps its verdict beside how it ended.
        let outcome =
            if cell.command.is_some() && cell.status != crate::record::Status::Ok && !cell.checkpoints.is_empty() {
                format!("{} ({})", cell.verdict.as_str(), cell.status.as_str())
            } else {
                cell.outcome().to_owned()
            };
        let note = row_note(cell.note.as_deref(), cell.verdict, cell.judgeable(), &cell.limits, unit(cell));
        rows.push(Row { label: cell.cell.clone(), outcome, per_thread: &cell.per_thread, note });
        if cell.processes.len() > 1 {
            for p in &cell.processes {
                let judged = p.checkpoints.len() >= crate::analysis::MIN_CENSUSES;
                let outcome = if judged { p.verdict.as_str() } else { "not judged" }.to_owned();
                rows.push(Row {
                    label: format!("  {}", process_label(p)),
                    outcome,
                    per_thread: &p.per_thread,
                    note: row_note(p.note.as_deref(), p.verdict, judged, &p.limits, unit(cell)),
                });
            }
        }
    }
    rows
}

/// A cell of `threadleak::check`: a closure measured per call, with neither the axes of a matrix cell
/// nor the command of a program.
fn is_check(cell: &CellRecord) -> bool {
    cell.axes.is_none() && cell.command.is_none() && cell.scenario.is_none()
}

/// What a cell's figures are per, singular and plural: a thread created (a matrix cell), a thread ended (a
/// program under `exec`), a call (a check), or a scenario's unit.
pub fn unit(cell: &CellRecord) -> (&'static str, &'static str) {
    if cell.command.is_some() {
        ("thread ended", "threads ended")
    } else if is_check(cell) {
        ("call", "calls")
    } else {
        let unit = cell.scenario.as_ref().map_or(crate::scenario::Unit::Thread, |s| s.unit);
        (unit.as_str(), unit.plural())
    }
}

/// What a clean verdict rules out, from the record's limits: `a steady leak of one item in 8,300 threads
/// ended or more would have shown (maps: one in 640)`. `None` without limits.
pub fn sensitivity(limits: &Counters<f64>, per: (&str, &str)) -> Option<String> {
    let finite: Vec<(&str, f64)> = limits.iter().filter(|(_, l)| l.is_finite() && *l > 0.0).collect();
    let best = finite.iter().map(|&(_, l)| l).fold(f64::INFINITY, f64::min);
    if !best.is_finite() {
        return None;
    }
    let one_in = |limit: f64| {
        let n = (1.0 / limit).floor().max(1.0) as u64;
        if n == 1 {
            format!("one item a {} or more", per.0)
        } else {
            format!("one item in {} {}", thousands(n), per.1)
        }
    };
    // Counters whose noise hides much more than the best one can see, named apart.
    let worse: Vec<String> =
        finite.iter().filter(|&&(_, l)| l > 2.0 * best).map(|&(name, l)| format!("{name}: {}", one_in(l))).collect();
    let apart = if worse.is_empty() { String::new() } else { format!(" ({})", worse.join("; ")) };
    Some(format!("a steady leak of {} would have shown{apart}", one_in(best)))
}

/// `8300` as `8,300`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What the columns say, under the table.
fn footer(record: &Record) -> &'static str {
    if record.cells.iter().any(is_check) {
        "columns are the change per call: the typical stretch's between censuses, or the slope of a counter that \
         kept growing; each census taken once the threads the calls started had ended; whole items that keep \
         growing across the censuses are a leak however slowly, memory decides nothing unless asked to"
    } else if record.cells.iter().any(|c| c.command.is_some()) {
        "columns are the change per thread ended (threads the program created through pthread_create): the \
         typical stretch's between censuses, or the slope of a counter that kept growing; what threads still in \
         flight held at each census is set apart; whole items that keep growing across the censuses are a leak \
         however slowly, memory decides nothing unless asked to"
    } else if record.cells.iter().any(|c| c.scenario.is_some()) {
        "columns are the change per unit of work, from the warmed-up baseline to the last checkpoint: per thread \
         created for a cell, per the scenario's unit for a scenario (threadleak scenarios lists them)"
    } else {
        "columns are the change per thread created, from the warmed-up baseline to the last checkpoint"
    }
}

/// The heading of the judgement's section in markdown (`ci/summary.sh` looks for it).
pub const JUDGEMENT_HEADING: &str = "#### Against the baseline";

/// An `--expect` judgement as markdown: the outcome, a line for each cell that made it, and for a Mac
/// judged against the model's snapshots the commands that keep a differing cell as an override.
pub fn judgement_markdown(judged: &expect::Report) -> String {
    let outcome = match judged.judgement {
        expect::Judgement::Matches => "matches",
        expect::Judgement::Differs => "differs",
        expect::Judgement::CannotTell => "cannot tell",
    };
    let mut out = format!("\n{JUDGEMENT_HEADING}: {outcome}\n\n");
    for line in &judged.lines {
        let _ = writeln!(out, "- {}", text::markdown(line));
    }
    if !judged.overrides.is_empty() {
        let _ = writeln!(
            out,
            "\nWhere this release's kernel legitimately differs from the model, keep its numbers as overrides \
             (explain each with the XNU source in the commit):\n\n```sh"
        );
        // Only plain cell ids and versions make commands (expect::override_commands): nothing to escape.
        for commands in &judged.overrides {
            let _ = writeln!(out, "{commands}");
        }
        let _ = writeln!(out, "```");
    }
    out
}

/// The table as markdown. Every string from the record is written as literal text ([`text::markdown`]):
/// a record cannot break the table or add markup to a job summary.
pub fn markdown(record: &Record) -> String {
    let cols = columns(record);
    let mut out = format!(
        "**{}**\n\n| cell | verdict | {} |\n|---|---|{}\n",
        text::markdown(&heading(record)),
        cols.iter().map(|c| text::markdown(c)).collect::<Vec<_>>().join(" | "),
        "---:|".repeat(cols.len())
    );
    let rows = rows(record);
    for row in &rows {
        let values: Vec<String> =
            cols.iter().map(|c| row.per_thread.get(c).map_or_else(|| "-".to_owned(), delta)).collect();
        let _ =
            writeln!(out, "| {} | {} | {} |", row.markdown_label(), text::markdown(&row.outcome), values.join(" | "));
    }
    let left = left_behind_lines(record);
    if !left.is_empty() {
        let _ = writeln!(out, "\nLeft behind, by kind, per {}:\n", left_behind_unit(record));
        for (cell, what) in &left {
            let _ = writeln!(out, "- {}: {}", text::markdown_code(cell), text::markdown(what));
        }
    }
    for (who, lines) in made_at_sections(record) {
        let _ = writeln!(out, "\nWhere {} left it behind was made:\n", text::markdown_code(&who));
        for line in lines {
            let _ = writeln!(out, "- {}", text::markdown(&line));
        }
    }
    for row in rows.iter().filter(|r| r.note.is_some()) {
        let _ =
            writeln!(out, "\n- {}: {}", row.markdown_label(), text::markdown(row.note.as_deref().unwrap_or_default()));
    }
    let _ = writeln!(out, "\n_{}_", footer(record));
    out
}

/// What a cell left behind, by kind: `+1 fd anon_inode:[pidfd], +1 mapping 8 MiB rw-p ...`; `None` when
/// its record tells no kinds.
pub fn left_behind(cell: &CellRecord) -> Option<String> {
    let kinds = cell.kinds.as_deref().filter(|k| !k.is_empty())?;
    // What one of each counter is called, and many; Mach names say what they are in their kind.
    fn noun(counter: &str, one: bool) -> String {
        let (singular, plural) = match counter {
            "fds" => ("fd", "fds"),
            "maps" => ("mapping", "mappings"),
            "timers" => ("timer", "timers"),
            "names" => ("", ""),
            "urefs" => ("uref", "urefs"),
            other => (other, other),
        };
        let word = if one { singular } else { plural };
        if word.is_empty() {
            String::new()
        } else {
            format!("{word} ")
        }
    }
    let parts: Vec<String> = kinds
        .iter()
        .map(|k| format!("{} {}{}", delta(k.per_thread), noun(&k.counter, k.per_thread.abs() == 1.0), k.kind))
        .collect();
    Some(parts.join(", "))
}

/// What the kinds left behind are per: a call for a check, a thread (a scenario's unit) otherwise.
fn left_behind_unit(record: &Record) -> &'static str {
    if record.cells.iter().any(is_check) {
        "call"
    } else if record.cells.iter().any(|c| c.scenario.is_some()) {
        "thread (per unit of a scenario)"
    } else {
        "thread"
    }
}

/// The section under a table that says what each cell left behind, one line a cell.
fn left_behind_lines(record: &Record) -> Vec<(String, String)> {
    record.cells.iter().filter_map(|c| left_behind(c).map(|what| (c.cell.clone(), what))).collect()
}

/// The frames a site shows in a table; the record has them all.
const SITE_FRAMES: usize = 6;

/// Where a cell's (or an `exec` process's) leftovers were made, a line a site, most first:
/// `+1.00 per thread: fds (syscall(pidfd_open)) ← self_take (tt.c:309) ← worker (tt.c:401)`. (How much
/// of a counter its sites explain, when it is less than four fifths, is in the record's note.)
pub fn made_at(sites: &[SiteRecord], per: &str) -> Vec<String> {
    sites
        .iter()
        .map(|s| {
            if s.stopped {
                format!(
                    "{} held, grew then stopped (a cache, not a leak): {}",
                    s.live,
                    crate::sites::site_text(s, SITE_FRAMES)
                )
            } else {
                format!("{} per {per}: {}", delta(s.per_thread), crate::sites::site_text(s, SITE_FRAMES))
            }
        })
        .collect()
}

/// The sites section of a report: a heading per cell or process with sites, and its lines.
fn made_at_sections(record: &Record) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for cell in &record.cells {
        let per = unit(cell).0;
        let several = cell.processes.len() > 1;
        if several {
            for p in cell.processes.iter().filter(|p| !p.sites.is_empty()) {
                out.push((format!("{} pid {}", cell.cell, p.pid), made_at(&p.sites, per)));
            }
        } else if !cell.sites.is_empty() {
            out.push((cell.cell.clone(), made_at(&cell.sites, per)));
        }
    }
    out
}

/// What moved, per thread: `fds moved by +1 per thread, maps moved by +2 per thread (over 1000 threads)`;
/// for `exec`, per thread ended; for a check, per call.
#[cfg(feature = "junit")]
fn moved_per_thread(cell: &CellRecord, threads: u32) -> String {
    let (one, many) = unit(cell);
    let per = format!(" per {one}");
    let parts: Vec<String> =
        moved(&cell.per_thread.0).into_iter().map(|item| item.replacen(' ', " moved by ", 1) + &per).collect();
    let over = match cell.checkpoints.last() {
        Some(last) if cell.command.is_some() => format!("{} threads ended", last.cycle),
        _ => format!("{threads} {many}"),
    };
    format!("{} (over {over})", parts.join(", "))
}

/// JUnit XML (written by `quick-junit`, as nextest does): a test case per cell. Text from the record has
/// the characters XML 1.0 forbids written as visible escapes ([`text::xml`]) rather than dropped.
#[cfg(feature = "junit")]
pub fn junit(record: &Record, judged: Option<&expect::Report>) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let suite_name = format!("threadleak.{}", text::xml(&record.backend));
    let mut suite = TestSuite::new(suite_name.clone());
    suite.add_property(("heading", text::xml(&heading(record)).as_str()));
    for cell in &record.cells {
        let mismatch = judged.and_then(|r| r.lines.iter().find(|l| l.starts_with(&format!("{}:", cell.cell))));
        let failure = |kind: NonSuccessKind, ty: &str, message: &str| {
            let mut status = TestCaseStatus::non_success(kind);
            status.set_type(text::xml(ty)).set_message(text::xml(message));
            status
        };
        let status = if !cell.judgeable() {
            let message = cell.note.clone().unwrap_or_else(|| cell.outcome().to_owned());
            failure(NonSuccessKind::Error, cell.outcome(), &message)
        } else if let Some(line) = mismatch {
            failure(NonSuccessKind::Failure, "differs", line)
        } else if judged.is_none() && cell.verdict != Verdict::Clean {
            let moved = moved_per_thread(cell, record.params.cycles);
            let mut message = match left_behind(cell) {
                Some(what) => format!("left behind per {}: {what}; {moved}", unit(cell).0),
                None => moved,
            };
            if let Some(top) = cell.sites.first().filter(|s| !s.stopped) {
                let per = unit(cell).0;
                message = format!(
                    "made at: {} per {per}: {}; {message}",
                    delta(top.per_thread),
                    crate::sites::site_text(top, SITE_FRAMES)
                );
            }
            failure(NonSuccessKind::Failure, cell.verdict.as_str(), &message)
        } else {
            TestCaseStatus::success()
        };
        let mut case = TestCase::new(text::xml(&cell.cell), status);
        case.set_classname(suite_name.clone()).set_time(std::time::Duration::from_millis(cell.elapsed_ms));
        suite.add_test_case(case);
    }
    suite.set_time(std::time::Duration::from_millis(record.cells.iter().map(|c| c.elapsed_ms).sum()));
    let mut report = Report::new("threadleak");
    report.add_test_suite(suite);
    report.to_string().expect("a report of valid XML strings serializes")
}

/// What threads in flight were found to hold and set apart ([`crate::analysis::Estimate::in_flight`]),
/// as a sentence; `beyond` says what of each thread was not counted in the first place.
pub fn in_flight(found: &[(String, String, f64)], beyond: &str) -> Option<String> {
    let mut parts = Vec::new();
    for who in ["live", "unjoined", "in flight"] {
        let held: Vec<String> = found
            .iter()
            .filter(|(_, covariate, _)| covariate == who)
            .map(|(counter, _, cost)| format!("{counter} {}", delta(*cost)))
            .collect();
        if !held.is_empty() {
            let whose =
                if who == "live" { "each thread still running" } else { "each thread ended and not yet joined" };
            parts.push(format!("{whose} held {}{beyond}", held.join(", ")));
        }
    }
    (!parts.is_empty()).then(|| format!("{}: set apart", parts.join("; ")))
}

/// A per-thread delta as the table shows it: `0`, `+1`, `-1`, `+8196`, `+0.50`; under a hundredth, two
/// significant digits (`+0.001`, `+0.00033`): a leak of one in a thousand threads is not `+0.00`.
pub fn delta(value: f64) -> String {
    if value == 0.0 {
        "0".to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        // A whole number, exactly an integer: written as one, which is what `{:+.0}` writes, only faster.
        format!("{:+}", value as i64)
    } else if value.abs() >= 0.01 || !value.is_finite() {
        format!("{value:+.2}")
    } else {
        let digits = (-value.abs().log10()).ceil().max(2.0) as usize + 1;
        let text = format!("{value:+.digits$}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The counters shown as columns: those of the first cell (or process) that has any, in its order.
fn columns(record: &Record) -> Vec<String> {
    let mut all = record
        .cells
        .iter()
        .flat_map(|c| std::iter::once(&c.per_thread).chain(c.processes.iter().map(|p| &p.per_thread)));
    all.find(|c| !c.is_empty()).map(|c| c.names().map(str::to_owned).collect()).unwrap_or_default()
}

/// The counters that moved, as `fds +1` items, in the record's order.
pub fn moved(per_thread: &[(String, f64)]) -> Vec<String> {
    per_thread.iter().filter(|(_, v)| *v != 0.0).map(|(n, v)| format!("{n} {}", delta(*v))).collect()
}

/// The terminal table, with a header line describing the run and the notes under it.
pub fn table(record: &Record) -> String {
    let cols = columns(record);
    let rows = rows(record);
    let id_width = rows.iter().map(|r| text::terminal(&r.label).chars().count()).max().unwrap_or(4).clamp(4, 60);
    let verdict_width = rows.iter().map(|r| r.outcome.len()).max().unwrap_or(0).max(12);
    let col_width = |name: &str| name.len().max(6);
    let mut out = String::new();
    let _ = writeln!(out, "{}", text::terminal(&heading(record)));
    let _ = write!(out, "{:<id_width$}  {:<verdict_width$}", "cell", "verdict");
    for c in &cols {
        let _ = write!(out, "  {:>w$}", text::terminal(c), w = col_width(c));
    }
    out.push('\n');
    for row in &rows {
        let label: String = text::terminal(&row.label).chars().take(id_width).collect();
        let _ = write!(out, "{label:<id_width$}  {:<verdict_width$}", row.outcome);
        for c in &cols {
            let value = row.per_thread.get(c).map_or_else(|| "-".to_owned(), delta);
            let _ = write!(out, "  {:>w$}", value, w = col_width(c));
        }
        out.push('\n');
    }
    let left = left_behind_lines(record);
    if !left.is_empty() {
        let _ = writeln!(out, "\nleft behind, by kind, per {}:", left_behind_unit(record));
        for (cell, what) in &left {
            let _ = writeln!(out, "  {}: {}", text::terminal(cell), text::terminal(what));
        }
    }
    for (who, lines) in made_at_sections(record) {
        let _ = writeln!(out, "\nmade at ({}):", text::terminal(&who));
        for line in lines {
            let _ = writeln!(out, "  {}", text::terminal(&line));
        }
    }
    let noted: Vec<&Row<'_>> = rows.iter().filter(|r| r.note.is_some()).collect();
    if !noted.is_empty() {
        out.push_str("\nnotes:\n");
        for row in noted {
            let _ = writeln!(
                out,
                "  {}: {}",
                text::terminal(row.label.trim()),
                text::terminal(row.note.as_deref().unwrap_or_default())
            );
        }
    }
    let _ = writeln!(out, "\n{}", footer(record));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_stay_on_one_line() {
        let words = |v: &[&str]| shell_words(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(words(&["tt", "leak", "1000"]), "tt leak 1000");
        assert_eq!(words(&["python3", "-c", "import x\nx.y()"]), "python3 -c 'import x\\nx.y()'");
        assert_eq!(words(&["echo", "it's"]), "echo 'it'\\''s'");
    }

    #[test]
    fn deltas_are_signed_and_short() {
        assert_eq!(delta(0.0), "0");
        assert_eq!(delta(-0.0), "0");
        assert_eq!(delta(1.0), "+1");
        assert_eq!(delta(-2.0), "-2");
        assert_eq!(delta(8196.0), "+8196");
        assert_eq!(delta(0.5), "+0.50");
        assert_eq!(delta(-0.001), "-0.001");
        assert_eq!(delta(0.00033), "+0.00033");
        assert_eq!(delta(0.005), "+0.005");
        assert_eq!(delta(0.0099), "+0.0099");
    }
}
