//! Expectations: a run judged against a baseline record, the snapshot set, or "clean", with the
//! `git bisect run` protocol for exit codes (0 good, 1 bad, 125 cannot tell).
//!
//! A cell differs when its verdict differs, or when a per-thread delta moves by more than the analysis
//! itself treats as motion ([`tolerance`]: a tenth of a unit per thread, a tenth of a page for `vm_kib`)
//! or than the two measurements' own resolution (one unit over the run, per thread, which each record
//! carries), whichever is larger; a program's memory (`exec`) only when its run let memory count. A run cell that timed out, crashed, failed or is inconclusive makes the
//! whole judgement "cannot tell": bisecting on it would blame the wrong commit. A baseline cell like that
//! cannot judge anything: the baseline is unusable, and `git bisect run` stops.

use std::path::{Path, PathBuf};

use crate::analysis;
use crate::compare::{self, LoadError};
use crate::record::{CellRecord, Record, Verdict, EXEC_CELL};
use crate::report::moved;

/// How far a counter's per-thread delta may move between a run and its baseline and still match: what
/// the analysis treats as motion, or the measurements' resolution when that is coarser.
pub fn tolerance(counter: &str, run: &CellRecord, baseline: Option<&CellRecord>) -> f64 {
    let resolution = |cell: Option<&CellRecord>| cell.and_then(|c| c.resolution.get(counter)).unwrap_or(0.0);
    (analysis::RATE_THRESHOLD * analysis::unit(counter)).max(resolution(Some(run)) + resolution(baseline))
}

/// What a run is judged against.
#[derive(Clone, Debug)]
pub enum Baseline {
    /// Every selected cell must be clean.
    Clean,
    /// The same cells of another run.
    Record { path: PathBuf, record: Box<Record> },
    /// The accepted snapshots, `<dir>/<cell id>@<suffix>.snap`.
    Snapshots(PathBuf),
}

/// Why a baseline cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    #[error("cannot use the baseline")]
    Load(#[from] LoadError),
    #[error("the baseline {path} has no cell `{cell}`")]
    MissingCell { path: PathBuf, cell: String },
    #[error("the baseline {path} was made with backend {theirs}, this run uses {ours}")]
    Backend { path: PathBuf, theirs: String, ours: String },
    #[error("the baseline {path} was made with --self-calls {theirs}, this run uses {ours}: per-thread deltas scale with it")]
    SelfCalls { path: PathBuf, theirs: u32, ours: u32 },
    #[error("the baseline {path} is a record of `threadleak {theirs}`, this is `threadleak {ours}`")]
    Kind { path: PathBuf, theirs: &'static str, ours: &'static str },
    #[error("the baseline {path} cannot judge cell `{cell}`: it is {outcome} there{}", .note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Unjudgeable { path: PathBuf, cell: String, outcome: String, note: Option<String> },
    #[error("cannot read the snapshot {path}")]
    Snapshot { path: PathBuf, source: std::io::Error },
    #[error("the snapshot {path} has no verdict line")]
    SnapshotFormat { path: PathBuf },
}

impl Baseline {
    /// `clean`, a directory of snapshots, or a record file.
    pub fn parse(arg: &str) -> Result<Baseline, ExpectError> {
        if arg == "clean" {
            return Ok(Baseline::Clean);
        }
        let path = PathBuf::from(arg);
        if path.is_dir() {
            return Ok(Baseline::Snapshots(path));
        }
        let record = compare::load(&path)?;
        Ok(Baseline::Record { path, record: Box::new(record) })
    }
}

/// The outcome of a judgement, in `git bisect run` terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Matches,
    Differs,
    CannotTell,
}

/// A judgement, and a line for each cell that made it.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub judgement: Judgement,
    pub lines: Vec<String>,
    /// For a run on a Mac judged against the snapshots: for each cell that differs, the commands that keep
    /// this release's numbers as an override (when the kernel legitimately differs from the model).
    pub overrides: Vec<String>,
}

