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

/// Turns modules and offsets into functions and source lines, each module read once.
///
/// The modules are named by the program (a line of the probe's channel, which the program can write), so
/// a name is trusted with nothing: a file is opened without blocking (a FIFO named like a debug file
/// does not hold the runner), read only when it is a regular file, once however many names it has (by
/// device and inode: 20,000 links to one library are one read), within [`READ_BUDGET`] bytes in all and
/// before the run's deadline; past either, the frames left keep their module and offset, and
/// [`Symbolizer::shortfall`] says so. Debug information is read from the module itself, and symbols also
/// from the debug file the system keeps by build id; nothing else is opened (no `.dwp`, no
/// `.gnu_debuglink`).
pub struct Symbolizer {
    /// Each path named, and the module it is, by index in `read`.
    modules: HashMap<String, Option<usize>>,
    by_inode: HashMap<Inode, usize>,
    opened: Vec<Module>,
    read: u64,
    deadline: Option<std::time::Instant>,
    shortfall: Option<String>,
}

impl Default for Symbolizer {
    fn default() -> Symbolizer {
        Symbolizer::until(None)
    }
}

/// The most bytes of modules and debug files a symbolizer reads in all.
pub const READ_BUDGET: u64 = 2 << 30;

/// The most bytes read of one file (a larger one is left unread).
const FILE_LIMIT: u64 = 1 << 30;

/// What DWARF is read through: each section copied out of the file, shared.
type Dwarf = gimli::EndianArcSlice<gimli::RunTimeEndian>;

struct Module {
    /// The module's DWARF, where it has some.
    context: Option<addr2line::Context<Dwarf>>,
    /// The address the module's first loaded segment is linked at: a frame's offset from where the
    /// module is loaded, plus this, is the address its symbols and debug information use.
    base: u64,
    /// Its function symbols with their sizes (static and dynamic tables), by address: an address past
    /// a symbol's end is not that symbol's (a stripped library's internal functions have none).
    symbols: Vec<(u64, u64, String)>,
}

impl Module {
    /// The function symbol whose extent holds `address`.
    fn symbol(&self, address: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|s| s.0 <= address).checked_sub(1)?;
        let (start, size, name) = &self.symbols[i];
        (address < start + size).then_some(name.as_str())
    }
}

/// A file's device and inode: what names it, however many paths lead to it.
type Inode = (u64, u64);

/// A file named by the program, opened without blocking: the file, its size, device and inode, when it is
/// a regular file.
fn open_regular(path: &str) -> Option<(std::fs::File, u64, Inode)> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file().then(|| (file, meta.len(), (meta.dev(), meta.ino())))
}

/// What [`facts`] reads of an object file.
type ObjectFacts = (u64, Option<Vec<u8>>, Vec<(u64, u64, String)>);

/// An object file's link address of its first loaded segment, its build id and its function symbols
/// with their sizes (static and dynamic tables).
///
/// Mach-O symbols have no size (`nlist_64` holds none; object's `MachOSymbol::size` is 0): each is
/// sized up to the next function symbol of its section, or the section's end, and named without the C
/// prefix `_`. ELF symbols keep their
/// own sizes, and one without a size is left out: in a stripped library the next symbol can lie past
/// internal functions that are not its own.
fn facts(object: &object::File<'_>) -> ObjectFacts {
    use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _};
    let base = object.segments().filter(|s| s.file_range().1 > 0).map(|s| s.address()).min().unwrap_or(0) & !0xfff;
    let build_id = object.build_id().ok().flatten().map(<[u8]>::to_vec);
    let mut symbols: Vec<(u64, u64, String, Option<object::SectionIndex>)> = object
        .symbols()
        .chain(object.dynamic_symbols())
        .filter(|s| s.kind() == object::SymbolKind::Text)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_owned(), s.section_index())))
        .collect();
    if object.format() == object::BinaryFormat::MachO {
        // A Mach-O symbol of a C-level name carries the C prefix `_`; one without it is an
        // assembler-local label (`ltmp0` at a section's start), which would hide the function it sits on.
        symbols.retain_mut(|s| match s.2.strip_prefix('_') {
            Some(name) => {
                s.2 = name.to_owned();
                true
            }
            None => false,
        });
        symbols.sort_by_key(|s| s.0);
        let starts: Vec<u64> = symbols.iter().map(|s| s.0).collect();
        for symbol in symbols.iter_mut().filter(|s| s.1 == 0) {
            let start = symbol.0;
            let section_end = symbol
                .3
                .and_then(|i| object.section_by_index(i).ok())
                .map_or(start, |sect| sect.address().saturating_add(sect.size()));
            // Sections do not overlap: a next symbol of another section lies past this one's end.
            let next = starts.get(starts.partition_point(|&at| at <= start)).copied().unwrap_or(section_end);
            symbol.1 = next.min(section_end).saturating_sub(start);
        }
    }
    (base, build_id, symbols.into_iter().filter(|s| s.1 > 0).map(|(at, size, name, _)| (at, size, name)).collect())
}

