//! Comparing runs on several kernels and container runtimes (or backends): a scenario ×
//! (kernel, runtime) matrix of what each variant did, rows that differ between the runs
//! first. This is what someone signing off a kernel or runtime upgrade reads: which failures
//! appear, disappear or stop being detected.

use serde::{Deserialize, Serialize};

use crate::result::{RunReport, Status};
use crate::runtime_under_test::RuntimeVersions;

mod render;

/// One run's column: its heading and its report.
#[derive(Debug, Clone)]
pub struct Column {
    pub label: String,
    pub report: RunReport,
}

impl Column {
    /// Labels runs by kernel and runtime (`6.12.57+deb13-cloud-amd64 / containerd 1.6.20 +
    /// runc 1.1.5`), naming the runtime's builds where two runs share the releases, then
    /// adding the backend and finally a number where two runs still share a label.
    pub fn label_all(reports: Vec<RunReport>) -> Vec<Column> {
        let short = |r: &RunReport| label(&r.kernel, r.runtime.as_ref().map(|v| v.short()));
        let full = |r: &RunReport| label(&r.kernel, r.runtime.as_ref().map(|v| v.full()));
        let mut cols: Vec<Column> = reports
            .iter()
            .map(|r| {
                // Same kernel and releases, different builds: only the builds tell them apart.
                let twin = reports
                    .iter()
                    .any(|o| short(o) == short(r) && o.runtime != r.runtime);
                Column {
                    label: if twin { full(r) } else { short(r) },
                    report: r.clone(),
                }
            })
            .collect();
        let count = |cols: &[Column], l: &str| cols.iter().filter(|c| c.label == l).count();
        let shared: Vec<bool> = cols.iter().map(|c| count(&cols, &c.label) > 1).collect();
        for (c, shared) in cols.iter_mut().zip(shared) {
            if shared {
                c.label = with_backend(&c.label, &c.report.backend);
            }
        }
        let shared: Vec<bool> = cols.iter().map(|c| count(&cols, &c.label) > 1).collect();
        for (i, (c, shared)) in cols.iter_mut().zip(shared).enumerate() {
            if shared {
                c.label = format!("{} #{}", c.label, i + 1);
            }
        }
        cols
    }
}

/// `kernel / runtime`, or the kernel alone for a run that recorded no runtime.
fn label(kernel: &str, runtime: Option<String>) -> String {
    match runtime {
        Some(rt) => format!("{kernel} / {rt}"),
        None => kernel.to_string(),
    }
}

/// The backend goes with the kernel: `6.1.0 (vm) / containerd ...`.
fn with_backend(label: &str, backend: &str) -> String {
    match label.split_once(" / ") {
        Some((kernel, runtime)) => format!("{kernel} ({backend}) / {runtime}"),
        None => format!("{label} ({backend})"),
    }
}

/// What a column ran on, for readers of `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnHead {
    pub label: String,
    pub kernel: String,
    pub backend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeVersions>,
}

/// What one variant (or a scenario without variants) did in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// The column's label (the kernel, and the runtime where the run recorded one).
    pub kernel: String,
    /// The scenario's status in that run; `None` when the run did not include it.
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reproduced: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

impl Cell {
    /// The behaviour compared across kernels (the heading is not).
    fn behaviour(&self) -> (Option<Status>, Option<bool>, Option<bool>, Option<&str>) {
        (
            self.status,
            self.reproduced,
            self.detected,
            self.expected.as_deref(),
        )
    }

