//! The container runtime under test, as the host resolved it from `--runtime` (crate
//! `faultline-runtime` parses and fetches the spec; core only carries the result to the
//! scenario processes and into the result document).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What runs the runtime scenarios' containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeUnderTest {
    /// The spec as given: `system`, `debian`, `debian:containerd=VERSION`,
    /// `containerd=PATH,oci=NAME|PATH`.
    pub spec: String,
    /// The containerd binary; its shims (`containerd-shim`, `containerd-shim-runc-v1/v2`)
    /// and `ctr` are taken from the same directory.
    pub containerd: PathBuf,
    /// The OCI runtime binary the runc shims run (`runc`, `crun`, or another).
    pub oci: PathBuf,
    /// What ran, as the result document records it.
    pub versions: RuntimeVersions,
}

/// `"runtime": {"containerd": "<containerd --version>", "oci": "<first line of oci --version>"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeVersions {
    pub containerd: String,
    pub oci: String,
}

impl RuntimeUnderTest {
    /// The directory holding containerd's shims and ctr.
    pub fn bin_dir(&self) -> PathBuf {
        self.containerd
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin"))
    }
}
