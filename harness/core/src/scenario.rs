//! The scenario contract. A scenario reads like an xfstests test: its module doc gives the
//! symptom, where it was seen and the upstream reference; `requirements()` what the host needs;
//! then per variant: build the environment, trigger, observe, run the detector, compare.
//!
//! The runner calls `run_variant` inside the scenario's own child process, which already has a
//! private mount namespace (`/` rprivate), its own pid namespace, and a tmpfs scratch directory.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::requirement::Requirement;
use faultline_detect::Finding;
use faultline_sys::kernel::KernelVersion;
use faultline_sys::kmsg::{KmsgCursor, KmsgRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expectation {
    /// The bug must reproduce, and the detector must report it.
    Reproduced,
    /// The bug must not reproduce, and the detector must stay silent.
    Clean,
}

impl Expectation {
    pub fn as_str(self) -> &'static str {
        match self {
            Expectation::Reproduced => "reproduced",
            Expectation::Clean => "clean",
        }
    }
}

/// One way of running the scenario, with what must happen on a given kernel. Made from the
/// scenario's [`VariantKind`] enum; `run_variant` gets the enum back with [`Variant::kind`].
#[derive(Debug, Clone)]
pub struct Variant {
    /// The stable name of the JSON report and the command line (`VariantKind::name`).
    pub name: &'static str,
    pub summary: &'static str,
    pub expected: Expectation,
}

impl Variant {
    pub fn new<K: VariantKind>(kind: K, summary: &'static str, expected: Expectation) -> Variant {
        Variant {
            name: kind.name(),
            summary,
            expected,
        }
    }

