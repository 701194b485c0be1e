//! `etxtbsy-exec-while-copy`: a daemon copies a binary in place over a file the kernel is
//! executing and dies with `Text file busy (os error 26)`.
//!
//! Seen with IBM core-dump-handler: its agent (a DaemonSet) copies the core-dump composer
//! `cdc` onto the host (`/home/kubernetes/bin/cdc`) with `fs::copy` at start-up. If the host
//! is running `cdc` at that moment (the kernel's `core_pattern` pipe helper, writing a dump),
//! `open(O_WRONLY|O_TRUNC)` on the running inode fails with ETXTBSY, the agent exits, the
//! crash makes the kernel run `cdc` again, and the pod crashloops (a public debugging report,
//! "the mystery of pod crashloops and etxtbsy"; IBM/core-dump-handler#86 "Error: Text file busy (os error
//! 26)" on GKE, where `ps` showed `/home/kubernetes/bin/cdc` processes stuck for weeks).
//!
//! Here: a "host bin dir" on the scenario's scratch tmpfs holds `cdc` (a copy of coreutils'
//! `sleep` with a version marker appended, so a fresh exec can prove which version runs)
//! and a process is executing it. A copier replaces it with the new version from a
//! `vendor/default/` directory while the detector `busy-binary` watches the bin dir with
//! inotify and records the inode at the path before and after.
//!
//! Variants:
//! - `naive`: `std::fs::copy` onto the path, as the agent does. Reproduced: ETXTBSY, and the
//!   running binary and the path are untouched (v1). On kernels without the write denial
//!   (table below) the bug takes its other form: the write succeeds into the running inode
//!   (same inode, the path now holds v2) — reproduced too, and the detector classifies it
//!   `in-place` as well.
//! - `atomic`: a temporary file in the same directory, fsync, rename over the path. Clean:
//!   the path is present throughout, the running process keeps the old inode (its
//!   `/proc/PID/exe` still reads v1) and a fresh exec runs v2.
//! - `unlink-first`: remove the path, then copy (the report's "lazybones way"). It succeeds and
//!   avoids ETXTBSY, but the path is missing for a window; the scenario stops the copier in
//!   that window and shows that `stat` and an exec of the path fail with ENOENT — what the
//!   kernel's core_pattern helper would hit, losing the dump. We count that window as the bug
//!   reproduced in a lesser form: the variant expects `reproduced` and the detector reports
//!   `unlink-then-create` with a *warning* (the ETXTBSY forms are *critical*). Calling it
//!   clean would make the detector stay silent about a window that really loses work; only
//!   temp-file-plus-rename leaves the path valid throughout.
//!
//! `--copier 'COMMAND {src} {dst}'` (options["copier"]) runs a third-party copier or
//! installer instead of the built-ins, as one variant `copier` whose verdict is the
//! detector's classification: `pass` means the copier renamed a new file over the path
//! (safe to run while the host executes the binary); `fail` means it replaced the file in
//! place (ETXTBSY, or silent overwrite on kernels without the denial) or unlinked and
//! re-created it (missing-path window), and the finding says which and how to fix it; a
//! copier that fails for another reason, or does not replace the file, is an `error` with
//! its exit status and stderr. `{src}` and `{dst}` are replaced by paths made only of
//! `[A-Za-z0-9/._-]`, so they need no quoting; the command runs under `sh -c`.
//!
//! The kernel table: upstream commit 2a010c412853 ("fs: don't block i_writecount during
//! exec", 6.11-rc1) stopped denying writes to running executables; 3b832035387f (Revert
//! "fs: don't block i_writecount during exec", 6.13-rc1) restored ETXTBSY after mold's
//! in-place relinking crashed running programs, and the revert reached stable as 6.11.11
//! and 6.12.2. So 6.11-rc1..6.11.10 and 6.12-rc1..6.12.1 (6.12's release candidates
//! included) let the write through.
//! Distribution kernels that carry the revert under an older version number will show
//! ETXTBSY where the table expects the write to succeed: the `naive` variant then fails
//! with both observations in `observed`.

mod copier_runner;
mod copiers;
mod host_bin;
mod observations;
mod write_denial;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context as _};
use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_core::{
    Context, Expectation, KernelVersion, Requirement, Scenario, ScenarioOption, Variant,
    VariantOutcome,
};
use faultline_detect::busy_binary::{
    self, classify, executors, replacement_findings, Classification, CopierOutcome, DirWatch,
    Replacement, Strategy, ETXTBSY,
};
use serde_json::json;

use copier_runner::run_copier;
use copiers::{copy_atomic, copy_naive, copy_unlink_first};
use host_bin::HostBin;
use observations::{After, Window};
pub use write_denial::{kernel_denies_writes, NO_WRITE_DENIAL};

pub struct EtxtbsyExecWhileCopy;