/// The DWARF of an object file, its sections copied out (a compressed one is left out), or `None` when
/// it has none.
fn dwarf(object: &object::File<'_>) -> Option<addr2line::Context<Dwarf>> {
    use object::{Object as _, ObjectSection as _};
    let endian = if object.is_little_endian() { gimli::RunTimeEndian::Little } else { gimli::RunTimeEndian::Big };
    object.section_by_name(".debug_info")?;
    let load = |id: gimli::SectionId| -> Result<Dwarf, gimli::Error> {
        let data = object.section_by_name(id.name()).and_then(|s| s.uncompressed_data().ok()).unwrap_or_default();
        Ok(gimli::EndianArcSlice::new(std::sync::Arc::from(&*data), endian))
    };
    addr2line::Context::from_dwarf(gimli::Dwarf::load(load).ok()?).ok()
}

impl Symbolizer {
    /// A symbolizer that stops at `deadline` (the run's timeout): frames it has not reached by then keep
    /// their module and offset.
    pub fn until(deadline: Option<std::time::Instant>) -> Symbolizer {
        Symbolizer {
            modules: HashMap::new(),
            by_inode: HashMap::new(),
            opened: Vec::new(),
            read: 0,
            deadline,
            shortfall: None,
        }
    }

    /// Why some frames were left unnamed (the budget or the deadline), if they were.
    pub fn shortfall(&self) -> Option<&str> {
        self.shortfall.as_deref()
    }

    /// The frames of a stack given as (module, offset) return addresses, innermost first; a frame whose
    /// code was inlined gives a frame for each function, innermost first.
    pub fn frames(&mut self, raw: &[(String, u64)]) -> Vec<Frame> {
        let mut out = Vec::new();
        for (module, offset) in raw {
            let bare = || Frame { module: module.clone(), offset: *offset, function: None, file: None, line: None };
            let Some(m) = self.module(module).map(|i| &self.opened[i]) else {
                out.push(bare());
                continue;
            };
            // A return address: the call is the instruction before it.
            let probe = (offset + m.base).saturating_sub(1);
            let before = out.len();
            if let Some(Ok(mut frames)) = m.context.as_ref().map(|c| c.find_frames(probe).skip_all_loads()) {
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

    fn module(&mut self, path: &str) -> Option<usize> {
        if path == "?" || !Path::new(path).is_absolute() {
            return None;
        }
        if let Some(&known) = self.modules.get(path) {
            return known;
        }
        let module = self.open(path);
        self.modules.insert(path.to_owned(), module);
        module
    }

    /// Reads the bytes of `path`, a regular file, within the budget and before the deadline; `None` (and the
    /// shortfall noted) past either, and the index of the module already read for a file of the same
    /// device and inode.
    fn read(&mut self, path: &str) -> Option<Result<(Vec<u8>, Inode), usize>> {
        if self.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            self.shortfall.get_or_insert_with(|| "the run's timeout came while frames were being named".to_owned());
            return None;
        }
        let (file, len, inode) = open_regular(path)?;
        if let Some(&known) = self.by_inode.get(&inode) {
            return Some(Err(known));
        }
        let left = READ_BUDGET.saturating_sub(self.read);
        if len > left.min(FILE_LIMIT) {
            if len <= FILE_LIMIT {
                self.shortfall
                    .get_or_insert_with(|| format!("the modules read passed {} MiB in all", READ_BUDGET >> 20));
            }
            return None;
        }
        let mut bytes = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, len), &mut bytes).ok()?;
        self.read += bytes.len() as u64;
        Some(Ok((bytes, inode)))
    }

