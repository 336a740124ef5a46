//! The command line: parses arguments, prints, and picks the exit code. Nothing else in the crate prints.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::backend::mach::sim::{Profile, Task};
use crate::backend::{Backend, BackendName, ModelOptions};
use crate::child::Mode;
use crate::compare::CompareFormat;
use crate::exit::ExitCode;
use crate::expect::{self, Baseline, Judgement};
use crate::matrix::{self, Cell, Filter};
use crate::output;
use crate::record::{Params, Record, Status};
use crate::report::{self, Format};
use crate::runner::{self, RunConfig, CHILD_SUBCOMMAND};
use crate::scenario::{self, Case};
use crate::text;

/// Writes a line to stderr. A closed or broken stderr (`2>&1 | true`) loses the line but never ends the
/// run: `eprintln!` would panic on the EPIPE.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Writes text to stdout, losing it on a closed stdout rather than panicking.
macro_rules! show {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// Reproduces and measures kernel resources leaked by thread creation, one subprocess per scenario.
#[derive(Debug, Parser)]
#[command(name = "threadleak", version, about, after_help = EXIT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The most self references a thread takes: beyond the 65,535 a name can hold, more only cost time (and
/// the Linux backend keeps a slot for each).
const MAX_SELF_CALLS: i64 = 1_000_000;

/// The most threads `degrade` creates: their latencies are kept, 8 bytes each.
const MAX_DEGRADE_THREADS: i64 = 10_000_000;

const EXIT_HELP: &str = "Exit codes: 0 every cell completed; 2 usage error or an unreadable record; 3 some cell \
                         timed out, crashed or failed; 4 the run itself failed; 130 interrupted. With --expect: 0 \
                         matches, 1 differs, 125 cannot tell, 128 unusable baseline.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the cells of the matrix (those selected by --cell, if given).
    List {
        /// Select cells by axis values, e.g. `thread=unjoined` or `self=leaked,fix=on` (repeatable).
        #[arg(long = "cell", value_name = "FILTER")]
        cells: Vec<Filter>,
    },
    /// Print the corpus: published leaks of this class, each a scenario with a buggy and a fixed variant.
    Scenarios,
    /// Run cells or scenarios, one child process each, and report each counter's change per thread (per
    /// unit of work for a scenario).
    Run(RunArgs),
    /// Compare records from different machines, OS releases or profiles, marking what changed.
    Compare {
        /// Output format.
        #[arg(long, value_enum, default_value_t = CompareFormat::Table)]
        format: CompareFormat,
        /// Write the output to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Records written by `threadleak run --format json`.
        #[arg(required = true, value_name = "RECORD")]
        records: Vec<PathBuf>,
    },
    /// Run any program with the probe loaded and measure its resources per thread ended, in each of its processes.
    Exec(ExecArgs),
    /// Print a record written by `run` or `exec --format json` as they would have, judged with --expect if given.
    Report {
        #[command(flatten)]
        output: OutputArgs,
        /// The record.
        #[arg(value_name = "RECORD")]
        record: PathBuf,
    },
    /// Create threads of one cell continuously in one child, and plot latency against what has leaked.
    Degrade(DegradeArgs),
    /// Run one cell or scenario variant in this process and print its report (used by `run`).
    #[command(name = CHILD_SUBCOMMAND, hide = true)]
    Child(ChildArgs),
    /// Wait for stdin to close, then kill every process with the run's mark and remove its folder (used by
    /// `exec`).
    #[command(name = crate::exec::WATCHDOG_SUBCOMMAND, hide = true)]
    Watchdog { dir: PathBuf, mark: std::ffi::OsString },
}

