//! `kern_return_t` and its values (mach/kern_return.h), with their names for reports.

mach_types! {
    /// mach/kern_return.h (via mach/machine/kern_return.h: `int`)
    pub type kern_return_t = i32;
}

/// Declares the constants and the name table from one list, so the two cannot drift apart.
macro_rules! codes {
    ($($name:ident = $value:literal,)+) => {
        $(pub const $name: kern_return_t = $value;)+

        /// The symbolic name of a `kern_return_t` this module knows.
        pub fn name(kr: kern_return_t) -> Option<&'static str> {
            match kr {
                $($value => Some(stringify!($name)),)+
                _ => None,
            }
        }

        /// Every (name, value) pair, for the ABI check against the SDK headers.
        pub const CONSTS: &[(&str, i64)] = &[$((stringify!($name), $value)),+];
    };
}

codes! {
    KERN_SUCCESS = 0,
    KERN_INVALID_ADDRESS = 1,
    KERN_PROTECTION_FAILURE = 2,
    KERN_NO_SPACE = 3,
    KERN_INVALID_ARGUMENT = 4,
    KERN_FAILURE = 5,
    KERN_RESOURCE_SHORTAGE = 6,
    KERN_NOT_RECEIVER = 7,
    KERN_NO_ACCESS = 8,
    KERN_MEMORY_FAILURE = 9,
    KERN_MEMORY_ERROR = 10,
    KERN_ALREADY_IN_SET = 11,
    KERN_NOT_IN_SET = 12,
    KERN_NAME_EXISTS = 13,
    KERN_ABORTED = 14,
    KERN_INVALID_NAME = 15,
    KERN_INVALID_TASK = 16,
    KERN_INVALID_RIGHT = 17,
    KERN_INVALID_VALUE = 18,
    KERN_UREFS_OVERFLOW = 19,
    KERN_INVALID_CAPABILITY = 20,
    KERN_RIGHT_EXISTS = 21,
    KERN_INVALID_HOST = 22,
    KERN_TERMINATED = 37,
    KERN_NOT_SUPPORTED = 46,
    KERN_OPERATION_TIMED_OUT = 49,
    KERN_DENIED = 53,
    KERN_NOT_FOUND = 56,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_values() {
        assert_eq!(name(KERN_INVALID_NAME), Some("KERN_INVALID_NAME"));
        assert_eq!(name(KERN_UREFS_OVERFLOW), Some("KERN_UREFS_OVERFLOW"));
        assert_eq!(name(12345), None);
    }
}
