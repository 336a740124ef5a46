//! Before the run: can the probe enter the program at all? A program the dynamic loader will not load the
//! probe into gives no samples, and "no samples" alone cannot say why; read from the file itself, each
//! case gets its own reason, and the program is not run.
//!
//! - ELF (Linux): no `PT_INTERP` means a static program (nothing loads libraries into it); another C
//!   library's loader (musl's `ld-musl-*`) or another class or machine than this build's cannot load a
//!   probe built for this one; a setuid or setgid program runs in the loader's secure-execution mode,
//!   which ignores `LD_PRELOAD` (glibc `elf/rtld.c`, `__libc_enable_secure`).
//! - Mach-O (macOS): dyld ignores `DYLD_INSERT_LIBRARIES` for restricted programs (a `__restrict`
//!   section in a `__RESTRICT` segment, the `CS_RESTRICT` flag), for programs in SIP-protected places (`/System`, `/usr` but
//!   `/usr/local`, `/bin`, `/sbin`), whose environment is stripped of `DYLD_*` for every program they
//!   start too, and for hardened-runtime programs (`CS_RUNTIME` in the code directory) unless entitled
//!   with `com.apple.security.cs.allow-dyld-environment-variables` (and, for an unsigned probe,
//!   `com.apple.security.cs.disable-library-validation`). The flags are read from the code signature
//!   (`LC_CODE_SIGNATURE`: a SuperBlob holding CodeDirectory and entitlements blobs, all big-endian).
//!   A FairPlay-encrypted program is left to run ("unknown"): dyld asks AMFI about it, whose rules are
//!   not public. The probe is universal (arm64 and x86_64, `fat.rs`) when the build had both Apple
//!   targets: a program is judged by the slice this machine runs (an Intel-only program on an arm64 Mac
//!   runs under Rosetta), and refused when the probe has no slice of that architecture: dyld stops a
//!   program whose inserted library it cannot load (dyld-1231.3 dyld/dyldMain.cpp:632-635).
//! - A script (`#!`) is judged by its interpreter (through `env`), to a bounded depth.
//!
//! Everything read is untrusted: every offset is bounds-checked and a file that does not parse is left
//! to run ("unknown"), never refused on a guess.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::backend::Backend;

/// How far a chain of script interpreters is followed.
const MAX_DEPTH: usize = 4;

/// The most bytes read from a file's start (headers, load commands, a script's first line).
const HEAD: usize = 64 << 10;

/// The most bytes of a code signature read.
const MAX_SIGNATURE: usize = 1 << 20;

/// What the inspection found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The file that will run, when it was found.
    pub path: Option<PathBuf>,
    pub verdict: Preflight,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preflight {
    /// The loader will load the probe.
    Enters,
    /// It will not: why.
    Refused(String),
    /// The file could not be read or parsed: let it run and see.
    Unknown(String),
}

impl Entry {
    /// Why the program must not be run, if it must not.
    pub fn refusal(&self) -> Option<&String> {
        match &self.verdict {
            Preflight::Refused(reason) => Some(reason),
            _ => None,
        }
    }

    /// Why no process loaded the probe, for a program the inspection let run.
    pub fn why_no_probe(&self) -> String {
        match &self.verdict {
            Preflight::Unknown(what) => format!(
                "{what}; the program may be static, or it (or the system) strips the preload variable before \
                 any process of it starts"
            ),
            _ => "the program (or the system) stripped the preload variable before any process of it started, \
                  or every process it ran is static"
                .to_owned(),
        }
    }
}

/// Inspects the program `exec` will run (`program` as given: a path, or a name searched in `PATH`).
///
/// `probe` holds the CPU types of the probe's slices ([`probe_cputypes`]): a Mach-O program runs as one
/// of its slices, and the probe must have a slice of that architecture.
pub fn inspect(program: &OsStr, probe: &[u32]) -> Entry {
    inspect_at(program, probe, 0)
}

fn inspect_at(program: &OsStr, probe: &[u32], depth: usize) -> Entry {
    let Some(path) = resolve(program) else {
        return Entry {
            path: None,
            verdict: Preflight::Unknown(format!("`{}` was not found", Path::new(program).display())),
        };
    };
    let verdict = match std::fs::File::open(&path) {
        Err(e) => Preflight::Unknown(format!("{} cannot be read ({e})", path.display())),
        Ok(file) => {
            let mut head = vec![0u8; HEAD];
            let n = read_at_most(&file, &mut head, 0);
            head.truncate(n);
            let meta = file.metadata().ok();
            judge(&path, &file, &head, meta.as_ref(), probe, depth)
        }
    };
    Entry { path: Some(path), verdict }
}

fn read_at_most(file: &std::fs::File, buf: &mut [u8], offset: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    done
}