/// The commands that turn `cell`'s model snapshot into an override for the macOS release `os_version`
/// (`cases/matrix.rs` uses `<cell>@macos-<major>.snap` when it exists; see docs/macos.md). `None` unless the
/// cell id and the major version are plain (a record is untrusted: nothing from it reaches a shell
/// command unless it is made of letters, digits and `=,._-`).
pub fn override_commands(cell: &str, os_version: &str) -> Option<String> {
    let major = os_version.split('.').next().unwrap_or_default();
    let plain = !cell.is_empty() && cell.chars().all(|c| c.is_ascii_alphanumeric() || "=,._-".contains(c));
    if !plain || major.is_empty() || !major.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "cp 'cases/snapshots/{cell}@mach.snap' 'cases/snapshots/{cell}@macos-{major}.snap' && cargo test --test \
         cases matrix::macos:: ; cargo insta review"
    ))
}

/// What a cell is expected to be: its verdict and its per-thread deltas (and, from a record, the cell).
#[derive(Clone, Debug, PartialEq)]
struct Expected {
    verdict: String,
    per_thread: Vec<(String, f64)>,
    cell: Option<CellRecord>,
}

fn describe(per_thread: &[(String, f64)]) -> String {
    let moved = moved(per_thread);
    if moved.is_empty() {
        "nothing moves".to_owned()
    } else {
        moved.join(", ")
    }
}

/// Reads a snapshot's body: `verdict: leak`, then `counter: +1` lines.
fn read_snapshot(path: &Path) -> Result<Expected, ExpectError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ExpectError::Snapshot { path: path.to_owned(), source })?;
    // insta's header sits between the first two `---` lines.
    let body = text.splitn(3, "---\n").last().unwrap_or_default();
    let mut verdict = None;
    let mut per_thread = Vec::new();
    for line in body.lines() {
        let Some((key, value)) = line.split_once(": ") else { continue };
        if key == "verdict" {
            verdict = Some(value.to_owned());
        } else if let Ok(v) = value.trim_start_matches('+').parse::<f64>() {
            per_thread.push((key.to_owned(), v));
        }
    }
    let verdict = verdict.ok_or_else(|| ExpectError::SnapshotFormat { path: path.to_owned() })?;
    Ok(Expected { verdict, per_thread, cell: None })
}

/// The snapshot suffix a backend's cells are asserted with (`cases/matrix.rs`, `cases/scenarios.rs`):
/// `version` is the macOS product version for `macos`, the model's profile for `mach-sim`, whose older
/// profiles have snapshots of their own where the corpus keeps one (`@mach-xnu-1504`).
pub fn snapshot_suffix(backend: &str, version: &str, dir: &Path, cell: &str) -> String {
    let os_version = version;
    match backend {
        "linux" => "linux".to_owned(),
        "mach-sim" => {
            let profile = format!("mach-{version}");
            if dir.join(format!("{cell}@{profile}.snap")).exists() {
                profile
            } else {
                "mach".to_owned()
            }
        }
        "macos" => {
            let release = format!("macos-{}", os_version.split('.').next().unwrap_or_default());
            if dir.join(format!("{cell}@{release}.snap")).exists() {
                release
            } else {
                "mach".to_owned()
            }
        }
        _ => "mach".to_owned(),
    }
}

