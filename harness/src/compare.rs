//! Records from different machines side by side: grouped by backend and architecture, ordered by OS
//! version, with every change between adjacent versions spelled out.
//!
//! A record's version is what distinguishes it within its group: the product version and build on
//! macOS, the kernel release on Linux, the profile for mach-sim. Versions order numerically chunk by
//! chunk (`15.10` after `15.9`, `xnu-11417` after `xnu-1504`). Records of one version are merged when
//! they agree cell by cell; when they do not, each keeps its own column and the disagreement is listed.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::backend::mach::sim::Profile;
use crate::matrix::Cell;
use crate::record::{CellRecord, Record, RecordError, SiteRecord};
use crate::report::{delta, moved};
use crate::scenario::{Case, ALL as SCENARIOS};
use crate::text;

/// Records larger than this are refused before they are read: a record of 54 cells is a few tens of KiB.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

/// Why a record file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {size} bytes is more than a record can be ({MAX_RECORD_BYTES} bytes at most)")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path} is {what}, not a record file")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("{path}")]
    Record { path: PathBuf, source: RecordError },
}

/// What a path that is not a regular file is, for a message.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a folder"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads and validates one record, reading at most [`MAX_RECORD_BYTES`]. Anything but a regular file (a
/// FIFO that would block, a device that never ends) is refused without being read: the file is opened
/// without blocking and checked first.
pub fn load(path: &Path) -> Result<Record, LoadError> {
    load_with(path, &mut String::new(), Record::from_json)
}

/// [`load`], reading the file into `text` (cleared first), so that records read one after another share
/// one buffer, and parsing it with `parse`.
fn load_with(
    path: &Path,
    text: &mut String,
    parse: fn(&str) -> Result<Record, crate::record::RecordError>,
) -> Result<Record, LoadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| LoadError::Io { path: path.to_owned(), source };
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        return Err(LoadError::NotAFile { path: path.to_owned(), what: kind_of(file_type) });
    }
    text.clear();
    // Room for the whole file (and the byte that would make it too large) up front, rather than grown as
    // it is read.
    text.reserve(metadata.len().min(MAX_RECORD_BYTES + 1) as usize + 1);
    let read = file.take(MAX_RECORD_BYTES + 1).read_to_string(text).map_err(io)?;
    if read as u64 > MAX_RECORD_BYTES {
        let size = std::fs::metadata(path).map_or(read as u64, |m| m.len());
        return Err(LoadError::TooLarge { path: path.to_owned(), size });
    }
    parse(text).map_err(|source| LoadError::Record { path: path.to_owned(), source })
}

/// Reads records ([`load`]) and reduces each to what a comparison reads ([`Entry::of`]) as soon as it is
/// read, on as many threads as the machine runs at once, keeping the order of `paths`. The error is that
/// of the first path, in that order, that cannot be used; once one is known, no path after it is begun.
pub fn load_entries(paths: &[PathBuf]) -> Result<Vec<Entry>, LoadError> {
    crate::parallel::map_in_order(
        paths.len(),
        String::new,
        |text, index| {
            let record = load_with(&paths[index], text, Record::outcomes_from_json)?;
            Ok(Entry::of(paths[index].clone(), record))
        },
        Result::is_err,
    )
    .into_iter()
    .collect()
}

/// What distinguishes a record within its group, and how versions sort.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// `15.7.7`, `6.18.44-fc-v657`, `xnu-11417`.
    pub name: String,
    /// The OS build, the tie-break (macOS: `24G231`).
    pub build: Option<String>,
}

impl Version {
    pub fn of(record: &Record) -> Version {
        match (&record.model, record.os.family.as_str()) {
            // A profile's macOS release is shown beside it, as a build is.
            (Some(model), _) => Version {
                name: model.profile.clone(),
                build: Profile::ALL.iter().find(|p| p.name() == model.profile).map(|p| format!("macOS {}", p.macos())),
            },
            (None, "macos") => Version { name: record.os.version.clone(), build: record.os.build.clone() },
            (None, _) => Version { name: record.os.release.clone(), build: record.os.build.clone() },
        }
    }

    pub fn label(&self) -> String {
        match &self.build {
            Some(build) => format!("{} ({build})", self.name),
            None => self.name.clone(),
        }
    }
}