fn judge(
    path: &Path,
    file: &std::fs::File,
    head: &[u8],
    meta: Option<&std::fs::Metadata>,
    probe: &[u32],
    depth: usize,
) -> Preflight {
    if let Some(meta) = meta {
        if let Some(reason) = secure_execution(meta) {
            return Preflight::Refused(format!("{} {reason}", path.display()));
        }
    }
    if head.starts_with(b"#!") {
        return script(path, head, probe, depth);
    }
    let macos = Backend::native() == Some(Backend::Macos);
    if head.starts_with(b"\x7fELF") && !macos {
        return match elf(head) {
            Some(info) => elf_verdict(path, &info),
            None => Preflight::Unknown(format!("{} is an ELF file that does not parse", path.display())),
        };
    }
    if macos && macho_magic(head) {
        return macho_verdict(path, file, head, probe);
    }
    Preflight::Unknown(format!("{} is not a program this system's loader reads", path.display()))
}

/// Why the loader runs a program with these permissions in secure-execution mode, which ignores the
/// preload variable: setuid or setgid to someone else.
fn secure_execution(meta: &std::fs::Metadata) -> Option<&'static str> {
    let mode = meta.mode();
    if mode & 0o4000 != 0 && meta.uid() != nix::unistd::geteuid().as_raw() {
        return Some("is setuid: the loader runs it in secure-execution mode, which ignores the preload variable");
    }
    if mode & 0o2000 != 0 && meta.gid() != nix::unistd::getegid().as_raw() {
        return Some("is setgid: the loader runs it in secure-execution mode, which ignores the preload variable");
    }
    None
}

/// `program` as `execvp` finds it: a path when it holds a `/`, else the first executable file of that
/// name in `PATH`.
fn resolve(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// A script: judged by its interpreter (`#!/usr/bin/env NAME` by NAME).
fn script(path: &Path, head: &[u8], probe: &[u32], depth: usize) -> Preflight {
    // The kernel reads the interpreter line from the first 256 bytes (BINPRM_BUF_SIZE).
    let line = &head[2..head.len().min(256)];
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let mut words = line.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty());
    let Some(interpreter) = words.next() else {
        return Preflight::Unknown(format!("{} has an empty #! line", path.display()));
    };
    let mut target = OsStr::from_bytes(interpreter).to_owned();
    if Path::new(&target).file_name() == Some(OsStr::new("env")) {
        // `env NAME` or `env -S NAME ARGS`: the first word that is not an option.
        if let Some(name) = words.find(|w| !w.starts_with(b"-")) {
            target = OsStr::from_bytes(name).to_owned();
        }
    }
    if depth >= MAX_DEPTH {
        return Preflight::Unknown(format!("{} starts a chain of more than {MAX_DEPTH} interpreters", path.display()));
    }
    let inner = inspect_at(&target, probe, depth + 1);
    match inner.verdict {
        Preflight::Refused(reason) => {
            Preflight::Refused(format!("the interpreter of the script {}: {reason}", path.display()))
        }
        other => other,
    }
}

/// What the ELF header and program headers say.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ElfInfo {
    class64: bool,
    little: bool,
    machine: u16,
    /// `PT_INTERP`: the loader that maps the program, when there is one.
    interp: Option<Vec<u8>>,
}

/// Parses the ELF header and finds `PT_INTERP`, from the file's first bytes (`None` when they do not
/// parse).
fn elf(bytes: &[u8]) -> Option<ElfInfo> {
    let class64 = match *bytes.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little = match *bytes.get(5)? {
        1 => true,
        2 => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if little { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let u64_at = |at: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(if little { u64::from_le_bytes(b) } else { u64::from_be_bytes(b) })
    };
    let word = |at: usize| -> Option<u64> {
        if class64 {
            u64_at(at)
        } else {
            u32_at(at).map(u64::from)
        }
    };
    let machine = u16_at(18)?;
    let (phoff, phentsize, phnum) = if class64 {
        (u64_at(32)?, u16_at(54)?, u16_at(56)?)
    } else {
        (u64::from(u32_at(28)?), u16_at(42)?, u16_at(44)?)
    };
    let mut interp = None;
    for i in 0..u64::from(phnum) {
        let at = usize::try_from(phoff.checked_add(i.checked_mul(u64::from(phentsize))?)?).ok()?;
        const PT_INTERP: u32 = 3;
        if u32_at(at)? != PT_INTERP {
            continue;
        }
        let field = |k: usize| at.checked_add(k).and_then(word);
        let (offset, size) = if class64 { (field(8)?, field(32)?) } else { (field(4)?, field(16)?) };
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        let text = bytes.get(start..end)?;
        interp = Some(text.split(|&b| b == 0).next().unwrap_or_default().to_vec());
        break;
    }
    Some(ElfInfo { class64, little, machine, interp })
}

/// The C library family a loader path belongs to.
fn loader_family(interp: &[u8]) -> &'static str {
    let text = String::from_utf8_lossy(interp);
    if text.contains("ld-musl") {
        "musl"
    } else if text.contains("ld-linux") {
        "glibc"
    } else {
        "other"
    }
}