/// Parameters every cell gets.
#[derive(Debug, Args)]
struct CellParams {
    /// Threads created per cell after warm-up.
    #[arg(long, default_value_t = Params::default().cycles, value_parser = clap::value_parser!(u32).range(2..))]
    cycles: u32,
    /// Threads created before the baseline census (at least one, to load the exit path's libraries).
    #[arg(long, default_value_t = Params::default().warmup, value_parser = clap::value_parser!(u32).range(1..))]
    warmup: u32,
    /// K: self references each thread takes when the `self` axis is `leaked` or `balanced`.
    #[arg(long, value_name = "K", default_value_t = Params::default().self_calls, value_parser = clap::value_parser!(u32).range(1..=MAX_SELF_CALLS))]
    self_calls: u32,
}

impl CellParams {
    fn params(&self) -> Params {
        Params { cycles: self.cycles, warmup: self.warmup, self_calls: self.self_calls, memory: false }
    }
}

/// The backend and, for the model, its settings.
#[derive(Debug, Args)]
struct BackendArgs {
    /// Backend to run (default: the one native to this machine).
    #[arg(long, value_enum)]
    backend: Option<BackendName>,
    /// mach-sim: whose rules the model follows; `all` (run only) writes one record per profile.
    #[arg(long, value_name = "PROFILE", value_parser = ProfileParser)]
    profile: Option<ProfileChoice>,
    /// mach-sim: model clock steps before a dead thread's port is released, and again before it dies
    /// (0: at once). The settle step waits them out.
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u32).range(0..10_000))]
    sim_delay: Option<u32>,
    /// mach-sim: the modelled task: `third-party` (default; optional guard exceptions are not delivered)
    /// or `hardened` (a platform binary: they are fatal).
    #[arg(long, value_enum)]
    task: Option<Task>,
}

/// `--profile`: one profile, or every one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProfileChoice {
    One(Profile),
    All,
}

/// Parses `--profile`, and lists the profiles in `--help`.
#[derive(Clone, Copy)]
struct ProfileParser;

impl clap::builder::TypedValueParser for ProfileParser {
    type Value = ProfileChoice;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<ProfileChoice, clap::Error> {
        parse_profile(&value.to_string_lossy())
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n")).with_cmd(cmd))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let one = Profile::ALL
            .iter()
            .map(|p| clap::builder::PossibleValue::new(p.name()).help(format!("the sources of macOS {}", p.macos())));
        let all = clap::builder::PossibleValue::new("all").help("every profile, a record each (`run` only)");
        Some(Box::new(one.chain(std::iter::once(all))))
    }
}

fn parse_profile(text: &str) -> Result<ProfileChoice, String> {
    if text == "all" {
        return Ok(ProfileChoice::All);
    }
    Profile::ALL.iter().find(|p| p.name() == text).map(|&p| ProfileChoice::One(p)).ok_or_else(|| {
        let names: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
        format!("unknown profile `{text}` (profiles: {}, or all)", names.join(", "))
    })
}

impl BackendArgs {
    /// The one backend these arguments select; `--profile all` is refused here.
    fn backend(&self) -> Result<Backend, String> {
        match self.backends()?.as_slice() {
            [one] => Ok(*one),
            _ => Err("--profile all applies to `run` only".into()),
        }
    }