/// Compares text chunk by chunk, runs of digits by their value.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (&(da, xa), &(db, xb)) in ca.iter().zip(&cb) {
        let order = if da && db {
            let (ta, tb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            xa.cmp(xb)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    ca.len().cmp(&cb.len())
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        natural_cmp(&self.name, &other.name)
            .then_with(|| natural_cmp(self.build.as_deref().unwrap_or(""), other.build.as_deref().unwrap_or("")))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A cell's outcome reduced to what comparisons look at.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// `clean`, `leak`, … or the status when the cell did not complete.
    pub verdict: String,
    /// Every counter's per-thread change, in the record's order.
    pub per_thread: Vec<(String, f64)>,
    /// What moved by kind (`fds`, `anon_inode:[pidfd]`, +1); `None` where no inventory was taken (a record
    /// made before kinds were recorded), which says nothing of them.
    pub kinds: Option<Vec<(String, String, f64)>>,
    /// Where what was left was made: each site as its call and first functions (no lines, which move
    /// with any edit), and its rate. Empty where none was recorded.
    pub sites: Vec<(String, f64)>,
}

/// The functions of a site's stack that name it across versions.
const SITE_FUNCTIONS: usize = 3;

impl Outcome {
    /// The cell's id and its outcome, taken from the cell rather than copied.
    fn of(cell: CellRecord) -> (String, Outcome) {
        let verdict = cell.outcome().to_owned();
        let kinds = cell.kinds.map(|ks| ks.into_iter().map(|k| (k.counter, k.kind, k.per_thread)).collect());
        let sites = cell.sites.iter().map(|s| (site_identity(s), s.per_thread)).collect();
        (cell.cell, Outcome { verdict, per_thread: cell.per_thread.0, kinds, sites })
    }

    /// How the sites changed from `self` to `next`, where both records have some (a record without sites
    /// was made with none recorded, or left nothing): `fd /dev/null (fopen) ← keep_log ← worker +1 → 0`.
    fn sites_change(&self, next: &Outcome) -> Vec<String> {
        if self.sites.is_empty() || next.sites.is_empty() {
            return Vec::new();
        }
        let get = |list: &[(String, f64)], key: &str| list.iter().find(|(k, _)| k == key).map_or(0.0, |&(_, v)| v);
        let mut keys: Vec<&str> = Vec::new();
        for (k, _) in self.sites.iter().chain(&next.sites) {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
        keys.into_iter()
            .filter_map(|key| {
                let (x, y) = (get(&self.sites, key), get(&next.sites, key));
                (x != y).then(|| format!("{key} {} → {}", delta(x), delta(y)))
            })
            .collect()
    }

    /// How the kinds changed from `self` to `next`: `names +1 (name with a send right) → 0`.
    fn kinds_change(&self, next: &Outcome) -> Vec<String> {
        let (Some(a), Some(b)) = (&self.kinds, &next.kinds) else { return Vec::new() };
        let get = |list: &[(String, String, f64)], key: (&str, &str)| {
            list.iter().find(|(c, k, _)| (c.as_str(), k.as_str()) == key).map_or(0.0, |&(_, _, v)| v)
        };
        let mut keys: Vec<(&str, &str)> = Vec::new();
        for (c, k, _) in a.iter().chain(b.iter()) {
            if !keys.contains(&(c.as_str(), k.as_str())) {
                keys.push((c, k));
            }
        }
        keys.into_iter()
            .filter_map(|key| {
                let (x, y) = (get(a, key), get(b, key));
                (x != y).then(|| format!("{} {} → {} ({})", key.0, delta(x), delta(y), key.1))
            })
            .collect()
    }

    /// `clean`, or `leak: names +1, dead +1`.
    pub fn text(&self) -> String {
        let moved = moved(&self.per_thread);
        if moved.is_empty() {
            return self.verdict.clone();
        }
        format!("{}: {}", self.verdict, moved.join(", "))
    }

    fn get(&self, counter: &str) -> f64 {
        self.per_thread.iter().find(|(n, _)| n == counter).map_or(0.0, |&(_, v)| v)
    }

    /// What changed from `self` to `next`: `names +1 → 0, dead +1 → 0`, or the verdicts.
    pub fn change_to(&self, next: &Outcome) -> Option<String> {
        if self == next {
            return None;
        }
        // Counters in the record's order; any the next record adds, after them.
        let mut counters: Vec<&str> = self.per_thread.iter().map(|(n, _)| n.as_str()).collect();
        for (n, _) in &next.per_thread {
            if !counters.contains(&n.as_str()) {
                counters.push(n);
            }
        }
        let mut parts = Vec::new();
        for c in counters {
            let (a, b) = (self.get(c), next.get(c));
            if a != b {
                parts.push(format!("{c} {} → {}", delta(a), delta(b)));
            }
        }
        if self.verdict != next.verdict {
            parts.push(format!("{} → {}", self.verdict, next.verdict));
        }
        let kinds = self.kinds_change(next);
        if !kinds.is_empty() {
            parts.push(format!("by kind: {}", kinds.join(", ")));
        }
        let sites = self.sites_change(next);
        if !sites.is_empty() {
            parts.push(format!("made at: {}", sites.join(", ")));
        }
        if parts.is_empty() {
            return None;
        }
        Some(parts.join(", "))
    }
}

/// A site as `compare` knows it across versions: its kind and call, and its first functions.
fn site_identity(site: &SiteRecord) -> String {
    let mut text = crate::sites::site_head(site);
    for f in site.frames.iter().filter_map(|f| f.function.as_deref()).take(SITE_FUNCTIONS) {
        text.push_str(" ← ");
        text.push_str(f);
    }
    text
}

/// One column of a group: one version, from one or more agreeing records.
#[derive(Clone, Debug)]
pub struct Column {
    pub version: Version,
    pub sources: Vec<PathBuf>,
    /// Another record of the same version disagrees with this one.
    pub disputed: bool,
    outcomes: Vec<(String, Outcome)>,
}

impl Column {
    pub fn label(&self) -> String {
        if self.disputed {
            format!("{} [{}]", self.version.label(), file_name(&self.sources[0]))
        } else {
            self.version.label()
        }
    }

    pub fn outcome(&self, cell: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|(c, _)| c == cell).map(|(_, o)| o)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Records of one backend on one architecture, in version order.
#[derive(Clone, Debug)]
pub struct Group {
    pub backend: String,
    pub arch: String,
    pub columns: Vec<Column>,
    /// Every cell any record has, in matrix order.
    pub cells: Vec<String>,
    /// `(cell, sentence)` for each cell whose outcome changes between adjacent versions.
    pub changes: Vec<(String, String)>,
    /// Records of one version that disagree.
    pub disputes: Vec<String>,
}

/// A record reduced to what a comparison reads: its group, its version, and each cell's outcome. A record
/// is reduced as soon as it is read ([`Entry::of`]), so that comparing many records never holds them whole.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub backend: String,
    pub arch: String,
    pub version: Version,
    outcomes: Vec<(String, Outcome)>,
}

impl Entry {
    pub fn of(path: PathBuf, record: Record) -> Entry {
        let version = Version::of(&record);
        // A new vector rather than the cells' own, which is many times larger than what it would hold.
        let mut outcomes = Vec::with_capacity(record.cells.len());
        outcomes.extend(record.cells.into_iter().map(Outcome::of));
        Entry { path, backend: record.backend, arch: record.os.arch, version, outcomes }
    }
}

/// Compares records: `(path, record)` pairs, in any order.
pub fn compare(records: Vec<(PathBuf, Record)>) -> Vec<Group> {
    compare_entries(records.into_iter().map(|(path, record)| Entry::of(path, record)).collect())
}

/// Compares reduced records ([`Entry::of`]), in any order.
pub fn compare_entries(entries: Vec<Entry>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    // Each group's cells, for finding whether a record brings a new one.
    let mut known: Vec<HashSet<String>> = Vec::new();
    let mut sorted = entries;
    sorted.sort_by(|a, b| {
        (a.backend.as_str(), a.arch.as_str())
            .cmp(&(b.backend.as_str(), b.arch.as_str()))
            .then_with(|| a.version.cmp(&b.version))
            .then_with(|| a.path.cmp(&b.path))
    });
    for Entry { path, backend, arch, version, outcomes } in sorted {
        let index = match groups.iter().position(|g| g.backend == backend && g.arch == arch) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    backend,
                    arch,
                    columns: Vec::new(),
                    cells: Vec::new(),
                    changes: Vec::new(),
                    disputes: Vec::new(),
                });
                known.push(HashSet::new());
                groups.len() - 1
            }
        };
        let group = &mut groups[index];
        for (position, (cell, _)) in outcomes.iter().enumerate() {
            // Records mostly list the same cells in the same order: a cell where the group has it is known.
            if group.cells.get(position) != Some(cell) && known[index].insert(cell.clone()) {
                group.cells.push(cell.clone());
            }
        }
        let same_version: Vec<usize> =
            group.columns.iter().enumerate().filter(|(_, c)| c.version == version).map(|(i, _)| i).collect();
        let agrees = |column: &Column| {
            outcomes.iter().all(|(cell, o)| column.outcome(cell).is_none_or(|theirs| theirs.change_to(o).is_none()))
        };
        match same_version.iter().copied().find(|&i| !group.columns[i].disputed && agrees(&group.columns[i])) {
            Some(i) if same_version.len() == 1 => {
                let column = &mut group.columns[i];
                column.sources.push(path);
                for (cell, o) in outcomes {
                    if column.outcome(&cell).is_none() {
                        column.outcomes.push((cell, o));
                    }
                }
            }
            _ => {
                let disputed = !same_version.is_empty();
                if disputed {
                    for &i in &same_version {
                        group.columns[i].disputed = true;
                    }
                    let others: Vec<String> = same_version
                        .iter()
                        .flat_map(|&i| group.columns[i].sources.iter().map(|p| file_name(p)))
                        .collect();
                    group.disputes.push(format!(
                        "{} and {} both describe {} but disagree",
                        file_name(&path),
                        others.join(", "),
                        version.label()
                    ));
                }
                group.columns.push(Column { version, sources: vec![path], disputed, outcomes });
            }
        }
    }
    for group in &mut groups {
        group.cells.sort_by_cached_key(|id| case_order(id));
        let grid = grid(group);
        let mut changes = Vec::new();
        for (row, cell) in group.cells.iter().enumerate() {
            for (pair, outcomes) in group.columns.windows(2).zip(grid.windows(2)) {
                let (Some(a), Some(b)) = (outcomes[0][row], outcomes[1][row]) else { continue };
                if let Some(what) = a.change_to(b) {
                    changes.push((
                        cell.clone(),
                        format!("changed between {} and {}: {what}", pair[0].label(), pair[1].label()),
                    ));
                }
            }
        }
        group.changes = changes;
    }
    groups
}

