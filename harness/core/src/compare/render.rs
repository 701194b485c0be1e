//! The matrix for people: a text table for the terminal, a Markdown table for CI job
//! summaries (GitHub's `$GITHUB_STEP_SUMMARY`). Both list the rows that differ first.

use super::{Matrix, Row};

/// `scenario / variant`, or the scenario alone when it ran no variant.
fn row_name(r: &Row) -> String {
    match &r.variant {
        Some(v) => format!("{} / {v}", r.scenario),
        None => r.scenario.clone(),
    }
}

/// A column's heading as lines: the kernel, then the runtime where there is one.
fn heading(label: &str) -> Vec<&str> {
    match label.split_once(" / ") {
        Some((kernel, runtime)) => vec![kernel, runtime],
        None => vec![label],
    }
}

impl Matrix {
    /// The matrix as a text table; rows that differ are marked with `*`. A column's
    /// heading takes two lines when it names a runtime: the kernel above the runtime.
    pub fn render(&self) -> String {
        let first = "scenario / variant";
        let first_width = self
            .rows
            .iter()
            .map(|r| row_name(r).len())
            .chain([first.len()])
            .max()
            .unwrap_or(0);
        let headings: Vec<Vec<&str>> = self.kernels.iter().map(|k| heading(k)).collect();
        let widths: Vec<usize> = headings
            .iter()
            .enumerate()
            .map(|(i, h)| {
                self.rows
                    .iter()
                    .map(|r| r.cells[i].describe().len())
                    .chain(h.iter().map(|l| l.len()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let heading_lines = headings.iter().map(Vec::len).max().unwrap_or(1);
        for n in 0..heading_lines {
            let mut line = format!("  {:first_width$}", if n == 0 { first } else { "" });
            for (h, w) in headings.iter().zip(&widths) {
                line.push_str(&format!("  {:w$}", h.get(n).copied().unwrap_or("")));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for r in &self.rows {
            let mark = if r.differs { "* " } else { "  " };
            let mut line = format!("{mark}{:first_width$}", row_name(r));
            for (c, w) in r.cells.iter().zip(&widths) {
                line.push_str(&format!("  {:w$}", c.describe()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push_str(&self.summary("marked *"));
        out.push('\n');
        out
    }

    /// The same matrix as a GitHub-flavoured Markdown table: differing rows first, in bold
    /// and marked in a column of their own, the kernel and the runtime on two lines of each
    /// heading.
    pub fn render_markdown(&self) -> String {
        let mut out = String::from("| | scenario / variant |");
        for k in &self.kernels {
            let lines: Vec<String> = heading(k).into_iter().map(escape).collect();
            out.push_str(&format!(" {} |", lines.join("<br>")));
        }
        out.push_str("\n|---|---|");
        out.push_str(&"---|".repeat(self.kernels.len()));
        out.push('\n');
        for r in &self.rows {
            let name = escape(&row_name(r));
            if r.differs {
                out.push_str(&format!("| ✗ | **{name}** |"));
            } else {
                out.push_str(&format!("| | {name} |"));
            }
            for c in &r.cells {
                out.push_str(&format!(" {} |", escape(&c.describe())));
            }
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.summary("marked ✗"));
        out.push('\n');
        out
    }

    /// `1 of 3 rows differ between the runs (marked *)`.
    fn summary(&self, mark: &str) -> String {
        let n = self.differences();
        format!(
            "{n} of {} rows differ between the runs{}",
            self.rows.len(),
            if n > 0 {
                format!(" ({mark})")
            } else {
                String::new()
            }
        )
    }
}

/// Table cells are one line; `|` would end the cell, `<` would open HTML, `*`, `_` and `~`
/// (Debian's versions hold `~`) emphasis or strikethrough.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' | '*' | '_' | '~' | '\\' | '`' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}
