//! Word counts in a manager's dict, from four processes at once.
//!
//! Python (racy: `counts[w] = counts.get(w, 0) + 1` is two round trips, and two processes
//! can read the same old count, so updates are lost):
//! ```python
//! def count(counts, words):
//!     for w in words:
//!         counts[w] = counts.get(w, 0) + 1
//! if __name__ == "__main__":
//!     with multiprocessing.Manager() as manager:
//!         counts = manager.dict()
//!         ps = [multiprocessing.Process(target=count, args=(counts, chunk)) for chunk in chunks]
//!         ...
//!         for word, n in sorted(counts.items()):
//!             print(f"{word}: {n}")
//! ```
//!
//! Here each increment is one `modify`, run atomically in the server: nothing is lost.
//! Prints each word and its count, sorted, then the total (which equals the number of words).

use mproc::{DictProxy, Manager};

const TEXT: &str = "the quick brown fox jumps over the lazy dog the dog sleeps \
                    and the fox runs while the quick dog barks at the brown fox";

fn count(counts: DictProxy<String, u64>, words: Vec<String>) -> mproc::Result<()> {
    for w in words {
        counts.modify(w, |n: Option<u64>| n.unwrap_or(0) + 1)?;
    }
    Ok(())
}

fn main() -> mproc::Result<()> {
    let manager = Manager::start()?;
    let counts = manager.dict()?;
    let words: Vec<String> = TEXT.split_whitespace().map(String::from).collect();
    // Four processes, each counting every word of the text: four times the counts.
    let workers: Vec<_> = (0..4)
        .map(|_| mproc::spawn(count, (counts.clone(), words.clone())))
        .collect::<mproc::Result<_>>()?;
    for w in workers {
        w.result()??;
    }
    let mut items = counts.items()?;
    items.sort();
    for (word, n) in &items {
        println!("{word}: {n}");
    }
    let total: u64 = items.iter().map(|(_, n)| n).sum();
    println!("total: {total} (4 x {} words)", words.len());
    assert_eq!(total, 4 * words.len() as u64, "no update was lost");
    manager.shutdown()
}