    /// Short text for the table.
    pub fn describe(&self) -> String {
        let Some(status) = self.status else {
            return "not run".into();
        };
        match (self.reproduced, self.detected) {
            (Some(r), Some(d)) => {
                let what = match (r, d) {
                    (true, true) => "reproduced+detected",
                    (true, false) => "reproduced, MISSED",
                    (false, true) => "clean, FALSE POSITIVE",
                    (false, false) => "clean",
                };
                match status {
                    Status::Pass => what.to_string(),
                    other => format!("{what} [{}]", other.as_str()),
                }
            }
            _ => status.as_str().to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    /// `None` for a scenario that ran no variant (skip, error).
    pub variant: Option<String>,
    pub differs: bool,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Matrix {
    /// The columns' labels, in run order (named `kernels` since runs differed only by
    /// kernel; a label names the runtime too where the run recorded one).
    pub kernels: Vec<String>,
    /// What each column ran on.
    #[serde(default)]
    pub columns: Vec<ColumnHead>,
    pub rows: Vec<Row>,
}

impl Matrix {
    pub fn build(columns: &[Column]) -> Matrix {
        // Row keys in order of first appearance: scenario, then its variants.
        let mut keys: Vec<(String, Option<String>)> = Vec::new();
        let mut push = |k: (String, Option<String>)| {
            if !keys.contains(&k) {
                keys.push(k);
            }
        };
        for c in columns {
            for s in &c.report.scenarios {
                if s.variants.is_empty() {
                    push((s.name.clone(), None));
                }
                for v in &s.variants {
                    push((s.name.clone(), Some(v.variant.clone())));
                }
            }
        }
        // A scenario that has variants in some run gets no variant-less row: in the runs
        // where it ran no variant, each of its variant rows shows the scenario's status.
        let has_variants = |name: &str| keys.iter().any(|(s, v)| s == name && v.is_some());
        let keys: Vec<_> = keys
            .iter()
            .filter(|(s, v)| v.is_some() || !has_variants(s))
            .cloned()
            .collect();

        let mut rows: Vec<Row> = keys
            .into_iter()
            .map(|(scenario, variant)| {
                let cells: Vec<Cell> = columns
                    .iter()
                    .map(|c| cell(c, &scenario, variant.as_deref()))
                    .collect();
                let differs = cells
                    .windows(2)
                    .any(|w| w[0].behaviour() != w[1].behaviour());
                Row {
                    scenario,
                    variant,
                    differs,
                    cells,
                }
            })
            .collect();
        // Stable: differences first, otherwise the order of first appearance.
        rows.sort_by_key(|r| !r.differs);
        Matrix {
            kernels: columns.iter().map(|c| c.label.clone()).collect(),
            columns: columns
                .iter()
                .map(|c| ColumnHead {
                    label: c.label.clone(),
                    kernel: c.report.kernel.clone(),
                    backend: c.report.backend.clone(),
                    runtime: c.report.runtime.clone(),
                })
                .collect(),
            rows,
        }
    }

    pub fn differences(&self) -> usize {
        self.rows.iter().filter(|r| r.differs).count()
    }
}

fn cell(column: &Column, scenario: &str, variant: Option<&str>) -> Cell {
    let mut c = Cell {
        kernel: column.label.clone(),
        status: None,
        reproduced: None,
        detected: None,
        expected: None,
    };
    let Some(s) = column.report.scenarios.iter().find(|s| s.name == scenario) else {
        return c;
    };
    c.status = Some(s.status);
    if let Some(v) = variant.and_then(|v| s.variants.iter().find(|x| x.variant == v)) {
        c.reproduced = Some(v.reproduced);
        c.detected = Some(v.detected);
        c.expected = Some(v.expected.clone());
    }
    c
}

/// Reads a `run --json` document: one report, or `{"runs": [report, ...]}` as a run with
/// several kernels prints. The shape is decided by the `runs` key first, so an error names
/// what is wrong in the shape the document has.
pub fn parse_reports(text: &str) -> Result<Vec<RunReport>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Multi {
        runs: Vec<RunReport>,
    }
    let doc: serde_json::Value = serde_json::from_str(text)?;
    // Parse the text again rather than the value: its errors carry a line and column.
    if doc.get("runs").is_some() {
        serde_json::from_str::<Multi>(text).map(|m| m.runs)
    } else {
        serde_json::from_str::<RunReport>(text).map(|r| vec![r])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{ScenarioResult, VariantResult};

    fn variant(name: &str, expected: &str, reproduced: bool, detected: bool) -> VariantResult {
        VariantResult {
            variant: name.into(),
            reproduced,
            detected,
            expected: expected.into(),
            observed: serde_json::Value::Null,
            skipped: None,
        }
    }

    fn scenario(name: &str, status: Status, variants: Vec<VariantResult>) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            status,
            reason: String::new(),
            duration_ms: 1,
            variants,
            findings: vec![],
        }
    }

    fn report(kernel: &str, scenarios: Vec<ScenarioResult>) -> RunReport {
        RunReport {
            runtime: None,
            kernel: kernel.into(),
            backend: "vm".into(),
            scenarios,
        }
    }

    #[test]
    fn differences_come_first() {
        let a = report(
            "6.1.0-56-cloud-amd64",
            vec![
                scenario(
                    "nfs-flock-dead-statd",
                    Status::Pass,
                    vec![
                        variant("statd-running", "clean", false, false),
                        variant("statd-dead", "reproduced", true, true),
                    ],
                ),
                scenario(
                    "etxtbsy-exec-while-copy",
                    Status::Pass,
                    vec![variant("naive", "reproduced", true, true)],
                ),
            ],
        );
        let b = report(
            "6.12.117+deb12-cloud-amd64",
            vec![
                scenario(
                    "nfs-flock-dead-statd",
                    Status::Pass,
                    vec![
                        variant("statd-running", "clean", false, false),
                        variant("statd-dead", "reproduced", true, true),
                    ],
                ),
                scenario(
                    "etxtbsy-exec-while-copy",
                    Status::Fail,
                    vec![variant("naive", "reproduced", false, false)],
                ),
            ],
        );
        let m = Matrix::build(&Column::label_all(vec![a, b]));
        assert_eq!(m.kernels.len(), 2);
        assert_eq!(m.rows.len(), 3);
        assert_eq!(m.rows[0].scenario, "etxtbsy-exec-while-copy");
        assert!(m.rows[0].differs);
        assert!(!m.rows[1].differs && !m.rows[2].differs);
        assert_eq!(m.rows[1].variant.as_deref(), Some("statd-running"));
        assert_eq!(m.differences(), 1);
        let text = m.render();
        assert!(
            text.lines().nth(1).unwrap().starts_with("* etxtbsy"),
            "{text}"
        );
        assert!(text.contains("clean [fail]"), "{text}");
        assert!(text.contains("1 of 3 rows differ"), "{text}");
    }

    #[test]
    fn skipped_scenario_lines_up_with_its_variants_elsewhere() {
        let host = RunReport {
            runtime: None,
            kernel: "6.18.44".into(),
            backend: "namespace".into(),
            scenarios: vec![scenario("nfs-flock-dead-statd", Status::Skip, vec![])],
        };
        let vm = report(
            "6.1.0-56-cloud-amd64",
            vec![scenario(
                "nfs-flock-dead-statd",
                Status::Pass,
                vec![variant("statd-dead", "reproduced", true, true)],
            )],
        );
        let m = Matrix::build(&Column::label_all(vec![host, vm]));
        assert_eq!(m.rows.len(), 1);
        assert_eq!(m.rows[0].cells[0].describe(), "skip");
        assert_eq!(m.rows[0].cells[1].describe(), "reproduced+detected");
        assert!(m.rows[0].differs);
    }

    #[test]
    fn same_kernel_twice_gets_backend_labels_and_json_reads_both_shapes() {
        let a = report("6.1.0", vec![]);
        let mut b = report("6.1.0", vec![]);
        b.backend = "namespace".into();
        let cols = Column::label_all(vec![a.clone(), b]);
        assert_eq!(cols[0].label, "6.1.0 (vm)");
        assert_eq!(cols[1].label, "6.1.0 (namespace)");

        let one = serde_json::to_string(&a).unwrap();
        assert_eq!(parse_reports(&one).unwrap().len(), 1);
        let multi = format!("{{\"runs\": [{one}, {one}]}}");
        assert_eq!(parse_reports(&multi).unwrap().len(), 2);
        assert!(parse_reports("{\"nope\": 1}").is_err());
    }

    #[test]
    fn a_bad_report_inside_runs_is_what_the_error_names() {
        let good = serde_json::to_string(&report("6.1.0", vec![])).unwrap();
        let multi = format!("{{\"runs\": [{good}, {{\"kernel\": \"6.12\"}}]}}");
        let e = parse_reports(&multi).unwrap_err().to_string();
        assert!(e.contains("missing field `backend`"), "{e}");
        let e = parse_reports("{\"runs\": 3}").unwrap_err().to_string();
        assert!(
            e.contains("invalid type: integer `3`, expected a sequence"),
            "{e}"
        );
        let e = parse_reports("{\"kernel\": \"6.1\"}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field"), "{e}");
        assert!(!e.contains("runs"), "{e}");
    }