    /// The backends these arguments select: one, or with `--profile all` one per profile, oldest first.
    fn backends(&self) -> Result<Vec<Backend>, String> {
        let model_args = self.profile.is_some() || self.sim_delay.is_some() || self.task.is_some();
        match self.backend {
            Some(BackendName::MachSim) => {
                let defaults = ModelOptions::default();
                let profiles = match self.profile {
                    None => vec![defaults.profile],
                    Some(ProfileChoice::One(p)) => vec![p],
                    Some(ProfileChoice::All) => Profile::ALL.to_vec(),
                };
                Ok(profiles
                    .into_iter()
                    .map(|profile| {
                        Backend::MachSim(ModelOptions {
                            profile,
                            delay: self.sim_delay.unwrap_or(defaults.delay),
                            task: self.task.unwrap_or(defaults.task),
                        })
                    })
                    .collect())
            }
            _ if model_args => Err("--profile, --sim-delay and --task apply to --backend mach-sim only".into()),
            Some(name @ (BackendName::Linux | BackendName::Macos)) => {
                let backend = if name == BackendName::Linux { Backend::Linux } else { Backend::Macos };
                match Backend::native() {
                    Some(native) if native == backend => Ok(vec![backend]),
                    _ => Err(format!(
                        "the {} backend measures its own OS's kernel and runs only there; this machine's is {} \
                         (mach-sim runs anywhere)",
                        backend.as_str(),
                        Backend::native().map_or("none", Backend::as_str)
                    )),
                }
            }
            None => Backend::native()
                .map(|b| vec![b])
                .ok_or_else(|| "this OS has no native backend; choose one with --backend".into()),
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// Select cells by axis values, e.g. `thread=unjoined` or `self=leaked,fix=on`, or `all` (repeatable;
    /// default: all, unless --scenario is given).
    #[arg(long = "cell", value_name = "FILTER")]
    cells: Vec<Filter>,
    /// Run a scenario of the corpus, both variants (repeatable; `all` for every one; `threadleak scenarios`
    /// lists them).
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    #[command(flatten)]
    params: CellParams,
    /// Children run at once (default: the number of cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..1024))]
    jobs: Option<u64>,
    /// Wall time a cell may take before its child's process group is killed (`500ms`, `30s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    output: OutputArgs,
}

/// Where a record goes, and what it is judged against.
#[derive(Debug, Args)]
struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the output to this file instead of standard output (`run --profile all`: a folder, where each
    /// profile's output is `mach-sim-<profile>.<format>`).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Judge against a baseline: a record file, a snapshot folder (cases/snapshots; `run` only), or `clean`.
    /// Exits 0 when every cell matches, 1 when one differs, 125 when one cannot be judged (git bisect run).
    #[arg(long, value_name = "BASELINE")]
    expect: Option<String>,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// A census every K threads ended, once that many have ended four times over; before, about four each time
    /// the count of ended threads doubles (16, 32, 48, ...).
    #[arg(long, value_name = "K", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    every: u32,
    /// Wall time the program may take before its process group is killed.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    /// The probe library to preload instead of the one this binary carries (a developer's own build of
    /// the `probe/` crate).
    #[arg(long, value_name = "PATH", env = "THREADLEAK_PROBE")]
    probe: Option<PathBuf>,
    /// Do not record where descriptors are made. By default the probe records the call stack of every call
    /// that makes one, and the report says where what is left behind was made (functions, and source lines
    /// where the program has debug information); this costs well under a microsecond a call.
    #[arg(long)]
    no_sites: bool,
    /// Let memory count: `vm_kib` that grows steadily over the run makes a leak. By default memory (a heap,
    /// an arena, garbage not yet collected) is reported with its rate and decides nothing; whole items
    /// (descriptors, mappings, timers, threads) decide.
    #[arg(long)]
    memory: bool,
    #[command(flatten)]
    output: OutputArgs,
    /// The program and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
struct DegradeArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// The cell, as a full id (`thread=detached,self=leaked,exc=none,fix=off`).
    #[arg(long)]
    cell: Cell,
    /// Threads to create (each one's latency is kept: 8 bytes a thread).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(2..=MAX_DEGRADE_THREADS))]
    threads: u32,
    /// Threads per window of latency statistics and census.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    window: u32,
    /// Threads created before the baseline.
    #[arg(long, default_value_t = Params::default().warmup, value_parser = clap::value_parser!(u32).range(1..))]
    warmup: u32,
    /// K: self references per thread when the `self` axis is not `none`.
    #[arg(long, value_name = "K", default_value_t = Params::default().self_calls, value_parser = clap::value_parser!(u32).range(1..=MAX_SELF_CALLS))]
    self_calls: u32,
    /// The counter to plot latency against (default: the first that grows per thread).
    #[arg(long, value_name = "NAME")]
    counter: Option<String>,
    /// Wall time the child may take.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    /// Folder for degrade.csv, degrade.json and degrade.svg (created if missing).
    #[arg(long, value_name = "DIR", default_value = "degrade")]
    out_dir: PathBuf,
}

#[derive(Debug, Args)]
struct ChildArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// A cell id or a scenario id (`scenario=NAME,variant=buggy`).
    #[arg(long)]
    cell: Case,
    #[command(flatten)]
    params: CellParams,
    /// Degradation mode: a census every this many threads, and every thread's latency.
    #[arg(long, value_name = "THREADS", value_parser = clap::value_parser!(u32).range(1..))]
    degrade_window: Option<u32>,
    /// Keep this process's threads on this CPU, where the OS allows (the runner gives each child its own).
    #[arg(long, value_name = "CPU")]
    cpu: Option<usize>,
}

/// The address space the runner needs beyond what it maps at start: its threads' stacks, the children's
/// output it reads (1 MiB each at most), records.
const MIN_ADDRESS_SPACE: u64 = 12 << 20;

/// The shortest `--timeout`: no child starts, let alone runs a cell, in less.
const MIN_TIMEOUT_SECONDS: f64 = 0.010;

/// Parses `500ms`, `30s`, `2m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration such as 500ms, 30s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}` (units: ms, s, m)")),
    };
    if !(MIN_TIMEOUT_SECONDS..=86_400.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (at least 10ms, at most a day)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    crate::sys::start();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::USAGE } else { ExitCode::OK };
        }
    };
    // Below this much address space left, allocations fail in the runner itself (and Rust aborts on a
    // failed allocation): say so in one line instead. Children are not held to it: what they cannot do
    // under the limit is recorded as their cells' errors.
    let starting_children = matches!(cli.command, Command::Child(_) | Command::Watchdog { .. });
    if let Some(left) = crate::backend::address_space_left().filter(|&l| l < MIN_ADDRESS_SPACE && !starting_children) {
        say!(
            "error: the address-space limit (ulimit -v) leaves {} KiB; threadleak needs {} KiB to run",
            left / 1024,
            MIN_ADDRESS_SPACE / 1024
        );
        return ExitCode::FAILED;
    }
    match cli.command {
        Command::List { cells } => list(&cells),
        Command::Scenarios => scenarios(),
        Command::Run(args) => run(args),
        Command::Compare { format, out, records } => compare(format, out.as_deref(), &records),
        Command::Exec(args) => exec(args),
        Command::Report { output, record } => report(&output, &record),
        Command::Degrade(args) => degrade(args),
        Command::Child(args) => child(args),
        Command::Watchdog { dir, mark } => crate::exec::watchdog(&dir, &mark),
    }
}

