//! What the tracer keeps per traced thread.

use std::time::{Duration, Instant};

use super::super::spec::Fault;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Enter,
    Exit,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) nr: i64,
    pub(super) fault: Option<Fault>,
    pub(super) delay_exit: Option<Duration>,
}

#[derive(Debug, Default)]
pub(super) struct Tracee {
    /// Counting and tampering starts at the started command's exec (not in our pre-exec code).
    pub(super) armed: bool,
    pub(super) held: Option<(Instant, Phase)>,
    pub(super) pending: Option<Pending>,
    pub(super) detaching: bool,
}