    fn on(kernel: &str, containerd: &str, oci: &str, scenarios: Vec<ScenarioResult>) -> RunReport {
        RunReport {
            runtime: Some(RuntimeVersions {
                containerd: format!(
                    "containerd github.com/containerd/containerd 1.6.20~ds1 {containerd}"
                ),
                oci: oci.into(),
            }),
            ..report(kernel, scenarios)
        }
    }

    /// fuse-daemon-restart's `killed` variant: runc 1.1.5 and crun 1.8.1 both refuse the dead
    /// mount (reproduced), a runtime that did not would be clean.
    fn fuse(reproduced: bool) -> Vec<ScenarioResult> {
        vec![
            scenario(
                "fuse-daemon-restart",
                if reproduced {
                    Status::Pass
                } else {
                    Status::Fail
                },
                vec![variant("killed", "reproduced", reproduced, reproduced)],
            ),
            scenario(
                "hostpath-rename",
                Status::Pass,
                vec![variant("rename", "reproduced", true, true)],
            ),
        ]
    }

    const RUNC: &str = "runc version 1.1.5+ds1";
    const CRUN: &str = "crun version 1.8.1";
    const U3: &str = "1.6.20~ds1-1+deb12u3";

    #[test]
    fn a_column_is_kernel_and_runtime() {
        let runs = vec![
            on("6.1.0-56-cloud-amd64", U3, RUNC, fuse(true)),
            on("6.1.0-56-cloud-amd64", U3, CRUN, fuse(true)),
            on("6.12.57+deb13-cloud-amd64", U3, RUNC, fuse(true)),
            on("6.12.57+deb13-cloud-amd64", U3, CRUN, fuse(false)),
        ];
        let m = Matrix::build(&Column::label_all(runs));
        assert_eq!(
            m.kernels,
            [
                "6.1.0-56-cloud-amd64 / containerd 1.6.20 + runc 1.1.5",
                "6.1.0-56-cloud-amd64 / containerd 1.6.20 + crun 1.8.1",
                "6.12.57+deb13-cloud-amd64 / containerd 1.6.20 + runc 1.1.5",
                "6.12.57+deb13-cloud-amd64 / containerd 1.6.20 + crun 1.8.1",
            ]
        );
        assert_eq!(m.columns[3].kernel, "6.12.57+deb13-cloud-amd64");
        assert_eq!(m.columns[3].runtime.as_ref().unwrap().oci, CRUN);
        assert_eq!(m.rows[0].scenario, "fuse-daemon-restart");
        assert!(m.rows[0].differs && !m.rows[1].differs);

        let text = m.render();
        let lines: Vec<&str> = text.lines().collect();
        // The kernel above the runtime in each heading, the cells under them.
        assert!(lines[0].starts_with("  scenario / variant "), "{text}");
        assert_eq!(
            lines[0].find("6.1.0-56-cloud-amd64"),
            lines[1].find("containerd 1.6.20 + runc 1.1.5"),
            "{text}"
        );
        assert!(
            lines[1]
                .trim_start()
                .starts_with("containerd 1.6.20 + runc 1.1.5  containerd 1.6.20 + crun 1.8.1"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("* fuse-daemon-restart / killed"),
            "{text}"
        );
        let col = lines[0].find("6.12.57").unwrap();
        assert_eq!(&lines[2][col..col + 19], "reproduced+detected", "{text}");
        assert!(lines[2].ends_with("clean [fail]"), "{text}");
        assert_eq!(lines[4], "1 of 2 rows differ between the runs (marked *)");
    }

    #[test]
    fn markdown_is_the_same_matrix() {
        let runs = vec![
            on("6.1.0-56-cloud-amd64", U3, RUNC, fuse(true)),
            on("6.1.0-56-cloud-amd64", U3, CRUN, fuse(false)),
        ];
        let md = Matrix::build(&Column::label_all(runs)).render_markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "| | scenario / variant | 6.1.0-56-cloud-amd64<br>containerd 1.6.20 + runc 1.1.5 | 6.1.0-56-cloud-amd64<br>containerd 1.6.20 + crun 1.8.1 |"
        );
        assert_eq!(lines[1], "|---|---|---|---|");
        assert_eq!(
            lines[2],
            "| ✗ | **fuse-daemon-restart / killed** | reproduced+detected | clean [fail] |"
        );
        assert_eq!(
            lines[3],
            "| | hostpath-rename / rename | reproduced+detected | reproduced+detected |"
        );
        assert_eq!(lines[4], "");
        assert_eq!(lines[5], "1 of 2 rows differ between the runs (marked ✗)");
        // Every table line has as many cells as the heading.
        for l in &lines[..4] {
            assert_eq!(
                l.matches(" |").count() + l.matches("---|").count(),
                4,
                "{l}"
            );
        }
    }