/// Each column's outcomes in the order of the group's cells: `grid[column][row]`.
fn grid(group: &Group) -> Vec<Vec<Option<&Outcome>>> {
    let rows: HashMap<&str, usize> = group.cells.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    // The row of each of the previous column's outcomes, by position: columns mostly list the same cells
    // in the same order, and a cell found there is not looked up.
    let mut previous: Vec<usize> = Vec::new();
    group
        .columns
        .iter()
        .map(|column| {
            let mut outcomes = vec![None; group.cells.len()];
            let mut positions = Vec::with_capacity(column.outcomes.len());
            for (position, (cell, o)) in column.outcomes.iter().enumerate() {
                let row = match previous.get(position) {
                    Some(&row) if group.cells.get(row) == Some(cell) => Some(row),
                    _ => rows.get(cell.as_str()).copied(),
                };
                if let Some(row) = row {
                    // The first outcome a column has for a cell is the one it shows.
                    outcomes[row].get_or_insert(o);
                }
                positions.push(row.unwrap_or(usize::MAX));
            }
            previous = positions;
            outcomes
        })
        .collect()
}

/// Where a cell id sorts: matrix cells in matrix order, then scenarios in corpus order, buggy before
/// fixed, then ids this build does not know.
fn case_order(id: &str) -> (u8, Option<Cell>, usize, String) {
    match id.parse::<Case>() {
        Ok(Case::Cell(cell)) => (0, Some(cell), 0, String::new()),
        Ok(Case::Scenario(s)) => {
            let index = SCENARIOS.iter().position(|a| a.name == s.scenario.name).unwrap_or(usize::MAX);
            (1, None, index, s.variant.as_str().to_owned())
        }
        Err(_) => (2, None, 0, id.to_owned()),
    }
}

