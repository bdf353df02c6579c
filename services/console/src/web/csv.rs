//! CSV export as French spreadsheets open it as is: UTF-8 with a byte
//! order mark (without it Excel reads Windows-1252), `;` between fields
//! (`,` is the decimal separator in French), CRLF line ends, and fields
//! quoted when they hold `;`, `"` or a line break.
//!
//! A text cell starting with `=`, `+` or `@` is prefixed with `'` so a
//! spreadsheet shows it instead of running it as a formula (CSV
//! injection); numbers, negative ones included, are left alone.

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

/// The byte order mark.
pub const BOM: &str = "\u{feff}";

fn field(out: &mut String, value: &str) {
    let guarded;
    let number = value.replace(',', ".").parse::<f64>().is_ok();
    let value = if value.starts_with(['=', '+', '@']) && !number {
        guarded = format!("'{value}");
        guarded.as_str()
    } else {
        value
    };
    if value.contains([';', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn line<S: AsRef<str>>(out: &mut String, cells: &[S]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        field(out, cell.as_ref());
    }
    out.push_str("\r\n");
}

/// The CSV text of a table: BOM, header line, one line per row.
pub fn render<S: AsRef<str>, R: AsRef<[S]>>(columns: &[S], rows: &[R]) -> String {
    let mut out = String::from(BOM);
    line(&mut out, columns);
    for row in rows {
        line(&mut out, row.as_ref());
    }
    out
}

/// A download: `text/csv; charset=utf-8`, attachment named `filename`
/// (letters, digits, `-`, `_` and `.` kept, the rest made `_`).
pub fn response(filename: &str, body: String) -> Response {
    let safe: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_semicolons_crlf_and_quoting() {
        let csv = render(
            &["Service", "Reçues"],
            &[
                vec!["état civil", "12"],
                vec!["voirie; espaces \"verts\"", "-3"],
                vec!["deux\nlignes", "1,5"],
                vec!["=HYPERLINK(\"x\")", "+1"],
                vec!["@cmd", "+x"],
            ],
        );
        assert!(csv.starts_with('\u{feff}'));
        assert_eq!(
            &csv[BOM.len()..],
            "Service;Reçues\r\n\
             état civil;12\r\n\
             \"voirie; espaces \"\"verts\"\"\";-3\r\n\
             \"deux\nlignes\";1,5\r\n\
             \"'=HYPERLINK(\"\"x\"\")\";+1\r\n\
             '@cmd;'+x\r\n"
        );
    }

    #[test]
    fn the_download_names_its_file_and_charset() {
        let r = response("retards 2026/12.csv", render(&["a"], &[vec!["1"]]));
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
        assert_eq!(
            r.headers()[header::CONTENT_DISPOSITION],
            "attachment; filename=\"retards_2026_12.csv\""
        );
    }
}