/// This build's own ELF facts: the running threadleak binary's (the probe is built with it).
fn own_elf() -> Option<ElfInfo> {
    let exe = std::env::current_exe().ok()?;
    let file = std::fs::File::open(exe).ok()?;
    let mut head = vec![0u8; HEAD];
    let n = read_at_most(&file, &mut head, 0);
    elf(&head[..n])
}

fn elf_verdict(path: &Path, info: &ElfInfo) -> Preflight {
    let own = own_elf();
    if let Some(own) = &own {
        if (own.class64, own.little, own.machine) != (info.class64, info.little, info.machine) {
            return Preflight::Refused(format!(
                "{} is a {}-bit program for ELF machine {}: the probe is built for {}-bit machine {} and its \
                 loader would refuse it",
                path.display(),
                if info.class64 { 64 } else { 32 },
                info.machine,
                if own.class64 { 64 } else { 32 },
                own.machine
            ));
        }
    }
    let Some(interp) = &info.interp else {
        return Preflight::Refused(format!(
            "{} is statically linked: it has no dynamic loader (no PT_INTERP), so nothing loads the probe into it",
            path.display()
        ));
    };
    let theirs = loader_family(interp);
    let ours = own.as_ref().and_then(|o| o.interp.as_deref()).map(loader_family);
    if let Some(ours) = ours {
        if theirs != ours {
            let loader = String::from_utf8_lossy(interp);
            return Preflight::Refused(if theirs == "musl" {
                format!(
                    "{} is linked against musl (its loader is {loader}): the probe is built for {ours}",
                    path.display()
                )
            } else {
                format!("{}'s loader is {loader}, not {ours}'s: the probe is built for {ours}", path.display())
            });
        }
    }
    Preflight::Enters
}

fn macho_magic(head: &[u8]) -> bool {
    matches!(head.get(..4), Some([0xcf, 0xfa, 0xed, 0xfe] | [0xca, 0xfe, 0xba, 0xbe] | [0xca, 0xfe, 0xba, 0xbf]))
}

/// `CS_RESTRICT` and `CS_RUNTIME` (xnu `osfmk/kern/cs_blobs.h`).
const CS_RESTRICT: u32 = 0x800;
const CS_RUNTIME: u32 = 0x10000;

/// What a Mach-O says of itself that decides whether dyld honours `DYLD_INSERT_LIBRARIES`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MachoInfo {
    /// A `__RESTRICT` segment holding a `__restrict` section.
    restrict_segment: bool,
    /// FairPlay-encrypted (`LC_ENCRYPTION_INFO(_64)` with `cryptid` 1: an App Store build).
    encrypted: bool,
    /// Code-directory flags (`CS_*`), OR-ed over every code directory.
    cs_flags: u32,
    allow_dyld_environment: bool,
    disable_library_validation: bool,
}

/// The CPU types of a probe's slices, from its first bytes: those of a universal or thin Mach-O file, and
/// this build's own otherwise (an ELF probe is of this build's machine).
pub fn probe_cputypes(head: &[u8]) -> Vec<u32> {
    match macho_slices(head) {
        Some(slices) if !slices.is_empty() => slices.into_iter().map(|(cpu, _)| cpu).collect(),
        _ => vec![own_cputype()],
    }
}

/// `CPU_TYPE_ARM64` and `CPU_TYPE_X86_64` (mach/machine.h).
const CPU_TYPE_ARM64: u32 = 0x0100_000c;
const CPU_TYPE_X86_64: u32 = 0x0100_0007;

