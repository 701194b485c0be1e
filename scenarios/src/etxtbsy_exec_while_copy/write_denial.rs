//! Which kernels deny writes to a running executable (ETXTBSY), per the upstream commits in
//! the scenario's documentation.

use faultline_core::KernelVersion;

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
}
