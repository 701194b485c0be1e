//! What the tracer keeps per traced thread.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Enter,
    Exit,
}

/// A matched call between its entry and exit stops, fixed at entry: other threads entering
/// the same syscall meanwhile advance the rule's count.
#[derive(Debug)]
pub(super) struct Pending {
    /// Index of the matched rule in `Injector::rules`.
    pub(super) rule: usize,
    /// The call's 1-based number among the rule's calls.
    pub(super) call: u64,
}

#[derive(Debug, Default)]
pub(super) struct Tracee {
    /// Counting and tampering starts at the started command's exec (not in our pre-exec code).
    pub(super) armed: bool,
    pub(super) held: Option<(Instant, Phase)>,
    pub(super) pending: Option<Pending>,
    pub(super) detaching: bool,
}
