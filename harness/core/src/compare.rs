//! Comparing runs on several kernels (or backends): a scenario × kernel matrix of what each
//! variant did, rows that differ between kernels first. This is what someone signing off a
//! kernel upgrade reads: which failures appear, disappear or stop being detected.

use serde::{Deserialize, Serialize};

use crate::result::{RunReport, Status};

/// One run's column: its heading and its report.
#[derive(Debug, Clone)]
pub struct Column {
    pub label: String,
    pub report: RunReport,
}

impl Column {
    /// Labels runs by kernel, adding the backend when two runs share a kernel.
    pub fn label_all(reports: Vec<RunReport>) -> Vec<Column> {
        let mut cols: Vec<Column> = reports
            .into_iter()
            .map(|r| Column {
                label: r.kernel.clone(),
                report: r,
            })
            .collect();
        let count = |cols: &[Column], l: &str| cols.iter().filter(|c| c.label == l).count();
        let shared: Vec<bool> = cols.iter().map(|c| count(&cols, &c.label) > 1).collect();
        for (c, shared) in cols.iter_mut().zip(shared) {
            if shared {
                c.label = format!("{} ({})", c.report.kernel, c.report.backend);
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

/// What one variant (or a scenario without variants) did in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
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
    pub kernels: Vec<String>,
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
            rows,
        }
    }

    pub fn differences(&self) -> usize {
        self.rows.iter().filter(|r| r.differs).count()
    }

    /// The matrix as a text table; rows that differ are marked with `*`.
    pub fn render(&self) -> String {
        let name = |r: &Row| match &r.variant {
            Some(v) => format!("{} / {v}", r.scenario),
            None => r.scenario.clone(),
        };
        let first_width = self
            .rows
            .iter()
            .map(|r| name(r).len())
            .chain(["scenario / variant".len()])
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = self
            .kernels
            .iter()
            .enumerate()
            .map(|(i, k)| {
                self.rows
                    .iter()
                    .map(|r| r.cells[i].describe().len())
                    .chain([k.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let mut line = format!("  {:first_width$}", "scenario / variant");
        for (k, w) in self.kernels.iter().zip(&widths) {
            line.push_str(&format!("  {k:w$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        for r in &self.rows {
            let mark = if r.differs { "* " } else { "  " };
            let mut line = format!("{mark}{:first_width$}", name(r));
            for (c, w) in r.cells.iter().zip(&widths) {
                line.push_str(&format!("  {:w$}", c.describe()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let n = self.differences();
        out.push_str(&format!(
            "{n} of {} rows differ between kernels{}\n",
            self.rows.len(),
            if n > 0 { " (marked *)" } else { "" }
        ));
        out
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
}
