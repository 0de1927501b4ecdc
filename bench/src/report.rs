//! The run's data (also the `--json` output) and its markdown table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cells::Outcome;
use crate::codec::{CODECS, CodecReport, SERDE};
use crate::measure::{median, min_max};
use crate::workloads::{Impl, Unit, Workload};

/// One workload through one implementation.
#[derive(Debug, Serialize)]
pub struct Cell {
    /// Who did the work.
    pub implementation: Impl,
    /// What came out (samples are seconds per operation).
    pub outcome: Outcome,
    /// Median seconds per operation.
    pub median_s: Option<f64>,
    /// Median in the row's unit.
    pub median: Option<f64>,
    /// Lowest and highest repetition in the row's unit.
    pub range: Option<(f64, f64)>,
}

impl Cell {
    /// Summarizes `outcome` in `unit`.
    pub fn new(implementation: Impl, unit: Unit, outcome: Outcome) -> Cell {
        let (median_s, median_u, range) = match &outcome {
            Outcome::Samples(v) if !v.is_empty() => {
                let m = median(v);
                let (lo, hi) = min_max(v);
                let (a, b) = (unit.show(lo), unit.show(hi));
                (Some(m), Some(unit.show(m)), Some((a.min(b), a.max(b))))
            }
            _ => (None, None, None),
        };
        Cell {
            implementation,
            outcome,
            median_s,
            median: median_u,
            range,
        }
    }
}

/// One workload: its cells and the ratios.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Workload name.
    pub workload: &'static str,
    /// What one operation is.
    pub operation: &'static str,
    /// The unit figures are shown in.
    pub unit: &'static str,
    /// Operations per repetition.
    pub n: u64,
    /// Timed repetitions (after one warm-up).
    pub reps: usize,
    /// One per implementation that has this workload.
    pub cells: Vec<Cell>,
    /// mproc's median time ÷ CPython's (below 1: mproc is faster).
    pub mproc_over_cpython: Option<f64>,
    /// mproc's median time ÷ the faster of procspawn and ipc-channel.
    pub mproc_over_rust_peer: Option<f64>,
    /// mproc's median time ÷ the raw floor's.
    pub mproc_over_floor: Option<f64>,
    /// What the cells are.
    pub notes: &'static str,
}

