//! How busy the machine is: what an adaptive spin asks before it burns a CPU.
//!
//! [`runnable`] reads the kernel's instantaneous count of runnable threads (the fourth field
//! of `/proc/loadavg`, `running/total`; it counts the reader), and [`cpus`] the CPUs this
//! process may run on (its affinity mask and cgroup quota, as std computes them). When the
//! first exceeds the second, a thread that spins keeps a runnable one off a CPU.

use std::sync::OnceLock;

/// Runnable threads on the whole machine right now, including the caller; `None` if
/// `/proc/loadavg` cannot be read or parsed.
pub(crate) fn runnable() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    parse_loadavg(&text)
}

/// The `running` of `/proc/loadavg`'s `running/total` field.
fn parse_loadavg(text: &str) -> Option<u32> {
    let field = text.split_ascii_whitespace().nth(3)?;
    field.split_once('/')?.0.parse().ok()
}

/// CPUs available to this process (at least 1), computed once.
pub(crate) fn cpus() -> u32 {
    static CPUS: OnceLock<u32> = OnceLock::new();
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_is_parsed_and_hostile_text_is_not() {
        assert_eq!(parse_loadavg("0.08 0.03 0.01 2/345 6789\n"), Some(2));
        assert_eq!(parse_loadavg("0.08 0.03 0.01 2345 6789\n"), None);
        assert_eq!(parse_loadavg("0.08 0.03"), None);
        assert_eq!(parse_loadavg("a b c x/1 2"), None);
        assert!(runnable().is_some_and(|n| n >= 1));
        assert!(cpus() >= 1);
    }
}
