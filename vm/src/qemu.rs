//! Booting a guest with qemu: direct kernel boot on the `microvm` machine (no firmware, no
//! PCI, no disks), console on the first serial port (written to `console.log`), the
//! report on the second. qemu runs as a [`ChildGroup`]: it dies with the harness, and every
//! boot is bounded by a deadline, so a guest that panics, hangs or never reports becomes an
//! error carrying the console's tail.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline_sys::ChildGroup;

use crate::kernel::GuestKernel;
use crate::protocol::{unframe, GuestReport, INIT_MARKER};

pub const QEMU: &str = "qemu-system-x86_64";

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("qemu is not installed (apt-get install qemu-system-x86, or run ci/setup)")]
    NoQemu,
    #[error("failed to start qemu")]
    Spawn(#[source] std::io::Error),
    #[error("failed to prepare {path}")]
    Files {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest did not reach init within {after:?} ({accel}); console tail:\n{tail}")]
    NoInit {
        after: Duration,
        accel: &'static str,
        tail: String,
    },
    #[error(
        "the guest did not report within {after:?} ({accel}); killed it; console tail:\n{tail}"
    )]
    Timeout {
        after: Duration,
        accel: &'static str,
        tail: String,
    },
    #[error("the guest stopped ({status}) without a report; console tail:\n{tail}")]
    NoReport { status: String, tail: String },
    #[error("the guest's report is unreadable: {reason}; console tail:\n{tail}")]
    BadReport { reason: String, tail: String },
}

/// One boot.
pub struct Boot<'a> {
    pub kernel: &'a GuestKernel,
    pub initrd: &'a Path,
    /// Where console.log and report.txt go.
    pub dir: &'a Path,
    pub accel: Accel,
    pub memory_mib: u64,
    /// Until guest init prints its marker.
    pub init_deadline: Duration,
    /// Until the report is complete.
    pub deadline: Duration,
    /// Only watch for init: stop the guest as soon as it got there (the KVM probe).
    pub stop_at_init: bool,
}

/// What a boot produced.
#[derive(Debug)]
pub struct BootOutcome {
    pub report: Option<GuestReport>,
    /// Host wall time from starting qemu to the guest's init marker.
    pub to_init: Duration,
    /// Host wall time from starting qemu to its exit (or to the report when it had to be
    /// stopped).
    pub total: Duration,
    pub console: PathBuf,
}

pub fn qemu_available() -> bool {
    faultline_sys::path::find_on_path(QEMU).is_some()
}

