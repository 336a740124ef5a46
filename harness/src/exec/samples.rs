//! The probe's samples and counts, read back: one series of censuses per process, each estimated on its
//! own, and the program's verdict, the worst of theirs.
//!
//! Everything here is untrusted input: the program can write to the samples file (its path is in its
//! environment). Lines that do not parse are counted and ignored; the amount read, the line length and
//! the number of processes are bounded.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::counts::{Counts, ORIGIN_FORK};
use crate::analysis::{self, evidence, Judging, MIN_CENSUSES};
use crate::record::{Checkpoint, Counters, Frame, ProcessRecord, SiteRecord, Verdict};

/// The longest line read; a census line is a few hundred bytes.
const MAX_LINE: usize = 64 << 10;

/// The most processes kept; more are counted in a note.
const MAX_PROCESSES: usize = 4096;

/// The most censuses kept per process; beyond, every other one is dropped (the series keeps its span).
const MAX_CENSUSES: usize = 4096;

/// The first census a process takes (the probe's schedule starts there).
pub const FIRST_CENSUS: u64 = 16;

#[derive(Debug, Deserialize)]
struct Line {
    pid: u32,
    kind: String,
    #[serde(default)]
    parent: u32,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    created: u64,
    #[serde(default)]
    ended: u64,
    #[serde(default)]
    live: u64,
    #[serde(default)]
    pending: u64,
    #[serde(default)]
    untracked: u64,
    #[serde(default)]
    counters: Option<Counters<i64>>,
    /// A site's definition (`kind` `site`).
    #[serde(default)]
    id: Option<usize>,
    #[serde(default)]
    call: Option<String>,
    #[serde(default)]
    counter: Option<String>,
    #[serde(default)]
    frames: Option<Vec<(String, u64)>>,
    /// A census's changes of resources alive by site (`kind` `sites`), since the census before: (site,
    /// alive, of which the maker ended, what one of them is); 0 alive for a site with none left.
    #[serde(default)]
    tally: Option<Vec<(usize, u64, u64, String)>>,
    #[serde(default)]
    unrecorded: u64,
    /// A program started (`kind` `exec`, `spawn`, `exec-failed`): the pid that runs it, what it runs, and
    /// whether its environment still named the probe.
    #[serde(default)]
    child: u32,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    probed: bool,
    /// A census that could not be taken (`kind` `census-failed`): how the call (`call`) failed.
    #[serde(default)]
    error: Option<String>,
}

/// A site as the probe defined it: its call, counter and unsymbolized frames.
#[derive(Debug)]
struct SiteDefinition {
    call: String,
    counter: String,
    frames: Vec<(String, u64)>,
}

/// The most site tallies kept per process (a site at a census is one).
const MAX_TALLIES: usize = 1 << 20;

/// What the probe said of one process.
#[derive(Debug, Default)]
struct Series {
    parent: u32,
    forked: bool,
    command: Option<Vec<String>>,
    created: u64,
    ended: u64,
    censuses: Vec<Line>,
    /// Censuses at which threads that had ended were still exiting when the census gave up waiting.
    unsettled: usize,
    untracked: u64,
    /// The most threads the probe did not create (but the main thread) running at a census.
    foreign: i64,
    /// Sites, by the probe's id, and their tallies by threads ended: each census's changes applied to the
    /// census before (several lines of one census apply in turn).
    sites: BTreeMap<usize, SiteDefinition>,
    tallies: BTreeMap<u64, BTreeMap<usize, (u64, u64)>>,
    /// The tally as of the last line read.
    current: BTreeMap<usize, (u64, u64)>,
    /// What one resource of each site was, at the last census that had one.
    what: BTreeMap<usize, String>,
    tallied: usize,
    /// Calls the probe could not record (its tables full).
    unrecorded: u64,
    /// Censuses that could not be taken, and the first one's failed call and error.
    failed_censuses: usize,
    failure: Option<(String, String)>,
}

