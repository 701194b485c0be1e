//! A kernel matrix split over machines, as the README's GitHub Actions matrix runs it: each
//! job writes `faultline run --kernel K --json`, and one job merges them with `faultline
//! compare`. The three documents in tests/fixtures/fleet/ are real output, captured once
//! (booting two VMs costs a minute or two, too much for every test run) with
//!
//! ```text
//! faultline run --kernel debian:6.1  ext4-htree-exhaustion --json > result-debian-6.1.json
//! faultline run --kernel debian:6.12 ext4-htree-exhaustion --json > result-debian-6.12.json
//! faultline run --kernel host        ext4-htree-exhaustion --json > result-host.json
//! ```
//!
//! on three kernels: Debian 12's 6.1 and 6.12 cloud kernels in the qemu VM, and the host's
//! 6.18 in the namespace backend.

use std::path::PathBuf;
use std::process::{Command, Output};

const KERNELS: [&str; 3] = [
    "6.1.0-57-cloud-amd64",
    "6.12.117+deb12-cloud-amd64",
    "6.18.44-fc-v857",
];

fn results() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fleet");
    [
        "result-debian-6.1.json",
        "result-debian-6.12.json",
        "result-host.json",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect()
}

fn compare(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("compare")
        .args(results())
        .args(extra)
        .output()
        .expect("run faultline compare")
}

#[test]
fn three_machines_merge_into_one_matrix() {
    let out = compare(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "every row agrees: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = text.lines().next().unwrap_or_default();
    for k in KERNELS {
        assert!(header.contains(k), "no column for {k}: {text}");
    }
    let row = text
        .lines()
        .find(|l| l.contains("ext4-htree-exhaustion / no-large-dir"))
        .unwrap_or_else(|| panic!("no no-large-dir row: {text}"));
    assert_eq!(row.matches("reproduced+detected").count(), 3, "{row}");
}

#[test]
fn the_merged_matrix_as_json_has_a_cell_per_machine() {
    let out = compare(&["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("compare --json");
    assert_eq!(doc["kernels"], serde_json::json!(KERNELS), "{doc}");
    for row in doc["rows"].as_array().unwrap() {
        let kernels: Vec<&str> = row["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kernel"].as_str().unwrap())
            .collect();
        assert_eq!(kernels, KERNELS, "{row}");
        assert_eq!(row["differs"], false, "{row}");
    }
}