    /// The module at `path`, with its debug information where it has some, and the symbols of the
    /// debug file the system keeps apart by build id (`/usr/lib/debug/.build-id/ab/cdef....debug`, as
    /// Debian's `-dbg` and `-dbgsym` packages install it): its functions are named from that file's
    /// symbol table, which is read in a few milliseconds, where reading its DWARF for lines took some 150
    /// ms for glibc's, once per run.
    fn open(&mut self, path: &str) -> Option<usize> {
        let (bytes, inode) = match self.read(path)? {
            Ok(read) => read,
            Err(known) => return Some(known),
        };
        let object = object::File::parse(&*bytes).ok()?;
        let (base, build_id, mut symbols) = facts(&object);
        let apart = build_id.filter(|id| id.len() > 1).map(|id| {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..])
        });
        if let Some(Ok((debug, _))) = apart.and_then(|p| self.read(&p)) {
            if let Ok(debug) = object::File::parse(&*debug) {
                symbols.extend(facts(&debug).2);
            }
        }
        symbols.sort();
        symbols.dedup_by_key(|s| s.0);
        self.opened.push(Module { context: dwarf(&object), base, symbols });
        self.by_inode.insert(inode, self.opened.len() - 1);
        Some(self.opened.len() - 1)
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
    fn what_the_program_names_as_a_module_is_read_only_when_it_is_a_regular_file_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("prog.dwp");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let module = dir.path().join("module");
        std::fs::copy(std::env::current_exe().unwrap(), &module).unwrap();
        let mut names = vec![fifo.to_str().unwrap().to_owned(), "/dev/zero".to_owned(), "/dev/stdin".to_owned()];
        // A hundred links to one file: one read.
        for i in 0..100 {
            let link = dir.path().join(format!("link{i}"));
            std::fs::hard_link(&module, &link).unwrap();
            names.push(link.to_str().unwrap().to_owned());
        }
        let mut symbolizer = Symbolizer::default();
        let raw: Vec<(String, u64)> = names.iter().map(|n| (n.clone(), 0)).collect();
        let started = std::time::Instant::now();
        let frames = symbolizer.frames(&raw);
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
        assert_eq!(frames.len(), raw.len());
        assert!(frames[..3].iter().all(|f| f.function.is_none() && f.file.is_none()), "{:?}", &frames[..3]);
        assert_eq!(symbolizer.read, std::fs::metadata(&module).unwrap().len());
        assert_eq!(symbolizer.shortfall(), None);
    }

    #[test]
    fn past_the_deadline_frames_keep_their_module_and_offset_and_it_is_said() {
        let mut symbolizer = Symbolizer::until(Some(std::time::Instant::now()));
        let own = std::env::current_exe().unwrap().to_str().unwrap().to_owned();
        let frames = symbolizer.frames(&[(own, 0x1000)]);
        assert_eq!((frames[0].function.as_deref(), frames[0].offset), (None, 0x1000));
        assert_eq!(symbolizer.shortfall(), Some("the run's timeout came while frames were being named"));
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
    fn mach_o_functions_are_sized_by_the_next_symbol_and_their_section() {
        use object::{Object as _, ObjectSection as _};
        // fixtures/macho/symbols.c, built for arm64 macOS with zig (the command is in the file).
        let bytes = include_bytes!("../../fixtures/macho/symbols.aarch64.o");
        let object = object::File::parse(&bytes[..]).unwrap();
        let (_, _, mut symbols) = facts(&object);
        symbols.sort();
        let names: Vec<&str> = symbols.iter().map(|s| s.2.as_str()).collect();
        assert_eq!(names, ["first", "second", "third"]);
        // Each ends where the next begins, and the last at the end of __text.
        for pair in symbols.windows(2) {
            assert_eq!(pair[0].0 + pair[0].1, pair[1].0, "{symbols:?}");
        }
        let text = object.section_by_name("__text").unwrap();
        let last = symbols.last().unwrap();
        assert_eq!(last.0 + last.1, text.address() + text.size());
        let module = Module { context: None, base: 0, symbols: symbols.clone() };
        assert_eq!(module.symbol(symbols[0].0), Some("first"));
        assert_eq!(module.symbol(symbols[1].0 + 4), Some("second"));
        assert_eq!(module.symbol(text.address() + text.size()), None);
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
