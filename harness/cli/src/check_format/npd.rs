//! `check --format npd`: the answer as one line for node-problem-detector's custom plugin
//! monitor, which trims the plugin's stdout, cuts it at `max_output_length` bytes (80 by
//! default; a Go string slice, so a byte count that may split a character) and shows it as
//! the node condition's or event's message (kubernetes/node-problem-detector,
//! pkg/custompluginmonitor/plugin/plugin.go). The line therefore fits in [`MAX`] bytes on its
//! own: the most severe problem first, the rest counted, long paths shortened in the middle
//! (`/var/lib/kubelet/pods/…/data.txt`) so both ends stay readable.

use faultline_detect::{Finding, Severity};

use super::{Checked, Outcome};

/// node-problem-detector's default `max_output_length`, in bytes.
pub const MAX: usize = 80;

const ELLIPSIS: &str = "…";

/// The line for `outcomes`: the first problem (the most severe), or `unknown: why` when a
/// detector could not look everywhere and nothing was found, or `OK: ...`.
pub fn line(outcomes: &[Checked]) -> String {
    let findings: Vec<&Finding> = outcomes
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Ran(r) => Some(r.findings.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    if !findings.is_empty() {
        return problem_line(&findings);
    }
    let ran: Vec<&str> = outcomes
        .iter()
        .filter(|c| !matches!(c.outcome, Outcome::NotRun(_)))
        .map(|c| c.name)
        .collect();
    // One detector per plugin rule is the usual setup: its condition already names it.
    let who = |name: &str| {
        if ran.len() == 1 {
            String::new()
        } else {
            format!("{name}: ")
        }
    };
    for c in outcomes {
        match &c.outcome {
            Outcome::Failed(error) => return unknown(&format!("{}failed: {error}", who(c.name))),
            Outcome::Ran(r) if r.is_partial() => {
                return unknown(&format!("{}{}", who(c.name), compact(&r.unreadable[0])))
            }
            _ => {}
        }
    }
    match ran.as_slice() {
        [one] => fit(&format!("OK: {one} found no problem")),
        many => format!("OK: {} detectors found no problem", many.len()),
    }
}

/// `unknown: why`, shortened in the middle to fit: the start says what could not be read,
/// the end why (`permission denied (run as root)`).
pub fn unknown(why: &str) -> String {
    const PREFIX: &str = "unknown: ";
    format!("{PREFIX}{}", shorten_text(why.trim(), MAX - PREFIX.len()))
}

/// A gap's sentence in fewer bytes: `could not read the mount namespace (/proc/PID/ns/mnt)
/// of 1 of 31 processes: permission denied` loses its parenthesised asides and says
/// `cannot read mount namespace of ...`.
fn compact(sentence: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for ch in sentence.chars() {
        match ch {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    let out = out.replace(" :", ":");
    match out.strip_prefix("could not read the ") {
        Some(rest) => format!("cannot read {rest}"),
        None => out,
    }
}

fn shorten_text(s: &str, budget: usize) -> String {
    if s.len() <= budget {
        s.to_string()
    } else {
        middle(s, budget)
    }
}

/// One problem per detector and subject (a stale bind seen in three mount namespaces is one
/// problem): the most severe first, then `(+N more)`.
fn problem_line(findings: &[&Finding]) -> String {
    let mut groups: Vec<Vec<&Finding>> = Vec::new();
    for f in findings {
        match groups
            .iter_mut()
            .find(|g| g[0].detector == f.detector && g[0].subject == f.subject)
        {
            Some(g) => g.push(f),
            None => groups.push(vec![f]),
        }
    }
    // Stable: among equals, the detectors' order.
    groups.sort_by_key(|g| std::cmp::Reverse(g.iter().map(|f| f.severity).max()));
    let first = &groups[0];
    let (what, subject) = describe(first[0]);
    let mut tail = String::new();
    let namespaces = first.len();
    if namespaces > 1 && matches!(first[0].detector.as_str(), "stale-bind" | "dead-fuse") {
        tail.push_str(&format!(" in {namespaces} mount namespaces"));
    }
    if groups.len() > 1 {
        tail.push_str(&format!(" (+{} more)", groups.len() - 1));
    }
    compose(&what, &subject, &tail)
}

/// What a finding is, in a few words, and its subject (a path, a pid, a device).
fn describe(f: &Finding) -> (String, String) {
    let critical = f.severity == Severity::Critical;
    let what = match f.detector.as_str() {
        "stale-bind" if critical => "stale bind".to_string(),
        "stale-bind" => "possibly stale bind".to_string(),
        "dead-fuse" => match f.evidence["probe"].as_str() {
            Some("Dead") => "dead FUSE mount".to_string(),
            Some("Hung") => "hung FUSE mount".to_string(),
            _ if critical => "CSI volume from deleted dir".to_string(),
            _ => "shadowed FUSE mount".to_string(),
        },
        "busy-binary" if critical => "binary written while it runs:".to_string(),
        "busy-binary" => "running binary replaced:".to_string(),
        "nfs-lock-manager" => "NFS locking broken:".to_string(),
        "ext4-index-full" if critical => "ext4 dir index full, creates fail:".to_string(),
        "ext4-index-full" => "ext4 dir index was full:".to_string(),
        "htree-capacity" => match f.evidence["percent_used"].as_f64() {
            Some(p) => format!("ext4 dir index {p:.0}% full:"),
            None => "ext4 dir index nearly full:".to_string(),
        },
        "orphan-shim" => "orphaned shim".to_string(),
        "hung-task" => "task hung in D state:".to_string(),
        other => format!("{other}:"),
    };
    (what, f.subject.clone())
}

/// `what subject tail` in at most [`MAX`] bytes: the subject is shortened first, in the
/// middle; only if `what` and `tail` alone are too long is the end cut.
fn compose(what: &str, subject: &str, tail: &str) -> String {
    let fixed = what.len() + 1 + tail.len();
    if fixed + ELLIPSIS.len() + 2 > MAX {
        return fit(&format!("{what} {subject}{tail}"));
    }
    format!("{what} {}{tail}", shorten(subject, MAX - fixed))
}

/// `s` in at most `budget` bytes. A path keeps its last component and as many leading ones
/// as fit (`/var/lib/kubelet/pods/…/data.txt`); anything else, or a last component too long
/// on its own, keeps both ends of the text around an ellipsis.
pub fn shorten(s: &str, budget: usize) -> String {
    if s.len() <= budget {
        return s.to_string();
    }
    if let Some((head, last)) = s.rsplit_once('/') {
        let joiner = format!("/{ELLIPSIS}/");
        if !last.is_empty() && last.len() + joiner.len() <= budget {
            let parts: Vec<&str> = head.split('/').collect();
            let fits = |n: usize| parts[..n].join("/").len() + joiner.len() + last.len() <= budget;
            let n = (1..=parts.len())
                .take_while(|&n| fits(n))
                .last()
                .unwrap_or(0);
            let kept = parts[..n].join("/");
            return format!("{kept}{joiner}{last}");
        }
    }
    middle(s, budget)
}

/// Both ends of `s` around an ellipsis, in at most `budget` bytes (cut at characters).
fn middle(s: &str, budget: usize) -> String {
    let room = budget.saturating_sub(ELLIPSIS.len());
    let front_room = room.div_ceil(2);
    let front_end = floor_char(s, front_room);
    let back_room = room - front_end;
    let back_start = ceil_char(s, s.len() - back_room.min(s.len()));
    format!("{}{ELLIPSIS}{}", &s[..front_end], &s[back_start..])
}

/// `s` cut at the end, with an ellipsis, to [`MAX`] bytes.
fn fit(s: &str) -> String {
    let s = s.trim();
    if s.len() <= MAX {
        return s.to_string();
    }
    format!("{}{ELLIPSIS}", &s[..floor_char(s, MAX - ELLIPSIS.len())])
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests;
