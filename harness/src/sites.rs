//! Sites: where the resources a run left behind were made. The probe (`exec --sites`) records the call
//! stack of every call that makes a descriptor and tallies, at each census, the live ones by stack; the
//! model records the code that added each user reference. This module turns those tallies into a rate
//! per thread ended for each stack, and the stacks' addresses into functions and source lines, after the
//! run and in the runner (never in the measured process).
//!
//! Symbols come from each module's symbol table, and file and line from its DWARF debug information
//! where it has some (`addr2line`); a module that is gone or unreadable leaves its frames as module and
//! offset.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use crate::record::{Frame, SiteRecord};

/// The least rate per thread a site is reported at: one resource every twenty threads.
pub const SITE_THRESHOLD: f64 = 0.05;

/// The most sites reported per process (most per thread first).
pub const MAX_SITES: usize = 8;

/// The most points a rate is fitted on (a longer series is thinned evenly).
const MAX_POINTS: usize = 64;

/// The per-thread rate of a series of (threads ended, resources alive): the median of the slopes
/// between every two points (Theil-Sen), so that what threads in flight hold at one census moves it no
/// more than one outlier does. 0 with fewer than two points.
pub fn rate(points: &[(f64, f64)]) -> f64 {
    let step = points.len().div_ceil(MAX_POINTS).max(1);
    let thinned: Vec<(f64, f64)> = points.iter().step_by(step).copied().collect();
    let mut slopes = Vec::new();
    for (i, a) in thinned.iter().enumerate() {
        for b in &thinned[i + 1..] {
            if b.0 > a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(f64::total_cmp);
    let mid = slopes.len() / 2;
    if slopes.len() % 2 == 1 {
        slopes[mid]
    } else {
        (slopes[mid - 1] + slopes[mid]) / 2.0
    }
}

/// Turns modules and offsets into functions and source lines, each module read once.
#[derive(Default)]
pub struct Symbolizer {
    modules: HashMap<String, Option<Module>>,
}

struct Module {
    loader: addr2line::Loader,
    /// The address the module's first loaded segment is linked at: a frame's offset from where the
    /// module is loaded, plus this, is the address its symbols and debug information use.
    base: u64,
    /// Its function symbols with their sizes (static and dynamic tables), by address: an address past
    /// a symbol's end is not that symbol's (a stripped library's internal functions have none).
    symbols: Vec<(u64, u64, String)>,
}

impl Module {
    /// The module at `path`, with its debug information where it has some, and the symbols of the
    /// debug file the system keeps apart by build id (`/usr/lib/debug/.build-id/ab/cdef....debug`, as
    /// Debian's `-dbg` and `-dbgsym` packages install it): its functions are named from that file's
    /// symbol table, which is read in a few milliseconds, where reading its DWARF for lines took some 150
    /// ms for glibc's, once per run.
    fn open(path: &str) -> Option<Module> {
        let (base, build_id, mut symbols) = read_object(path)?;
        let apart = build_id.filter(|id| id.len() > 1).and_then(|id| {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            let debug = format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..]);
            Path::new(&debug).is_file().then_some(debug)
        });
        if let Some((_, _, more)) = apart.as_deref().and_then(read_object) {
            symbols.extend(more);
        }
        symbols.sort();
        symbols.dedup_by_key(|s| s.0);
        let loader = addr2line::Loader::new(path).ok()?;
        Some(Module { loader, base, symbols })
    }

    /// The function symbol whose extent holds `address`.
    fn symbol(&self, address: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|s| s.0 <= address).checked_sub(1)?;
        let (start, size, name) = &self.symbols[i];
        (address < start + size).then_some(name.as_str())
    }
}

/// What [`read_object`] reads of an object file.
type ObjectFacts = (u64, Option<Vec<u8>>, Vec<(u64, u64, String)>);

/// An object file's link address of its first loaded segment, its build id and its function symbols
/// with their sizes (static and dynamic tables). Read whole into memory up to 256 MiB (a symbol's name
/// read through a cache of ranges costs a system call each: 10,000 of them for glibc's debug file),
/// through that cache beyond.
fn read_object(path: &str) -> Option<ObjectFacts> {
    fn facts<'d, R: object::ReadRef<'d>>(object: &object::File<'d, R>) -> ObjectFacts {
        use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
        let base = object.segments().filter(|s| s.file_range().1 > 0).map(|s| s.address()).min().unwrap_or(0) & !0xfff;
        let build_id = object.build_id().ok().flatten().map(<[u8]>::to_vec);
        let symbols = object
            .symbols()
            .chain(object.dynamic_symbols())
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_owned())))
            .collect();
        (base, build_id, symbols)
    }
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() <= 256 << 20 {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes).ok()?;
        return object::File::parse(&*bytes).ok().map(|o| facts(&o));
    }
    let cache = object::read::ReadCache::new(file);
    object::File::parse(&cache).ok().map(|o| facts(&o))
}

