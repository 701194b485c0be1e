//! The CRI variants side by side. Each one mostly waits: on the held or slow unmounts
//! (25 to 50 s), then on the shim for the 15 s upstream gives it to exit. One after another
//! they take about three minutes; side by side, about as long as the longest. So the first
//! CRI variant the runner asks for starts all of this run's, each on a thread of its own
//! with its own containerd, directories and cgroup parent, and every variant then takes
//! its own outcome when the runner asks for it, in the runner's order.
//!
//! A variant's thread owns its whole lab: containerd and the FUSE daemon die with the
//! thread that started them (PR_SET_PDEATHSIG), and the thread tears them down before it
//! ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::Duration;

use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_core::{Context, VariantKind, VariantOutcome};

use super::{Kind, Options};

/// What a variant's thread needs of the scenario's context, owned.
#[derive(Clone)]
pub(super) struct Env {
    scenario: String,
    scratch: PathBuf,
    /// `None` without `--runtime`: only the kernel-level variant runs.
    pub(super) runtime: Option<RuntimeUnderTest>,
    pub(super) opts: Options,
}

impl Env {
    pub(super) fn new(ctx: &Context, runtime: Option<RuntimeUnderTest>, opts: Options) -> Env {
        Env {
            scenario: ctx.scenario.clone(),
            scratch: ctx.scratch.clone(),
            runtime,
            opts,
        }
    }

    /// A fresh directory for the variant under the scratch tmpfs.
    pub(super) fn variant_dir(&self, kind: Kind) -> std::io::Result<PathBuf> {
        let dir = self.scratch.join(kind.name());
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// A progress line (-v), naming the variant: the variants' lines interleave.
    pub(super) fn progress(&self, kind: Kind, msg: impl AsRef<str>) {
        tracing::info!(scenario = %self.scenario, variant = kind.name(), "{}", msg.as_ref());
    }
}

type Outcome = anyhow::Result<VariantOutcome>;

/// The running variants' outcomes, by variant; started once per scenario process.
static RUNNING: Mutex<Option<HashMap<&'static str, Receiver<Outcome>>>> = Mutex::new(None);

/// How long a variant's outcome may take once the runner asks for it (the scenario's own
/// timeout ends the run before this in practice).
const OUTCOME_LIMIT: Duration = Duration::from_secs(480);

/// `kind`'s outcome: starts `all` (the CRI variants this run will ask for) on their threads
/// the first time, then waits for `kind`'s.
pub(super) fn outcome(
    env: &Env,
    kind: Kind,
    all: &[Kind],
    run: fn(&Env, Kind) -> Outcome,
) -> Outcome {
    let rx = {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        let map = running.get_or_insert_with(|| start(env, all, run));
        map.remove(kind.name())
    };
    match rx {
        Some(rx) => rx.recv_timeout(OUTCOME_LIMIT).unwrap_or_else(|e| {
            Err(anyhow::anyhow!(
                "the variant's thread gave no outcome within {OUTCOME_LIMIT:?}: {e}"
            ))
        }),
        // Not started with the others (asked for twice, or not in `all`): run it here.
        None => run(env, kind),
    }
}

fn start(
    env: &Env,
    all: &[Kind],
    run: fn(&Env, Kind) -> Outcome,
) -> HashMap<&'static str, Receiver<Outcome>> {
    all.iter()
        .map(|&kind| {
            let (tx, rx) = mpsc::channel();
            let env = env.clone();
            let spawned = std::thread::Builder::new()
                .name(kind.name().into())
                .spawn(move || {
                    let _ = tx.send(run(&env, kind));
                });
            if let Err(e) = spawned {
                let (tx, rx2) = mpsc::channel();
                let _ = tx.send(Err(anyhow::anyhow!(
                    "failed to start the variant's thread: {e}"
                )));
                return (kind.name(), rx2);
            }
            (kind.name(), rx)
        })
        .collect()
}
