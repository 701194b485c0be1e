//! Choosing qemu's accelerator: KVM when it really runs a guest kernel here, else TCG, and
//! the host's TSC rate that a TCG guest is told (without it, boots hung in calibration on
//! a busy machine).

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::kernel::GuestKernel;
use crate::qemu::Boot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator chosen, and why.
#[derive(Debug, Clone)]
pub struct AccelChoice {
    pub accel: Accel,
    pub why: String,
}

/// The host's TSC frequency in kHz, from /proc/cpuinfo's "cpu MHz" (on a host whose TSC
/// is invariant, which x86 hosts running qemu are, that is the TSC rate).
pub fn host_tsc_khz() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_mhz(&text).map(|mhz| (mhz * 1000.0).round() as u64)
}

fn parse_cpu_mhz(cpuinfo: &str) -> Option<f64> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// KVM when it actually runs a guest kernel here, else TCG. `/dev/kvm` can exist and accept
/// a VM yet never run a kernel (a nested host that hangs the guest at its switch to
/// protected mode), so the probe boots the real guest kernel under KVM with a short
/// deadline for guest init; the verdict is kept for the life of the process.
/// `FAULTLINE_VM_ACCEL=tcg|kvm` forces a choice.
pub fn choose_accel(kernel: &GuestKernel, initrd: &Path, dir: &Path) -> AccelChoice {
    static VERDICT: OnceLock<AccelChoice> = OnceLock::new();
    match std::env::var("FAULTLINE_VM_ACCEL").as_deref() {
        Ok("tcg") => {
            return AccelChoice {
                accel: Accel::Tcg,
                why: "FAULTLINE_VM_ACCEL=tcg".into(),
            }
        }
        Ok("kvm") => {
            return AccelChoice {
                accel: Accel::Kvm,
                why: "FAULTLINE_VM_ACCEL=kvm".into(),
            }
        }
        _ => {}
    }
    VERDICT
        .get_or_init(|| {
            let cache = faultline_sys::debian::cache_dir().join("kvm-verdict");
            if let Some(v) = cached_verdict(&cache) {
                return v;
            }
            let v = probe_kvm(kernel, initrd, dir);
            save_verdict(&cache, &v);
            v
        })
        .clone()
}

/// This boot of the host: a KVM verdict holds until the host reboots.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// `boot_id<TAB>kvm|tcg<TAB>why`, written by an earlier probe since the host booted.
fn cached_verdict(path: &Path) -> Option<AccelChoice> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut fields = text.trim_end().splitn(3, '\t');
    if fields.next()? != boot_id()? {
        return None;
    }
    let accel = match fields.next()? {
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        _ => return None,
    };
    Some(AccelChoice {
        accel,
        why: format!("{} (probed earlier since the host booted)", fields.next()?),
    })
}

fn save_verdict(path: &Path, v: &AccelChoice) {
    let Some(id) = boot_id() else { return };
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::write(path, format!("{id}\t{}\t{}\n", v.accel.as_str(), v.why));
}

/// How long a guest under working KVM may take to reach init; it takes well under a second.
const KVM_PROBE_DEADLINE: Duration = Duration::from_secs(6);

fn probe_kvm(kernel: &GuestKernel, initrd: &Path, dir: &Path) -> AccelChoice {
    let tcg = |why: String| AccelChoice {
        accel: Accel::Tcg,
        why,
    };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return tcg(format!("/dev/kvm unusable ({e})"));
    }
    let boot = Boot {
        kernel,
        initrd,
        dir: &dir.join("kvm-probe"),
        accel: Accel::Kvm,
        memory_mib: 1024,
        init_deadline: KVM_PROBE_DEADLINE,
        deadline: KVM_PROBE_DEADLINE,
        stop_at_init: true,
    };
    match boot.run() {
        Ok(o) => AccelChoice {
            accel: Accel::Kvm,
            why: format!(
                "KVM probe reached guest init in {:.2}s",
                o.to_init.as_secs_f64()
            ),
        },
        Err(e) => tcg(format!(
            "KVM probe failed: {}",
            e.to_string()
                .lines()
                .next()
                .unwrap_or("")
                .trim_end_matches("; console tail:")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_mhz() {
        // /proc/cpuinfo of this machine (excerpt).
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\ncpu MHz\t\t: 2599.998\ncache size\t: 512 KB\n";
        assert_eq!(parse_cpu_mhz(text), Some(2599.998));
        assert_eq!(parse_cpu_mhz("processor : 0\n"), None);
    }
}
