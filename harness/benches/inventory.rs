//! The inventory of kinds (what a census counts, told apart) in a process holding 20,000 descriptors (or
//! as many as a hard limit of 20,000 leaves room for) of the kinds leaking programs hold: target under
//! 50 ms, the median of 11. It is taken twice per cell (at the baseline and at the end), never
//! inside a census. `cargo bench -p threadleak --bench inventory`

#[cfg(target_os = "linux")]
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
const DESCRIPTORS: usize = 20_000;
#[cfg(target_os = "linux")]
const TARGET: Duration = Duration::from_millis(50);

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("inventory: the benchmark holds Linux's kinds of descriptors (pidfds, eventfds); it runs on Linux");
}

#[cfg(target_os = "linux")]
fn main() {
    // Room for the descriptors: the soft limit raised to the hard one. Where the hard limit is 20,000
    // itself, the process holds as many as it allows beside the few it has open already.
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is valid for writing.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    let held_at_most = (limit.rlim_max as usize).saturating_sub(32).min(DESCRIPTORS);
    if held_at_most < DESCRIPTORS * 9 / 10 {
        eprintln!("inventory: the hard limit on descriptors ({}) is far below {DESCRIPTORS}; raise it", limit.rlim_max);
        std::process::exit(2);
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` holds a soft limit equal to the hard one.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    // Of the kinds leaking programs hold, in equal parts: a pidfd per thread (each its own inode),
    // eventfds, pipes, sockets and a file opened again and again.
    let mut held: Vec<std::os::fd::OwnedFd> = Vec::with_capacity(held_at_most);
    let owned = |fd: libc::c_int| {
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just returned open by the kernel and is owned by nothing else.
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    };
    while held.len() + 2 < held_at_most {
        match held.len() % 5 {
            0 => {
                // SAFETY: gettid and pidfd_open take and return plain integers.
                let fd = std::thread::spawn(|| unsafe {
                    libc::syscall(libc::SYS_pidfd_open, libc::gettid(), libc::O_EXCL) as libc::c_int
                })
                .join()
                .unwrap();
                held.push(owned(fd));
            }
            1 => {
                // SAFETY: plain integers in and out.
                held.push(owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) }));
            }
            2 => {
                let mut ends = [0; 2];
                // SAFETY: `ends` holds the two descriptors pipe2 writes.
                assert_eq!(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
                held.extend(ends.map(owned));
            }
            3 => held.push(std::os::unix::net::UnixDatagram::unbound().unwrap().into()),
            _ => held.push(std::fs::File::open("/dev/null").unwrap().into()),
        }
    }
    let mut walls = Vec::new();
    let mut fds = 0;
    for _ in 0..11 {
        let started = Instant::now();
        let inventory = threadleak::backend::native_inventory().expect("inventory");
        walls.push(started.elapsed());
        fds = inventory.iter().filter(|((counter, _), _)| counter == "fds").map(|(_, n)| n).sum::<i64>();
    }
    walls.sort();
    let median = walls[5];
    println!("inventory: {fds} descriptors told apart by kind, median of 11");
    println!(
        "  min {:.1} ms, median {:.1} ms, max {:.1} ms (target < {} ms)",
        walls[0].as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        walls[10].as_secs_f64() * 1e3,
        TARGET.as_millis()
    );
    assert!(fds >= held.len() as i64, "the inventory saw {fds} descriptors of {}", held.len());
    if median > TARGET {
        eprintln!(
            "inventory: median {:.1} ms misses the target of {} ms",
            median.as_secs_f64() * 1e3,
            TARGET.as_millis()
        );
        std::process::exit(1);
    }
}
