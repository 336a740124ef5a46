//! Exception ports (mach/exception_types.h, mach/thread_status.h).

mach_types! {
    /// mach/exception_types.h
    pub type exception_mask_t = u32;
    /// mach/exception_types.h
    pub type exception_behavior_t = i32;
    /// mach/thread_status.h
    pub type thread_state_flavor_t = i32;
}

mach_consts! {
    pub const EXC_BAD_ACCESS: u32 = 1;
    pub const EXC_BAD_INSTRUCTION: u32 = 2;
    pub const EXC_ARITHMETIC: u32 = 3;
    pub const EXC_SOFTWARE: u32 = 5;

    pub const EXC_MASK_BAD_ACCESS: exception_mask_t = 1 << EXC_BAD_ACCESS;
    pub const EXC_MASK_BAD_INSTRUCTION: exception_mask_t = 1 << EXC_BAD_INSTRUCTION;
    pub const EXC_MASK_ARITHMETIC: exception_mask_t = 1 << EXC_ARITHMETIC;
    pub const EXC_MASK_SOFTWARE: exception_mask_t = 1 << EXC_SOFTWARE;

    /// Exception types, illegal type 0 included (mach/i386/exception.h and mach/arm/exception.h agree).
    pub const EXC_TYPES_COUNT: usize = 14;

    pub const EXCEPTION_DEFAULT: exception_behavior_t = 1;
}

/// `THREAD_STATE_NONE` of an architecture: the "no thread state" flavor (mach/arm/thread_status.h: 5;
/// mach/i386/thread_status.h: 13).
pub const fn thread_state_none(arch: &str) -> thread_state_flavor_t {
    match arch.as_bytes() {
        b"aarch64" => 5,
        _ => 13,
    }
}

/// `THREAD_STATE_NONE` of the architecture this is built for.
pub const THREAD_STATE_NONE: thread_state_flavor_t = thread_state_none(std::env::consts::ARCH);
