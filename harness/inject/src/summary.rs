//! What `faultline inject` says after the run about a rule that tampered with nothing: a
//! rule naming a call the program never makes (coreutils' `sleep` calls clock_nanosleep, not
//! nanosleep; glibc's `open()` is openat) otherwise passes silently.

use super::spec::Rule;
use super::tracer::Report;

/// How many of the most frequent calls a note lists.
const FREQUENT: usize = 5;

/// One line about each rule that injected nothing, naming what the program called instead.
pub fn unmatched(rules: &[Rule], report: &Report) -> Vec<String> {
    let total = report.total_calls();
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| !report.events.iter().any(|e| e.syscall == r.syscall))
        .map(|(i, r)| {
            let calls = report.calls.get(i).copied().unwrap_or(0);
            if calls > 0 {
                return format!(
                    "{calls} {} call(s) seen, none selected by when={}",
                    r.syscall, r.when
                );
            }
            let mut line = format!("no call matched {} (0 of {total} syscalls seen)", r.syscall);
            let related = related(&r.syscall, report);
            if !related.is_empty() {
                line += &format!("; the program may use {} instead", related.join(" or "));
            }
            if !report.seen.is_empty() {
                let top: Vec<String> = report
                    .seen
                    .iter()
                    .take(FREQUENT)
                    .map(|s| format!("{} {}", s.syscall, s.calls))
                    .collect();
                line += &format!("; most frequent: {}", top.join(", "));
            }
            line
        })
        .collect()
}

/// Seen calls whose names contain the rule's (`open` → `openat`, `nanosleep` →
/// `clock_nanosleep`, `umount2` → `umount`-anything) or end the rule's (`clock_nanosleep` →
/// `nanosleep`).
fn related(syscall: &str, report: &Report) -> Vec<String> {
    let stem = syscall.trim_end_matches(|c: char| c.is_ascii_digit());
    report
        .seen
        .iter()
        .map(|s| s.syscall.as_str())
        .filter(|s| *s != syscall && (s.contains(stem) || syscall.ends_with(&format!("_{s}"))))
        .take(3)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::SyscallCount;
    use crate::InjectionEvent;

    fn seen(calls: &[(&str, u64)]) -> Vec<SyscallCount> {
        calls
            .iter()
            .map(|(s, n)| SyscallCount {
                syscall: s.to_string(),
                calls: *n,
            })
            .collect()
    }

    #[test]
    fn names_what_was_called_instead() {
        let rules = vec![Rule::parse_strace("nanosleep:delay_enter=1s").unwrap()];
        let report = Report {
            calls: vec![0],
            seen: seen(&[("mmap", 20), ("close", 8), ("clock_nanosleep", 1)]),
            ..Report::default()
        };
        let lines = unmatched(&rules, &report);
        assert_eq!(
            lines,
            [
                "no call matched nanosleep (0 of 29 syscalls seen); the program may use \
              clock_nanosleep instead; most frequent: mmap 20, close 8, clock_nanosleep 1"
            ]
        );
    }

    #[test]
    fn says_when_the_when_expression_selected_none() {
        let rules = vec![
            Rule::parse_strace("umount2:delay_enter=1s:when=5").unwrap(),
            Rule::parse_strace("rmdir:error=EBUSY").unwrap(),
        ];
        let report = Report {
            events: vec![InjectionEvent {
                pid: 1,
                syscall: "rmdir".into(),
                call: 1,
                action: "error=EBUSY".into(),
                at_ms: 0,
            }],
            calls: vec![2, 1],
            seen: seen(&[("umount2", 2), ("rmdir", 1)]),
            ..Report::default()
        };
        assert_eq!(
            unmatched(&rules, &report),
            ["2 umount2 call(s) seen, none selected by when=5"]
        );
    }
}
