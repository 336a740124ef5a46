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

    /// The code of several runs (`run --profile all`): the one that says most, from an unusable baseline,
    /// a failed run, a difference, a run that cannot be judged, an incomplete one, down to success.
    pub fn worse(a: i32, b: i32) -> i32 {
        const ORDER: [i32; 7] = [
            ExitCode::OK,
            ExitCode::INCOMPLETE,
            ExitCode::CANNOT_TELL,
            ExitCode::DIFFERS,
            ExitCode::USAGE,
            ExitCode::FAILED,
            ExitCode::BASELINE_UNUSABLE,
        ];
        let rank = |c: i32| ORDER.iter().position(|&o| o == c).unwrap_or(ORDER.len());
        if rank(b) > rank(a) {
            b
        } else {
            a
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExitCode;

    #[test]
    fn the_worse_of_two_codes_says_most() {
        assert_eq!(ExitCode::worse(ExitCode::OK, ExitCode::DIFFERS), ExitCode::DIFFERS);
        assert_eq!(ExitCode::worse(ExitCode::DIFFERS, ExitCode::CANNOT_TELL), ExitCode::DIFFERS);
        assert_eq!(ExitCode::worse(ExitCode::INCOMPLETE, ExitCode::OK), ExitCode::INCOMPLETE);
        assert_eq!(ExitCode::worse(ExitCode::DIFFERS, ExitCode::BASELINE_UNUSABLE), ExitCode::BASELINE_UNUSABLE);
    }
}