fn usage(message: &str) -> i32 {
    say!("error: {message}");
    ExitCode::USAGE
}

fn list(filters: &[Filter]) -> i32 {
    let cells = matrix::select(filters);
    if cells.is_empty() {
        return usage("no cell matches the --cell filters");
    }
    let mut out = std::io::stdout().lock();
    for cell in cells {
        let _ = writeln!(out, "{cell}");
    }
    ExitCode::OK
}

/// An error and the chain of its causes, `: `-separated, with control characters escaped (errors name
/// files and quote records).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text::terminal(&message)
}

/// Writes `text` to `out` whole or not at all (see `output`), or to standard output.
fn emit(text: &str, out: Option<&std::path::Path>) -> Result<(), String> {
    match out {
        Some(path) => output::write(path, text.as_bytes()).map_err(|e| with_causes(&e)),
        None => std::io::stdout().lock().write_all(text.as_bytes()).map_err(|e| format!("cannot write output: {e}")),
    }
}

/// Checks before a run that `--out` can be written; the exit code that refuses it when not.
fn check_out(out: Option<&std::path::Path>) -> Result<(), i32> {
    match out.map(output::check) {
        Some(Err(e)) => {
            say!("error: {}", with_causes(&e));
            Err(ExitCode::FAILED)
        }
        _ => Ok(()),
    }
}

