//! XNU's own tests of the IPC calls the model implements, restated as cases and run on mach-sim: each step
//! is the call a test makes and the result it asserts, with the test's file and line in xnu-11417.121.6
//! (`tests/`, apple-oss-distributions/xnu). On a Mac the same steps run against the real kernel too
//! (`macos_kernel_agrees`), so the first Mac run checks the kernel against Apple's expectations as well.
//!
//! The tests run as an ordinary task with guard delivery off (`mach_port_mod_refs.c` clears
//! `TASK_EXC_GUARD_MP_DELIVER` at its lines 28-29, and asserts the call at 30), which is the model's default third-party task.
//!
//! Assertions no case here restates, and why:
//! - `mach_port_mod_refs.c:27, 30, 95`: `task_get/set_exc_guard_behavior`; the model's task is chosen
//!   once (`--task`), and a third-party task has delivery off, as the test arranges.
//! - `mach_port_deallocate_21692215.c:26` (x4): `mach_port_move_member`; set membership is not modelled
//!   (a member's destruction unlinks it, which changes no count the harness reads).
//! - `exception_ports_info.c:74, 82, 90, 94-124, 157, 165, 173, 178-180`: task-level exception ports and the
//!   `get`/`get_info` calls; the model (and the harness's workload) has thread-level swaps only.
//! - `exception_ports_info.c:127, 130`: `mach_port_kernel_object`, `mach_port_space_info`: kernel objects.
//! - `exception_ports_info.c:153, 155, 161, 163, 169, 171`: hashed kernel addresses (`VM_KERNEL_ADDRHASH`),
//!   equal to the task's kobject only on development kernels: nothing a model can answer.

use threadleak::backend::mach::kern_return::*;
use threadleak::backend::mach::port::*;
use threadleak::backend::mach::sim::{Profile, Sim, Task};
use threadleak::backend::mach::{KernResult, Mach};

/// One assertion: where it is, what is called, and what the test expects.
struct Step {
    at: &'static str,
    call: String,
    got: KernResult<u32>,
    want: KernResult<u32>,
}

fn step(at: &'static str, call: impl Into<String>, got: KernResult<u32>, want: KernResult<u32>) -> Step {
    Step { at, call: call.into(), got, want }
}

fn ok(r: KernResult<()>) -> KernResult<u32> {
    r.map(|()| 0)
}

/// `tests/mach_port_mod_refs.c`: every right against a receive right and a port set, delta -1.
fn mod_refs<M: Mach>(m: &M) -> Vec<Step> {
    let mut s = Vec::new();
    let pset = m.mach_port_allocate(MACH_PORT_RIGHT_PORT_SET);
    s.push(step("mach_port_mod_refs.c:18", "mach_port_allocate(PORT_SET)", pset.map(|_| 0), Ok(0)));
    let port = m.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE);
    s.push(step("mach_port_mod_refs.c:21", "mach_port_allocate(RECEIVE)", port.map(|_| 0), Ok(0)));
    let (pset, port) = (pset.unwrap_or(MACH_PORT_NULL), port.unwrap_or(MACH_PORT_NULL));
    let rows: [(&str, mach_port_name_t, &str, mach_port_right_t, kern_return_t); 16] = [
        ("mach_port_mod_refs.c:38", port, "SEND", MACH_PORT_RIGHT_SEND, KERN_INVALID_RIGHT),
        ("mach_port_mod_refs.c:42", port, "SEND_ONCE", MACH_PORT_RIGHT_SEND_ONCE, KERN_INVALID_RIGHT),
        ("mach_port_mod_refs.c:46", port, "PORT_SET", MACH_PORT_RIGHT_PORT_SET, KERN_INVALID_RIGHT),
        ("mach_port_mod_refs.c:50", port, "DEAD_NAME", MACH_PORT_RIGHT_DEAD_NAME, KERN_INVALID_RIGHT),
        ("mach_port_mod_refs.c:54", port, "LABELH", MACH_PORT_RIGHT_LABELH, KERN_INVALID_RIGHT),
        ("mach_port_mod_refs.c:58", port, "NUMBER", MACH_PORT_RIGHT_NUMBER, KERN_INVALID_VALUE),
        ("mach_port_mod_refs.c:62", port, "NUMBER+1", MACH_PORT_RIGHT_NUMBER + 1, KERN_INVALID_VALUE),
        ("mach_port_mod_refs.c:67", pset, "SEND", MACH_PORT_RIGHT_SEND, KERN_INVALID_RIGHT),
        ("mach_port_mod_refs.c:71", pset, "SEND_ONCE", MACH_PORT_RIGHT_SEND_ONCE, KERN_INVALID_RIGHT),
        ("mach_port_mod_refs.c:75", pset, "RECEIVE", MACH_PORT_RIGHT_RECEIVE, KERN_INVALID_RIGHT),
        ("mach_port_mod_refs.c:79", pset, "DEAD_NAME", MACH_PORT_RIGHT_DEAD_NAME, KERN_INVALID_RIGHT),
        ("mach_port_mod_refs.c:83", pset, "LABELH", MACH_PORT_RIGHT_LABELH, KERN_INVALID_RIGHT),
        ("mach_port_mod_refs.c:87", pset, "NUMBER", MACH_PORT_RIGHT_NUMBER, KERN_INVALID_VALUE),
        ("mach_port_mod_refs.c:91", pset, "NUMBER+1", MACH_PORT_RIGHT_NUMBER + 1, KERN_INVALID_VALUE),
        ("mach_port_mod_refs.c:101", pset, "PORT_SET", MACH_PORT_RIGHT_PORT_SET, KERN_SUCCESS),
        ("mach_port_mod_refs.c:104", port, "RECEIVE", MACH_PORT_RIGHT_RECEIVE, KERN_SUCCESS),
    ];
    for (at, name, which, right, want) in rows {
        let who = if name == port { "port" } else { "pset" };
        let want = if want == KERN_SUCCESS { Ok(0) } else { Err(want) };
        s.push(step(
            at,
            format!("mach_port_mod_refs({who}, {which}, -1)"),
            ok(m.mach_port_mod_refs(name, right, -1)),
            want,
        ));
    }
    s
}

