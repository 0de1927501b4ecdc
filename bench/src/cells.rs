//! Running one cell (a workload through one implementation) in its own process, with a
//! deadline, and collecting its samples.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::mproc_side::{self, MprocCell};
use crate::report::{Cell, Row};
use crate::workloads::{Impl, Workload};

/// What a cell produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Seconds per operation, one per repetition.
    Samples(Vec<f64>),
    /// mproc does not have this capability yet.
    NotBuilt,
    /// The cell failed; the last line it printed.
    Failed(String),
    /// The cell ran past its deadline (seconds) and was killed.
    Timeout(u64),
}

const MARK: &str = "BENCH-CELL ";

/// A cell that ran longer than this is followed by a pause of `SETTLE`.
const SETTLE_AFTER: Duration = Duration::from_secs(5);
const SETTLE: Duration = Duration::from_secs(3);

/// The worker side: `cell WORKLOAD IMPL N REPS`; prints one `BENCH-CELL {json}` line.
pub fn worker(args: &[String]) {
    let (Some(w), Some(imp), Some(n), Some(r)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        eprintln!("usage: mproc-bench cell WORKLOAD IMPL N REPS");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N is a number");
    let r: usize = r.parse().expect("REPS is a number");
    #[cfg(feature = "mpi")]
    if w.starts_with("mpi_") {
        let outcome = match Impl::from_key(imp) {
            Some(Impl::Mproc) => Outcome::Samples(crate::mpi_side::mproc(w, n, r)),
            Some(Impl::Raw) => or_failed(crate::mpi_side::raw(w, n, r)),
            _ => Outcome::Failed(format!("no MPI cell for {imp}")),
        };
        println!(
            "{MARK}{}",
            serde_json::to_string(&outcome).expect("plain data")
        );
        return;
    }
    let outcome = match Impl::from_key(imp) {
        Some(Impl::Mproc) => match mproc_side::run(w, n, r) {
            MprocCell::Samples(v) => Outcome::Samples(v),
            MprocCell::NotBuilt => Outcome::NotBuilt,
        },
        Some(Impl::Procspawn) => or_failed(crate::peers::procspawn(w, n, r)),
        Some(Impl::IpcChannel) => or_failed(crate::peers::ipc_channel(w, n, r)),
        Some(Impl::Threads) => or_failed(crate::threads::run(w, n, r)),
        Some(Impl::Raw) => or_failed(crate::raw::run(w, n, r)),
        Some(Impl::CPython) | None => Outcome::Failed(format!("no Rust cell for {imp}")),
    };
    println!(
        "{MARK}{}",
        serde_json::to_string(&outcome).expect("plain data")
    );
}

fn or_failed(v: Option<Vec<f64>>) -> Outcome {
    match v {
        Some(v) => Outcome::Samples(v),
        None => Outcome::Failed("this implementation has no program for this workload".into()),
    }
}

/// The real CPython interpreter (not the pyenv shim, whose start-up would be timed by
/// nobody but would slow every cell) and the directory of the programs.
pub struct Python {
    exe: Option<PathBuf>,
    dir: PathBuf,
}

impl Python {
    /// Asks `python3` where its real executable is.
    pub fn find() -> Python {
        let exe = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        Python {
            exe,
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python"),
        }
    }

    /// `python3 --version`, for the report header.
    pub fn version(&self) -> String {
        self.exe
            .as_ref()
            .and_then(|e| Command::new(e).arg("--version").output().ok())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "python3 not found".into())
    }
}

/// Runs every implementation of `w`, one fresh process each.
pub fn run_row(w: &'static Workload, quick: bool, python: &Python) -> Row {
    let (n, reps) = if quick {
        (w.n.1, w.reps.1)
    } else {
        (w.n.0, w.reps.0)
    };
    let deadline = Duration::from_secs(if quick { 40 } else { 300 });
    let mut cells = Vec::new();
    for &imp in w.impls {
        eprint!("[{}] {:<12} ", w.name, imp.key());
        let t = Instant::now();
        let outcome = match imp {
            Impl::CPython => match &python.exe {
                Some(exe) => {
                    let mut cmd = Command::new(exe);
                    cmd.arg(python.dir.join("mp_bench.py"))
                        .arg(w.name)
                        .arg(n.to_string())
                        .arg(reps.to_string());
                    run_bounded(cmd, deadline, python_outcome)
                }
                None => Outcome::Failed("python3 not found".into()),
            },
            #[cfg(feature = "mpi")]
            _ if w.name.starts_with("mpi_") => run_bounded(
                crate::mpi_side::command(w.name, imp.key(), n, reps),
                deadline,
                rust_outcome,
            ),
            _ => {
                let mut cmd =
                    Command::new(std::env::current_exe().expect("the harness knows its own path"));
                cmd.args(["cell", w.name, imp.key(), &n.to_string(), &reps.to_string()]);
                run_bounded(cmd, deadline, rust_outcome)
            }
        };
        let took = t.elapsed();
        eprintln!("{:6.1}s {}", took.as_secs_f64(), short(&outcome));
        if !quick && took > SETTLE_AFTER {
            // A long CPU-bound cell leaves the (virtual) machine slower for a second or
            // two; measured: the next cell's pi ran ~25% slower. Let it settle.
            std::thread::sleep(SETTLE);
        }
        cells.push(Cell::new(imp, w.unit, outcome));
    }
    Row::new(w, n, reps, cells)
}

