//! Exit codes of the `threadleak` binary: a contract, defined here and nowhere else.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every selected cell ran to completion (whatever its verdict) |
//! | 2 | usage error: an unknown flag, axis, value or backend, a filter that selects nothing, a record file (`compare`) that cannot be read or is not a record |
//! | 3 | some cell did not complete: it timed out, crashed, or hit an error such as resource exhaustion |
//! | 4 | the run itself failed: the record could not be written, the binary could not find itself |
//! | 130 | interrupted (SIGINT); every child's process group was killed first |

/// See the module documentation.
pub struct ExitCode;

impl ExitCode {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 2;
    pub const INCOMPLETE: i32 = 3;
    pub const FAILED: i32 = 4;
    pub const INTERRUPTED: i32 = 130;
}