impl Symbolizer {
    /// The frames of a stack given as (module, offset) return addresses, innermost first; a frame whose
    /// code was inlined gives a frame for each function, innermost first.
    pub fn frames(&mut self, raw: &[(String, u64)]) -> Vec<Frame> {
        let mut out = Vec::new();
        for (module, offset) in raw {
            let bare = || Frame { module: module.clone(), offset: *offset, function: None, file: None, line: None };
            let Some(m) = self.module(module) else {
                out.push(bare());
                continue;
            };
            // A return address: the call is the instruction before it.
            let probe = (offset + m.base).saturating_sub(1);
            let before = out.len();
            if let Ok(mut frames) = m.loader.find_frames(probe) {
                while let Ok(Some(f)) = frames.next() {
                    let function = f.function.as_ref().and_then(|n| n.demangle().ok()).map(|n| short_rust_name(&n));
                    let (file, line) = f.location.map_or((None, None), |l| (l.file.map(str::to_owned), l.line));
                    if function.is_none() && file.is_none() {
                        continue;
                    }
                    out.push(Frame { function, file, line, ..bare() });
                }
            }
            if out.len() == before {
                let function = m.symbol(probe).map(|n| addr2line::demangle_auto(n.into(), None).into_owned());
                out.push(Frame { function, ..bare() });
            }
        }
        out
    }

    fn module(&mut self, path: &str) -> Option<&Module> {
        if path == "?" || !Path::new(path).is_absolute() {
            return None;
        }
        self.modules.entry(path.to_owned()).or_insert_with(|| Module::open(path)).as_ref()
    }
}

/// A descriptor's kind from its `/proc/self/fd` link: `anon_inode:[pidfd]` and paths as they are, a
/// socket, pipe or namespace without its inode number, `/proc` paths without their pids.
pub fn fd_kind(target: &str) -> String {
    if let Some((kind, rest)) = target.split_once(":[") {
        if rest.ends_with(']') && rest[..rest.len() - 1].bytes().all(|b| b.is_ascii_digit()) {
            return kind.to_owned();
        }
    }
    if let Some(rest) = target.strip_prefix("/proc/") {
        let parts: Vec<&str> = rest.split('/').collect();
        let numbered = |i: usize| parts.get(i).is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let mut out = String::from("/proc");
        for (i, part) in parts.iter().enumerate() {
            let generic = match i {
                0 if numbered(0) => "PID",
                2 if numbered(2) && parts[1] == "task" => "TID",
                _ => part,
            };
            out.push('/');
            out.push_str(generic);
        }
        return out;
    }
    target.to_owned()
}

/// One of a counter's resources: `fd`, `mapping`, `timer`, `uref`; a Mach name is what its kind says.
pub fn noun(counter: &str) -> &str {
    match counter {
        "fds" => "fd",
        "maps" => "mapping",
        "timers" => "timer",
        "urefs" => "uref",
        "names" => "name",
        "running" => "thread",
        other => other,
    }
}

/// Stacks captured in this process, interned: a matrix child records where each Mach reference its
/// workload adds was made (`backend::mach::tracked`). Captured as return addresses (cheap), resolved to
/// functions and lines only for the sites reported, after the run.
#[derive(Default)]
pub struct Recorder {
    inner: Mutex<Interned>,
}

