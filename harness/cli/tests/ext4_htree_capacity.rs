//! `htree-capacity` must call the directory the scenario exhausted (> 95%) and a fresh one on
//! the same file system low; `ext4-index-full` must find the directory in the real kernel log.

use std::process::Command;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

#[test]
fn exhausted_directory_reads_over_95_percent_and_a_fresh_one_low() {
    let out = Command::new(FAULTLINE)
        .args(["run", "ext4-htree-exhaustion", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run --json");
    let s = &doc["scenarios"][0];
    if s["status"] == "skip" {
        panic!("ext4-htree-exhaustion cannot run here: {}", s["reason"]);
    }
    assert_eq!(s["status"], "pass", "{s:#}");
    let full = s["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["variant"] == "no-large-dir")
        .expect("no-large-dir variant");
    let o = &full["observed"];
    let used = o["htree_capacity_percent"].as_f64().unwrap();
    let fresh = o["fresh_dir_htree_capacity_percent"].as_f64().unwrap();
    assert!(used > 95.0, "exhausted directory reads {used}%: {o:#}");
    assert!(fresh < 10.0, "fresh directory reads {fresh}%: {o:#}");
    let findings = s["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["detector"] == "ext4-index-full"
            && f["evidence"]["inode"] == o["directory_inode"]
            && f["evidence"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/flat"))),
        "no ext4-index-full finding for inode {}: {findings:#?}",
        o["directory_inode"]
    );
}