fn short(o: &Outcome) -> String {
    match o {
        Outcome::Samples(v) => format!("{} samples", v.len()),
        Outcome::NotBuilt => "n/a (not built yet)".into(),
        Outcome::Failed(m) => format!("FAILED: {m}"),
        Outcome::Timeout(s) => format!("TIMEOUT after {s} s"),
    }
}

fn rust_outcome(stdout: &str, stderr: &str) -> Outcome {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(MARK))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| Outcome::Failed(last_line(stderr)))
}

fn python_outcome(stdout: &str, stderr: &str) -> Outcome {
    #[derive(Deserialize)]
    struct Py {
        samples: Option<Vec<f64>>,
        error: Option<String>,
    }
    match stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Py>(l).ok())
    {
        Some(Py {
            samples: Some(v), ..
        }) => Outcome::Samples(v),
        Some(Py { error: Some(e), .. }) => Outcome::Failed(e),
        _ => Outcome::Failed(last_line(stderr)),
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .chars()
        .take(160)
        .collect()
}

/// Runs `cmd` in its own process group; past `deadline` the whole group is killed.
fn run_bounded(mut cmd: Command, deadline: Duration, parse: fn(&str, &str) -> Outcome) -> Outcome {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot start the cell: {e}")),
    };
    let out = lines_of(child.stdout.take().expect("stdout is piped"));
    let err = lines_of(child.stderr.take().expect("stderr is piped"));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    if status.is_none() {
        // SAFETY: kill(2) on the process group this function created for the cell.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = child.wait();
    }
    let stdout = drain(&out);
    let stderr = drain(&err);
    match status {
        None => Outcome::Timeout(deadline.as_secs()),
        Some(st) => match parse(&stdout, &stderr) {
            Outcome::Failed(m) if !st.success() => Outcome::Failed(format!("{st}: {m}")),
            o => o,
        },
    }
}

/// Forwards the lines of a child's pipe; a grandchild that keeps the pipe open after the
/// cell exits cannot hold the harness up (see `drain`).
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Everything the pipe gave until EOF, or until it stayed silent for two seconds.
fn drain(rx: &mpsc::Receiver<String>) -> String {
    let mut s = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        s.push_str(&line);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_samples_and_errors() {
        match python_outcome("noise\n{\"samples\": [1e-6, 2e-6]}\n", "") {
            Outcome::Samples(v) => assert_eq!(v, vec![1e-6, 2e-6]),
            o => panic!("{o:?}"),
        }
        match python_outcome("{\"error\": \"no CPython program for x\"}", "") {
            Outcome::Failed(m) => assert!(m.contains("no CPython program")),
            o => panic!("{o:?}"),
        }
        match python_outcome("", "Traceback\nAssertionError: 3\n") {
            Outcome::Failed(m) => assert_eq!(m, "AssertionError: 3"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn parses_the_rust_cell_line_or_reports_the_panic() {
        let line = format!(
            "{MARK}{}",
            serde_json::to_string(&Outcome::NotBuilt).expect("plain data")
        );
        assert!(matches!(rust_outcome(&line, ""), Outcome::NotBuilt));
        match rust_outcome(
            "",
            "thread 'main' panicked at x.rs:1:1:\nmproc: start: boom\n",
        ) {
            Outcome::Failed(m) => assert_eq!(m, "mproc: start: boom"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_hanging_cell_is_killed_at_its_deadline() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let t = Instant::now();
        let o = run_bounded(cmd, Duration::from_millis(200), rust_outcome);
        assert!(matches!(o, Outcome::Timeout(_)), "{o:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