impl Boot<'_> {
    fn command(&self, console: &Path, report: &Path) -> Command {
        let mut append = vec![
            "console=ttyS0".to_string(),
            "quiet".into(),
            "panic=-1".into(),
            "pci=off".into(),
            "8250.nr_uarts=2".into(),
            "random.trust_cpu=on".into(),
            "mitigations=off".into(),
            "rdinit=/init".into(),
        ];
        if self.accel == Accel::Tcg {
            // Under TCG the guest's TSC is the host's; when the host is busy the kernel's
            // PIT calibration of it fails and the boot hangs in timer setup. Telling the
            // kernel the frequency skips the calibration.
            if let Some(khz) = host_tsc_khz() {
                append.push(format!("tsc_early_khz={khz}"));
            }
        }
        let mut cmd = Command::new(QEMU);
        cmd.args(["-M", "microvm", "-accel", self.accel.as_str()])
            .args([
                "-cpu",
                if self.accel == Accel::Kvm {
                    "host"
                } else {
                    "max"
                },
            ])
            .args(["-smp", "1", "-m", &format!("{}M", self.memory_mib)])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&self.kernel.image)
            .arg("-initrd")
            .arg(self.initrd)
            .args(["-append", &append.join(" ")])
            .arg("-chardev")
            .arg(format!("file,id=console,path={}", console.display()))
            .args(["-device", "isa-serial,chardev=console"])
            .arg("-chardev")
            .arg(format!("file,id=report,path={}", report.display()))
            .args(["-device", "isa-serial,chardev=report"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    pub fn run(&self) -> Result<BootOutcome, BootError> {
        if !qemu_available() {
            return Err(BootError::NoQemu);
        }
        let (console, report) = self.fresh_files()?;
        let mut cmd = self.command(&console, &report);
        tracing::debug!("booting: {cmd:?}");
        let start = Instant::now();
        let mut qemu = ChildGroup::spawn("qemu", &mut cmd)
            .map_err(BootError::Spawn)?
            .with_grace(Duration::from_secs(1));
        let mut watch = ConsoleWatch::new(&console);
        let mut to_init = None;
        let mut pause = Duration::from_millis(2);
        loop {
            watch.poll();
            if to_init.is_none() && watch.text.contains(INIT_MARKER) {
                to_init = Some(start.elapsed());
                if self.stop_at_init {
                    let _ = qemu.teardown();
                    return Ok(BootOutcome {
                        report: None,
                        to_init: to_init.unwrap_or_default(),
                        total: start.elapsed(),
                        console,
                    });
                }
            }
            let report_text = std::fs::read_to_string(&report).unwrap_or_default();
            if let Some(parsed) = unframe(&report_text) {
                // The guest powers off right after; give it a moment, then make sure.
                let _ = qemu.wait_timeout(Duration::from_secs(5));
                let _ = qemu.teardown();
                let total = start.elapsed();
                return match parsed {
                    Ok(r) => Ok(BootOutcome {
                        report: Some(r),
                        to_init: to_init.unwrap_or_default(),
                        total,
                        console,
                    }),
                    Err(e) => Err(BootError::BadReport {
                        reason: e.to_string(),
                        tail: tail(&console),
                    }),
                };
            }
            match qemu.try_wait() {
                Ok(Some(status)) => {
                    watch.poll();
                    let outcome = BootOutcome {
                        report: None,
                        to_init: to_init.unwrap_or_default(),
                        total: start.elapsed(),
                        console,
                    };
                    return exited(&mut qemu, status, &report, outcome);
                }
                Ok(None) => {}
                Err(e) => return Err(BootError::Spawn(e)),
            }
            let elapsed = start.elapsed();
            if to_init.is_none() && elapsed >= self.init_deadline {
                let _ = qemu.teardown();
                return Err(BootError::NoInit {
                    after: elapsed,
                    accel: self.accel.as_str(),
                    tail: tail(&console),
                });
            }
            if elapsed >= self.deadline {
                let _ = qemu.teardown();
                return Err(BootError::Timeout {
                    after: elapsed,
                    accel: self.accel.as_str(),
                    tail: tail(&console),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// An empty console log and report file in the boot's directory.
    fn fresh_files(&self) -> Result<(PathBuf, PathBuf), BootError> {
        let console = self.dir.join("console.log");
        let report = self.dir.join("report.txt");
        std::fs::create_dir_all(self.dir).map_err(|source| BootError::Files {
            path: self.dir.to_path_buf(),
            source,
        })?;
        for f in [&console, &report] {
            std::fs::write(f, b"").map_err(|source| BootError::Files {
                path: f.clone(),
                source,
            })?;
        }
        Ok((console, report))
    }
}

/// qemu exited on its own: a report written just before exit still counts; otherwise the
/// error carries the console's tail and qemu's stderr.
fn exited(
    qemu: &mut ChildGroup,
    status: std::process::ExitStatus,
    report: &Path,
    mut outcome: BootOutcome,
) -> Result<BootOutcome, BootError> {
    let mut stderr = String::new();
    if let Some(mut e) = qemu.child_mut().and_then(|c| c.stderr.take()) {
        let _ = e.read_to_string(&mut stderr);
    }
    let report_text = std::fs::read_to_string(report).unwrap_or_default();
    if let Some(Ok(r)) = unframe(&report_text) {
        outcome.report = Some(r);
        return Ok(outcome);
    }
    let mut t = tail(&outcome.console);
    if !stderr.trim().is_empty() {
        t.push_str(&format!("\nqemu stderr: {}", stderr.trim()));
    }
    Err(BootError::NoReport {
        status: status.to_string(),
        tail: t,
    })
}

/// Reads what qemu appended to the console file since the last poll.
struct ConsoleWatch {
    file: Option<std::fs::File>,
    text: String,
}

impl ConsoleWatch {
    fn new(path: &Path) -> ConsoleWatch {
        ConsoleWatch {
            file: std::fs::File::open(path).ok(),
            text: String::new(),
        }
    }

    fn poll(&mut self) {
        let Some(f) = self.file.as_mut() else { return };
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
            self.text.push_str(&String::from_utf8_lossy(&buf));
        }
    }
}

/// The last lines of the console, for error messages.
pub fn tail(console: &Path) -> String {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(25);
    lines[from..]
        .iter()
        .map(|l| l.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}

pub use crate::accel::{choose_accel, host_tsc_khz, Accel, AccelChoice};