/// The program's processes, read from the samples text and the counts.
#[derive(Debug, Default)]
pub struct Reading {
    /// Processes that created threads, by pid.
    pub processes: Vec<ProcessRecord>,
    /// Processes that loaded the probe (or were forked from one that did).
    pub loaded: usize,
    /// Programs the program started that never loaded the probe: what they ran, and whether their
    /// environment still named it (if it did, the loader would not preload it: a static program).
    pub unmeasured: Vec<(String, bool)>,
    pub notes: Vec<String>,
}

/// Reads the samples (`text`, already bounded by the caller) and the counts, and judges each process.
pub fn read(text: &str, counts: &[Counts], judging: Judging) -> Reading {
    let mut by_pid: BTreeMap<u32, Series> = BTreeMap::new();
    let (mut malformed, mut dropped_processes) = (0usize, 0usize);
    // Programs started: an exec is matched by the next load of its pid; a spawn by any load of the child's
    // (the child may load before its parent tells of it).
    let mut execs: BTreeMap<u32, (String, bool)> = BTreeMap::new();
    let (mut unmatched_execs, mut spawns) = (Vec::new(), Vec::new());
    let mut loads = std::collections::BTreeSet::new();
    for line in text.lines() {
        let parsed = if line.len() > MAX_LINE { None } else { serde_json::from_str::<Line>(line).ok() };
        let Some(line) = parsed.filter(|l| l.pid != 0) else {
            malformed += 1;
            continue;
        };
        if !by_pid.contains_key(&line.pid) && by_pid.len() >= MAX_PROCESSES {
            dropped_processes += 1;
            continue;
        }
        let path = || line.path.clone().unwrap_or_default().chars().take(1024).collect::<String>();
        match line.kind.as_str() {
            "exec" => {
                if let Some(earlier) = execs.insert(line.pid, (path(), line.probed)) {
                    unmatched_execs.push(earlier);
                }
                continue;
            }
            "exec-failed" => {
                execs.remove(&line.pid);
                continue;
            }
            "spawn" if line.child != 0 => {
                spawns.push((line.child, path(), line.probed));
                continue;
            }
            "load" => {
                execs.remove(&line.pid);
                loads.insert(line.pid);
            }
            _ => {}
        }
        let series = by_pid.entry(line.pid).or_default();
        match line.kind.as_str() {
            "load" => {
                series.parent = line.parent;
                series.command = line.command;
            }
            "census" if line.counters.is_some() => {
                series.created = series.created.max(line.created);
                series.ended = series.ended.max(line.ended);
                series.unsettled += usize::from(line.pending > 0);
                series.untracked = series.untracked.max(line.untracked);
                // `tasks` is counted with the probe's running threads set apart: what is left beyond the
                // main thread and the ended ones still exiting, the probe did not create.
                if let Some(tasks) = line.counters.as_ref().and_then(|c| c.get("tasks")) {
                    series.foreign = series.foreign.max(tasks - 1 - line.pending as i64);
                }
                series.censuses.push(line);
            }
            "census-failed" => {
                series.failed_censuses += 1;
                if series.failure.is_none() {
                    let text = |t: Option<String>| t.unwrap_or_default().chars().take(64).collect::<String>();
                    series.failure = Some((text(line.call), text(line.error)));
                }
            }
            "site" => match (line.id, line.call, line.counter, line.frames) {
                (Some(id), Some(call), Some(counter), Some(frames)) if frames.len() <= 64 => {
                    series.sites.insert(id, SiteDefinition { call, counter, frames });
                }
                _ => malformed += 1,
            },
            "sites" if line.tally.is_some() => {
                series.unrecorded = series.unrecorded.max(line.unrecorded);
                let tally = line.tally.unwrap_or_default();
                if series.tallied + tally.len() > MAX_TALLIES {
                    continue;
                }
                series.tallied += tally.len();
                for (id, alive, outlived, what) in tally {
                    if alive == 0 {
                        series.current.remove(&id);
                    } else {
                        series.current.insert(id, (alive, outlived));
                    }
                    if !what.is_empty() && what.len() <= 4096 {
                        series.what.insert(id, crate::sites::fd_kind(&what));
                    }
                }
                series.tallies.insert(line.ended, series.current.clone());
            }
            _ => malformed += 1,
        }
    }
    for c in counts {
        let series = by_pid.entry(c.pid).or_default();
        series.parent = c.parent;
        series.forked = c.origin == ORIGIN_FORK;
        series.created = series.created.max(c.created);
        series.ended = series.ended.max(c.ended);
    }
    let mut reading = Reading { loaded: by_pid.len(), ..Reading::default() };
    reading.unmeasured = unmatched_execs.into_iter().chain(execs.into_values()).collect();
    reading.unmeasured.extend(spawns.into_iter().filter(|(c, _, _)| !loads.contains(c)).map(|(_, p, b)| (p, b)));
    if malformed > 0 {
        reading.notes.push(format!("{malformed} lines of the samples file were not the probe's and were ignored"));
    }
    if dropped_processes > 0 {
        reading.notes.push(format!(
            "samples of more than {MAX_PROCESSES} processes: {dropped_processes} lines of others ignored"
        ));
    }
    for (pid, series) in by_pid {
        if series.created == 0 {
            continue;
        }
        reading.processes.push(process(pid, series, judging));
    }
    reading
}