/// Output formats of `threadleak compare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum CompareFormat {
    Table,
    Markdown,
}

/// Renders the comparison. Every string from a record (versions, builds, counter names, file names) is
/// written as data: control characters escaped on a terminal ([`text::terminal`]), markup escaped in
/// markdown ([`text::markdown`]).
pub fn render(groups: &[Group], format: CompareFormat) -> String {
    let esc: fn(&str) -> String = match format {
        CompareFormat::Table => text::terminal,
        CompareFormat::Markdown => text::markdown,
    };
    let mut out = String::new();
    for group in groups {
        let changed = |cell: &str| group.changes.iter().any(|(c, _)| c == cell);
        let labels: Vec<String> = group.columns.iter().map(|c| esc(&c.label())).collect();
        // Each column's text for each cell, in the group's cell order: `texts[column][row]`.
        let texts: Vec<Vec<String>> = grid(group)
            .into_iter()
            .map(|outcomes| {
                outcomes.into_iter().map(|o| esc(&o.map_or_else(|| "-".to_owned(), Outcome::text))).collect()
            })
            .collect();
        match format {
            CompareFormat::Markdown => {
                let _ = writeln!(out, "### {} on {}\n", esc(&group.backend), esc(&group.arch));
                let _ = writeln!(out, "| cell | {} |", labels.join(" | "));
                let _ = writeln!(out, "|---|{}", "---|".repeat(labels.len()));
                for (row, cell) in group.cells.iter().enumerate() {
                    let values: Vec<&str> = texts.iter().map(|column| column[row].as_str()).collect();
                    let mark = if changed(cell) { " **changed**" } else { "" };
                    let _ = writeln!(out, "| {}{mark} | {} |", text::markdown_code(cell), values.join(" | "));
                }
                out.push('\n');
                for (cell, sentence) in &group.changes {
                    let _ = writeln!(out, "- {}: {}", text::markdown_code(cell), esc(sentence));
                }
                for dispute in &group.disputes {
                    let _ = writeln!(out, "- **disagreement**: {}", esc(dispute));
                }
                out.push('\n');
            }
            CompareFormat::Table => {
                let _ = writeln!(out, "{} on {}", esc(&group.backend), esc(&group.arch));
                let mut widths: Vec<usize> = texts
                    .iter()
                    .zip(&labels)
                    .map(|(column, label)| {
                        column.iter().map(|text| text.chars().count()).max().unwrap_or(0).max(label.chars().count())
                    })
                    .collect();
                let cells: Vec<String> = group.cells.iter().map(|c| esc(c)).collect();
                let id_width = cells.iter().map(|c| c.chars().count()).max().unwrap_or(4).max(4) + 2;
                let _ = write!(out, "{:<id_width$}", "cell");
                for (label, w) in labels.iter().zip(&mut widths) {
                    let _ = write!(out, "  {:<w$}", label, w = *w);
                }
                out.push('\n');
                for (row, (cell, shown)) in group.cells.iter().zip(&cells).enumerate() {
                    let marked = format!("{}{shown}", if changed(cell) { "* " } else { "  " });
                    let _ = write!(out, "{marked:<id_width$}");
                    for (column, &w) in texts.iter().zip(&widths) {
                        out.push_str("  ");
                        pad(&mut out, &column[row], w);
                    }
                    out.push('\n');
                }
                for (cell, sentence) in &group.changes {
                    let _ = writeln!(out, "* {}: {}", esc(cell), esc(sentence));
                }
                for dispute in &group.disputes {
                    let _ = writeln!(out, "! disagreement: {}", esc(dispute));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// `text` padded with spaces to `width` characters, as `{:<width$}` writes it, without going through the
/// formatter's padding (a call per space).
fn pad(out: &mut String, text: &str, width: usize) {
    out.push_str(text);
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(text.chars().count())));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading a record for its outcomes only skips what outcomes do not use and gives the same outcomes;
    /// a record it refuses is refused whole, with the same error; and the thread reads whole after it.
    #[test]
    fn outcomes_read_alone_are_those_of_the_whole_record() {
        use crate::record::{Frame, SiteRecord};
        let mut record = Record::from_json(include_str!("../../fixtures/records/linux.json")).unwrap();
        // A site with unnamed frames among named ones, as `exec` records them.
        let frame = |function: Option<&str>| Frame {
            function: function.map(str::to_owned),
            file: Some("a.c".into()),
            line: Some(3),
            ..Frame::unnamed("/bin/a", 16)
        };
        record.cells[0].sites = vec![SiteRecord {
            counter: "fds".into(),
            kind: Some("/dev/null".into()),
            call: "open".into(),
            per_thread: 1.0,
            live: 9,
            outlived: 9,
            stopped: false,
            frames: [None, Some("leak"), None, Some("worker"), Some("start"), Some("clone")].map(frame).to_vec(),
        }];
        let text = record.to_json();
        let whole = Entry::of("r.json".into(), Record::from_json(&text).unwrap());
        let read = Record::outcomes_from_json(&text).unwrap();
        assert!(read.cells.iter().all(|c| c.checkpoints.is_empty() && c.slope.is_empty()));
        assert!(read.cells[0].sites[0].frames.iter().all(|f| f.module.is_empty() && f.function.is_some()));
        let outcomes = Entry::of("r.json".into(), read);
        assert_eq!(outcomes.outcomes, whole.outcomes);
        assert_eq!((outcomes.backend, outcomes.arch, outcomes.version), (whole.backend, whole.arch, whole.version));
        for bad in [text.replacen("\"schema\": 1", "\"schema\": 99", 1), text.replace("self=leaked", "self=sometimes")]
        {
            let (refused, refused_whole) = (Record::outcomes_from_json(&bad), Record::from_json(&bad));
            assert_eq!(format!("{refused:?}"), format!("{refused_whole:?}"));
            assert!(refused.is_err());
        }
        assert_eq!(Record::from_json(&text).unwrap(), record);
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec!["15.10", "15.9.1", "26.0", "15.9", "xnu-11417", "xnu-1504"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["15.9", "15.9.1", "15.10", "26.0", "xnu-1504", "xnu-11417"]);
        assert_eq!(natural_cmp("6.18.44-fc", "6.9.1"), Ordering::Greater);
        assert_eq!(natural_cmp("007", "7"), Ordering::Equal);
    }

    #[test]
    fn changes_name_the_counters_that_moved() {
        let a = Outcome {
            verdict: "leak".into(),
            per_thread: vec![("names".into(), 1.0), ("send".into(), 0.0), ("dead".into(), 1.0)],
            kinds: None,
            sites: Vec::new(),
        };
        let b = Outcome {
            verdict: "clean".into(),
            per_thread: vec![("names".into(), 0.0), ("dead".into(), 0.0)],
            kinds: None,
            sites: Vec::new(),
        };
        assert_eq!(a.change_to(&b).unwrap(), "names +1 → 0, dead +1 → 0, leak → clean");
        assert_eq!(a.text(), "leak: names +1, dead +1");
        assert_eq!(a.change_to(&a), None);
        // What is left behind changes while the counts stay: one kind of name for another.
        let kinds = |kind: &str| Some(vec![("names".to_owned(), kind.to_owned(), 1.0)]);
        let (x, y) =
            (Outcome { kinds: kinds("dead name"), ..a.clone() }, Outcome { kinds: kinds("port set"), ..a.clone() });
        assert_eq!(x.change_to(&y).unwrap(), "by kind: names +1 → 0 (dead name), names 0 → +1 (port set)");
        // A record made before kinds were recorded says nothing of them.
        assert_eq!(a.change_to(&x), None);
        // The same leak made somewhere else: a runtime's patch moved it, or fixed one site of two.
        let sites = |list: &[(&str, f64)]| list.iter().map(|&(k, v)| (k.to_owned(), v)).collect::<Vec<_>>();
        let before = Outcome { sites: sites(&[("fd /dev/null (fopen) ← keep_log ← worker", 1.0)]), ..a.clone() };
        let after = Outcome { sites: sites(&[("fd /dev/null (open) ← open_log ← worker", 1.0)]), ..a.clone() };
        assert_eq!(
            before.change_to(&after).unwrap(),
            "made at: fd /dev/null (fopen) ← keep_log ← worker +1 → 0, fd /dev/null (open) ← open_log ← worker 0 → +1"
        );
        // A record without sites (made with none recorded) says nothing of them.
        assert_eq!(a.change_to(&before), None);
    }
}
