//! Names for the frames of a stack given as modules and offsets: functions from each module's symbol
//! tables, and file and line from its DWARF debug information where it has some (`addr2line`; the
//! `symbolize` feature, which the `threadleak` binary turns on; without it, `bare.rs` stands in).

use std::collections::HashMap;
use std::path::Path;

use super::short_rust_name;
use crate::record::Frame;

/// Turns modules and offsets into functions and source lines, each module read once.
///
/// The modules are named by the program (a line of the probe's channel, which the program can write), so
/// a name is trusted with nothing: a file is opened without blocking (a FIFO named like a debug file
/// does not hold the runner), read only when it is a regular file, once however many names it has (by
/// device and inode: 20,000 links to one library are one read), within `READ_BUDGET` bytes in all and
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

/// Why frames of a module that is not on disk keep their module and offset.
const NOT_ON_DISK: &str = "some frames are in modules that are not on disk (a library deleted since it was loaded, or \
                           on macOS a system library, which lives only in the dyld shared cache): they keep their \
                           module and offset";

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
            let bare = || Frame::unnamed(module, *offset);
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
        // A module that is not on disk: a library deleted since it was loaded, or, on macOS, a system
        // library, which lives only in the dyld shared cache from macOS 11 ("copies of dynamic libraries
        // are no longer present on the filesystem", macOS Big Sur 11.0.1 release notes); its frames keep
        // their module and offset, and that is said.
        if std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            self.shortfall.get_or_insert_with(|| NOT_ON_DISK.to_owned());
            self.modules.insert(path.to_owned(), None);
            return None;
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
        // A pipe of the test's own, by name: not /dev/stdin, which is a regular file when the tests' input is.
        let (pipe, _writer) = nix::unistd::pipe().unwrap();
        let pipe = format!("/dev/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&pipe));
        let mut names = vec![fifo.to_str().unwrap().to_owned(), "/dev/zero".to_owned(), pipe];
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
    fn frames_of_a_module_not_on_disk_keep_their_module_and_offset_and_it_is_said() {
        let mut symbolizer = Symbolizer::default();
        let gone = "/usr/lib/system/libsystem_pthread.dylib-not-on-this-disk";
        let frames = symbolizer.frames(&[(gone.to_owned(), 0x1234), (gone.to_owned(), 0x10)]);
        assert_eq!((frames[0].module.as_str(), frames[0].offset, frames[0].function.as_deref()), (gone, 0x1234, None));
        assert_eq!(frames.len(), 2);
        assert!(
            symbolizer.shortfall().is_some_and(|s| s.contains("dyld shared cache")),
            "{:?}",
            symbolizer.shortfall()
        );
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
    fn mach_o_functions_are_sized_by_the_next_symbol_and_their_section() {
        use object::{Object as _, ObjectSection as _};
        // fixtures/macho/symbols.c, built for arm64 macOS with zig (the command is in the file).
        let bytes = include_bytes!("../../../fixtures/macho/symbols.aarch64.o");
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
        let text = super::super::frame_text(&frames[0]);
        assert!(text.contains("here") && text.contains("symbolize.rs:"), "{text}");
        assert_eq!(s.frames(&[("?".into(), 0x10)])[0].function, None);
    }
}