faultline_core::variant_kind! {
    /// The built-in copiers, and `copier` for a command given with `--copier`.
    enum Kind {
        Naive = "naive",
        Atomic = "atomic",
        UnlinkFirst = "unlink-first",
        Copier = "copier",
    }
}

const NAME: &str = "cdc";
const OLD_VERSION: &str = "v1";
/// A different length from v1, so no copier can skip the copy by size and mtime (rsync does).
const NEW_VERSION: &str = "v2-new";

const NAIVE_DENIED: &str =
    "fs::copy onto the running binary: ETXTBSY (os error 26), running binary untouched";
const NAIVE_ALLOWED: &str = "fs::copy onto the running binary: the write succeeds into the running inode (kernel without write denial, 2a010c412853)";

impl Scenario for EtxtbsyExecWhileCopy {
    fn options(&self) -> &'static [ScenarioOption] {
        &[ScenarioOption {
            key: "copier",
            check: copier_runner::check_template,
            help: "a copier or installer command with {src} and {dst} to judge instead of the built-in variants (also --copier)",
        }]
    }

    fn name(&self) -> &'static str {
        "etxtbsy-exec-while-copy"
    }

    fn summary(&self) -> &'static str {
        "a daemon copies a binary in place over a file the kernel is executing: Text file busy (os error 26), crashloop"
    }

    fn detectors(&self) -> &'static [&'static str] {
        &[busy_binary::NAME]
    }

    fn requirements(&self) -> Vec<Requirement> {
        vec![Requirement::Root, Requirement::binary("sleep", "coreutils")]
    }

    fn variants(&self, kernel: &KernelVersion) -> Vec<Variant> {
        let naive = if kernel_denies_writes(kernel) {
            NAIVE_DENIED
        } else {
            NAIVE_ALLOWED
        };
        vec![
            Variant::new(Kind::Naive, naive, Expectation::Reproduced),
            Variant::new(
                Kind::Atomic,
                "temp file in the same dir, fsync, rename: old process keeps its inode, a fresh exec runs the new version",
                Expectation::Clean,
            ),
            Variant::new(
                Kind::UnlinkFirst,
                "remove then copy: no ETXTBSY, but the path is missing for a window (warning)",
                Expectation::Reproduced,
            ),
        ]
    }

    fn variants_for(
        &self,
        kernel: &KernelVersion,
        options: &BTreeMap<String, String>,
        _runtime: Option<&RuntimeUnderTest>,
    ) -> Vec<Variant> {
        if options.contains_key("copier") {
            vec![Variant::new(
                Kind::Copier,
                "the --copier command replaces the running binary; clean = it renamed a new file over the path",
                Expectation::Clean,
            )]
        } else {
            self.variants(kernel)
        }
    }

    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome> {
        let kind: Kind = variant.kind()?;
        let host = HostBin::build(ctx, variant.name)?;
        ctx.progress(format!(
            "{} runs as pid {}; replacing it ({})",
            host.target.display(),
            host.running.pid(),
            variant.name
        ));
        let executing = executors(Path::new("/proc"), host.old_dev, host.old_inode);
        if !executing.contains(&host.running.pid()) {
            bail!(
                "pid {} is not found executing {} (executors: {executing:?})",
                host.running.pid(),
                host.target.display()
            );
        }

        let watch = DirWatch::new(&host.bin_dir).context("failed to watch the host bin dir")?;
        let (copier, window) = replace(ctx, kind, &host)?;
        let events = watch
            .drain()
            .context("failed to read the bin dir's events")?;
        let new_inode = fs::metadata(&host.target).ok().map(|m| m.ino());
        let classification = classify(&Replacement {
            name: NAME,
            copier: &copier,
            events: &events,
            old_inode: host.old_inode,
            new_inode,
        });
        let findings = replacement_findings(&classification, &host.target, &executing);
        let after = After::observe(&host)?;

        let denies = kernel_denies_writes(&ctx.kernel);
        let reproduced = match kind {
            Kind::Naive if denies => {
                copier.errno == Some(ETXTBSY)
                    && after.running_version.as_deref() == Some(OLD_VERSION)
                    && after.path_version.as_deref() == Some(OLD_VERSION)
                    && new_inode == Some(host.old_inode)
            }
            Kind::Naive => {
                copier.succeeded
                    && new_inode == Some(host.old_inode)
                    && after.path_version.as_deref() == Some(NEW_VERSION)
            }
            Kind::Atomic => {
                let clean = copier.succeeded
                    && window.as_ref().and_then(|w| w.inode) == Some(host.old_inode)
                    && new_inode.is_some_and(|i| i != host.old_inode)
                    && after.running_inode == Some(host.old_inode)
                    && after.running_version.as_deref() == Some(OLD_VERSION)
                    && after.fresh_version.as_deref() == Some(NEW_VERSION);
                !clean
            }
            Kind::UnlinkFirst => {
                copier.succeeded
                    && window.as_ref().is_some_and(|w| w.inode.is_none())
                    && new_inode.is_some_and(|i| i != host.old_inode)
                    && after.fresh_version.as_deref() == Some(NEW_VERSION)
            }
            Kind::Copier => copier_verdict(&classification)?,
        };

        let mut observed = classification.observed();
        observed["kernel_denies_writes"] = json!(denies);
        observed["path"] = json!(host.target);
        observed["executing_pids"] = json!(executing);
        observed["running_pid"] = json!(host.running.pid());
        observed["running_exe_inode"] = json!(after.running_inode);
        observed["running_version"] = json!(after.running_version);
        observed["path_version"] = json!(after.path_version);
        observed["fresh_exec_version"] = json!(after.fresh_version);
        if let Some(w) = &window {
            observed["window"] = json!({"inode": w.inode, "exec_error": w.exec_error});
        }
        if let Some(t) = ctx.option("copier").filter(|_| kind == Kind::Copier) {
            observed["copier"] = json!(t);
        }
        Ok(VariantOutcome {
            reproduced,
            observed,
            findings,
        })
    }
}