fn compare(format: CompareFormat, out: Option<&std::path::Path>, paths: &[PathBuf]) -> i32 {
    if let Err(code) = check_out(out) {
        return code;
    }
    let entries = match crate::compare::load_entries(paths) {
        Ok(entries) => entries,
        Err(e) => {
            say!("error: {}", with_causes(&e));
            return ExitCode::USAGE;
        }
    };
    let groups = crate::compare::compare_entries(entries);
    let text = crate::compare::render(&groups, format);
    // The process ends once the text is written: the groups (an outcome per cell and record, each a few
    // small allocations) are left to its end rather than freed one by one.
    std::mem::forget(groups);
    match emit(&text, out) {
        Ok(()) => ExitCode::OK,
        Err(message) => {
            say!("error: {message}");
            ExitCode::FAILED
        }
    }
}

fn report(output: &OutputArgs, path: &std::path::Path) -> i32 {
    let baseline = match baseline(output.expect.as_deref()) {
        Ok(b) => b,
        Err(code) => return code,
    };
    if let Err(code) = check_out(output.out.as_deref()) {
        return code;
    }
    let record = match crate::compare::load(path) {
        Ok(record) => record,
        Err(e) => {
            say!("error: {}", with_causes(&e));
            return ExitCode::USAGE;
        }
    };
    finish(&record, output.format, output.out.as_deref(), baseline.as_ref()).unwrap_or(ExitCode::OK)
}

/// Writes the record in `format` and, with a baseline, judges it. Returns the exit code when that settles
/// it (a failure to write, or a judgement); `None` leaves it to the caller.
fn finish(record: &Record, format: Format, out: Option<&std::path::Path>, baseline: Option<&Baseline>) -> Option<i32> {
    let judged = match baseline {
        None => None,
        Some(baseline) => match expect::judge(record, baseline) {
            Ok(report) => Some(report),
            Err(e) => {
                say!("error: {}", with_causes(&e));
                return Some(ExitCode::BASELINE_UNUSABLE);
            }
        },
    };
    let text = report::render(record, format, judged.as_ref());
    // Once an interrupt has begun, nothing is written: it ends the process with exit 130.
    let _gate = commit_gate();
    if let Err(message) = emit(&text, out) {
        say!("error: {message}");
        return Some(ExitCode::FAILED);
    }
    let report = judged?;
    for line in &report.lines {
        say!("threadleak: {}", text::terminal(line));
    }
    Some(match report.judgement {
        Judgement::Matches => ExitCode::MATCHES,
        Judgement::Differs => ExitCode::DIFFERS,
        Judgement::CannotTell => ExitCode::CANNOT_TELL,
    })
}

/// The baseline `--expect` names, or the exit code that refuses it.
fn baseline(arg: Option<&str>) -> Result<Option<Baseline>, i32> {
    arg.map(Baseline::parse).transpose().map_err(|e| {
        say!("error: {}", with_causes(&e));
        ExitCode::BASELINE_UNUSABLE
    })
}

fn exec(args: ExecArgs) -> i32 {
    let Some(backend) = Backend::native() else {
        return usage("this OS has no native backend: exec needs Linux or macOS");
    };
    let baseline = match baseline(args.output.expect.as_deref()) {
        Ok(b) => b,
        Err(code) => return code,
    };
    if let Err(code) = check_out(args.output.out.as_deref()) {
        return code;
    }
    if args.probe.is_none() && !crate::exec::probe::embedded() {
        say!("error: {}", crate::exec::ExecError::NoProbe);
        return ExitCode::FAILED;
    }
    kill_children_on_interrupt();
    let config = crate::exec::ExecConfig {
        command: args.command,
        every: args.every,
        timeout: args.timeout,
        term_grace: Duration::from_secs(2),
        probe: args.probe,
        sites: !args.no_sites,
        memory: args.memory,
    };
    let record = match crate::exec::exec(backend, &config) {
        Ok(record) => record,
        Err(e) => {
            say!("error: {}", with_causes(&e));
            return ExitCode::FAILED;
        }
    };
    if let Some(code) = finish(&record, args.output.format, args.output.out.as_deref(), baseline.as_ref()) {
        return code;
    }
    let cell = &record.cells[0];
    let measured = !cell.checkpoints.is_empty();
    let note = text::terminal(cell.note.as_deref().unwrap_or(cell.status.as_str()));
    match (cell.status, measured) {
        (Status::Ok, _) if cell.verdict == crate::record::Verdict::Inconclusive => {
            say!("threadleak: the run cannot be judged (inconclusive): {note}");
            ExitCode::OK
        }
        (Status::Ok, _) => ExitCode::OK,
        (_, true) => {
            say!(
                "threadleak: the program did not finish well ({}); what was measured before is in the record: {note}",
                cell.outcome()
            );
            ExitCode::INCOMPLETE
        }
        (_, false) => {
            say!("threadleak: the program was not measured: {note}");
            ExitCode::INCOMPLETE
        }
    }
}

