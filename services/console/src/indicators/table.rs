//! A generic table every tabular result converts to, so the web half
//! renders HTML tables and `;`-separated CSV, and `guichet stats` prints
//! text, from one shape.

use serde::Serialize;

/// Rows of cells already formatted for reading (numbers with `.` as the
/// decimal point; empty cell = no value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub caption: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(caption: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            caption: caption.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Aligned plain text for a terminal.
    pub fn to_text(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let mut out = format!("{}\n{}\n", self.caption, line(&self.columns));
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

/// Anything shown as one or more tables.
pub trait ToTables {
    fn tables(&self) -> Vec<Table>;
}

/// A count as a cell.
pub fn int(n: i64) -> String {
    n.to_string()
}

/// A ratio as a percentage cell with one decimal, empty when undefined.
pub fn percent(r: Option<f64>) -> String {
    r.map(|r| format!("{:.1}", r * 100.0)).unwrap_or_default()
}

/// An optional number with one decimal.
pub fn decimal(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.1}")).unwrap_or_default()
}

/// An optional integer.
pub fn opt(n: Option<i64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}