fn expected_for(baseline: &Baseline, run: &Record, cell: &CellRecord) -> Result<Expected, ExpectError> {
    match baseline {
        Baseline::Clean => {
            Ok(Expected { verdict: Verdict::Clean.as_str().to_owned(), per_thread: Vec::new(), cell: None })
        }
        Baseline::Record { path, record } => {
            let kind = |r: &Record| {
                if r.cells.iter().any(|c| c.cell == EXEC_CELL && c.command.is_some()) {
                    "exec"
                } else {
                    "run"
                }
            };
            if kind(record) != kind(run) {
                return Err(ExpectError::Kind { path: path.clone(), theirs: kind(record), ours: kind(run) });
            }
            if record.backend != run.backend {
                return Err(ExpectError::Backend {
                    path: path.clone(),
                    theirs: record.backend.clone(),
                    ours: run.backend.clone(),
                });
            }
            if record.params.self_calls != run.params.self_calls {
                return Err(ExpectError::SelfCalls {
                    path: path.clone(),
                    theirs: record.params.self_calls,
                    ours: run.params.self_calls,
                });
            }
            let theirs = record
                .cells
                .iter()
                .find(|c| c.cell == cell.cell)
                .ok_or_else(|| ExpectError::MissingCell { path: path.clone(), cell: cell.cell.clone() })?;
            if !theirs.judgeable() {
                return Err(ExpectError::Unjudgeable {
                    path: path.clone(),
                    cell: cell.cell.clone(),
                    outcome: theirs.outcome().to_owned(),
                    note: theirs.note.clone(),
                });
            }
            Ok(Expected {
                verdict: theirs.verdict.as_str().to_owned(),
                per_thread: theirs.per_thread.0.clone(),
                cell: Some(theirs.clone()),
            })
        }
        Baseline::Snapshots(dir) => {
            let version = run.model.as_ref().map_or(&run.os.version, |m| &m.profile);
            let suffix = snapshot_suffix(&run.backend, version, dir, &cell.cell);
            read_snapshot(&dir.join(format!("{}@{suffix}.snap", cell.cell)))
        }
    }
}