/// The cases `run` selects: the cells its filters match (all of them when neither --cell nor --scenario is
/// given) and both variants of each scenario named, less those the backend cannot run (said on stderr).
fn cases(args: &RunArgs, backend: Backend) -> Result<Vec<Case>, String> {
    let mut cases: Vec<Case> = Vec::new();
    if !args.cells.is_empty() || args.scenarios.is_empty() {
        let cells = matrix::select(&args.cells);
        if cells.is_empty() {
            return Err("no cell matches the --cell filters".into());
        }
        cases.extend(cells.into_iter().map(Case::Cell));
    }
    let chosen = scenario::select(&args.scenarios).map_err(|e| e.to_string())?;
    let mut skipped = Vec::new();
    for case in chosen {
        match (backend.runs(&case), case) {
            (Ok(()), _) => cases.push(case),
            (Err(why), Case::Scenario(s)) => {
                if !skipped.contains(&s.scenario.name) {
                    skipped.push(s.scenario.name);
                    say!("threadleak: {} does not run on {backend}: {why}", s.scenario.name);
                }
            }
            (Err(_), Case::Cell(_)) => {}
        }
    }
    if cases.is_empty() {
        return Err(format!("none of the scenarios asked for runs on {backend}"));
    }
    Ok(cases)
}

/// Where `run` writes the record of `backend`: `--out` itself, or with several backends (`--profile
/// all`) a file per profile in the folder `--out` names.
fn out_for(out: Option<&std::path::Path>, backend: Backend, several: bool, format: Format) -> Option<PathBuf> {
    let out = out?;
    if !several {
        return Some(out.to_owned());
    }
    let profile = backend.model().map_or(backend.as_str(), |m| m.profile.name());
    let ext = match format {
        Format::Table => "txt",
        Format::Json => "json",
        Format::Markdown => "md",
        Format::Junit => "xml",
    };
    Some(out.join(format!("{}-{profile}.{ext}", backend.as_str())))
}

fn run(args: RunArgs) -> i32 {
    let backends = match args.backend.backends() {
        Ok(backends) => backends,
        Err(message) => return usage(&message),
    };
    let several = backends.len() > 1;
    if several {
        match args.output.out.as_deref().map(std::fs::metadata) {
            Some(Ok(meta)) if meta.is_dir() => {}
            Some(Ok(_)) => return usage("with --profile all, --out names a folder (one record per profile)"),
            Some(Err(e)) => {
                let dir = args.output.out.as_deref().unwrap_or_else(|| std::path::Path::new("")).display();
                return usage(&format!("--out {dir}: {e} (with --profile all it names an existing folder)"));
            }
            None => return usage("--profile all writes one record per profile: give --out FOLDER"),
        }
    }
    let baseline = match baseline(args.output.expect.as_deref()) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let mut runs = Vec::with_capacity(backends.len());
    for &backend in &backends {
        let cases = match cases(&args, backend) {
            Ok(cases) => cases,
            Err(message) => return usage(&message),
        };
        let out = out_for(args.output.out.as_deref(), backend, several, args.output.format);
        if let Err(code) = check_out(out.as_deref()) {
            return code;
        }
        runs.push((backend, cases, out));
    }
    let exe = match own_executable() {
        Ok(exe) => exe,
        Err(code) => return code,
    };
    kill_children_on_interrupt();

    // The worst outcome of every run: a difference from the baseline outranks an incomplete run.
    let mut worst = ExitCode::OK;
    for (backend, cases, out) in runs {
        let code = run_one(&args, &exe, backend, &cases, out.as_deref(), baseline.as_ref());
        worst = ExitCode::worse(worst, code);
    }
    worst
}

