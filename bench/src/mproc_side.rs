//! mproc's side of every row. A row whose capability has not landed in mproc yet answers
//! `NotBuilt`, and the table says so instead of failing.

/// What mproc's side of a row produced.
pub enum MprocCell {
    /// Seconds per operation, one per repetition.
    Samples(Vec<f64>),
    /// The capability this row needs is not in mproc yet.
    NotBuilt,
}

/// Runs mproc's side of workload `w`.
pub fn run(w: &str, _n: u64, _r: usize) -> MprocCell {
    match w {
        _ => MprocCell::NotBuilt,
    }
}
