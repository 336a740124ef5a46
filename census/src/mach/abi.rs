//! The ABI manifest: every hand-declared Mach type, constant, function and struct, recorded by the
//! macros that declare them, and the C program that checks them against the Darwin SDK headers.
//!
//! The declarations in `port.rs`, `exception.rs`, `kern_return.rs` and `ffi.rs` go through the macros
//! below, which both declare the Rust item and record how it was declared. [`c_check`] turns the record
//! into C `_Static_assert`s: `ci/abi-check.sh` compiles them with `zig cc -target <arch>-macos` against the
//! SDK headers zig ships, so a wrong width, signedness, pointer level, value or field offset fails CI.

/// Declares C typedefs and records them in `TYPES`.
macro_rules! mach_types {
    ($($(#[$meta:meta])* pub type $name:ident = $ty:ty;)+) => {
        $($(#[$meta])* #[allow(non_camel_case_types)] pub type $name = $ty;)+
        /// The typedefs declared here, for the ABI check: (C name, Rust type).
        pub const TYPES: &[(&str, &str)] = &[$((stringify!($name), stringify!($ty))),+];
    };
}

/// Declares integer constants and records them in `CONSTS`.
macro_rules! mach_consts {
    ($($(#[$meta:meta])* pub const $name:ident: $ty:ty = $value:expr;)+) => {
        $($(#[$meta])* pub const $name: $ty = $value;)+
        /// The constants declared here, for the ABI check: (C name, value).
        pub const CONSTS: &[(&str, i64)] = &[$((stringify!($name), $name as i64)),+];
    };
}

/// A function's signature as written, for the manifest.
macro_rules! function {
    ($name:ident($($ty:ty),*) -> $ret:ty) => {
        $crate::mach::abi::Function { name: stringify!($name), ret: stringify!($ret), args: &[$(stringify!($ty)),*] }
    };
}

/// Declares libSystem functions and records their signatures in `FUNCTIONS`. The declarations compile
/// everywhere (and are type-checked everywhere); only macOS code calls them, so only macOS links them.
macro_rules! mach_fns {
    ($($(#[doc = $doc:literal])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)+) => {
        #[allow(non_snake_case)]
        unsafe extern "C" {
            $($(#[doc = $doc])* pub fn $name($($arg: $ty),*) -> $ret;)+
        }
        /// The functions declared here, for the ABI check.
        pub const FUNCTIONS: &[$crate::mach::abi::Function] = &[$(
            function!($name($($ty),*) -> $ret)
        ),+];
    };
}

/// Records the signatures of libSystem functions the backends take from the `mach2` and `libc` crates,
/// in `BORROWED`, as this crate expects them. On macOS each also becomes a constant of that function
/// pointer type initialised with the crate's item, so the compiler checks that the crate declares the
/// same signature (clippy and the zig link build both Apple targets); the C check compares the same
/// signature with the SDK headers. A crate and the headers are thereby held to one declaration.
macro_rules! borrowed_fns {
    ($($(#[doc = $doc:literal])* $path:path => fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)+) => {
        $(
            #[cfg(target_os = "macos")]
            const _: unsafe extern "C" fn($($ty),*) -> $ret = $path;
        )+
        /// The functions taken from crates, for the ABI check.
        pub const BORROWED: &[$crate::mach::abi::Function] = &[$(
            function!($name($($ty),*) -> $ret)
        ),+];
    };
}

/// Declares `repr(C)` structs and records their fields in `STRUCTS`.
macro_rules! mach_structs {
    ($($(#[doc = $doc:literal])* pub struct $name:ident { $(pub $field:ident: $ty:ty,)+ })+) => {
        $(
            $(#[doc = $doc])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
            #[allow(non_camel_case_types)]
            pub struct $name { $(pub $field: $ty,)+ }
        )+
        /// The structs declared here, for the ABI check.
        pub const STRUCTS: &[$crate::mach::abi::Struct] = &[$(
            $crate::mach::abi::Struct {
                name: stringify!($name),
                fields: &[$((stringify!($field), stringify!($ty))),+],
            }
        ),+];
    };
}

/// A function as declared in Rust: name, return type and argument types, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: &'static str,
    pub ret: &'static str,
    pub args: &'static [&'static str],
}

/// A struct as declared in Rust: its name and (field, type) pairs, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Struct {
    pub name: &'static str,
    pub fields: &'static [(&'static str, &'static str)],
}

/// Everything hand-declared, for one architecture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub types: Vec<(String, String)>,
    pub consts: Vec<(String, i64)>,
    pub functions: Vec<Function>,
    pub structs: Vec<Struct>,
    /// C types a crate declares as another type of the same size and alignment (a pointer as an
    /// integer): (C type, Rust type).
    pub same_size: Vec<(String, String)>,
}

/// The architectures the check runs for, as Rust and zig name them.
pub const ARCHES: &[(&str, &str)] = &[("aarch64", "aarch64-macos"), ("x86_64", "x86_64-macos")];

/// Everything the Mach backends declare by hand, with the constants' values for `arch` (`aarch64` or
/// `x86_64`; only `THREAD_STATE_NONE` differs).
pub fn manifest(arch: &str) -> Manifest {
    use super::{exception, ffi, kern_return, port};
    let mut m = Manifest::default();
    for types in [port::TYPES, exception::TYPES, kern_return::TYPES, ffi::TYPES] {
        m.types.extend(types.iter().map(|&(n, t)| (n.to_owned(), t.to_owned())));
    }
    for consts in [port::CONSTS, exception::CONSTS, kern_return::CONSTS, ffi::CONSTS] {
        m.consts.extend(consts.iter().map(|&(n, v)| (n.to_owned(), v)));
    }
    m.consts.push(("THREAD_STATE_NONE".to_owned(), i64::from(exception::thread_state_none(arch))));
    m.functions.extend_from_slice(ffi::FUNCTIONS);
    m.functions.extend_from_slice(ffi::BORROWED);
    m.structs.extend_from_slice(ffi::STRUCTS);
    // libc declares `pthread_t` (a pointer in <pthread.h>) as `usize`.
    m.same_size.push(("pthread_t".to_owned(), "usize".to_owned()));
    m
}

/// The C spelling of a Rust type as written in a declaration (`*mut *mut mach_port_name_t` becomes
/// `mach_port_name_t **`); typedef names are the same in both languages.
pub fn c_type(rust: &str) -> String {
    let rust = rust.trim();
    if let Some(inner) = rust.strip_prefix("*mut ") {
        return format!("{} *", c_type(inner));
    }
    if let Some(inner) = rust.strip_prefix("*const ") {
        return format!("const {} *", c_type(inner));
    }
    match rust {
        "u8" => "uint8_t",
        "i8" => "int8_t",
        "u16" => "uint16_t",
        "i16" => "int16_t",
        "u32" => "uint32_t",
        "i32" => "int32_t",
        "u64" => "uint64_t",
        "i64" => "int64_t",
        "usize" => "uintptr_t",
        "isize" => "intptr_t",
        "c_void" | "()" => "void",
        other => other,
    }
    .to_owned()
}

/// A C declaration of `name` with Rust type `rust`, arrays included (`[natural_t; 2]` becomes
/// `natural_t name[2]`).
fn c_field(name: &str, rust: &str) -> String {
    let rust = rust.trim();
    if let Some(inner) = rust.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if let Some((elem, len)) = inner.rsplit_once(';') {
            return format!("{} {name}[{}]", c_type(elem), len.trim());
        }
    }
    format!("{} {name}", c_type(rust))
}

/// A C translation unit that compiles only if every declaration in `m` matches the SDK headers.
pub fn c_check(m: &Manifest) -> String {
    let mut c = String::from(
        "/* Generated by threadleak's ABI check: each assertion compares a Rust declaration with the SDK. */\n\
         #include <mach/mach.h>\n#include <mach_debug/ipc_info.h>\n#include <libproc.h>\n#include <pthread.h>\n\
         #include <sys/sysctl.h>\n#include <stddef.h>\n#include <stdint.h>\n\n\
         #define SAME_TYPE(a, b) __builtin_types_compatible_p(a, b)\n\n",
    );
    for (name, rust) in &m.types {
        c += &format!(
            "_Static_assert(SAME_TYPE({name}, {}), \"typedef {name}: declared in Rust as {rust}\");\n",
            c_type(rust)
        );
    }
    for (name, rust) in &m.same_size {
        c += &format!(
            "_Static_assert(sizeof({name}) == sizeof({c}) && _Alignof({name}) == _Alignof({c}), \
             \"{name}: declared in Rust as {rust}, of another size or alignment\");\n",
            c = c_type(rust)
        );
    }
    c.push('\n');
    for (name, value) in &m.consts {
        c += &format!("_Static_assert((long long)({name}) == {value}LL, \"{name}: declared in Rust as {value}\");\n");
    }
    c.push('\n');
    for f in &m.functions {
        let mut args: Vec<String> = f.args.iter().map(|a| c_type(a)).collect();
        if args.is_empty() {
            // `()` in C before C23 declares no prototype at all.
            args.push("void".to_owned());
        }
        let rust_args = f.args.join(", ");
        c += &format!(
            "_Static_assert(SAME_TYPE(__typeof__(&{name}), {ret} (*)({args})), \
             \"{name}: declared in Rust as fn({rust_args}) -> {rust_ret}\");\n",
            name = f.name,
            ret = c_type(f.ret),
            args = args.join(", "),
            rust_ret = f.ret,
        );
    }
    for s in &m.structs {
        c += &format!("\nstruct rust_{} {{\n", s.name);
        for (field, ty) in s.fields {
            c += &format!("    {};\n", c_field(field, ty));
        }
        c += "};\n";
        c += &format!(
            "_Static_assert(sizeof(struct rust_{0}) == sizeof({0}), \"{0}: size differs from the Rust struct\");\n",
            s.name
        );
        for (field, ty) in s.fields {
            c += &format!(
                "_Static_assert(offsetof(struct rust_{0}, {field}) == offsetof({0}, {field}) && \
                 sizeof(((struct rust_{0} *)0)->{field}) == sizeof((({0} *)0)->{field}), \
                 \"{0}.{field}: offset or size differs from the Rust field ({ty})\");\n",
                s.name
            );
        }
    }
    c
}

/// The manifest with one declaration made deliberately wrong, to show that the check fails: the count
/// `mach_port_get_refs` writes is declared 64 bits wide, and `MACH_PORT_TYPE_DEAD_NAME` off by one bit.
pub fn with_deliberate_errors(mut m: Manifest) -> Manifest {
    const WRONG_GET_REFS: Function = Function {
        name: "mach_port_get_refs",
        ret: "kern_return_t",
        args: &["ipc_space_t", "mach_port_name_t", "mach_port_right_t", "*mut u64"],
    };
    for f in &mut m.functions {
        if f.name == WRONG_GET_REFS.name {
            *f = WRONG_GET_REFS;
        }
    }
    for (name, value) in &mut m.consts {
        if name == "MACH_PORT_TYPE_DEAD_NAME" {
            *value <<= 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_types_are_spelled_in_c() {
        assert_eq!(c_type("*mut *mut mach_port_name_t"), "mach_port_name_t * *");
        assert_eq!(c_type("u32"), "uint32_t");
        assert_eq!(c_type("*const i32"), "const int32_t *");
        assert_eq!(c_field("iisb_reserved", "[natural_t; 2]"), "natural_t iisb_reserved[2]");
    }

    #[test]
    fn the_manifest_covers_every_hand_declared_function() {
        let m = manifest("aarch64");
        let names: Vec<&str> = m.functions.iter().map(|f| f.name).collect();
        for f in [
            "mach_port_names",
            "mach_port_get_refs",
            "mach_port_type",
            "thread_swap_exception_ports",
            "vm_deallocate",
            // taken from mach2 and libc
            "mach_port_allocate",
            "mach_port_insert_right",
            "mach_port_deallocate",
            "mach_port_mod_refs",
            "mach_thread_self",
            "pthread_mach_thread_np",
            "pthread_main_np",
            "proc_pidinfo",
            "proc_listpids",
            "sysctl",
            "mig_get_reply_port",
            "mig_dealloc_reply_port",
            "pthread_getspecific",
        ] {
            assert!(names.contains(&f), "{f} missing from {names:?}");
        }
        let value = |m: &Manifest, n: &str| m.consts.iter().find(|(k, _)| k == n).map(|&(_, v)| v);
        assert_eq!(value(&m, "THREAD_STATE_NONE"), Some(5));
        assert_eq!(value(&manifest("x86_64"), "THREAD_STATE_NONE"), Some(13));
        assert_eq!(value(&m, "MACH_PORT_TYPE_DEAD_NAME"), Some(0x10_0000));
    }

    #[test]
    fn the_c_check_asserts_each_declaration() {
        let c = c_check(&manifest("aarch64"));
        assert!(c.contains(
            "_Static_assert(SAME_TYPE(__typeof__(&mach_port_get_refs), kern_return_t (*)(ipc_space_t, mach_port_name_t, \
             mach_port_right_t, mach_port_urefs_t *)),"
        ));
        assert!(c.contains("_Static_assert((long long)(KERN_UREFS_OVERFLOW) == 19LL,"));
        assert!(c.contains("offsetof(struct rust_ipc_info_space_basic_t, iisb_table_inuse)"));
        let wrong = c_check(&with_deliberate_errors(manifest("aarch64")));
        assert!(wrong.contains("uint64_t *)),"));
        assert!(wrong.contains("(MACH_PORT_TYPE_DEAD_NAME) == 2097152LL"));
    }
}