/// The counter of the threads a process created that still run at a census (its `live`): threads that
/// never end and keep piling up are a leak of their own ([`analysis::IN_FLIGHT_COUNTERS`]).
pub const RUNNING: &str = "running";

/// One process's record: its censuses as checkpoints, estimated.
fn process(pid: u32, mut series: Series, judging: Judging) -> ProcessRecord {
    let mut notes = Vec::new();
    // A forked child has its parent's command line; its parent is named instead.
    let command = if series.forked { None } else { series.command.take() };
    // Checkpoints are placed by threads ended; two censuses at one count keep the later.
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    for census in std::mem::take(&mut series.censuses) {
        let cycle = census.ended.min(u64::from(u32::MAX)) as u32;
        let mut counters = census.counters.unwrap_or_default();
        if counters.get(RUNNING).is_none() {
            counters.0.push((RUNNING.to_owned(), census.live.min(i64::MAX as u64) as i64));
        }
        let point = Checkpoint { cycle, counters, live: Some(census.live) };
        match checkpoints.last_mut() {
            Some(last) if last.cycle == cycle => *last = point,
            Some(last) if last.cycle > cycle => {}
            _ => checkpoints.push(point),
        }
    }
    while checkpoints.len() > MAX_CENSUSES {
        checkpoints = checkpoints.into_iter().step_by(2).collect();
    }
    let mut record = ProcessRecord {
        pid,
        parent: series.parent,
        origin: if series.forked { "fork" } else { "exec" }.to_owned(),
        command,
        created: series.created,
        ended: series.ended,
        per_thread: Counters::default(),
        interval: Counters::default(),
        limits: Counters::default(),
        verdict: Verdict::Inconclusive,
        checkpoints: Vec::new(),
        sites: Vec::new(),
        note: None,
    };
    if checkpoints.is_empty() && series.ended == 0 {
        notes.push(format!(
            "not measured: none of the {} threads it created ended (a thread cache or a pool keeps them): nothing is \
             left behind per thread ended until threads end",
            series.created
        ));
    } else if checkpoints.is_empty() {
        notes.push(format!(
            "not measured: {} of its threads ended, fewer than the {FIRST_CENSUS} at which the first census is taken",
            series.ended
        ));
    } else if checkpoints.len() < 2 {
        notes.push(format!(
            "not judged: 1 census was taken before it ended ({} threads ended); a verdict needs at least \
             {MIN_CENSUSES}",
            series.ended
        ));
    } else {
        match analysis::estimate(&checkpoints, judging) {
            Ok(e) => {
                notes.extend(e.notes);
                // The probe set each thread's stack apart already.
                notes.extend(crate::report::in_flight(&e.in_flight, " beyond its stack"));
                record.per_thread = e.per_thread;
                record.interval = e.interval;
                record.limits = e.limits;
                record.verdict = e.verdict;
            }
            Err(e) => notes.push(format!("its censuses cannot be analysed: {e}")),
        }
    }
    if let Some((call, error)) = &series.failure {
        notes.push(format!(
            "{} censuses could not be taken ({call} failed with {error}: a process at its limit of descriptors has \
             none free to read /proc with); the series has gaps there",
            series.failed_censuses
        ));
    }
    if series.unsettled > 0 {
        notes.push(format!(
            "at {} censuses, threads that had ended were still exiting after 2 s: what they held was counted",
            series.unsettled
        ));
    }
    if series.foreign > 0 {
        notes.push(format!(
            "up to {} threads it did not create through pthread_create (the C library's or a runtime's own) were \
             running at a census: they were not waited for",
            series.foreign
        ));
    }
    if series.untracked > 0 {
        notes.push(format!(
            "{} threads were not followed (the probe follows {} at once): their stacks were counted",
            series.untracked, 65536
        ));
    }
    // Sites are the same evidence per call stack: one that keeps growing is a leak, whatever its counter
    // as a whole shows; one that grew and stopped is shown apart; others explain a counter that grew.
    let found = sites(&series);
    if checkpoints.len() >= MIN_CENSUSES && record.verdict != Verdict::Leak {
        if let Some((site, _)) = found.iter().find(|(_, growth)| *growth == evidence::Growth::Steady) {
            notes.push(format!(
                "what {} made kept growing ({} per thread ended) though {} as a whole did not show it (others went \
                 as these came): a leak",
                site.call,
                crate::report::delta(site.per_thread),
                site.counter
            ));
            record.verdict = if record.verdict == Verdict::OverRelease { Verdict::Inconclusive } else { Verdict::Leak };
        }
    }
    let grows = |counter: &str| record.per_thread.get(counter).is_some_and(|v| v >= crate::sites::SITE_THRESHOLD);
    record.sites = found
        .into_iter()
        .filter_map(|(mut site, growth)| match growth {
            evidence::Growth::Steady => Some(site),
            evidence::Growth::Stopped { .. } => {
                site.stopped = true;
                Some(site)
            }
            _ => (grows(&site.counter) && site.per_thread >= crate::sites::SITE_THRESHOLD).then_some(site),
        })
        .collect();
    // What keeps growing first, most per thread first; what stopped last.
    record.sites.sort_by(|a, b| a.stopped.cmp(&b.stopped).then(b.per_thread.total_cmp(&a.per_thread)));
    record.sites.truncate(crate::sites::MAX_SITES);
    // Where sites were recorded (a census writes a line of them each time) but explain less than four
    // fifths of the descriptors that grew, the rest was made where the probe does not see: said.
    if !series.tallies.is_empty() {
        let explained: f64 =
            record.sites.iter().filter(|s| s.counter == "fds" && !s.stopped).map(|s| s.per_thread).sum();
        if let Some(grew) = record.per_thread.get("fds").filter(|&g| g >= crate::sites::SITE_THRESHOLD) {
            if explained < 0.8 * grew {
                notes.push(format!(
                    "fds grew by {} per thread ended, and the calls the probe saw make descriptors explain {}: the \
                     rest was made where it does not see (a library that reaches the C library through dlsym, a \
                     raw system call, a descriptor received over a socket, the C library's own calls)",
                    crate::report::delta(grew),
                    crate::report::delta(explained)
                ));
            }
        }
    }
    if series.unrecorded > 0 {
        notes.push(format!(
            "{} calls that made a descriptor were not recorded (the probe's tables of stacks and descriptors are \
             full): the sites may explain less than the count",
            series.unrecorded
        ));
    }
    record.checkpoints = checkpoints;
    if !notes.is_empty() {
        record.note = Some(notes.join("; "));
    }
    record
}

