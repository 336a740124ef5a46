//! The inventory of kinds (what a census counts, told apart) in a process holding 20,000 descriptors (or
//! as many as a hard limit of 20,000 leaves room for) of the kinds leaking programs hold: target under
//! 50 ms, the median of 11. It is taken twice per cell (at the baseline and at the end), never
//! inside a census. Beside it, the floor, timed in the same run: the calls no inventory of these
//! descriptors can do without ([`floor`]), and how many times the floor the inventory takes.
//! `cargo bench -p threadleak --bench inventory`

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
    // Of the kinds leaking programs hold, made in turn: a pidfd per thread (each its own inode), an eventfd,
    // a pipe (two descriptors), a socket and a file opened again and again.
    let mut held: Vec<std::os::fd::OwnedFd> = Vec::with_capacity(held_at_most);
    let owned = |fd: libc::c_int| {
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just returned open by the kernel and is owned by nothing else.
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    };
    for turn in 0.. {
        if held.len() + 2 >= held_at_most {
            break;
        }
        match turn % 5 {
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
    // The anonymous inode eventfds share (with timerfds, signalfds, epoll instances: fs/anon_inodes.c).
    let shared = {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` is valid for writing a `stat`; `held[1]` is an eventfd.
        assert_eq!(unsafe { libc::fstat(std::os::fd::AsRawFd::as_raw_fd(&held[1]), st.as_mut_ptr()) }, 0);
        // SAFETY: fstat succeeded and filled it.
        unsafe { st.assume_init() }.st_dev
    };
    let mut walls = Vec::new();
    let mut floors = Vec::new();
    let mut fds = 0;
    for _ in 0..11 {
        let started = Instant::now();
        let inventory = threadleak::backend::native_inventory().expect("inventory");
        walls.push(started.elapsed());
        fds = inventory.iter().filter(|((counter, _), _)| counter == "fds").map(|(_, n)| n).sum::<i64>();
        let started = Instant::now();
        let found = floor(limit.rlim_cur as usize, shared);
        floors.push(started.elapsed());
        assert_eq!(found as i64, fds, "the floor's calls saw {found} descriptors, the inventory {fds}");
    }
    floors.sort();
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
    println!(
        "  floor (poll over the table, fstat of each descriptor, readlinkat of each on the shared anonymous \
         inode), same run: min {:.1} ms, median {:.1} ms; the inventory's median is {:.2}x the floor's",
        floors[0].as_secs_f64() * 1e3,
        floors[5].as_secs_f64() * 1e3,
        median.as_secs_f64() / floors[5].as_secs_f64()
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

/// The floor: the calls no inventory of these descriptors can do without, timed in the same run. `poll`
/// over the descriptor table (up to the soft limit, which no descriptor here reaches) finds them; an
/// `fstat` of each says what it points at (its filesystem and inode), and a `readlinkat` in /proc/self/fd
/// of each on `shared`, the anonymous inode descriptors of several kinds share, says its kind, which only
/// its link names. Returns how many descriptors it saw.
#[cfg(target_os = "linux")]
fn floor(table: usize, shared: libc::dev_t) -> usize {
    // SAFETY: the path is a NUL-terminated literal.
    let dir = unsafe { libc::open(c"/proc/self/fd".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    assert!(dir >= 0, "{}", std::io::Error::last_os_error());
    let mut polled = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 256];
    let mut target = [0u8; 4096];
    let mut found = 0;
    for first in (0..table).step_by(polled.len()) {
        let n = polled.len().min(table - first);
        for (i, p) in polled[..n].iter_mut().enumerate() {
            *p = libc::pollfd { fd: (first + i) as libc::c_int, events: 0, revents: 0 };
        }
        // SAFETY: `polled` holds `n` initialized entries; a zero timeout returns at once.
        assert!(unsafe { libc::poll(polled.as_mut_ptr(), n as libc::nfds_t, 0) } >= 0);
        for p in polled[..n].iter().filter(|p| p.revents & libc::POLLNVAL == 0 && p.fd != dir) {
            found += 1;
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            // SAFETY: `st` is valid for writing a `stat`.
            assert_eq!(unsafe { libc::fstat(p.fd, st.as_mut_ptr()) }, 0);
            // SAFETY: fstat succeeded and filled it.
            if unsafe { st.assume_init() }.st_dev == shared {
                let mut name = [0u8; 12];
                std::io::Write::write_fmt(&mut &mut name[..], format_args!("{}\0", p.fd)).unwrap();
                // SAFETY: `name` is NUL-terminated, `target` valid for its length.
                let read =
                    unsafe { libc::readlinkat(dir, name.as_ptr().cast(), target.as_mut_ptr().cast(), target.len()) };
                assert!(read > 0);
            }
        }
    }
    // SAFETY: `dir` was opened above and is closed once.
    unsafe { libc::close(dir) };
    found
}