/// The CPU type of this build's architecture.
fn own_cputype() -> u32 {
    match std::env::consts::ARCH {
        "aarch64" => CPU_TYPE_ARM64,
        _ => CPU_TYPE_X86_64,
    }
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The slices of a thin or universal Mach-O file: each one's CPU type and offset; `None` when the header
/// does not parse.
fn macho_slices(head: &[u8]) -> Option<Vec<(u32, u64)>> {
    match head.get(..4)? {
        [0xcf, 0xfa, 0xed, 0xfe] => Some(vec![(le32(head, 4)?, 0)]),
        [0xca, 0xfe, 0xba, magic] => {
            let wide = *magic == 0xbf;
            let count = be32(head, 4)?;
            let entry = if wide { 32 } else { 20 };
            (0..count.min(64) as usize)
                .map(|i| {
                    let at = 8 + i * entry;
                    let offset = if wide {
                        u64::from(be32(head, at + 8)?) << 32 | u64::from(be32(head, at + 12)?)
                    } else {
                        u64::from(be32(head, at + 8)?)
                    };
                    Some((be32(head, at)?, offset))
                })
                .collect()
        }
        _ => None,
    }
}

/// A CPU type's name (mach/machine.h).
fn cpu_name(cputype: u32) -> String {
    match cputype {
        CPU_TYPE_ARM64 => "arm64".to_owned(),
        CPU_TYPE_X86_64 => "x86_64".to_owned(),
        0x0000_000c => "arm".to_owned(),
        0x0000_0007 => "i386".to_owned(),
        0x0100_0012 => "ppc64".to_owned(),
        0x0000_0012 => "ppc".to_owned(),
        other => format!("CPU type {other:#x}"),
    }
}

/// Reads the load commands of a thin 64-bit Mach-O (`header`: its first bytes) and, through `read`, its
/// code signature.
fn macho(header: &[u8], read: impl Fn(u64, usize) -> Option<Vec<u8>>) -> Option<MachoInfo> {
    if header.get(..4)? != [0xcf, 0xfa, 0xed, 0xfe] {
        return None;
    }
    let ncmds = le32(header, 16)?;
    let mut info = MachoInfo::default();
    let mut at = 32usize;
    for _ in 0..ncmds.min(4096) {
        let (cmd, size) = (le32(header, at)?, le32(header, at.checked_add(4)?)? as usize);
        const LC_SEGMENT_64: u32 = 0x19;
        const LC_CODE_SIGNATURE: u32 = 0x1d;
        const LC_ENCRYPTION_INFO: u32 = 0x21;
        const LC_ENCRYPTION_INFO_64: u32 = 0x2c;
        // dyld's test is a `__RESTRICT` segment with a `__restrict` section (dyld-1231.3
        // common/MachOFile.cpp:1709-1719, `MachOFile::isRestricted`): names are 16 bytes, NUL-padded.
        if cmd == LC_SEGMENT_64 && header.get(at + 8..at + 24).is_some_and(|n| n == name16(b"__RESTRICT")) {
            let sections = le32(header, at + 64)?.min(256) as usize;
            info.restrict_segment |= (0..sections).any(|i| {
                let sect = at + 72 + i * 80;
                header.get(sect..sect + 16).is_some_and(|n| n == name16(b"__restrict"))
            });
        }
        // `MachOFile::isFairPlayEncrypted` (MachOFile.cpp:2598-2610): `cryptid` 1, after `cmd`, `cmdsize`,
        // `cryptoff` and `cryptsize`.
        if matches!(cmd, LC_ENCRYPTION_INFO | LC_ENCRYPTION_INFO_64) && le32(header, at + 16) == Some(1) {
            info.encrypted = true;
        }
        if cmd == LC_CODE_SIGNATURE {
            let (offset, len) = (le32(header, at + 8)?, le32(header, at + 12)? as usize);
            if let Some(blob) = read(u64::from(offset), len.min(MAX_SIGNATURE)) {
                code_signature(&blob, &mut info);
            }
        }
        if size < 8 {
            return None;
        }
        at = at.checked_add(size)?;
    }
    Some(info)
}

/// A Mach-O segment or section name as the load commands hold it: 16 bytes, NUL-padded.
fn name16(name: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..name.len()].copy_from_slice(name);
    out
}

/// Reads a SuperBlob (`0xfade0cc0`): the flags of each CodeDirectory (`0xfade0c02`) and the entitlements
/// (`0xfade7171`, an XML property list) that allow dyld's environment variables.
fn code_signature(blob: &[u8], info: &mut MachoInfo) {
    if be32(blob, 0) != Some(0xfade_0cc0) {
        return;
    }
    let count = be32(blob, 8).unwrap_or(0).min(64) as usize;
    for i in 0..count {
        let Some(offset) = be32(blob, 12 + i * 8 + 4).map(|o| o as usize) else { return };
        match be32(blob, offset) {
            Some(0xfade_0c02) => info.cs_flags |= be32(blob, offset.saturating_add(12)).unwrap_or(0),
            Some(0xfade_7171) => {
                let len = be32(blob, offset.saturating_add(4)).unwrap_or(0) as usize;
                let text = blob.get(offset.saturating_add(8)..offset.saturating_add(len)).unwrap_or_default();
                let entitled = |key: &[u8]| {
                    text.windows(key.len()).position(|w| w == key).is_some_and(|p| {
                        let rest = &text[p + key.len()..];
                        let rest = &rest[..rest.len().min(64)];
                        rest.windows(7).any(|w| w == b"<true/>")
                    })
                };
                info.allow_dyld_environment = entitled(b"com.apple.security.cs.allow-dyld-environment-variables");
                info.disable_library_validation = entitled(b"com.apple.security.cs.disable-library-validation");
            }
            _ => {}
        }
    }
}

/// Whether a path is one SIP protects (`/System`, `/usr` but `/usr/local`, `/bin`, `/sbin`).
fn sip_protected(path: &Path) -> bool {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let under = |p: &str| path.starts_with(p);
    (under("/System") || under("/usr") || under("/bin") || under("/sbin")) && !under("/usr/local")
}

