//! Exit codes of the `threadleak` binary: a contract, defined here and nowhere else.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every selected cell ran to completion (whatever its verdict) |
//! | 2 | usage error: an unknown flag, axis, value or backend, a filter that selects nothing, a record file (`compare`) that cannot be read or is not a record |
//! | 3 | some cell did not complete: it timed out, crashed, or hit an error such as resource exhaustion; for `exec`, the program could not be measured, was refused (the probe cannot enter it) or did not finish well |
//! | 4 | the run itself failed: the record could not be written, the binary could not find itself |
//! | 130 | interrupted (SIGINT, SIGTERM, SIGHUP); every child's process group was killed first |
//!
//! With `--expect`, a completed run exits by the `git bisect run` protocol instead:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every selected cell matches the baseline |
//! | 1 | some cell differs from it |
//! | 125 | some cell timed out, crashed, failed or is inconclusive: this commit cannot be judged |
//! | 128 | the baseline cannot be used (unreadable, another backend, a cell it lacks): aborts `git bisect run` |

/// See the module documentation.
pub struct ExitCode;

impl ExitCode {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 2;
    pub const INCOMPLETE: i32 = 3;
    pub const FAILED: i32 = 4;
    pub const INTERRUPTED: i32 = 130;
    /// `--expect`: every selected cell matches the baseline.
    pub const MATCHES: i32 = 0;
    /// `--expect`: some cell differs from the baseline.
    pub const DIFFERS: i32 = 1;
    /// `--expect`: some cell cannot be judged (`git bisect run` skips the commit).
    pub const CANNOT_TELL: i32 = 125;
    /// `--expect`: the baseline cannot be used (`git bisect run` stops).
    pub const BASELINE_UNUSABLE: i32 = 128;
}
