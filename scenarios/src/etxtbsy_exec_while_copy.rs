//! `etxtbsy-exec-while-copy`: a daemon copies a binary in place over a file the kernel is
//! executing and dies with `Text file busy (os error 26)`.
//!
//! Seen with IBM core-dump-handler: its agent (a DaemonSet) copies the core-dump composer
//! `cdc` onto the host (`/home/kubernetes/bin/cdc`) with `fs::copy` at start-up. If the host
//! is running `cdc` at that moment (the kernel's `core_pattern` pipe helper, writing a dump),
//! `open(O_WRONLY|O_TRUNC)` on the running inode fails with ETXTBSY, the agent exits, the
//! crash makes the kernel run `cdc` again, and the pod crashloops (seed 000, "the mystery of
//! pod crashloops and etxtbsy"; IBM/core-dump-handler#86 "Error: Text file busy (os error
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
//! - `unlink-first`: remove the path, then copy (the seed's "lazybones way"). It succeeds and
//!   avoids ETXTBSY, but the path is missing for a window; the scenario stops the copier in
//!   that window and shows that `stat` and an exec of the path fail with ENOENT — what the
//!   kernel's core_pattern helper would hit, losing the dump. We count that window as the bug
//!   reproduced in a lesser form: the variant expects `reproduced` and the detector reports
//!   `unlink-then-create` with a *warning* (the ETXTBSY forms are *critical*). Calling it
//!   clean would make the detector stay silent about a window that really loses work, and
//!   DESIGN.md names only temp-file-plus-rename as the fixed variant.
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
//! and 6.12.2. So 6.11-rc1..6.11.10 and 6.12-rc1..6.12.1 (including 6.12's release
//! candidates, which DESIGN.md's "6.12.0..6.12.1" leaves implicit) let the write through.
//! Distribution kernels that carry the revert under an older version number will show
//! ETXTBSY where the table expects the write to succeed: the `naive` variant then fails
//! with both observations in `observed`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use harness::detect::busy_binary::{
    classify, executors, replacement_findings, Classification, CopierOutcome, DirWatch,
    Replacement, Strategy, ETXTBSY,
};
use harness::guard::{wait_until, ChildGroup};
use harness::requirement::find_on_path;
use harness::{
    Context, Expectation, KernelVersion, Requirement, Scenario, Variant, VariantOutcome,
};
use serde_json::json;

pub struct EtxtbsyExecWhileCopy;

/// Kernel releases (inclusive ranges) that do not deny writes to a running executable:
/// between 2a010c412853 (6.11-rc1) and its revert 3b832035387f (6.13-rc1; stable 6.11.11,
/// 6.12.2).
pub const NO_WRITE_DENIAL: &[(&str, &str)] = &[("6.11-rc1", "6.11.10"), ("6.12-rc1", "6.12.1")];

/// Whether `open(O_WRONLY)` on a file being executed fails with ETXTBSY on `kernel`.
pub fn kernel_denies_writes(kernel: &KernelVersion) -> bool {
    !NO_WRITE_DENIAL
        .iter()
        .any(|(from, to)| kernel.within(from, to))
}

const NAME: &str = "cdc";
const MARKER: &[u8] = b"\0faultline-cdc-";
const OLD_VERSION: &str = "v1";
/// A different length from v1, so no copier can skip the copy by size and mtime (rsync does).
const NEW_VERSION: &str = "v2-new";
const COPIER_DEADLINE: Duration = Duration::from_secs(60);

const NAIVE_DENIED: &str =
    "fs::copy onto the running binary: ETXTBSY (os error 26), running binary untouched";
const NAIVE_ALLOWED: &str = "fs::copy onto the running binary: the write succeeds into the running inode (kernel without write denial, 2a010c412853)";