/// Every site the censuses tallied, with what its count of resources alive did over the run (by threads
/// ended) and its rate per thread ended (the Theil-Sen slope its evidence was judged on), its frames not
/// yet symbolized (the runner does that once, for every process: [`crate::sites::Symbolizer`]).
fn sites(series: &Series) -> Vec<(SiteRecord, evidence::Growth)> {
    let ids: Vec<usize> = series
        .tallies
        .values()
        .flat_map(|t| t.keys().copied())
        .collect::<std::collections::BTreeSet<usize>>()
        .into_iter()
        .collect();
    let at: Vec<f64> = series.tallies.keys().map(|&ended| ended as f64).collect();
    // Each site is judged on its own, and a program may have thousands: on every core.
    crate::parallel::map_in_order(ids.len(), || (), |_, i| site(series, ids[i], &at), |_| false)
        .into_iter()
        .flatten()
        .collect()
}

/// Site `id` and its growth, judged on its count alive at each census (`at`, by threads ended); `None`
/// for a site never defined, or whose count never moved.
fn site(series: &Series, id: usize, at: &[f64]) -> Option<(SiteRecord, evidence::Growth)> {
    let def = series.sites.get(&id)?;
    let alive: Vec<f64> = series.tallies.values().map(|t| t.get(&id).map_or(0, |e| e.0) as f64).collect();
    // A site whose count never moved is level, at no rate: never reported (below). Most of a program's
    // sites are so (what it made once, at its start), and judging each would cost the most.
    if alive.iter().all(|&v| v == alive[0]) {
        return None;
    }
    let judged = evidence::judge(at, &alive);
    let per_thread = match judged.growth {
        evidence::Growth::Steady => judged.rate,
        _ => evidence::theil_sen(at, &alive),
    };
    let (live, outlived) = series.tallies.values().last().and_then(|t| t.get(&id)).copied().unwrap_or_default();
    let frames = def.frames.iter().map(|(module, offset)| Frame::unnamed(module, *offset)).collect();
    let site = SiteRecord {
        counter: def.counter.clone(),
        kind: series.what.get(&id).cloned(),
        call: def.call.clone(),
        per_thread,
        live,
        outlived,
        stopped: false,
        frames,
    };
    Some((site, judged.growth))
}