/// Runs the variant's copier over the running binary. For the copiers with two steps, also
/// what the path looked like between them.
fn replace(
    ctx: &Context,
    kind: Kind,
    host: &HostBin,
) -> anyhow::Result<(CopierOutcome, Option<Window>)> {
    let mut window = None;
    let outcome = match kind {
        Kind::Naive => CopierOutcome::from_io(&copy_naive(&host.src, &host.target)),
        Kind::Atomic => CopierOutcome::from_io(&copy_atomic(&host.src, &host.target, || {
            window = Some(Window::probe(&host.target))
        })),
        Kind::UnlinkFirst => {
            CopierOutcome::from_io(&copy_unlink_first(&host.src, &host.target, || {
                window = Some(Window::probe(&host.target))
            }))
        }
        Kind::Copier => {
            let template = ctx
                .option("copier")
                .context("the copier variant needs options[\"copier\"]")?;
            run_copier(template, host)?
        }
    };
    Ok((outcome, window))
}

/// For `--copier`, the classification is the verdict: unsafe strategies reproduce the bug;
/// a copier we cannot judge is a harness error with its own words.
fn copier_verdict(c: &Classification) -> anyhow::Result<bool> {
    match c.strategy {
        Strategy::InPlace | Strategy::UnlinkThenCreate => Ok(true),
        Strategy::AtomicRename => Ok(false),
        Strategy::Failed => bail!(
            "the copier did not replace the file: {}",
            c.error.as_deref().unwrap_or("no error reported")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(release: &str) -> KernelVersion {
        KernelVersion::parse(release).unwrap()
    }

    #[test]
    fn naive_variant_summary_follows_the_kernel() {
        let s = EtxtbsyExecWhileCopy;
        let v = s.variants(&k("6.11.5"));
        assert_eq!(v[0].summary, NAIVE_ALLOWED);
        assert_eq!(v[0].expected, Expectation::Reproduced);
        let v = s.variants(&k("6.18.44"));
        assert_eq!(v[0].summary, NAIVE_DENIED);
        let names: Vec<&str> = v.iter().map(|v| v.name).collect();
        assert_eq!(names, ["naive", "atomic", "unlink-first"]);
        let expected: Vec<Expectation> = v.iter().map(|v| v.expected).collect();
        assert_eq!(
            expected,
            [
                Expectation::Reproduced,
                Expectation::Clean,
                Expectation::Reproduced
            ]
        );
    }

    #[test]
    fn copier_option_replaces_the_built_ins() {
        let mut options = BTreeMap::new();
        options.insert("copier".to_string(), "cp {src} {dst}".to_string());
        let v = EtxtbsyExecWhileCopy.variants_for(&k("6.18.44"), &options, None);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "copier");
        assert_eq!(v[0].expected, Expectation::Clean);
        assert_eq!(
            EtxtbsyExecWhileCopy
                .variants_for(&k("6.18.44"), &BTreeMap::new(), None)
                .len(),
            3
        );
    }

    #[test]
    fn copier_verdict_fails_unsafe_and_errors_on_unjudgeable() {
        let c = |strategy| Classification {
            strategy,
            error: Some("exit status: 127: sh: 1: nosuch: not found".into()),
            errno: None,
            old_inode: 1,
            new_inode: Some(1),
            events: vec![],
        };
        assert!(copier_verdict(&c(Strategy::InPlace)).unwrap());
        assert!(copier_verdict(&c(Strategy::UnlinkThenCreate)).unwrap());
        assert!(!copier_verdict(&c(Strategy::AtomicRename)).unwrap());
        let err = copier_verdict(&c(Strategy::Failed))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
