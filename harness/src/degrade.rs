//! Degradation curves: thread create-to-exit latency, window by window, against what has leaked so far.
//!
//! One child creates threads continuously ([`Mode::Degrade`](crate::child::Mode)), timing every thread
//! and taking a census every window. This module turns that into rows (CSV and JSON) and a plot (SVG) of
//! latency p50 and p99 against the leaked count, and reports the ratio of the last window's p50 to the
//! first's, the figure the 2011 report gave (~0.3 ms becoming ~10 ms after 150k leaked ports on macOS).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::child::WindowStats;
use crate::record::{CellRecord, Os};

/// One window of threads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Threads created when the window closed.
    pub threads: u32,
    /// The leaked counter's growth from the baseline when the window closed.
    pub leaked: i64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Every counter's growth from the baseline when the window closed.
    pub counters: Vec<(String, i64)>,
}

/// A degradation run, as written to `degrade.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Degradation {
    pub cell: String,
    pub backend: String,
    pub os: Os,
    pub window: u32,
    /// The counter whose growth is the x axis: the first, in the backend's order, that grows by half a
    /// unit per thread or more; `None` when nothing leaks (the x axis is then the threads created).
    pub leaked_counter: Option<String>,
    pub rows: Vec<Row>,
    /// Last window's p50 over the first window's.
    pub p50_ratio: Option<f64>,
    pub status: String,
    pub note: Option<String>,
}

/// Combines the cell's record (its censuses) with the child's latency windows.
pub fn build(
    record: &CellRecord,
    backend: &str,
    os: Os,
    window: u32,
    windows: &[WindowStats],
    counter: Option<&str>,
) -> Degradation {
    let baseline = record.checkpoints.first();
    let growth = |cycle: u32, name: &str| -> i64 {
        let at = record.checkpoints.iter().find(|c| c.cycle == cycle);
        match (at.and_then(|c| c.counters.get(name)), baseline.and_then(|b| b.counters.get(name))) {
            (Some(now), Some(base)) => now - base,
            _ => 0,
        }
    };
    let last = record.checkpoints.last().map_or(0, |c| c.cycle);
    let names: Vec<String> = baseline.map(|b| b.counters.names().map(str::to_owned).collect()).unwrap_or_default();
    let leaked_counter = match counter {
        Some(c) => Some(c.to_owned()),
        None => names.iter().find(|n| last > 0 && growth(last, n) * 2 >= i64::from(last)).cloned(),
    };
    let rows: Vec<Row> = windows
        .iter()
        .map(|w| Row {
            threads: w.threads,
            leaked: leaked_counter.as_deref().map_or(i64::from(w.threads), |c| growth(w.threads, c)),
            p50_us: w.p50_ns as f64 / 1000.0,
            p99_us: w.p99_ns as f64 / 1000.0,
            max_us: w.max_ns as f64 / 1000.0,
            counters: names.iter().map(|n| (n.clone(), growth(w.threads, n))).collect(),
        })
        .collect();
    let p50_ratio = match (rows.first(), rows.last()) {
        (Some(first), Some(last)) if rows.len() > 1 && first.p50_us > 0.0 => Some(last.p50_us / first.p50_us),
        _ => None,
    };
    Degradation {
        cell: record.cell.clone(),
        backend: backend.to_owned(),
        os,
        window,
        leaked_counter,
        rows,
        p50_ratio,
        status: record.status.as_str().to_owned(),
        note: record.note.clone(),
    }
}