/// Judges `run` against `baseline`, cell by cell. The baseline is read for every cell first: one it cannot
/// judge makes it unusable whatever the run did.
pub fn judge(run: &Record, baseline: &Baseline) -> Result<Report, ExpectError> {
    let expected: Vec<Expected> =
        run.cells.iter().map(|cell| expected_for(baseline, run, cell)).collect::<Result<_, _>>()?;
    let (mut lines, mut overrides) = (Vec::new(), Vec::new());
    let (mut differs, mut unknown) = (false, false);
    for (cell, expected) in run.cells.iter().zip(expected) {
        if !cell.judgeable() {
            unknown = true;
            let what = cell.outcome();
            lines.push(format!(
                "{}: cannot tell ({what}{})",
                cell.cell,
                cell.note.as_ref().map(|n| format!(": {n}")).unwrap_or_default()
            ));
            continue;
        }
        let got = &cell.per_thread.0;
        let value = |list: &[(String, f64)], name: &str| list.iter().find(|(n, _)| n == name).map_or(0.0, |&(_, v)| v);
        // A program's memory decides nothing unless the run let it count (`exec --memory`): a heap that
        // drifts between two commits is not a regression.
        let weighed = |n: &str| !(analysis::is_size(n) && cell.command.is_some() && !run.params.memory);
        let counters_differ = matches!(baseline, Baseline::Record { .. } | Baseline::Snapshots(_))
            && got.iter().chain(&expected.per_thread).any(|(n, _)| {
                weighed(n)
                    && (value(got, n) - value(&expected.per_thread, n)).abs()
                        > tolerance(n, cell, expected.cell.as_ref())
            });
        if cell.verdict.as_str() != expected.verdict || counters_differ {
            differs = true;
            if matches!(baseline, Baseline::Snapshots(_)) && run.backend == "macos" {
                overrides.extend(override_commands(&cell.cell, &run.os.version));
            }
            lines.push(format!(
                "{}: expected {} ({}), got {} ({})",
                cell.cell,
                expected.verdict,
                describe(&expected.per_thread),
                cell.verdict.as_str(),
                describe(got)
            ));
        }
    }
    let judgement = if unknown {
        Judgement::CannotTell
    } else if differs {
        Judgement::Differs
    } else {
        Judgement::Matches
    };
    Ok(Report { judgement, lines, overrides })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Counters, Os, Params, Status, Tool, SCHEMA};

    type Spec<'a> = (&'a str, Verdict, &'a [(&'a str, f64)]);

    fn record(cells: &[Spec<'_>]) -> Record {
        Record {
            schema: SCHEMA,
            tool: Tool::this(),
            backend: "linux".into(),
            os: Os::default(),
            model: None,
            params: Params::default(),
            cells: cells
                .iter()
                .map(|&(id, verdict, deltas)| CellRecord {
                    cell: id.into(),
                    scenario: None,
                    axes: Some(id.parse::<crate::matrix::Cell>().unwrap().into()),
                    command: None,
                    status: Status::Ok,
                    per_thread: Counters(deltas.iter().map(|&(n, v)| (n.to_owned(), v)).collect()),
                    slope: Counters::default(),
                    kinds: None,
                    sites: Vec::new(),
                    verdict,
                    checkpoints: Vec::new(),
                    elapsed_ms: 0,
                    cycles_per_sec: None,
                    note: None,
                    failure: None,
                    interval: Counters::default(),
                    resolution: Counters::default(),
                    limits: Counters::default(),
                    processes: Vec::new(),
                })
                .collect(),
        }
    }

    const LEAKED: &str = "thread=detached,self=leaked,exc=none,fix=off";
    const FIXED: &str = "thread=detached,self=leaked,exc=none,fix=on";

    #[test]
    fn clean_expects_every_cell_clean() {
        let run = record(&[(FIXED, Verdict::Clean, &[("fds", 0.0)]), (LEAKED, Verdict::Leak, &[("fds", 1.0)])]);
        let report = judge(&run, &Baseline::Clean).unwrap();
        assert_eq!(report.judgement, Judgement::Differs);
        assert_eq!(report.lines, [format!("{LEAKED}: expected clean (nothing moves), got leak (fds +1)")]);
    }

    #[test]
    fn a_record_baseline_compares_deltas_within_the_tolerance() {
        let good = record(&[(LEAKED, Verdict::Leak, &[("fds", 1.0), ("maps", 0.0)])]);
        let baseline = Baseline::Record { path: "good.json".into(), record: Box::new(good.clone()) };
        assert_eq!(judge(&good, &baseline).unwrap().judgement, Judgement::Matches);
        let close = record(&[(LEAKED, Verdict::Leak, &[("fds", 1.04), ("maps", 0.0)])]);
        assert_eq!(judge(&close, &baseline).unwrap().judgement, Judgement::Matches);
        let worse = record(&[(LEAKED, Verdict::Leak, &[("fds", 2.0), ("maps", 0.0)])]);
        let report = judge(&worse, &baseline).unwrap();
        assert_eq!(report.judgement, Judgement::Differs);
        assert_eq!(report.lines, [format!("{LEAKED}: expected leak (fds +1), got leak (fds +2)")]);
        let other = record(&[(FIXED, Verdict::Clean, &[])]);
        assert!(matches!(judge(&other, &baseline), Err(ExpectError::MissingCell { .. })));
    }

    #[test]
    fn a_programs_memory_differs_only_when_it_counts() {
        let program = |vm: f64, memory: bool| {
            let mut r = record(&[(FIXED, Verdict::Clean, &[("fds", 0.0), ("vm_kib", vm)])]);
            let cell = &mut r.cells[0];
            (cell.cell, cell.axes, cell.command) = (EXEC_CELL.to_owned(), None, Some(vec!["prog".to_owned()]));
            r.params.memory = memory;
            r
        };
        let baseline = Baseline::Record { path: "good.json".into(), record: Box::new(program(4.0, false)) };
        // A heap that drifts by 6 KiB per thread between two commits: not a regression of the program.
        assert_eq!(judge(&program(10.0, false), &baseline).unwrap().judgement, Judgement::Matches);
        // Unless the run let memory count.
        assert_eq!(judge(&program(10.0, true), &baseline).unwrap().judgement, Judgement::Differs);
        // A matrix cell's memory is exact, and always weighed.
        let cell = |vm: f64| record(&[(FIXED, Verdict::Clean, &[("vm_kib", vm)])]);
        let baseline = Baseline::Record { path: "good.json".into(), record: Box::new(cell(4.0)) };
        assert_eq!(judge(&cell(10.0), &baseline).unwrap().judgement, Judgement::Differs);
    }

    #[test]
    fn an_incomplete_cell_means_cannot_tell() {
        let mut run = record(&[(LEAKED, Verdict::Leak, &[("fds", 1.0)]), (FIXED, Verdict::Clean, &[])]);
        run.cells[1].status = Status::Timeout;
        let report = judge(&run, &Baseline::Clean).unwrap();
        assert_eq!(report.judgement, Judgement::CannotTell);
    }
}