/// `tests/mach_port_insert_right.c`: a send right made under the receive right's name, under a chosen
/// name (index 0; a bad generation), and under another port's name.
fn insert_right<M: Mach>(m: &M) -> Vec<Step> {
    let mut s = Vec::new();
    let port = m.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE);
    s.push(step("mach_port_insert_right.c:32", "mach_port_allocate(RECEIVE)", port.map(|_| 0), Ok(0)));
    let port = port.unwrap_or(MACH_PORT_NULL);
    s.push(step(
        "mach_port_insert_right.c:18 (from :34)",
        "mach_port_type(port)",
        m.mach_port_type(port),
        Ok(MACH_PORT_TYPE_RECEIVE),
    ));
    let made = ok(m.mach_port_insert_right(port, port, MACH_MSG_TYPE_MAKE_SEND));
    s.push(step("mach_port_insert_right.c:38", "mach_port_insert_right(port, port, MAKE_SEND)", made, Ok(0)));
    s.push(step(
        "mach_port_insert_right.c:18 (from :39)",
        "mach_port_type(port)",
        m.mach_port_type(port),
        Ok(MACH_PORT_TYPE_RECEIVE | MACH_PORT_TYPE_SEND),
    ));
    let at_123 = ok(m.mach_port_insert_right(123, port, MACH_MSG_TYPE_MAKE_SEND));
    s.push(step(
        "mach_port_insert_right.c:45",
        "mach_port_insert_right(123, port, MAKE_SEND)",
        at_123,
        Err(KERN_FAILURE),
    ));
    let at_122 = ok(m.mach_port_insert_right(122, port, MACH_MSG_TYPE_MAKE_SEND));
    s.push(step(
        "mach_port_insert_right.c:50",
        "mach_port_insert_right(122, port, MAKE_SEND)",
        at_122,
        Err(KERN_INVALID_VALUE),
    ));
    let port2 = m.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE);
    s.push(step("mach_port_insert_right.c:53", "mach_port_allocate(RECEIVE)", port2.map(|_| 0), Ok(0)));
    let port2 = port2.unwrap_or(MACH_PORT_NULL);
    s.push(step(
        "mach_port_insert_right.c:18 (from :55)",
        "mach_port_type(port2)",
        m.mach_port_type(port2),
        Ok(MACH_PORT_TYPE_RECEIVE),
    ));
    let other = ok(m.mach_port_insert_right(port, port2, MACH_MSG_TYPE_MAKE_SEND));
    s.push(step(
        "mach_port_insert_right.c:60",
        "mach_port_insert_right(port, port2, MAKE_SEND)",
        other,
        Err(KERN_RIGHT_EXISTS),
    ));
    s
}

