//! Tasks waiting in an NLM lock request, found among the tasks in D state that hung-task
//! samples: a lock request whose RPC (to rpc.statd, or to the server's lockd) gets no answer
//! waits killably in `rpc_wait_bit_killable`, which /proc shows as D. A blocking lock that the
//! server queued waits interruptibly (S) in `nlmclnt_wait` (fs/lockd/clntproc.c): ordinary
//! lock contention, not reported.

use faultline_sys::proc::Gaps;

use crate::hung_task::{is_nlm_frame, kernel_view, parse_stack, DSample};

pub use faultline_sys::proc::stat_state;

/// The NLM frame of a kernel stack (`/proc/PID/stack`), if the task waits in a lock request:
/// its innermost frame that [`is_nlm_frame`]. The wait itself shows as
/// `rpc_wait_bit_killable` (an RPC to statd or to the server's lockd).
pub fn nlm_frame(stack: &str) -> Option<String> {
    parse_stack(stack).into_iter().find(|f| is_nlm_frame(f))
}

/// A task waiting in the NLM.
#[derive(Debug, Clone, PartialEq)]
pub struct LockWaiter {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub wchan: String,
    pub frame: String,
    pub stack: Vec<String>,
}

/// Every task (threads included) in D in `sample` whose kernel stack is in the NLM client.
/// Kernel threads are left out: lockd's own thread runs in `lockd` and requests no lock. A
/// stack that could not be read (it needs root) is recorded in `gaps`.
pub fn lock_waiters(
    sample: &DSample,
    proc_root: &std::path::Path,
    gaps: &mut Gaps,
) -> Vec<LockWaiter> {
    let mut out = Vec::new();
    for t in sample.tasks().into_iter().filter(|t| !t.kernel_thread) {
        let (wchan, Some(stack)) = kernel_view(proc_root, t.pid, t.tid, gaps) else {
            continue;
        };
        let Some(frame) = nlm_frame(&stack) else {
            continue;
        };
        out.push(LockWaiter {
            pid: t.tid,
            comm: t.comm.to_string(),
            state: 'D',
            wchan,
            frame,
            stack: stack.lines().map(|l| l.trim().to_string()).collect(),
        });
    }
    out
}