    /// The scenario's enum value this variant was made from, so that `run_variant` matches
    /// the variants exhaustively. A name that is not one of `K`'s is a harness error.
    pub fn kind<K: VariantKind>(&self) -> Result<K, UnknownVariant> {
        K::ALL
            .iter()
            .copied()
            .find(|k| k.name() == self.name)
            .ok_or_else(|| UnknownVariant {
                name: self.name.to_string(),
                known: K::ALL
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// A scenario's variants as an enum. Declare it with [`variant_kind!`], which writes
/// [`VariantKind::ALL`] and [`VariantKind::name`] from one list, so neither can miss a variant.
pub trait VariantKind: Copy + 'static {
    /// Every variant of the enum.
    const ALL: &'static [Self];
    /// The variant's stable name.
    fn name(self) -> &'static str;
}

/// A [`Variant`] whose name is not one of the scenario's enum.
#[derive(Debug, thiserror::Error)]
#[error("unknown variant {name:?} (the scenario has: {known})")]
pub struct UnknownVariant {
    pub name: String,
    pub known: String,
}

/// Declares a scenario's variant enum and its [`VariantKind`] impl:
///
/// ```
/// faultline_core::variant_kind! {
///     /// How the host updates the file.
///     pub enum Mode {
///         InPlace = "in-place",
///         Rename = "rename",
///     }
/// }
/// use faultline_core::scenario::VariantKind;
/// assert_eq!(Mode::Rename.name(), "rename");
/// assert_eq!(Mode::ALL.len(), 2);
/// ```
#[macro_export]
macro_rules! variant_kind {
    (
        $(#[$meta:meta])*
        $vis:vis enum $enum:ident {
            $($(#[$vmeta:meta])* $variant:ident = $name:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $enum {
            $($(#[$vmeta])* $variant),+
        }

        impl $crate::scenario::VariantKind for $enum {
            const ALL: &'static [Self] = &[$($enum::$variant),+];
            fn name(self) -> &'static str {
                match self {
                    $($enum::$variant => $name),+
                }
            }
        }
    };
}

/// What one variant did: whether the symptom appeared, what was seen, what the detector said.
#[derive(Debug, Clone, Default)]
pub struct VariantOutcome {
    pub reproduced: bool,
    pub observed: serde_json::Value,
    pub findings: Vec<Finding>,
}

/// The error `run_variant` returns for a variant that cannot run here although the scenario
/// can (the container runtime under test lacks what the variant needs, or no runtime was
/// chosen). The runner records the variant as skipped with `reason`, runs the others, and
/// never counts it as a pass; a scenario whose variants were all skipped is a skip.
#[derive(Debug, Clone, thiserror::Error)]
#[error("skipped: {reason}")]
pub struct VariantSkipped {
    pub reason: String,
}

impl VariantSkipped {
    /// The error to return from `run_variant`.
    pub fn error(reason: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(VariantSkipped {
            reason: reason.into(),
        })
    }
}

/// A scenario option (`faultline run -o KEY=VALUE`), declared so that the command line can
/// reject a misspelt key or a malformed value before anything is built.
#[derive(Debug, Clone, Copy)]
pub struct ScenarioOption {
    pub key: &'static str,
    pub help: &'static str,
    /// `Err(why)` when a value cannot be used; see [`whole_number`], [`positive_number`].
    pub check: fn(&str) -> Result<(), String>,
}

impl ScenarioOption {
    /// `Err(one line)` when `value` does not fit this option.
    pub fn validate(&self, value: &str) -> Result<(), String> {
        (self.check)(value)
            .map_err(|why| format!("option {}={value:?}: {why} ({})", self.key, self.help))
    }
}

/// The check of options that are counts, sizes or milliseconds where 0 is meaningful.
pub fn whole_number(value: &str) -> Result<(), String> {
    value
        .parse::<u64>()
        .map(|_| ())
        .map_err(|_| "not a whole number".to_string())
}

/// The check of options that are durations, sizes or counts where 0 means nothing (a 0 ms
/// deadline, an empty write).
pub fn positive_number(value: &str) -> Result<(), String> {
    match value.parse::<u64>() {
        Ok(0) => Err("must be above 0".to_string()),
        Ok(_) => Ok(()),
        Err(_) => Err("not a whole number above 0".to_string()),
    }
}

/// Where a scenario can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In a child process with private namespaces on the host kernel (also inside the VM).
    Namespace,
    /// Only inside the VM backend's guest (needs kernel features the host may not have).
    VmOnly,
}

pub trait Scenario: Sync {
    /// Stable name, e.g. `hostpath-rename`.
    fn name(&self) -> &'static str;
    /// One line: the failure.
    fn summary(&self) -> &'static str;
    /// The detectors (their `NAME` constants) that must agree with the scenario's own
    /// observation. The runner counts only their findings, and fails a variant on a finding
    /// from any other detector.
    fn detectors(&self) -> &'static [&'static str];
    fn requirements(&self) -> Vec<Requirement>;
    /// The variants and what each must do on `kernel`.
    fn variants(&self, kernel: &KernelVersion) -> Vec<Variant>;
    /// Build, trigger, observe and detect one variant. An `Err` is a harness error (setup
    /// broke), never "the bug did not reproduce".
    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome>;
    /// The variants of this run; the runner calls this one. Defaults to [`Scenario::variants`];
    /// a scenario whose options change what runs overrides it (etxtbsy-exec-while-copy
    /// replaces its built-in copiers with one `copier` variant when `--copier` is given), and
    /// so does one whose expectations depend on the container runtime under test
    /// (delayed-umount2: containerd before or after its fix).
    fn variants_for(
        &self,
        kernel: &KernelVersion,
        options: &BTreeMap<String, String>,
        runtime: Option<&crate::runtime_under_test::RuntimeUnderTest>,
    ) -> Vec<Variant> {
        let _ = (options, runtime);
        self.variants(kernel)
    }

    /// The options this scenario reads from `Context::option`.
    fn options(&self) -> &'static [ScenarioOption] {
        &[]
    }

    /// `Err(one line)` when the options, each valid on its own, make no sense together (a
    /// delay that ends before the deadline it must outlast). Called before anything runs.
    fn check_options(&self, options: &BTreeMap<String, String>) -> Result<(), String> {
        let _ = options;
        Ok(())
    }

    /// Derived from the requirements, so "VM only" is said once (`Requirement::VmBackend`).
    fn placement(&self) -> Placement {
        let vm_only = self
            .requirements()
            .iter()
            .any(|r| matches!(r, Requirement::VmBackend { .. }));
        if vm_only {
            Placement::VmOnly
        } else {
            Placement::Namespace
        }
    }
    /// Whether this scenario drives the container runtime under test (`Context::runtime`):
    /// `faultline run` resolves the default runtime (and fetches it if need be) only when a
    /// selected scenario does, and the VM's initramfs carries the OCI runtime only for such
    /// scenarios.
    fn uses_runtime(&self) -> bool {
        false
    }

    /// Whether it also drives containerd (CRI, shims), not only the OCI runtime: the VM's
    /// initramfs then carries containerd and its runc v2 shim too (about 60 MiB, so only
    /// when a selected scenario needs them).
    fn uses_containerd(&self) -> bool {
        false
    }

    /// Upper bound for the whole scenario; the runner kills its namespace past it.
    fn timeout(&self) -> Duration {
        Duration::from_secs(180)
    }
}

/// What a running scenario gets from the runner.
pub struct Context {
    pub scenario: String,
    /// A tmpfs private to this scenario; gone when its namespace goes.
    pub scratch: PathBuf,
    pub kernel: KernelVersion,
    /// Scenario-specific options from the command line (e.g. `copier`).
    pub options: BTreeMap<String, String>,
    /// `target/faultline/<scenario>/`, for artifacts kept on failure.
    pub artifacts: PathBuf,
    pub kmsg: Option<KmsgCursor>,
    /// The container runtime under test (`--runtime`), for the runtime scenarios.
    pub runtime: Option<crate::runtime_under_test::RuntimeUnderTest>,
    /// What the scenario's variants share, made by the first that asks ([`Context::shared`])
    /// and dropped (torn down) when the scenario ends.
    pub shared: Option<Rc<dyn Any>>,
}

impl Context {
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// A fresh directory for one variant under the scratch tmpfs.
    pub fn variant_dir(&self, variant: &str) -> std::io::Result<PathBuf> {
        let dir = self.scratch.join(variant);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    /// Kernel log records written since this scenario's marker (empty when /dev/kmsg is
    /// unreadable; the reason is logged).
    pub fn kmsg_since_marker(&mut self) -> Vec<KmsgRecord> {
        match self.kmsg.as_mut() {
            Some(cursor) => cursor.read_new().unwrap_or_else(|e| {
                tracing::warn!("failed to read /dev/kmsg: {e}");
                Vec::new()
            }),
            None => Vec::new(),
        }
    }

    /// What the variants share: the value of type `T` the first caller made with `make`,
    /// kept until the scenario ends. A pod of a containerd, say, which each variant's
    /// containers join, as one pod's containers do on a node; under TCG a containerd and its
    /// pod take seconds to start.
    pub fn shared<T: 'static>(
        &mut self,
        make: impl FnOnce(&Context) -> anyhow::Result<T>,
    ) -> anyhow::Result<Rc<T>> {
        if let Some(v) = &self.shared {
            return Rc::clone(v)
                .downcast::<T>()
                .map_err(|_| anyhow::anyhow!("the scenario's shared value has another type"));
        }
        let v = Rc::new(make(self)?);
        self.shared = Some(v.clone());
        Ok(v)
    }

    /// A progress line for long steps (shown with -v).
    pub fn progress(&self, msg: impl AsRef<str>) {
        tracing::info!(scenario = %self.scenario, "{}", msg.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::variant_kind! {
        enum Mode {
            InPlace = "in-place",
            Rename = "rename",
        }
    }

    #[test]
    fn a_variant_maps_back_to_its_enum() {
        let v = Variant::new(Mode::Rename, "mv -f", Expectation::Reproduced);
        assert_eq!(v.name, "rename");
        assert_eq!(v.kind::<Mode>().unwrap(), Mode::Rename);
        assert_eq!(
            Variant::new(Mode::InPlace, "", Expectation::Clean)
                .kind::<Mode>()
                .unwrap(),
            Mode::InPlace
        );
    }

    #[test]
    fn a_foreign_variant_is_an_error_not_another_variant() {
        let v = Variant {
            name: "dir-bind",
            summary: "",
            expected: Expectation::Clean,
        };
        let err = v.kind::<Mode>().unwrap_err().to_string();
        assert_eq!(
            err,
            r#"unknown variant "dir-bind" (the scenario has: in-place, rename)"#
        );
    }

    #[test]
    fn positive_numbers_reject_zero_signs_and_words() {
        assert_eq!(positive_number("1"), Ok(()));
        assert_eq!(positive_number("0").unwrap_err(), "must be above 0");
        for bad in ["-1", "1.5", "abc", ""] {
            assert!(positive_number(bad).is_err(), "{bad}");
        }
        assert_eq!(whole_number("0"), Ok(()));
    }
}
