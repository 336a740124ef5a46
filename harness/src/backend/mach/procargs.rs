//! A process's environment as macOS gives it to another process of the same user: the reply of
//! `sysctl({CTL_KERN, KERN_PROCARGS2, pid})`. Read here on any OS, so that it is tested where the tests
//! run; `real.rs` makes the call.
//!
//! The reply's layout (xnu-11417.121.6 `bsd/kern/kern_sysctl.c`, `sysctl_procargsx`, and the strings area
//! as `exec_copyout_strings` in `bsd/kern/kern_exec.c` lays it on the new process's stack): the
//! process's `argc` as a native `int`; the executable's path (its `executable_path=` prefix stripped)
//! and the NULs that align it; `argc` arguments; the environment, and the NULs that align it; then the
//! "apple" strings the kernel passes to `main` (`key=value` too). Each string ends with a NUL. The kernel
//! leaves the environment out for a restricted process (`cs_restricted`) while SIP is on, unless the
//! caller is that process or is entitled (`sysctl_procargsx`, "Allow reading environment variables"):
//! such a process shows no environment here.

/// The strings after the arguments in a `KERN_PROCARGS2` reply: the environment, then the kernel's
/// "apple" strings. Empty for a reply too short to hold what its `argc` says; a last string without its
/// NUL (a reply cut short) is left out. As the kernel does when it leaves the environment out, every NUL
/// after the executable's path is taken as alignment, so an empty first argument is skipped with them.
pub fn environment(reply: &[u8]) -> impl Iterator<Item = &[u8]> {
    let strings = after_arguments(reply).unwrap_or_default();
    // A string is complete only with its NUL: `split` would give what follows the last one as well.
    let complete = strings.iter().rposition(|&b| b == 0).map_or(&[][..], |end| &strings[..end]);
    complete.split(|&b| b == 0).filter(|s| !s.is_empty())
}

fn after_arguments(reply: &[u8]) -> Option<&[u8]> {
    let argc = i32::from_ne_bytes(reply.get(..4)?.try_into().ok()?);
    let rest = &reply[4..];
    let path_end = rest.iter().position(|&b| b == 0)?;
    let mut at = path_end + rest[path_end..].iter().position(|&b| b != 0)?;
    for _ in 0..argc.max(0) {
        at += rest[at..].iter().position(|&b| b == 0)? + 1;
    }
    Some(&rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(argc: i32, strings: &[&[u8]]) -> Vec<u8> {
        let mut bytes = argc.to_ne_bytes().to_vec();
        for s in strings {
            bytes.extend_from_slice(s);
        }
        bytes
    }

    #[test]
    fn the_environment_follows_the_path_its_alignment_and_the_arguments() {
        let r = reply(
            3,
            &[
                b"/usr/local/bin/prog\0\0\0\0\0",
                b"prog\0",
                // An argument that reads like the mark is not the environment.
                b"THREADLEAK_PROBE_OUT=/tmp/a\0",
                b"\0",
                b"HOME=/Users/me\0THREADLEAK_PROBE_OUT=/tmp/b\0\0\0",
                b"ptr_munge=\0main_stack=\0",
            ],
        );
        let found: Vec<&[u8]> = environment(&r).collect();
        assert_eq!(found, [&b"HOME=/Users/me"[..], b"THREADLEAK_PROBE_OUT=/tmp/b", b"ptr_munge=", b"main_stack="]);
    }

    #[test]
    fn a_reply_cut_short_gives_only_its_whole_strings_and_a_malformed_one_nothing() {
        let r = reply(1, &[b"/bin/prog\0\0\0", b"prog\0", b"A=1\0B=2"]);
        assert_eq!(environment(&r).collect::<Vec<_>>(), [&b"A=1"[..]]);
        // Fewer arguments than argc says, no NUL after the path, fewer bytes than an int, a negative argc.
        for r in [reply(5, &[b"/bin/prog\0\0", b"prog\0A=1\0"]), reply(0, &[b"/bin/prog"]), vec![1, 0], reply(-1, &[])]
        {
            assert_eq!(environment(&r).count(), 0, "{r:?}");
        }
        assert_eq!(environment(&reply(-1, &[b"/bin/prog\0\0", b"A=1\0"])).collect::<Vec<_>>(), [&b"A=1"[..]]);
    }
}