impl Scenario for EtxtbsyExecWhileCopy {
    fn name(&self) -> &'static str {
        "etxtbsy-exec-while-copy"
    }

    fn summary(&self) -> &'static str {
        "a daemon copies a binary in place over a file the kernel is executing: Text file busy (os error 26), crashloop"
    }

    fn detector(&self) -> &'static str {
        "busy-binary"
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
            Variant::new("naive", naive, Expectation::Reproduced),
            Variant::new(
                "atomic",
                "temp file in the same dir, fsync, rename: old process keeps its inode, a fresh exec runs the new version",
                Expectation::Clean,
            ),
            Variant::new(
                "unlink-first",
                "remove then copy: no ETXTBSY, but the path is missing for a window (warning)",
                Expectation::Reproduced,
            ),
        ]
    }

    fn variants_for(
        &self,
        kernel: &KernelVersion,
        options: &BTreeMap<String, String>,
    ) -> Vec<Variant> {
        if options.contains_key("copier") {
            vec![Variant::new(
                "copier",
                "the --copier command replaces the running binary; clean = it renamed a new file over the path",
                Expectation::Clean,
            )]
        } else {
            self.variants(kernel)
        }
    }

    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome> {
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
        let (copier, window) = match variant.name {
            "naive" => (
                CopierOutcome::from_io(&copy_naive(&host.src, &host.target)),
                None,
            ),
            "atomic" => {
                let mut window = None;
                let r = copy_atomic(&host.src, &host.target, || {
                    window = Some(Window::probe(&host.target))
                });
                (CopierOutcome::from_io(&r), window)
            }
            "unlink-first" => {
                let mut window = None;
                let r = copy_unlink_first(&host.src, &host.target, || {
                    window = Some(Window::probe(&host.target))
                });
                (CopierOutcome::from_io(&r), window)
            }
            "copier" => {
                let template = ctx
                    .option("copier")
                    .context("the copier variant needs options[\"copier\"]")?;
                (run_copier(template, &host)?, None)
            }
            other => bail!("unknown variant {other}"),
        };
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
        let reproduced = match variant.name {
            "naive" if denies => {
                copier.errno == Some(ETXTBSY)
                    && after.running_version.as_deref() == Some(OLD_VERSION)
                    && after.path_version.as_deref() == Some(OLD_VERSION)
                    && new_inode == Some(host.old_inode)
            }
            "naive" => {
                copier.succeeded
                    && new_inode == Some(host.old_inode)
                    && after.path_version.as_deref() == Some(NEW_VERSION)
            }
            "atomic" => {
                let clean = copier.succeeded
                    && window.as_ref().and_then(|w| w.inode) == Some(host.old_inode)
                    && new_inode.is_some_and(|i| i != host.old_inode)
                    && after.running_inode == Some(host.old_inode)
                    && after.running_version.as_deref() == Some(OLD_VERSION)
                    && after.fresh_version.as_deref() == Some(NEW_VERSION);
                !clean
            }
            "unlink-first" => {
                copier.succeeded
                    && window.as_ref().is_some_and(|w| w.inode.is_none())
                    && new_inode.is_some_and(|i| i != host.old_inode)
                    && after.fresh_version.as_deref() == Some(NEW_VERSION)
            }
            _ => copier_verdict(&classification)?,
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
        if let Some(t) = ctx.option("copier").filter(|_| variant.name == "copier") {
            observed["copier"] = json!(t);
        }
        Ok(VariantOutcome {
            reproduced,
            observed,
            findings,
        })
    }
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

/// The host bin dir with `cdc` v1 running, and v2 waiting in the vendor dir.
struct HostBin {
    bin_dir: PathBuf,
    target: PathBuf,
    src: PathBuf,
    old_dev: u64,
    old_inode: u64,
    running: ChildGroup,
}

impl HostBin {
    fn build(ctx: &Context, variant: &str) -> anyhow::Result<HostBin> {
        let dir = ctx
            .variant_dir(variant)
            .context("failed to create the variant's directory")?;
        let bin_dir = dir.join("home/kubernetes/bin");
        let vendor = dir.join("vendor/default");
        for d in [&bin_dir, &vendor] {
            fs::create_dir_all(d).with_context(|| format!("failed to create {}", d.display()))?;
        }
        let sleep = find_on_path("sleep").context("sleep is not on PATH")?;
        let base =
            fs::read(&sleep).with_context(|| format!("failed to read {}", sleep.display()))?;
        let target = bin_dir.join(NAME);
        let src = vendor.join(NAME);
        write_version(&target, &base, OLD_VERSION)?;
        write_version(&src, &base, NEW_VERSION)?;
        let meta = fs::metadata(&target)?;

        let mut cmd = Command::new(&target);
        cmd.arg("3600").stdin(Stdio::null());
        let running = ChildGroup::spawn("cdc v1", &mut cmd)
            .with_context(|| format!("failed to start {}", target.display()))?;
        let exe = PathBuf::from(format!("/proc/{}/exe", running.pid()));
        wait_until(
            "cdc v1 to be executing",
            Duration::from_secs(10),
            || match fs::metadata(&exe) {
                Ok(m) if m.ino() == meta.ino() => Ok(()),
                Ok(m) => Err(format!("{} is inode {}", exe.display(), m.ino())),
                Err(e) => Err(format!("{}: {e}", exe.display())),
            },
        )?;
        Ok(HostBin {
            bin_dir,
            target,
            src,
            old_dev: meta.dev(),
            old_inode: meta.ino(),
            running,
        })
    }
}

fn write_version(path: &Path, base: &[u8], version: &str) -> anyhow::Result<()> {
    let mut bytes = base.to_vec();
    bytes.extend_from_slice(MARKER);
    bytes.extend_from_slice(version.as_bytes());
    bytes.push(b'\n');
    fs::write(path, &bytes).with_context(|| format!("failed to write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to chmod {}", path.display()))
}

/// The version marker appended to an ELF image (the loader ignores trailing bytes).
fn version_of(bytes: &[u8]) -> Option<String> {
    let at = bytes.windows(MARKER.len()).rposition(|w| w == MARKER)?;
    let rest = &bytes[at + MARKER.len()..];
    Some(String::from_utf8_lossy(rest).trim_end().to_string())
}

fn read_version(path: &Path) -> Option<String> {
    fs::read(path).ok().and_then(|b| version_of(&b))
}

/// What the path looked like while the copier was stopped between its two steps.
struct Window {
    inode: Option<u64>,
    /// When the path is missing: what an exec of it got (the core_pattern helper's fate).
    exec_error: Option<String>,
}

impl Window {
    fn probe(path: &Path) -> Window {
        match fs::metadata(path) {
            Ok(m) => Window {
                inode: Some(m.ino()),
                exec_error: None,
            },
            Err(_) => Window {
                inode: None,
                exec_error: match Command::new(path).stdin(Stdio::null()).spawn() {
                    Ok(mut child) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        None
                    }
                    Err(e) => Some(e.to_string()),
                },
            },
        }
    }
}