/// The slice of a program this machine runs, its offset, and whether Rosetta runs it. The kernel takes
/// the slice of its own CPU family from a universal file (`fatfile_getbestarch`, bsd/kern/mach_fat.c:164-180,
/// graded by `grade_binary`, bsd/dev/arm/kern_machdep.c:73-100 and bsd/dev/i386/kern_machdep.c in
/// xnu-11417.121.6): on arm64 the arm64 slice. A program with none runs its x86_64 slice under Rosetta,
/// whose launch path is not in the public source (`CONFIG_ROSETTA`, bsd/kern/kern_exec.c).
fn slice_run(slices: &[(u32, u64)]) -> Option<(u32, u64, bool)> {
    let host = own_cputype();
    if let Some(&(cpu, at)) = slices.iter().find(|&&(cpu, _)| cpu == host) {
        return Some((cpu, at, false));
    }
    (host == CPU_TYPE_ARM64)
        .then(|| slices.iter().find(|&&(cpu, _)| cpu == CPU_TYPE_X86_64))
        .flatten()
        .map(|&(cpu, at)| (cpu, at, true))
}

fn macho_verdict(path: &Path, file: &std::fs::File, head: &[u8], probe: &[u32]) -> Preflight {
    if sip_protected(path) {
        return Preflight::Refused(format!(
            "{} is protected by SIP: dyld ignores DYLD_* variables for it and strips them from every program it \
             starts",
            path.display()
        ));
    }
    let Some(slices) = macho_slices(head) else {
        return Preflight::Unknown(format!("{} is a Mach-O file whose header does not parse", path.display()));
    };
    let has = || slices.iter().map(|&(cpu, _)| cpu_name(cpu)).collect::<Vec<_>>().join(", ");
    let Some((cpu, slice, translated)) = slice_run(&slices) else {
        return Preflight::Refused(format!(
            "{} has no slice this {} machine runs (it has {})",
            path.display(),
            cpu_name(own_cputype()),
            has()
        ));
    };
    if !probe.contains(&cpu) {
        // dyld stops a program whose inserted library it cannot load (dyld-1231.3 dyld/dyldMain.cpp:632-635):
        // run, it would die at launch.
        let probe_has: Vec<String> = probe.iter().map(|&c| cpu_name(c)).collect();
        return Preflight::Refused(format!(
            "{} runs as {}{} (it has {}), and the probe has no {} slice (it has {}): dyld would stop it at \
             launch, unable to load the probe; a build of threadleak with both Apple targets installed carries both",
            path.display(),
            cpu_name(cpu),
            if translated { " under Rosetta" } else { "" },
            has(),
            cpu_name(cpu),
            probe_has.join(", ")
        ));
    }
    let read = |offset: u64, len: usize| {
        let mut buf = vec![0u8; len];
        let n = read_at_most(file, &mut buf, slice + offset);
        buf.truncate(n);
        Some(buf)
    };
    let Some(header) = read(0, HEAD) else { return Preflight::Unknown("unreadable".into()) };
    match macho(&header, read) {
        None => Preflight::Unknown(format!("{} is a Mach-O file that does not parse", path.display())),
        Some(info) => macho_info_verdict(path, &info),
    }
}