/// Whether a process took enough censuses to be judged. One that did not (it ended fewer than 80 threads)
/// is named in the record with why, and has no say in the program's verdict.
pub fn judged(p: &ProcessRecord) -> bool {
    p.checkpoints.len() >= MIN_CENSUSES
}

/// How bad a verdict is, for "the worst of them".
fn badness(v: Verdict) -> u8 {
    match v {
        Verdict::Clean => 0,
        Verdict::Inconclusive => 1,
        Verdict::OverRelease => 2,
        Verdict::Leak => 3,
    }
}

/// The program's verdict, the worst of its judged processes', and the process that decides it (the one
/// with that verdict that ended the most threads). `None` when no process could be judged.
pub fn decide(processes: &[ProcessRecord]) -> Option<&ProcessRecord> {
    processes.iter().filter(|p| judged(p)).max_by_key(|p| (badness(p.verdict), p.ended))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(pid: u32, ended: u64, fds: i64) -> String {
        format!(
            "{{\"pid\":{pid},\"kind\":\"census\",\"created\":{ended},\"ended\":{ended},\"live\":0,\"pending\":0,\
             \"counters\":{{\"fds\":{fds},\"maps\":9}}}}\n"
        )
    }

    fn load(pid: u32, parent: u32, command: &str) -> String {
        format!("{{\"pid\":{pid},\"kind\":\"load\",\"parent\":{parent},\"command\":[\"{command}\"]}}\n")
    }

    #[test]
    fn every_process_is_its_own_series_and_the_worst_decides() {
        let mut text = load(7, 1, "sh") + &load(9, 7, "prog");
        for k in [16, 32, 64, 128, 256, 512, 1000] {
            text += &census(9, k, 3);
            text += &census(11, k, 3 + k as i64);
        }
        text += "garbage\n";
        let counts = [
            Counts { pid: 9, parent: 7, origin: 1, created: 1000, ended: 1000 },
            Counts { pid: 11, parent: 9, origin: ORIGIN_FORK, created: 1001, ended: 1000 },
            Counts { pid: 7, parent: 1, origin: 1, created: 0, ended: 0 },
        ];
        let reading = read(&text, &counts, Judging::default());
        assert_eq!(reading.loaded, 3);
        assert_eq!(reading.notes, ["1 lines of the samples file were not the probe's and were ignored"]);
        let pids: Vec<u32> = reading.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [9, 11]);
        let (parent, fork) = (&reading.processes[0], &reading.processes[1]);
        assert_eq!((parent.verdict, parent.command.as_deref()), (Verdict::Clean, Some(&["prog".to_owned()][..])));
        assert_eq!((fork.verdict, fork.origin.as_str(), fork.created), (Verdict::Leak, "fork", 1001));
        assert_eq!(fork.per_thread.get("fds"), Some(1.0));
        assert_eq!(decide(&reading.processes).map(|p| p.pid), Some(11));
    }

    #[test]
    fn counts_stand_in_for_censuses_a_process_never_took() {
        let counts = [Counts { pid: 5, parent: 1, origin: 1, created: 9, ended: 9 }];
        let reading = read(&load(5, 1, "tiny"), &counts, Judging::default());
        let p = &reading.processes[0];
        assert_eq!((p.created, p.ended, p.verdict), (9, 9, Verdict::Inconclusive));
        assert!(p.note.as_deref().unwrap().starts_with("not measured: 9 of its threads ended, fewer than the 16"));
        assert_eq!(decide(&reading.processes), None);
    }

    #[test]
    fn a_long_line_or_a_foreign_one_is_ignored_not_trusted() {
        let long = format!("{{\"pid\":3,\"kind\":\"load\",\"command\":[\"{}\"]}}\n", "x".repeat(MAX_LINE));
        let reading = read(&(long + "{\"pid\":0,\"kind\":\"census\"}\n"), &[], Judging::default());
        assert_eq!(reading.loaded, 0);
        assert_eq!(reading.notes, ["2 lines of the samples file were not the probe's and were ignored"]);
    }

    #[test]
    fn sites_are_rated_per_thread_from_their_tallies_and_bad_lines_are_counted_not_trusted() {
        let mut text = load(9, 1, "prog");
        text += "{\"pid\":9,\"kind\":\"site\",\"id\":4,\"call\":\"open\",\"counter\":\"fds\",\"frames\":[[\"/bin/prog\",100],[\"?\",7]]}\n";
        text += "{\"pid\":9,\"kind\":\"site\",\"id\":5,\"call\":\"socket\",\"counter\":\"fds\",\"frames\":[]}\n";
        // Not a site: no call.
        text += "{\"pid\":9,\"kind\":\"site\",\"id\":6,\"frames\":[]}\n";
        for k in [16u64, 32, 64, 128, 256, 512, 1000] {
            text += &census(9, k, 3 + k as i64);
            // Site 4 leaks one per thread (its change in the second of two lines of one census); site 5
            // holds 2 whatever happens (written once, unchanged after); site 7 was never defined.
            let first = if k == 16 { "[5,2,0,\"socket:[88]\"]," } else { "" };
            text += &format!("{{\"pid\":9,\"kind\":\"sites\",\"ended\":{k},\"tally\":[{first}[7,{k},{k},\"\"]]}}\n");
            text +=
                &format!("{{\"pid\":9,\"kind\":\"sites\",\"ended\":{k},\"tally\":[[4,{k},{},\"/tmp/x\"]]}}\n", k / 2);
        }
        let reading = read(&text, &[], Judging::default());
        assert_eq!(reading.notes, ["1 lines of the samples file were not the probe's and were ignored"]);
        let p = &reading.processes[0];
        let [site] = &p.sites[..] else { panic!("{:#?}", p.sites) };
        assert_eq!((site.call.as_str(), site.per_thread, site.live, site.outlived), ("open", 1.0, 1000, 500));
        assert_eq!(site.kind.as_deref(), Some("/tmp/x"));
        let frames: Vec<(&str, u64)> = site.frames.iter().map(|f| (f.module.as_str(), f.offset)).collect();
        assert_eq!(frames, [("/bin/prog", 100), ("?", 7)]);
    }
}
