//! Re-estimates `threadleak exec` records with this build's analysis: for each record, the verdict it was
//! written with and, for each process judged, the verdict, the median rate of `vm_kib` and the reason the
//! analysis gives now. For calibrating the analysis on records kept by `ci/runtimes.sh --keep DIR`:
//!
//!   cargo run --example reestimate -- DIR/*.json

fn main() {
    let mut failed = false;
    for path in std::env::args().skip(1) {
        let record = match threadleak::compare::load(std::path::Path::new(&path)) {
            Ok(record) => record,
            Err(e) => {
                eprintln!("{path}: {e}");
                failed = true;
                continue;
            }
        };
        let Some(cell) = record.cells.first() else { continue };
        for p in cell.processes.iter().filter(|p| p.checkpoints.len() >= threadleak::analysis::MIN_CENSUSES) {
            match threadleak::analysis::estimate(&p.checkpoints, threadleak::analysis::Judging::default()) {
                Ok(e) => println!(
                    "{path}: written {}, now {} (pid {}): vm_kib median {:+.2}; {}",
                    cell.verdict.as_str(),
                    e.verdict.as_str(),
                    p.pid,
                    e.per_thread.get("vm_kib").unwrap_or(0.0),
                    e.notes.first().map_or("no reason given", String::as_str)
                ),
                Err(e) => println!("{path}: pid {}: {e}", p.pid),
            }
        }
    }
    std::process::exit(i32::from(failed));
}