fn macho_info_verdict(path: &Path, info: &MachoInfo) -> Preflight {
    let p = path.display();
    if info.restrict_segment || info.cs_flags & CS_RESTRICT != 0 {
        return Preflight::Refused(format!(
            "{p} is restricted (a __RESTRICT,__restrict section or CS_RESTRICT): dyld ignores DYLD_* variables for it"
        ));
    }
    if info.cs_flags & CS_RUNTIME != 0 {
        if !info.allow_dyld_environment {
            return Preflight::Refused(format!(
                "{p} uses the hardened runtime without the com.apple.security.cs.allow-dyld-environment-variables \
                 entitlement: dyld ignores DYLD_INSERT_LIBRARIES for it"
            ));
        }
        if !info.disable_library_validation {
            return Preflight::Refused(format!(
                "{p} uses the hardened runtime with library validation: dyld would refuse the probe, which is not \
                 signed by the program's team (com.apple.security.cs.disable-library-validation is not granted)"
            ));
        }
    }
    if info.encrypted {
        // dyld passes it to AMFI's policy as AMFI_DYLD_INPUT_PROC_IS_ENCRYPTED (dyld-1231.3
        // dyld/DyldDelegates.cpp:145-146), whose answer is not in any public source.
        return Preflight::Unknown(format!(
            "{p} is FairPlay-encrypted (an App Store build): dyld asks AMFI, whose rules are not public, whether it \
             may take DYLD_* variables"
        ));
    }
    Preflight::Enters
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF header with one program header, PT_INTERP when `interp` is given.
    fn elf64(machine: u16, interp: Option<&str>) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56 + 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        let kind: u32 = if interp.is_some() { 3 } else { 1 };
        b[ph..ph + 4].copy_from_slice(&kind.to_le_bytes());
        if let Some(path) = interp {
            b[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
            b[ph + 32..ph + 40].copy_from_slice(&((path.len() + 1) as u64).to_le_bytes());
            b[120..120 + path.len()].copy_from_slice(path.as_bytes());
        }
        b
    }

    #[test]
    fn elf_headers_give_their_loader() {
        let info = elf(&elf64(62, Some("/lib64/ld-linux-x86-64.so.2"))).unwrap();
        assert_eq!(info.interp.as_deref(), Some(&b"/lib64/ld-linux-x86-64.so.2"[..]));
        assert!(info.class64 && info.little && info.machine == 62);
        assert_eq!(elf(&elf64(62, None)).unwrap().interp, None);
        assert_eq!(loader_family(b"/lib/ld-musl-x86_64.so.1"), "musl");
        assert_eq!(loader_family(b"/nix/store/abc-glibc-2.39/lib/ld-linux-x86-64.so.2"), "glibc");
    }

    #[test]
    fn truncated_or_hostile_elf_headers_do_not_parse() {
        let full = elf64(62, Some("/lib64/ld-linux-x86-64.so.2"));
        for len in 0..full.len() {
            // Never a panic; a prefix that lacks the interpreter string cannot claim one.
            if let Some(info) = elf(&full[..len]) {
                assert!(info.interp.is_none() || len >= 120 + 28);
            }
        }
        let mut hostile = full.clone();
        hostile[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(elf(&hostile), None);
        let mut hostile = full;
        hostile[64 + 32..64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(elf(&hostile), None);
    }

    #[test]
    fn each_elf_case_has_its_own_reason() {
        let own = own_elf().unwrap();
        let p = Path::new("/x/prog");
        let ours = |interp: Option<&str>| ElfInfo { interp: interp.map(|s| s.as_bytes().to_vec()), ..own.clone() };
        let own_loader = own.interp.clone().unwrap();
        assert_eq!(elf_verdict(p, &ours(Some(std::str::from_utf8(&own_loader).unwrap()))), Preflight::Enters);
        let reason = |v: Preflight| match v {
            Preflight::Refused(r) => r,
            other => panic!("{other:?}"),
        };
        assert!(reason(elf_verdict(p, &ours(None))).contains("statically linked"));
        assert!(reason(elf_verdict(p, &ours(Some("/lib/ld-musl-x86_64.so.1")))).contains("linked against musl"));
        assert!(reason(elf_verdict(p, &ours(Some("/system/bin/linker64")))).contains("loader is /system/bin/linker64"));
        let other = ElfInfo { class64: false, ..ours(Some("/lib/ld-linux.so.2")) };
        assert!(reason(elf_verdict(p, &other)).contains("32-bit program"));
    }

    /// A segment command named `segment` with one section named `section`.
    fn segment(segment: &[u8], section: &[u8]) -> Vec<u8> {
        let mut seg = vec![0u8; 72 + 80];
        seg[..4].copy_from_slice(&0x19u32.to_le_bytes());
        seg[4..8].copy_from_slice(&(72u32 + 80).to_le_bytes());
        seg[8..8 + segment.len()].copy_from_slice(segment);
        seg[64..68].copy_from_slice(&1u32.to_le_bytes());
        seg[72..72 + section.len()].copy_from_slice(section);
        seg[88..88 + segment.len()].copy_from_slice(segment);
        seg
    }

    /// An `LC_ENCRYPTION_INFO_64` with `cryptid`.
    fn encryption(cryptid: u32) -> Vec<u8> {
        let mut cmd = vec![0u8; 24];
        cmd[..4].copy_from_slice(&0x2cu32.to_le_bytes());
        cmd[4..8].copy_from_slice(&24u32.to_le_bytes());
        cmd[8..12].copy_from_slice(&0x4000u32.to_le_bytes());
        cmd[12..16].copy_from_slice(&0x8000u32.to_le_bytes());
        cmd[16..20].copy_from_slice(&cryptid.to_le_bytes());
        cmd
    }

    /// A thin arm64 Mach-O header with a __RESTRICT,__restrict section (or not) and a code signature at
    /// `sig_offset`.
    fn macho64(restrict: bool, signature: Option<(u32, u32)>) -> Vec<u8> {
        let extra = if restrict { vec![segment(b"__RESTRICT", b"__restrict")] } else { Vec::new() };
        macho64_with(extra, signature)
    }

    fn macho64_with(extra: Vec<Vec<u8>>, signature: Option<(u32, u32)>) -> Vec<u8> {
        let mut b = vec![0u8; 32];
        b[..4].copy_from_slice(&[0xcf, 0xfa, 0xed, 0xfe]);
        let mut n = extra.len() as u32;
        let mut cmds: Vec<u8> = extra.concat();
        if let Some((offset, len)) = signature {
            let mut sig = vec![0u8; 16];
            sig[..4].copy_from_slice(&0x1du32.to_le_bytes());
            sig[4..8].copy_from_slice(&16u32.to_le_bytes());
            sig[8..12].copy_from_slice(&offset.to_le_bytes());
            sig[12..16].copy_from_slice(&len.to_le_bytes());
            cmds.extend(sig);
            n += 1;
        }
        b[16..20].copy_from_slice(&n.to_le_bytes());
        b[20..24].copy_from_slice(&(cmds.len() as u32).to_le_bytes());
        b.extend(cmds);
        b
    }

    /// A SuperBlob with one CodeDirectory of `flags` and, optionally, an entitlements blob.
    fn superblob(flags: u32, entitlements: Option<&str>) -> Vec<u8> {
        let mut cd = vec![0u8; 44];
        cd[..4].copy_from_slice(&0xfade0c02u32.to_be_bytes());
        cd[4..8].copy_from_slice(&44u32.to_be_bytes());
        cd[12..16].copy_from_slice(&flags.to_be_bytes());
        let mut blobs = vec![cd];
        if let Some(xml) = entitlements {
            let mut e = 0xfade7171u32.to_be_bytes().to_vec();
            e.extend(((8 + xml.len()) as u32).to_be_bytes());
            e.extend(xml.as_bytes());
            blobs.push(e);
        }
        let header = 12 + 8 * blobs.len();
        let mut out = 0xfade0cc0u32.to_be_bytes().to_vec();
        out.extend(0u32.to_be_bytes());
        out.extend((blobs.len() as u32).to_be_bytes());
        let mut offset = header;
        for (i, blob) in blobs.iter().enumerate() {
            out.extend((i as u32).to_be_bytes());
            out.extend((offset as u32).to_be_bytes());
            offset += blob.len();
        }
        for blob in blobs {
            out.extend(blob);
        }
        out
    }

    fn read_from(sig: Vec<u8>) -> impl Fn(u64, usize) -> Option<Vec<u8>> {
        move |offset, len| (offset == 4096).then(|| sig[..len.min(sig.len())].to_vec())
    }

    #[test]
    fn mach_o_code_signatures_say_hardened_restricted_or_entitled() {
        let p = Path::new("/Users/me/prog");
        let verdict = |restrict: bool, sig: Vec<u8>| {
            let header = macho64(restrict, Some((4096, sig.len() as u32)));
            macho_info_verdict(p, &macho(&header, read_from(sig)).unwrap())
        };
        assert_eq!(verdict(false, superblob(0x2, None)), Preflight::Enters);
        let hardened = verdict(false, superblob(CS_RUNTIME, None));
        assert!(matches!(&hardened, Preflight::Refused(r) if r.contains("hardened runtime without")), "{hardened:?}");
        let entitled = "<key>com.apple.security.cs.allow-dyld-environment-variables</key><true/>";
        let validated = verdict(false, superblob(CS_RUNTIME, Some(entitled)));
        assert!(matches!(&validated, Preflight::Refused(r) if r.contains("library validation")), "{validated:?}");
        let both = format!("{entitled}<key>com.apple.security.cs.disable-library-validation</key><true/>");
        assert_eq!(verdict(false, superblob(CS_RUNTIME, Some(&both))), Preflight::Enters);
        let restricted = verdict(true, superblob(0, None));
        assert!(matches!(&restricted, Preflight::Refused(r) if r.contains("restricted")), "{restricted:?}");
        assert!(matches!(verdict(false, superblob(CS_RESTRICT, None)), Preflight::Refused(_)));
    }

    #[test]
    fn only_dyld_s_own_restriction_refuses_and_encryption_is_left_to_run() {
        let p = Path::new("/Users/me/prog");
        let verdict = |extra: Vec<Vec<u8>>| {
            let sig = superblob(0x2, None);
            let header = macho64_with(extra, Some((4096, sig.len() as u32)));
            macho_info_verdict(p, &macho(&header, read_from(sig)).unwrap())
        };
        assert!(matches!(verdict(vec![segment(b"__RESTRICT", b"__restrict")]), Preflight::Refused(_)));
        // dyld wants both names exactly: a segment alone, another section, a longer name are not restricted.
        for (seg, sect) in [
            (&b"__RESTRICT"[..], &b"__data"[..]),
            (b"__RESTRICTED", b"__restrict"),
            (b"__RESTRICT", b"__restricted"),
            (b"__TEXT", b"__restrict"),
        ] {
            assert_eq!(verdict(vec![segment(seg, sect)]), Preflight::Enters, "{seg:?} {sect:?}");
        }
        let encrypted = verdict(vec![encryption(1)]);
        assert!(matches!(&encrypted, Preflight::Unknown(r) if r.contains("FairPlay")), "{encrypted:?}");
        assert_eq!(verdict(vec![encryption(0)]), Preflight::Enters);
    }

    #[test]
    fn programs_built_for_macos_are_judged_by_their_slices_and_signature() {
        // fixtures/macho/tiny.c, built with zig for each architecture (the commands are in the file).
        let arm64: &[u8] = include_bytes!("../../../fixtures/macho/tiny-arm64");
        let x86_64: &[u8] = include_bytes!("../../../fixtures/macho/tiny-x86_64");
        let dir = tempfile::tempdir().unwrap();
        let verdict = |name: &str, bytes: &[u8], probe: &[u32]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            macho_verdict(&path, &std::fs::File::open(&path).unwrap(), &bytes[..HEAD.min(bytes.len())], probe)
        };
        let (own, other, own_name, other_name) = match std::env::consts::ARCH {
            "aarch64" => (arm64, x86_64, "arm64", "x86_64"),
            _ => (x86_64, arm64, "x86_64", "arm64"),
        };
        // A probe of this machine's architecture only, as a build without the other Apple target has.
        let thin_probe = [own_cputype()];
        assert_eq!(verdict("own", own, &thin_probe), Preflight::Enters);
        let refused = verdict("other", other, &thin_probe);
        if own_name == "arm64" {
            // Rosetta would run it, as x86_64: the probe needs that slice.
            let reason =
                "runs as x86_64 under Rosetta (it has x86_64), and the probe has no x86_64 slice (it has arm64)";
            assert!(matches!(&refused, Preflight::Refused(r) if r.contains(reason)), "{refused:?}");
        } else {
            let reason = format!("has no slice this {own_name} machine runs (it has {other_name})");
            assert!(matches!(&refused, Preflight::Refused(r) if r.contains(&reason)), "{refused:?}");
        }
        // The universal probe build.rs makes, from the two thin programs (Mach-O files both).
        let universal = super::super::fat::universal(&[x86_64, arm64]).unwrap();
        let probe = probe_cputypes(&universal);
        assert_eq!(probe, [CPU_TYPE_X86_64, CPU_TYPE_ARM64]);
        assert_eq!(verdict("own-universal-probe", own, &probe), Preflight::Enters);
        assert_eq!(verdict("universal", &universal, &thin_probe), Preflight::Enters);
        assert_eq!(verdict("universal-universal-probe", &universal, &probe), Preflight::Enters);
        if own_name == "arm64" {
            assert_eq!(verdict("rosetta", x86_64, &probe), Preflight::Enters);
        }
        // An ELF probe (or an unreadable one) is of this build's architecture.
        assert_eq!(probe_cputypes(b"\x7fELF"), [own_cputype()]);
        // The arm64 file is signed ad hoc by the linker: read, and neither hardened nor restricted.
        let header = &arm64[..HEAD.min(arm64.len())];
        let info =
            macho(header, |offset, len| arm64.get(offset as usize..).map(|b| b[..len.min(b.len())].to_vec())).unwrap();
        assert_ne!(info.cs_flags, 0, "no code directory read: {info:?}");
        assert_eq!(info.cs_flags & (CS_RUNTIME | CS_RESTRICT), 0, "{info:?}");
    }

    #[test]
    fn hostile_mach_o_headers_are_unknown_not_refused() {
        let sig = superblob(CS_RUNTIME, None);
        let header = macho64(false, Some((4096, sig.len() as u32)));
        for len in 0..header.len() {
            let _ = macho(&header[..len], read_from(sig.clone()));
        }
        for len in 0..sig.len() {
            let mut info = MachoInfo::default();
            code_signature(&sig[..len], &mut info);
        }
        let mut fat = vec![0xca, 0xfe, 0xba, 0xbe];
        fat.extend(2u32.to_be_bytes());
        for (cpu, offset) in [(0x0100_0007u32, 0x4000u32), (0x0100_000c, 0x8000)] {
            fat.extend(cpu.to_be_bytes());
            fat.extend(0u32.to_be_bytes());
            fat.extend(offset.to_be_bytes());
            fat.extend(0u32.to_be_bytes());
            fat.extend(0u32.to_be_bytes());
        }
        assert_eq!(macho_slices(&fat), Some(vec![(0x0100_0007, 0x4000), (0x0100_000c, 0x8000)]));
        assert_eq!(macho_slices(&fat[..30]), None);
    }

    #[test]
    fn scripts_are_judged_by_their_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let run = |text: &str| {
            let path = dir.path().join("script");
            std::fs::write(&path, text).unwrap();
            let head = std::fs::read(&path).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            judge(&path, &file, &head, None, &[own_cputype()], 0)
        };
        assert_eq!(run("#!/bin/sh\necho hi\n"), Preflight::Enters);
        assert_eq!(run("#!/usr/bin/env sh\necho hi\n"), Preflight::Enters);
        assert!(matches!(run("#!/nonexistent/interp\n"), Preflight::Unknown(_)));
        assert!(matches!(run("#!\n"), Preflight::Unknown(_)));
        // A script whose interpreter is the script itself stops at the depth bound.
        let path = dir.path().join("loop");
        std::fs::write(&path, format!("#!{}\n", path.display())).unwrap();
        let head = std::fs::read(&path).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert!(
            matches!(judge(&path, &file, &head, None, &[own_cputype()], 0), Preflight::Unknown(r) if r.contains("chain"))
        );
    }
}
