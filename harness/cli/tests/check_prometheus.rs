//! `faultline check --format prometheus` and `--textfile DIR` with the real consumers:
//! Debian's `promtool check metrics` (the prometheus package) lints the exposition, and
//! Debian's `prometheus-node-exporter`, started here on a free loopback port with only its
//! textfile collector, serves faultline.prom; the test scrapes it over HTTP and reads the
//! values back. The fault (a real stale bind) and the check live in a fresh pid and mount
//! namespace (see node/), so the values are known: the host-wide check is partial here.

#[allow(dead_code)] // the helpers the check_* tests use
mod common;
#[allow(dead_code)] // helpers the NPD rule tests use
mod node;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use faultline_core::Requirement;
use faultline_sys::ChildGroup;
use node::Node;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

fn require_runnable() {
    common::require(&[
        Requirement::Root,
        Requirement::binary("unshare", "util-linux"),
        Requirement::binary("nsenter", "util-linux"),
        Requirement::binary("mkfs.ext4", "e2fsprogs"),
        Requirement::binary("promtool", "prometheus"),
        Requirement::binary("prometheus-node-exporter", "prometheus-node-exporter"),
    ]);
}

/// `faultline ARGS` inside `node`.
fn faultline_in(node: &Node, args: &[&str]) -> Output {
    let enter = node.enter();
    Command::new(&enter[0])
        .args(&enter[1..])
        .arg(FAULTLINE)
        .args(args)
        .output()
        .expect("failed to run nsenter")
}

/// `promtool check metrics` on `exposition`: its exit code and what it said.
fn promtool(exposition: &[u8]) -> (Option<i32>, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to run promtool");
    child.stdin.take().unwrap().write_all(exposition).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

#[test]
fn the_exposition_passes_promtool() {
    require_runnable();
    // Host-wide (partial here: detector_up 0 for some) and on a node with a finding.
    let host = Command::new(FAULTLINE)
        .args(["check", "--format", "prometheus"])
        .output()
        .unwrap();
    let node = Node::start(&node::bound_file_setup());
    node.replace_bound_file();
    let with_finding = faultline_in(&node, &["check", "--format", "prometheus"]);
    assert_eq!(with_finding.status.code(), Some(1));
    for out in [host, with_finding] {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("# TYPE faultline_findings gauge"), "{text}");
        let (code, said) = promtool(&out.stdout);
        assert_eq!(code, Some(0), "promtool: {said}\n{text}");
        assert!(said.trim().is_empty(), "promtool lint: {said}");
    }
    // promtool does reject a broken exposition (so its silence above means something).
    let (code, _) = promtool(b"faultline_findings{detector=\"x\" 1\n");
    assert_ne!(code, Some(0));
}

/// node_exporter started by the test; killed with its process group when dropped.
struct Exporter {
    _group: ChildGroup,
    port: u16,
}

impl Exporter {
    fn start(textfile_dir: &Path) -> Exporter {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new("prometheus-node-exporter");
        cmd.args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!(
                "--collector.textfile.directory={}",
                textfile_dir.display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let group = ChildGroup::spawn("node_exporter", &mut cmd).expect("start node_exporter");
        let exporter = Exporter {
            _group: group,
            port,
        };
        let start = Instant::now();
        while exporter.try_scrape().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "node_exporter did not answer on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        exporter
    }

    /// GET /metrics: the body, when the answer is 200.
    fn try_scrape(&self) -> Option<String> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let request = format!(
            "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        );
        s.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.lines().next()?.split_whitespace().nth(1)?;
        (status == "200").then(|| body.to_string())
    }

    fn scrape(&self) -> String {
        self.try_scrape().expect("node_exporter answered /metrics")
    }
}

/// The value of the series `series` (name and labels, as exposed) in `body`.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn node_exporter_serves_the_textfile_and_its_values() {
    require_runnable();
    let textfile = tempfile::tempdir().unwrap();
    let dir = textfile.path().to_str().unwrap();
    let exporter = Exporter::start(textfile.path());

    let node = Node::start(&node::bound_file_setup());
    node.replace_bound_file();
    let out = faultline_in(&node, &["check", "stale-bind", "--textfile", dir]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let critical = "faultline_findings{detector=\"stale-bind\",severity=\"critical\"}";
    let up = "faultline_detector_up{detector=\"stale-bind\"}";
    let body = exporter.scrape();
    assert_eq!(value(&body, critical), Some(1.0), "{body}");
    assert_eq!(value(&body, up), Some(1.0), "{body}");
    assert!(value(
        &body,
        "faultline_check_duration_seconds{detector=\"stale-bind\"}"
    )
    .is_some_and(|s| s > 0.0));
    assert_eq!(
        value(&body, "node_textfile_scrape_error"),
        Some(0.0),
        "{body}"
    );

    // Fixed: the next check replaces the file, and the next scrape reads the new value.
    drop(node);
    let healthy = Node::start("");
    let out = faultline_in(&healthy, &["check", "stale-bind", "--textfile", dir]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let body = exporter.scrape();
    assert_eq!(value(&body, critical), Some(0.0), "{body}");
    let names: Vec<_> = std::fs::read_dir(textfile.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["faultline.prom"], "no temporary file is left");
}