impl Degradation {
    /// One line per window; counters as extra columns.
    pub fn csv(&self) -> String {
        let mut out = String::from("threads,leaked,p50_us,p99_us,max_us");
        if let Some(first) = self.rows.first() {
            for (name, _) in &first.counters {
                let _ = write!(out, ",{name}");
            }
        }
        out.push('\n');
        for r in &self.rows {
            let _ = write!(out, "{},{},{:.3},{:.3},{:.3}", r.threads, r.leaked, r.p50_us, r.p99_us, r.max_us);
            for (_, v) in &r.counters {
                let _ = write!(out, ",{v}");
            }
            out.push('\n');
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a degradation always serializes") + "\n"
    }

    /// A summary for the terminal.
    pub fn summary(&self) -> String {
        let x = self.leaked_counter.as_deref().unwrap_or("threads");
        let mut out = format!(
            "{} on {} ({} {}), windows of {} threads\n",
            self.cell, self.backend, self.os.family, self.os.release, self.window
        );
        let _ = writeln!(out, "{:>10}  {:>10}  {:>10}  {:>10}  {:>10}", "threads", x, "p50 µs", "p99 µs", "max µs");
        let n = self.rows.len();
        for (i, r) in self.rows.iter().enumerate() {
            if n > 12 && (4..n - 4).contains(&i) {
                if i == 4 {
                    out.push_str("       ...\n");
                }
                continue;
            }
            let _ = writeln!(
                out,
                "{:>10}  {:>10}  {:>10.1}  {:>10.1}  {:>10.1}",
                r.threads, r.leaked, r.p50_us, r.p99_us, r.max_us
            );
        }
        match (self.p50_ratio, self.rows.first(), self.rows.last()) {
            (Some(ratio), Some(first), Some(last)) => {
                let leaked = match &self.leaked_counter {
                    Some(counter) => format!("with {} {counter} leaked", last.leaked),
                    None => format!("over {} threads, no counter growing per thread", last.threads),
                };
                let _ = writeln!(
                    out,
                    "p50 went from {:.1} µs to {:.1} µs {leaked}: ratio {ratio:.2}",
                    first.p50_us, last.p50_us
                );
            }
            _ => out.push_str("fewer than two windows: no ratio\n"),
        }
        if self.status != "ok" || self.note.is_some() {
            let _ = writeln!(out, "status {}: {}", self.status, self.note.as_deref().unwrap_or(""));
        }
        out
    }

    /// Latency p50 and p99 against the leaked count, as an SVG line chart.
    pub fn svg(&self) -> String {
        let (w, h, left, right, top, bottom) = (800.0, 450.0, 70.0, 20.0, 40.0, 50.0);
        let x_max = self.rows.iter().map(|r| r.leaked).max().unwrap_or(0).max(1) as f64;
        let y_max = self.rows.iter().map(|r| r.p99_us).fold(0.0, f64::max).max(1.0) * 1.1;
        let sx = |x: f64| left + x / x_max * (w - left - right);
        let sy = |y: f64| h - bottom - y / y_max * (h - top - bottom);
        let x_label =
            self.leaked_counter.as_deref().map_or("threads created".to_owned(), |c| format!("{c} leaked so far"));
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{} · {} · thread create-to-exit latency</text>\n",
            w / 2.0,
            escape(&self.cell),
            escape(&self.backend)
        );
        // Axes, ticks and grid.
        let _ =
            writeln!(out, "<path d=\"M{left} {top} V{} H{}\" stroke=\"black\" fill=\"none\"/>", h - bottom, w - right);
        for i in 0..=5 {
            let (xv, yv) = (x_max * f64::from(i) / 5.0, y_max * f64::from(i) / 5.0);
            let _ = writeln!(
                out,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{yv:.0}</text>\
                 <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{xv:.0}</text>",
                w - right,
                left - 6.0,
                sy(yv) + 4.0,
                h - bottom + 18.0,
                y = sy(yv),
                x = sx(xv)
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">latency (µs)</text>",
            (left + w - right) / 2.0,
            h - 10.0,
            escape(&x_label),
            (top + h - bottom) / 2.0,
            (top + h - bottom) / 2.0
        );
        for (name, colour, pick) in [("p50", "#1f77b4", 0), ("p99", "#d62728", 1)] {
            let points: Vec<String> = self
                .rows
                .iter()
                .map(|r| {
                    let y = if pick == 0 { r.p50_us } else { r.p99_us };
                    format!("{:.1},{:.1}", sx(r.leaked as f64), sy(y))
                })
                .collect();
            let _ = writeln!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\
                 <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name}</text>",
                points.join(" "),
                w - right - 40.0,
                top + 15.0 + 15.0 * f64::from(pick)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Checkpoint, Counters, Status, Verdict};

    fn record() -> CellRecord {
        let cp = |cycle: u32, fds: i64| Checkpoint {
            cycle,
            counters: Counters(vec![("fds".into(), fds), ("maps".into(), 40)]),
            live: None,
        };
        CellRecord {
            cell: "thread=detached,self=leaked,exc=none,fix=off".into(),
            scenario: None,
            axes: Some("thread=detached,self=leaked,exc=none,fix=off".parse::<crate::matrix::Cell>().unwrap().into()),
            command: None,
            status: Status::Ok,
            per_thread: Counters::default(),
            slope: Counters::default(),
            kinds: None,
            sites: Vec::new(),
            verdict: Verdict::Leak,
            checkpoints: vec![cp(0, 5), cp(1000, 1005), cp(2000, 2005)],
            elapsed_ms: 0,
            cycles_per_sec: None,
            note: None,
            failure: None,
            interval: Counters::default(),
            resolution: Counters::default(),
            limits: Counters::default(),
            processes: Vec::new(),
        }
    }

    fn windows() -> Vec<WindowStats> {
        vec![
            WindowStats { threads: 1000, p50_ns: 30_000, p99_ns: 60_000, max_ns: 90_000 },
            WindowStats { threads: 2000, p50_ns: 45_000, p99_ns: 80_000, max_ns: 95_000 },
        ]
    }

    #[test]
    fn the_leaked_counter_is_the_one_that_grows_per_thread() {
        let d = build(&record(), "linux", Os::default(), 1000, &windows(), None);
        assert_eq!(d.leaked_counter.as_deref(), Some("fds"));
        assert_eq!(d.rows.iter().map(|r| r.leaked).collect::<Vec<_>>(), [1000, 2000]);
        assert_eq!(d.p50_ratio, Some(1.5));
        assert_eq!(d.csv().lines().next(), Some("threads,leaked,p50_us,p99_us,max_us,fds,maps"));
        assert_eq!(d.csv().lines().nth(2), Some("2000,2000,45.000,80.000,95.000,2000,0"));
        assert!(d.summary().contains("p50 went from 30.0 µs to 45.0 µs with 2000 fds leaked: ratio 1.50"));
    }

    #[test]
    fn the_plot_has_both_curves() {
        let svg = build(&record(), "linux", Os::default(), 1000, &windows(), None).svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("fds leaked so far"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