/// The state after the copier: the old process, the path, and a fresh exec of the path.
struct After {
    running_inode: Option<u64>,
    running_version: Option<String>,
    path_version: Option<String>,
    fresh_version: Option<String>,
}

impl After {
    fn observe(host: &HostBin) -> anyhow::Result<After> {
        let exe = PathBuf::from(format!("/proc/{}/exe", host.running.pid()));
        let running_inode = fs::metadata(&exe).ok().map(|m| m.ino());
        let running_version = read_version(&exe);
        let path_version = read_version(&host.target);
        let fresh_version = if host.target.exists() {
            let mut cmd = Command::new(&host.target);
            cmd.arg("3600").stdin(Stdio::null());
            match ChildGroup::spawn("cdc fresh", &mut cmd) {
                Ok(mut fresh) => {
                    let v = read_version(Path::new(&format!("/proc/{}/exe", fresh.pid())));
                    fresh.teardown().context("failed to stop the fresh cdc")?;
                    v
                }
                Err(e) => Some(format!("exec failed: {e}")),
            }
        } else {
            None
        };
        Ok(After {
            running_inode,
            running_version,
            path_version,
            fresh_version,
        })
    }
}

/// What core-dump-handler's agent does.
fn copy_naive(src: &Path, dst: &Path) -> io::Result<()> {
    fs::copy(src, dst).map(|_| ())
}