    #[test]
    fn builds_of_one_release_are_told_apart_by_their_builds() {
        let runs = vec![
            on(
                "6.1.0-56-cloud-amd64",
                "1.6.20~ds1-1+deb12u2",
                RUNC,
                fuse(true),
            ),
            on("6.1.0-56-cloud-amd64", U3, RUNC, fuse(true)),
            report("6.1.0-56-cloud-amd64", fuse(true)),
        ];
        let cols = Column::label_all(runs);
        assert_eq!(
            cols[0].label,
            "6.1.0-56-cloud-amd64 / containerd 1.6.20~ds1-1+deb12u2 + runc 1.1.5+ds1"
        );
        assert_eq!(
            cols[1].label,
            "6.1.0-56-cloud-amd64 / containerd 1.6.20~ds1-1+deb12u3 + runc 1.1.5+ds1"
        );
        assert_eq!(cols[2].label, "6.1.0-56-cloud-amd64", "no runtime recorded");
        let md = Matrix::build(&cols).render_markdown();
        assert!(md.contains("containerd 1.6.20\\~ds1-1+deb12u2"), "{md}");

        // The same run twice on two backends: the backend goes with the kernel.
        let mut host = on("6.1.0", U3, RUNC, vec![]);
        host.backend = "namespace".into();
        let cols = Column::label_all(vec![on("6.1.0", U3, RUNC, vec![]), host]);
        assert_eq!(cols[0].label, "6.1.0 (vm) / containerd 1.6.20 + runc 1.1.5");
        assert_eq!(
            cols[1].label,
            "6.1.0 (namespace) / containerd 1.6.20 + runc 1.1.5"
        );
    }
}
