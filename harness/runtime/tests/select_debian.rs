//! `--runtime debian`: Debian's containerd and runc fetched with `apt-get download` into a
//! cache (here a temporary one, through `FAULTLINE_CACHE`), unpacked, never installed. Its
//! own test binary: it sets the process environment. Needs Debian's archive (network).

use faultline_runtime::select::resolve_str;

#[test]
fn debian_fetches_containerd_and_runc_into_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("FAULTLINE_CACHE", cache.path());
    let runtimes = cache.path().join("runtimes");

    let mut lines = Vec::new();
    let rt = resolve_str("debian", &mut |l| lines.push(l.to_string())).unwrap();
    assert!(rt.containerd.starts_with(&runtimes), "{rt:?}");
    assert!(rt.containerd.ends_with("usr/bin/containerd"), "{rt:?}");
    assert!(rt.bin_dir().join("containerd-shim-runc-v2").is_file());
    assert!(rt.bin_dir().join("containerd-shim").is_file());
    assert!(rt.bin_dir().join("ctr").is_file());
    assert!(
        rt.oci.starts_with(&runtimes) && rt.oci.ends_with("usr/sbin/runc"),
        "{rt:?}"
    );
    assert!(
        rt.versions.containerd.contains("1.6.20"),
        "{:?}",
        rt.versions
    );
    assert!(
        rt.versions.oci.starts_with("runc version 1.1"),
        "{:?}",
        rt.versions
    );
    // Candidate builds: containerd's version line ends with the package version it is in.
    let candidate = faultline_sys::debian::candidate("containerd")
        .unwrap()
        .unwrap();
    assert!(
        rt.versions.containerd.ends_with(&candidate),
        "{:?}",
        rt.versions
    );
    assert_eq!(lines.len(), 2, "one progress line per download: {lines:?}");
    assert!(
        lines[0].starts_with("fetching Debian's containerd "),
        "{lines:?}"
    );

    // Cached now: nothing is fetched again.
    let again = resolve_str("debian", &mut |l| panic!("fetched again: {l}")).unwrap();
    assert_eq!(again.containerd, rt.containerd);

    // Another build of the archive, side by side with the candidate.
    let offered = faultline_sys::debian::versions("containerd").unwrap();
    let other = offered
        .iter()
        .find(|v| **v != candidate)
        .expect("two containerd builds");
    let spec = format!("debian:containerd={other}");
    let rt2 = resolve_str(&spec, &mut |_| {}).unwrap();
    assert_ne!(rt2.containerd, rt.containerd);
    assert!(
        rt2.versions.containerd.ends_with(other.as_str()),
        "{:?}",
        rt2.versions
    );
    assert_eq!(rt2.oci, rt.oci, "runc is the candidate either way");
    assert_eq!(rt2.spec, spec);

    // An unknown build names what the archive offers, in one line.
    let e = resolve_str("debian:containerd=9.9.9", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "--runtime debian:containerd=9.9.9: Debian's archive has no containerd 9.9.9; it offers containerd {}",
            offered.join(", ")
        )
    );
    // Everything sits in the cache, one directory per build: two containerd, one runc.
    let mut unpacked: Vec<String> = std::fs::read_dir(&runtimes)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("containerd_") || n.starts_with("runc_"))
        .collect();
    unpacked.sort();
    assert_eq!(unpacked.len(), 3, "{unpacked:?}");
}