/// The fix: a new inode written next to the target, made durable, then renamed over it.
/// `between` runs after the temp file is complete and before the rename.
fn copy_atomic(src: &Path, dst: &Path, between: impl FnOnce()) -> io::Result<()> {
    let dir = dst.parent().unwrap_or(Path::new("."));
    let name = dst.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)?;
        io::copy(&mut File::open(src)?, &mut out)?;
        out.sync_all()?;
        drop(out);
        between();
        fs::rename(&tmp, dst)?;
        // The rename itself is durable once the directory is.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The seed's "lazybones way". `between` runs while the path is missing.
fn copy_unlink_first(src: &Path, dst: &Path, between: impl FnOnce()) -> io::Result<()> {
    match fs::remove_file(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    between();
    fs::copy(src, dst).map(|_| ())
}

fn shell_safe(path: &Path) -> bool {
    path.to_str().is_some_and(|s| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    })
}

/// Runs the user's copier under `sh -c` with `{src}` and `{dst}` filled in, bounded in time,
/// stderr kept in the variant's directory.
fn run_copier(template: &str, host: &HostBin) -> anyhow::Result<CopierOutcome> {
    if !template.contains("{src}") || !template.contains("{dst}") {
        bail!("--copier must contain {{src}} and {{dst}}, got {template:?}");
    }
    if !shell_safe(&host.src) || !shell_safe(&host.target) {
        bail!("scratch paths need quoting: {}", host.target.display());
    }
    let command = template
        .replace("{src}", &host.src.to_string_lossy())
        .replace("{dst}", &host.target.to_string_lossy());
    let stderr_path = host
        .bin_dir
        .ancestors()
        .nth(3)
        .unwrap_or(&host.bin_dir)
        .join("copier.stderr");
    let stderr = File::create(&stderr_path)
        .with_context(|| format!("failed to create {}", stderr_path.display()))?;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &command])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut child = ChildGroup::spawn("copier", &mut cmd)
        .with_context(|| format!("failed to start the copier {command:?}"))?;
    let Some(status) = child.wait_timeout(COPIER_DEADLINE)? else {
        child.teardown()?;
        bail!("the copier {command:?} did not finish within {COPIER_DEADLINE:?}");
    };
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    Ok(CopierOutcome::from_exit(status, &stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(release: &str) -> KernelVersion {
        KernelVersion::parse(release).unwrap()
    }

    #[test]
    fn write_denial_table_follows_2a010c412853_and_its_revert() {
        for denies in [
            "6.10.14",
            "6.1.0-27-amd64",
            "6.11.11",
            "6.12.2",
            "6.13.0-rc1",
            "6.13",
            "6.18.44-fc-v769",
            "5.15.0",
        ] {
            assert!(kernel_denies_writes(&k(denies)), "{denies} denies writes");
        }
        for allows in [
            "6.11.0-rc1",
            "6.11.0",
            "6.11.10",
            "6.11.0-19-generic",
            "6.12.0-rc7",
            "6.12.0",
            "6.12.1",
            "6.12.1-amd64",
        ] {
            assert!(!kernel_denies_writes(&k(allows)), "{allows} allows writes");
        }
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
        let v = EtxtbsyExecWhileCopy.variants_for(&k("6.18.44"), &options);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "copier");
        assert_eq!(v[0].expected, Expectation::Clean);
        assert_eq!(
            EtxtbsyExecWhileCopy
                .variants_for(&k("6.18.44"), &BTreeMap::new())
                .len(),
            3
        );
    }

    #[test]
    fn version_marker_is_read_back() {
        let mut bytes = b"\x7fELF...".to_vec();
        bytes.extend_from_slice(MARKER);
        bytes.extend_from_slice(b"v2-new\n");
        assert_eq!(version_of(&bytes).as_deref(), Some("v2-new"));
        assert_eq!(version_of(b"\x7fELF"), None);
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