/// `tests/mach_port_deallocate_21692215.c`: a port set outliving its members' receive rights, then
/// deallocated (membership itself, line 26, is not modelled).
fn deallocate_port_set<M: Mach>(m: &M) -> Vec<Step> {
    let mut s = Vec::new();
    let pset = m.mach_port_allocate(MACH_PORT_RIGHT_PORT_SET);
    s.push(step("mach_port_deallocate_21692215.c:19", "mach_port_allocate(PORT_SET)", pset.map(|_| 0), Ok(0)));
    let mut ports = Vec::new();
    for _ in 0..4 {
        let port = m.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE);
        s.push(step("mach_port_deallocate_21692215.c:23", "mach_port_allocate(RECEIVE)", port.map(|_| 0), Ok(0)));
        ports.push(port.unwrap_or(MACH_PORT_NULL));
    }
    for port in ports {
        let destroyed = ok(m.mach_port_mod_refs(port, MACH_PORT_RIGHT_RECEIVE, -1));
        s.push(step("mach_port_deallocate_21692215.c:35", "mach_port_mod_refs(port, RECEIVE, -1)", destroyed, Ok(0)));
    }
    let gone = ok(m.mach_port_deallocate(pset.unwrap_or(MACH_PORT_NULL)));
    s.push(step("mach_port_deallocate_21692215.c:39", "mach_port_deallocate(pset)", gone, Ok(0)));
    s
}

/// `tests/exception_ports_info.c:46-61`: the three exception ports it installs, each a receive right with a
/// send right made under its name.
fn exception_ports<M: Mach>(m: &M) -> Vec<Step> {
    let mut s = Vec::new();
    let mut ports = Vec::new();
    for at in ["exception_ports_info.c:46", "exception_ports_info.c:48", "exception_ports_info.c:50"] {
        let port = m.mach_port_allocate(MACH_PORT_RIGHT_RECEIVE);
        s.push(step(at, "mach_port_allocate(RECEIVE)", port.map(|_| 0), Ok(0)));
        ports.push(port.unwrap_or(MACH_PORT_NULL));
    }
    for (at, port) in
        ["exception_ports_info.c:57", "exception_ports_info.c:59", "exception_ports_info.c:61"].into_iter().zip(ports)
    {
        s.push(step(
            at,
            "mach_port_insert_right(p, p, MAKE_SEND)",
            ok(m.mach_port_insert_right(port, port, MACH_MSG_TYPE_MAKE_SEND)),
            Ok(0),
        ));
    }
    s
}

fn assert_all(steps: &[Step], on: &str) {
    let failed: Vec<String> = steps
        .iter()
        .filter(|s| s.got != s.want)
        .map(|s| format!("{}: {} gave {:?}, the test expects {:?}", s.at, s.call, s.got, s.want))
        .collect();
    assert!(failed.is_empty(), "{on}: {} of {} assertions differ:\n{}", failed.len(), steps.len(), failed.join("\n"));
}

/// Every step of every test, each test on a fresh modelled task.
fn on_the_model(task: Task) -> Vec<Step> {
    let tests = [mod_refs::<Sim>, insert_right::<Sim>, deallocate_port_set::<Sim>, exception_ports::<Sim>];
    tests.iter().flat_map(|test| test(&Sim::with_task(Profile::Xnu11417, 0, task))).collect()
}

#[test]
fn the_model_passes_xnus_own_ipc_tests() {
    let steps = on_the_model(Task::ThirdParty);
    assert_eq!(steps.len(), 43, "every restated assertion ran");
    assert_all(&steps, "mach-sim (xnu-11417, third-party task)");
}

#[test]
fn a_hardened_task_would_die_where_the_test_switches_delivery_off() {
    // mach_port_mod_refs.c turns delivery off first because line 38 raises kGUARD_EXC_INVALID_RIGHT, fatal
    // for a task with TASK_EXC_GUARD_MP_FATAL: from there on the model's hardened task is gone.
    let steps = on_the_model(Task::Hardened);
    let first_wrong = steps.iter().find(|s| s.got != s.want).expect("a hardened task dies");
    assert_eq!(first_wrong.at, "mach_port_mod_refs.c:42");
    assert_eq!(first_wrong.got, Err(KERN_TERMINATED));
}

#[cfg(target_os = "macos")]
#[test]
fn macos_kernel_agrees() {
    use threadleak::backend::mach::real::Real;
    let real = Real::new().unwrap();
    let mut steps = Vec::new();
    for test in [mod_refs::<Real>, insert_right::<Real>, deallocate_port_set::<Real>, exception_ports::<Real>] {
        steps.extend(test(&real));
    }
    assert_all(&steps, "this Mac's kernel");
}