impl Row {
    /// Builds the row and its ratios.
    pub fn new(w: &'static Workload, n: u64, reps: usize, cells: Vec<Cell>) -> Row {
        let t = |i: Impl| {
            cells
                .iter()
                .find(|c| c.implementation == i)
                .and_then(|c| c.median_s)
        };
        let m = t(Impl::Mproc);
        let ratio = |p: Option<f64>| m.zip(p).map(|(m, p)| m / p);
        let peer = match (t(Impl::Procspawn), t(Impl::IpcChannel)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Row {
            workload: w.name,
            operation: w.op,
            unit: w.unit.label(),
            n,
            reps,
            mproc_over_cpython: ratio(t(Impl::CPython)),
            mproc_over_rust_peer: ratio(peer),
            mproc_over_floor: ratio(t(Impl::Raw)),
            cells,
            notes: w.notes,
        }
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Run {
    /// The command line after the program name.
    pub args: Vec<String>,
    /// Small sizes (`--quick`).
    pub quick: bool,
    /// Online CPUs.
    pub cores: usize,
    /// /proc/loadavg (1, 5, 15 min) before the first cell.
    pub load_before: String,
    /// /proc/loadavg after the last cell.
    pub load_after: String,
    /// CPU model.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// CPython version.
    pub python: String,
    /// Wall time of the run, seconds.
    pub wall_s: f64,
    /// The codec comparison, when selected.
    pub codec: Option<CodecReport>,
    /// One per workload.
    pub rows: Vec<Row>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

impl Run {
    /// Records the machine before anything runs.
    pub fn begin(args: &[String], quick: bool) -> Run {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "?".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Run {
            args: args.to_vec(),
            quick,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            load_before: loadavg(),
            load_after: String::new(),
            cpu,
            kernel,
            python: crate::cells::Python::find().version(),
            wall_s: 0.0,
            codec: None,
            rows: Vec::new(),
        }
    }

    /// Records the load and wall time at the end.
    pub fn finish(&mut self, wall_s: f64) {
        self.load_after = loadavg();
        self.wall_s = wall_s;
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let cmd = format!(
            "cargo run --release -p mproc-bench -- {}",
            self.args.join(" ")
        );
        let _ = writeln!(
            s,
            "## mproc benchmark{}\n",
            if self.quick {
                " (--quick: small sizes, indicative only)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "`{}` — {} cores ({}), Linux {}, {}; load average {} before, {} after; {:.0} s.\n",
            cmd.trim_end(),
            self.cores,
            self.cpu,
            self.kernel,
            self.python,
            self.load_before,
            self.load_after,
            self.wall_s
        );
        if let Some(c) = &self.codec {
            codec_table(&mut s, c);
        }
        if self.rows.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "Median of the repetitions, (min–max) below it; the ratios divide mproc's median time by the peer's \
             (below 1×: mproc is faster; for GB/s rows too). Cells run one at a time, each in a fresh process.\n"
        );
        let mut head = String::from("| workload | unit |");
        for i in Impl::ALL {
            let _ = write!(head, " {} |", i.header());
        }
        head.push_str(" mproc ÷ CPython | mproc ÷ Rust peer | mproc ÷ floor |");
        let _ = writeln!(s, "{head}");
        let _ = writeln!(s, "|{}", "---|".repeat(2 + Impl::ALL.len() + 3));
        for r in &self.rows {
            let _ = write!(s, "| `{}` | {} |", r.workload, r.unit);
            for i in Impl::ALL {
                let cell = r.cells.iter().find(|c| c.implementation == i);
                let _ = write!(s, " {} |", cell_text(cell));
            }
            for x in [
                r.mproc_over_cpython,
                r.mproc_over_rust_peer,
                r.mproc_over_floor,
            ] {
                let _ = write!(
                    s,
                    " {} |",
                    x.map(|x| format!("**{}×**", sig(x))).unwrap_or_default()
                );
            }
            s.push('\n');
        }
        self.pi_speedups(&mut s);
        self.isolation_costs(&mut s);
        let _ = writeln!(
            s,
            "\nWhat each row does (n operations per repetition, one warm-up first):\n"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "- `{}` (n = {}, {} reps): {}. {}.",
                r.workload, r.n, r.reps, r.operation, r.notes
            );
        }
        s
    }
}

impl Run {
    /// The median time of `imp` on row `workload`.
    fn median_of(&self, workload: &str, imp: Impl) -> Option<f64> {
        let row = self.rows.iter().find(|r| r.workload == workload)?;
        row.cells.iter().find(|c| c.implementation == imp)?.median_s
    }

    /// Parallel speedups of the pi rows: each 2-worker median against its own language's
    /// serial loop (Rust's serial loop is the raw `pi_serial` cell).
    fn pi_speedups(&self, s: &mut String) {
        let (Some(rust_serial), py_serial) = (
            self.median_of("pi_serial", Impl::Raw),
            self.median_of("pi_serial", Impl::CPython),
        ) else {
            return;
        };
        let mut parts = Vec::new();
        for imp in [Impl::Mproc, Impl::Procspawn, Impl::Threads, Impl::Raw] {
            if let Some(t) = self.median_of("pi_pool", imp) {
                parts.push(format!("{} {}×", imp.header(), sig(rust_serial / t)));
            }
        }
        if let (Some(ps), Some(pp)) = (py_serial, self.median_of("pi_pool", Impl::CPython)) {
            parts.push(format!(
                "CPython Pool(2) over CPython serial {}×",
                sig(ps / pp)
            ));
        }
        if !parts.is_empty() {
            let _ = writeln!(
                s,
                "\npi speedup over the serial Rust loop, 2 workers: {}.",
                parts.join(", ")
            );
        }
    }

    /// The `_isolated` rows' ratio (their floor is the same pool without isolation),
    /// against the goals of the isolation work.
    fn isolation_costs(&self, s: &mut String) {
        let parts: Vec<String> = [
            ("pool_start_isolated", "pool start", "2"),
            ("pool_apply_isolated", "apply round trip", "1.1"),
        ]
        .iter()
        .filter_map(|&(row, what, goal)| {
            let r = self.rows.iter().find(|r| r.workload == row)?;
            let x = r.mproc_over_floor?;
            Some(format!("{what} {}× (goal ≤ {goal}×)", sig(x)))
        })
        .collect();
        if !parts.is_empty() {
            let _ = writeln!(
                s,
                "\nIsolation cost, the isolated pool ÷ the same pool without isolation (the \
                 `_isolated` rows' ÷ floor, both cells in the same run): {}.",
                parts.join(", ")
            );
        }
    }
}

/// Three significant digits, without an exponent for everyday magnitudes.
fn sig(x: f64) -> String {
    if !x.is_finite() {
        return "?".into();
    }
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

fn cell_text(c: Option<&Cell>) -> String {
    let Some(c) = c else { return "—".into() };
    match (&c.outcome, c.median, c.range) {
        (Outcome::Samples(_), Some(m), Some((lo, hi))) => {
            format!("{}<br>({}–{})", sig(m), sig(lo), sig(hi))
        }
        (Outcome::NotBuilt, ..) => "n/a (not built yet)".into(),
        (Outcome::Timeout(t), ..) => format!("timeout ({t} s)"),
        (Outcome::Failed(m), ..) => format!("failed: {}", m.replace('|', "/")),
        _ => "?".into(),
    }
}

fn codec_table(s: &mut String, c: &CodecReport) {
    let _ = writeln!(
        s,
        "### codec: encode + decode of one message (ns, median (min–max); encoded bytes)\n"
    );
    let _ = writeln!(
        s,
        "| payload | {} | fastest | fastest serde codec |",
        CODECS.join(" | ")
    );
    let _ = writeln!(s, "|---|{}---|---|", "---|".repeat(CODECS.len()));
    for r in &c.rows {
        let _ = write!(s, "| {} |", r.payload);
        for x in &r.cells {
            let _ = write!(
                s,
                " {} ({}–{}); {} B |",
                sig(x.ns_median),
                sig(x.ns_min),
                sig(x.ns_max),
                x.bytes
            );
        }
        let fastest = |serde_only: bool| {
            r.cells
                .iter()
                .enumerate()
                .filter(|(i, _)| !serde_only || SERDE[*i])
                .min_by(|a, b| a.1.ns_median.total_cmp(&b.1.ns_median))
                .map(|(i, _)| CODECS[i])
                .unwrap_or("?")
        };
        let _ = writeln!(s, " {} | {} |", fastest(false), fastest(true));
    }
    let _ = writeln!(
        s,
        "\nCustom serde error text (`Error::custom(\"...\")` in a user's impl), as each codec \
         reports it ({} build; bitcode keeps the text only when built with debug assertions):\n",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for e in &c.errors {
        let kept = match e.kept {
            Some(true) => "kept",
            Some(false) => "lost",
            None => "n/a",
        };
        let _ = writeln!(
            s,
            "- {}: **{}** — encode: \"{}\"; decode: \"{}\"",
            e.codec, kept, e.encode, e.decode
        );
    }
    s.push('\n');
}