/// One backend's run of `cases`: the record, written and judged.
fn run_one(
    args: &RunArgs,
    exe: &std::path::Path,
    backend: Backend,
    cases: &[Case],
    out: Option<&std::path::Path>,
    baseline: Option<&Baseline>,
) -> i32 {
    let mut config = RunConfig::new(exe.to_owned(), backend);
    config.params = args.params.params();
    config.timeout = args.timeout;
    if let Some(jobs) = args.jobs {
        config.jobs = jobs as usize;
    }

    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    let mut shown = false;
    let record = runner::run(&config, cases, |p| {
        if progress && started.elapsed() > Duration::from_secs(1) {
            shown = true;
            {
                use std::io::Write as _;
                let _ = write!(
                    std::io::stderr(),
                    "\r\x1b[K[{}/{}] {} {}",
                    p.done,
                    p.total,
                    text::terminal(&p.finished.cell),
                    p.finished.status.as_str()
                );
            }
        }
    });
    if shown {
        {
            use std::io::Write as _;
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }

    if let Some(code) = finish(&record, args.output.format, out, baseline) {
        return code;
    }
    let incomplete = record.cells.iter().filter(|c| c.status != Status::Ok).count();
    if incomplete > 0 {
        say!("threadleak: {incomplete} of {} cells did not complete (see their notes)", record.cells.len());
        return ExitCode::INCOMPLETE;
    }
    ExitCode::OK
}

fn scenarios() -> i32 {
    let mut out = String::new();
    for s in scenario::ALL {
        out.push_str(&format!("{}  (per {}; {})\n", s.name, s.unit.as_str(), s.project));
        out.push_str(&format!("    bug:    {}\n", s.pattern));
        out.push_str(&format!("    fix:    {}\n", s.fix));
        out.push_str(&format!("    source: {}\n", s.source));
        if let Some(why) = s.not_on_linux() {
            out.push_str(&format!("    linux:  no analog: {why}\n"));
        }
    }
    show!("{out}");
    ExitCode::OK
}

/// This binary, which the runner starts again for each child; or the exit code that says it cannot.
fn own_executable() -> Result<PathBuf, i32> {
    std::env::current_exe().map_err(|e| {
        say!("error: cannot find this program's own executable to start children: {e}");
        ExitCode::FAILED
    })
}

/// On SIGINT, SIGTERM or SIGHUP: kill every child's process group, then exit. Children run in groups of
/// their own, so a terminal's Ctrl-C reaches only this process.
fn kill_children_on_interrupt() {
    if let Err(e) = watch_interrupts() {
        say!("warning: cannot handle interrupts ({e}); an interrupted run may leave children until their timeout");
    }
}

/// Held while the output is written, and by an interrupt from the moment it starts: an interrupt that
/// comes first leaves no output at all (the process exits 130 holding it), one that comes while the output
/// is written waits for it to be whole, and then ends the run the same way.
static COMMIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn commit_gate() -> std::sync::MutexGuard<'static, ()> {
    COMMIT.lock().unwrap_or_else(|p| p.into_inner())
}