#[derive(Default)]
struct Interned {
    ids: HashMap<(&'static str, Vec<usize>), u32>,
    stacks: Vec<(&'static str, Vec<usize>)>,
    /// Sites by the source line that made the call ([`Recorder::capture_at`]).
    by_line: HashMap<(&'static str, &'static std::panic::Location<'static>), u32>,
}

/// Frames walked at most for a stack recorded in process.
const RECORDED_DEPTH: usize = 48;

impl Recorder {
    /// The site of the calling stack, for a call named `call`.
    pub fn capture(&self, call: &'static str) -> u32 {
        let mut ips = Vec::with_capacity(RECORDED_DEPTH);
        backtrace::trace(|frame| {
            ips.push(frame.ip() as usize);
            ips.len() < RECORDED_DEPTH
        });
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let next = inner.stacks.len() as u32;
        let key = (call, ips);
        if let Some(&id) = inner.ids.get(&key) {
            return id;
        }
        inner.stacks.push(key.clone());
        inner.ids.insert(key, next);
        next
    }

    /// The site of a call made at source line `at` (the caller's `#[track_caller]` location): the stack
    /// is captured the first time that line makes the call, and reused after, so that a line called a
    /// million times costs a lookup each time. For code whose every line is reached one way (the
    /// model's workloads), that is the stack of every call.
    pub fn capture_at(&self, call: &'static str, at: &'static std::panic::Location<'static>) -> u32 {
        if let Some(&id) = self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_line.get(&(call, at)) {
            return id;
        }
        let id = self.capture(call);
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_line.insert((call, at), id);
        id
    }

    /// The call a site was recorded for.
    pub fn call(&self, id: u32) -> Option<&'static str> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).stacks.get(id as usize).map(|s| s.0)
    }

    /// Site `id`'s frames, innermost first, as modules and offsets: resolved by the runner after the
    /// run ([`Symbolizer`]), which also leaves out the recording's own frames ([`past_recording`]).
    pub fn frames(&self, id: u32) -> Vec<Frame> {
        let ips = match self.inner.lock().unwrap_or_else(|p| p.into_inner()).stacks.get(id as usize) {
            Some((_, ips)) => ips.clone(),
            None => return Vec::new(),
        };
        ips.into_iter()
            .map(|ip| {
                let (module, offset) =
                    crate::sys::module_of(ip).map_or(("?".to_owned(), ip as u64), |(m, base)| (m, (ip - base) as u64));
                Frame { module, offset, function: None, file: None, line: None }
            })
            .collect()
    }
}

/// A stack recorded in process, resolved, without the frames of its recording: the unwinder's, the
/// recorder's (`sites.rs`) and those of the layer that recorded the call (by its file, `recording`, as
/// `tracked.rs`): what comes after the first run of them (the layer can be further down too, where it
/// called back into its caller: a thread's body). At most `depth` frames.
pub fn past_recording(frames: Vec<Frame>, recording: &str, depth: usize) -> Vec<Frame> {
    let ours = |f: &Frame| {
        let file = f.file.as_deref().unwrap_or("");
        let function = f.function.as_deref().unwrap_or("");
        file.ends_with("/sites.rs")
            || file.ends_with(&format!("/{recording}"))
            || file.contains("/backtrace-")
            || function.starts_with("backtrace::")
    };
    let first = frames.iter().position(ours).unwrap_or(0);
    let start = first + frames[first..].iter().take_while(|f| ours(f)).count();
    frames.into_iter().skip(start).take(depth).collect()
}

/// A Rust function as a reader knows it: `workload::take_self_references` for
/// `threadleak::backend::mach::workload::take_self_references`, `workload::MachWorkload::cycle::{{closure}}`
/// for `<threadleak::backend::mach::workload::MachWorkload<M> as threadleak::backend::Workload>::cycle::{{closure}}`:
/// a trait implementation by its type, without generic arguments, and a path by its last module and
/// what follows. A C function's name has no path and stays as it is.
pub fn short_rust_name(name: &str) -> String {
    let mut name = name.replace("threadleak::", "");
    if let Some(rest) = name.strip_prefix('<') {
        // `<Type as Trait>::rest`: the type, at the `>` that closes the first `<`.
        let mut depth = 1;
        let close = rest.char_indices().find_map(|(i, c)| {
            depth += match c {
                '<' => 1,
                '>' => -1,
                _ => 0,
            };
            (depth == 0).then_some(i)
        });
        if let Some(close) = close {
            let inner = &rest[..close];
            let ty = inner.split(" as ").next().unwrap_or(inner);
            name = format!("{ty}{}", &rest[close + 1..]);
        }
    }
    // Generic arguments say which instance ran, not where: `cycle<Tracked<Sim>>` is `cycle`.
    let mut plain = String::with_capacity(name.len());
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let name = plain;
    // Modules are lower-case path segments before the first type or function: keep the last of them.
    let segments: Vec<&str> = name.split("::").collect();
    let modules = segments
        .iter()
        .take_while(|s| s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .count();
    let keep = if modules == segments.len() { modules.saturating_sub(2) } else { modules.saturating_sub(1) };
    segments[keep..].join("::")
}

/// A frame as the report shows it: `function (file:line)`, `function (module)`, or `module+0xOFFSET`.
pub fn frame_text(f: &Frame) -> String {
    let base = |p: &str| Path::new(p).file_name().map_or_else(|| p.to_owned(), |n| n.to_string_lossy().into_owned());
    match (&f.function, &f.file, f.line) {
        (Some(func), Some(file), Some(line)) => format!("{func} ({}:{line})", base(file)),
        (Some(func), Some(file), None) => format!("{func} ({})", base(file)),
        (Some(func), None, _) => format!("{func} ({})", base(&f.module)),
        (None, Some(file), Some(line)) => format!("{}:{line}", base(file)),
        _ if f.module == "?" => format!("{:#x}", f.offset),
        _ => format!("{}+{:#x}", base(&f.module), f.offset),
    }
}

/// A site on one line, its first `frames` frames: `fds (open) ← leak (two.c:12) ← worker (two.c:30)`.
pub fn site_text(site: &SiteRecord, frames: usize) -> String {
    // A Mach kind says what it is (`dead name`); a descriptor's or a mapping's is what it points at.
    let what = match site.kind.as_deref() {
        Some(kind) if matches!(site.counter.as_str(), "names" | "urefs") => kind.to_owned(),
        Some(kind) => format!("{} {kind}", noun(&site.counter)),
        None => site.counter.clone(),
    };
    let mut text = format!("{what} ({})", site.call);
    for f in site.frames.iter().take(frames) {
        text.push_str(" ← ");
        text.push_str(&frame_text(f));
    }
    if site.frames.len() > frames {
        text.push_str(" ← …");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_median_slope_and_shrugs_off_one_census_of_threads_in_flight() {
        let exact: Vec<(f64, f64)> = (1..=10).map(|k| (16.0 * k as f64, 3.0 + 16.0 * k as f64)).collect();
        assert_eq!(rate(&exact), 1.0);
        let mut bumped = exact.clone();
        bumped[4].1 += 40.0;
        assert!((rate(&bumped) - 1.0).abs() < 1e-9, "{}", rate(&bumped));
        let flat: Vec<(f64, f64)> = (1..=10).map(|k| (16.0 * k as f64, 5.0)).collect();
        assert_eq!(rate(&flat), 0.0);
        assert_eq!(rate(&exact[..1]), 0.0);
        let long: Vec<(f64, f64)> = (1..=5000).map(|k| (k as f64, k as f64 / 2.0)).collect();
        assert!((rate(&long) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_frame_reads_as_function_and_line_or_module_and_offset() {
        let f = |function: Option<&str>, file: Option<&str>, line| Frame {
            module: "/usr/lib/libx.so.1".into(),
            offset: 0x1234,
            function: function.map(Into::into),
            file: file.map(Into::into),
            line,
        };
        assert_eq!(frame_text(&f(Some("leak"), Some("/src/two.c"), Some(12))), "leak (two.c:12)");
        assert_eq!(frame_text(&f(Some("start_thread"), None, None)), "start_thread (libx.so.1)");
        assert_eq!(frame_text(&f(None, None, None)), "libx.so.1+0x1234");
        let mut site = SiteRecord {
            counter: "fds".into(),
            kind: None,
            call: "open".into(),
            per_thread: 1.0,
            live: 3,
            outlived: 3,
            stopped: false,
            frames: vec![f(Some("leak"), Some("two.c"), Some(12)), f(Some("worker"), Some("two.c"), Some(30))],
        };
        assert_eq!(site_text(&site, 1), "fds (open) ← leak (two.c:12) ← …");
        assert_eq!(site_text(&site, 5), "fds (open) ← leak (two.c:12) ← worker (two.c:30)");
        site.kind = Some("/etc/hosts".into());
        assert_eq!(site_text(&site, 1), "fd /etc/hosts (open) ← leak (two.c:12) ← …");
    }

    #[test]
    fn rust_names_are_shortened_to_the_module_and_what_follows() {
        for (long, short) in [
            ("threadleak::backend::mach::workload::take_self_references", "workload::take_self_references"),
            (
                "<threadleak::backend::mach::workload::MachWorkload<M> as threadleak::backend::Workload>::cycle::{{closure}}",
                "workload::MachWorkload::cycle::{{closure}}",
            ),
            ("take_self_references<backend::mach::tracked::Tracked<backend::mach::sim::Sim>>", "take_self_references"),
            ("threadleak::child::measure", "child::measure"),
            ("core::result::Result<T,E>::and_then", "result::Result::and_then"),
            ("main", "main"),
        ] {
            assert_eq!(short_rust_name(long), short);
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_test_binary_symbolizes_its_own_function_with_its_line() {
        #[inline(never)]
        fn here() -> usize {
            // The address just past a call instruction, as a return address is.
            std::hint::black_box(here as *const () as usize) + 1
        }
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let base = std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .find(|l| l.ends_with(exe.to_str().unwrap()))
            .and_then(|l| usize::from_str_radix(l.split('-').next().unwrap(), 16).ok())
            .unwrap();
        let mut s = Symbolizer::default();
        let frames = s.frames(&[(exe.to_string_lossy().into_owned(), (here() - base) as u64)]);
        let text = frame_text(&frames[0]);
        assert!(text.contains("here") && text.contains("sites.rs:"), "{text}");
        assert_eq!(s.frames(&[("?".into(), 0x10)])[0].function, None);
    }
}
