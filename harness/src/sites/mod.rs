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

#[cfg(feature = "symbolize")]
mod symbolize;
#[cfg(not(feature = "symbolize"))]
#[path = "bare.rs"]
mod symbolize;
pub use symbolize::Symbolizer;

/// The least rate per thread a site is reported at: one resource every twenty threads.
pub const SITE_THRESHOLD: f64 = 0.05;

/// The most sites reported per process (most per thread first).
pub const MAX_SITES: usize = 8;

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
        let ips = threadleak_census::stack::trace(RECORDED_DEPTH);
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
            || function.starts_with("threadleak_census::stack::")
            || function.starts_with("_Unwind_")
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
    // Generic arguments say which instance ran, not where: `cycle<Tracked<Sim>>` is `cycle`, and so is
    // `cycle::<Tracked<Sim>>`, as names demangle from v0 symbols (`-C symbol-mangling-version=v0`).
    let mut plain = String::with_capacity(name.len());
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '<' => {
                if depth == 0 && plain.ends_with("::") {
                    plain.truncate(plain.len() - 2);
                }
                depth += 1
            }
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

/// What a site made and the call that made it, without its stack: `fd /etc/hosts (open)`.
pub fn site_head(site: &SiteRecord) -> String {
    // A Mach kind says what it is (`dead name`); a descriptor's or a mapping's is what it points at.
    match site.kind.as_deref() {
        Some(kind) if matches!(site.counter.as_str(), "names" | "urefs") => format!("{kind} ({})", site.call),
        Some(kind) => format!("{} {kind} ({})", noun(&site.counter), site.call),
        None => format!("{} ({})", site.counter, site.call),
    }
}

/// A site on one line, its first `frames` frames: `fds (open) ← leak (two.c:12) ← worker (two.c:30)`.
pub fn site_text(site: &SiteRecord, frames: usize) -> String {
    let mut text = site_head(site);
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
            (
                "threadleak::backend::mach::workload::take_self_references::<threadleak::backend::mach::sim::Sim>",
                "workload::take_self_references",
            ),
            (
                "<threadleak::backend::mach::workload::MachWorkload<threadleak::backend::mach::sim::Sim> as \
                 threadleak::backend::Workload>::cycle::{closure#1}",
                "workload::MachWorkload::cycle::{closure#1}",
            ),
            ("alloc::vec::Vec<u8>::push", "vec::Vec::push"),
            ("core::ptr::drop_in_place::<std::fs::File>", "ptr::drop_in_place"),
            ("threadleak::child::measure", "child::measure"),
            ("core::result::Result<T,E>::and_then", "result::Result::and_then"),
            ("main", "main"),
        ] {
            assert_eq!(short_rust_name(long), short);
        }
    }
}