fn watch_interrupts() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // The watcher starts first: when it cannot (the process limit), no handler is installed and the
    // signals keep their default action, ending the process.
    let (tx, rx) = std::sync::mpsc::channel::<signal_hook::iterator::Signals>();
    std::thread::Builder::new().stack_size(256 << 10).spawn(move || {
        let Ok(mut signals) = rx.recv() else { return };
        if let Some(signal) = signals.forever().next() {
            let _gate = commit_gate();
            runner::kill_live_children();
            crate::exec::clean_up_after_interrupt();
            say!("\nthreadleak: interrupted by signal {signal}; children killed");
            std::process::exit(ExitCode::INTERRUPTED);
        }
    })?;
    // A signal this process was started with ignored (`nohup`) stays ignored, as a shell leaves it.
    let watched: Vec<i32> =
        [SIGINT, SIGTERM, SIGHUP].into_iter().filter(|&s| !crate::sys::ignored_at_start(s)).collect();
    let signals = signal_hook::iterator::Signals::new(watched)?;
    tx.send(signals).map_err(|_| std::io::Error::other("the interrupt watcher ended"))
}

fn degrade(args: DegradeArgs) -> i32 {
    let backend = match args.backend.backend() {
        Ok(Backend::MachSim(_)) => {
            return usage(
                "mach-sim is a model and has no timing: degrade measures a real kernel (--backend linux or macos)",
            )
        }
        Ok(backend) => backend,
        Err(message) => return usage(&message),
    };
    if let Some(counter) = &args.counter {
        if !backend.counters().contains(&counter.as_str()) {
            return usage(&format!("unknown counter `{counter}` (counters: {})", backend.counters().join(", ")));
        }
    }
    // The folder must take the three files: said before the run, not after it.
    let csv = args.out_dir.join("degrade.csv");
    if std::fs::symlink_metadata(&args.out_dir).is_err() {
        if let Err(e) = std::fs::create_dir_all(&args.out_dir) {
            say!("error: cannot create the folder {}: {e}", args.out_dir.display());
            return ExitCode::FAILED;
        }
    }
    if let Err(e) = output::check_folder(&args.out_dir, &csv) {
        say!("error: {}", with_causes(&e));
        return ExitCode::FAILED;
    }
    let exe = match own_executable() {
        Ok(exe) => exe,
        Err(code) => return code,
    };
    kill_children_on_interrupt();
    let mut config = RunConfig::new(exe, backend);
    config.params = Params { cycles: args.threads, warmup: args.warmup, self_calls: args.self_calls, memory: false };
    config.timeout = args.timeout;
    let (record, windows) = runner::run_cell_in(&config, args.cell.into(), Mode::Degrade { window: args.window });
    let result =
        crate::degrade::build(&record, backend.as_str(), backend.os(), args.window, &windows, args.counter.as_deref());
    let files: Vec<(PathBuf, Vec<u8>)> =
        [("degrade.csv", result.csv()), ("degrade.json", result.json()), ("degrade.svg", result.svg())]
            .into_iter()
            .map(|(name, text)| (args.out_dir.join(name), text.into_bytes()))
            .collect();
    // All three or none; an interrupt that has begun leaves none.
    let written = {
        let _gate = commit_gate();
        output::write_all(&files)
    };
    show!("{}", result.summary());
    if let Err(e) = written {
        say!("error: {}", with_causes(&e));
        return ExitCode::FAILED;
    }
    show!("wrote degrade.csv, degrade.json and degrade.svg in {}\n", args.out_dir.display());
    if record.status == Status::Ok {
        ExitCode::OK
    } else {
        ExitCode::INCOMPLETE
    }
}

fn child(args: ChildArgs) -> i32 {
    let backend = match args.backend.backend() {
        Ok(backend) => backend,
        Err(message) => return usage(&message),
    };
    let mode = args.degrade_window.map_or(Mode::Matrix, |window| Mode::Degrade { window });
    let report = crate::child::run(backend, args.cell, &args.params.params(), mode, args.cpu);
    let line = serde_json::to_string(&report).expect("a child report always serializes");
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILED;
    }
    ExitCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").unwrap_err().contains("out of range"));
        assert!(parse_duration("0.0000001ms").unwrap_err().contains("at least 10ms"));
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert!(parse_duration("5h").unwrap_err().contains("unknown unit `h`"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
