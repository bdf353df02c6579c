//! Charts as server-rendered SVG: no script, no library, nothing fetched.
//!
//! Each chart is an image with a title and a description (`role="img"`,
//! `aria-labelledby`) pointing to the data table that always follows it:
//! the table, not the picture, is what screen readers and CSV export use.
//! Bars are the DSFR's "bleu France" on white (contrast 15:1) and every
//! bar carries its value as text, so nothing is told by colour alone.

use std::fmt::Write;

/// Escapes text for SVG/XML content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const BAR: &str = "#000091";
const TEXT: &str = "#161616";
const GRID: &str = "#929292";

/// A number as a label: integers without decimals, others with one,
/// French decimal comma.
pub fn number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}").replace('.', ",")
    }
}

fn open(out: &mut String, id: &str, title: &str, width: u32, height: u32) {
    let id = escape(id);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" aria-labelledby="{id}-title {id}-desc"><title id="{id}-title">{}</title><desc id="{id}-desc">Les valeurs sont dans le tableau qui suit.</desc>"#,
        escape(title)
    );
}

/// Vertical bars, one per period (a time series), values above the bars.
pub fn columns(id: &str, title: &str, points: &[(String, f64)]) -> String {
    let (width, height, top, bottom, left) = (720u32, 260u32, 24.0, 40.0, 8.0);
    let mut out = String::new();
    open(&mut out, id, title, width, height);
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1.0);
    let plot_h = f64::from(height) - top - bottom;
    let n = points.len().max(1) as f64;
    let slot = (f64::from(width) - 2.0 * left) / n;
    let bar_w = (slot * 0.7).max(1.0);
    let base = top + plot_h;
    let _ = write!(
        out,
        r#"<line x1="{left}" y1="{base}" x2="{}" y2="{base}" stroke="{GRID}" stroke-width="1"/>"#,
        f64::from(width) - left
    );
    // Label every period when they fit, else about twelve of them.
    let every = (points.len() / 12).max(1);
    for (i, (label, value)) in points.iter().enumerate() {
        let h = value.max(0.0) / max * plot_h;
        let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
        let cx = x + bar_w / 2.0;
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{BAR}"/>"#,
            base - h
        );
        // Values above the bars when they fit; zeros go without saying.
        if points.len() <= 31 && *value != 0.0 {
            let _ = write!(
                out,
                r#"<text x="{cx:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="{TEXT}">{}</text>"#,
                base - h - 5.0,
                number(*value)
            );
        }
        if i % every == 0 {
            let _ = write!(
                out,
                r#"<text x="{cx:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="{TEXT}">{}</text>"#,
                base + 16.0,
                escape(label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// Horizontal bars, one per category (a mix), label left, value right.
pub fn bars(id: &str, title: &str, items: &[(String, f64)]) -> String {
    let (width, row, label_w, value_w) = (720u32, 28.0, 220.0, 70.0);
    let height = (items.len().max(1) as f64 * row + 8.0) as u32;
    let mut out = String::new();
    open(&mut out, id, title, width, height);
    let max = items.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1.0);
    let plot_w = f64::from(width) - label_w - value_w;
    for (i, (label, value)) in items.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let w = value.max(0.0) / max * plot_w;
        let short: String = if label.chars().count() > 30 {
            label.chars().take(29).chain(['…']).collect()
        } else {
            label.clone()
        };
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="end" fill="{TEXT}">{}</text><rect x="{label_w}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{BAR}"/><text x="{:.1}" y="{:.1}" font-size="13" fill="{TEXT}">{}</text>"#,
            label_w - 8.0,
            y + row * 0.65,
            escape(&short),
            y + 4.0,
            row - 8.0,
            label_w + w + 6.0,
            y + row * 0.65,
            number(*value)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_labelled_images_with_escaped_text() {
        let svg = bars(
            "mix",
            "Canaux <reçus>",
            &[("web & mail".into(), 3.0), ("guichet".into(), 1.5)],
        );
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains(r#"aria-labelledby="mix-title mix-desc""#));
        assert!(svg.contains("<title id=\"mix-title\">Canaux &lt;reçus&gt;</title>"));
        assert!(svg.contains(">web &amp; mail<"));
        assert!(svg.contains(">1,5<"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 2);
    }

    #[test]
    fn column_heights_follow_the_values() {
        let svg = columns(
            "v",
            "Volumes",
            &[("1".into(), 10.0), ("2".into(), 5.0), ("3".into(), 0.0)],
        );
        let heights: Vec<f64> = svg
            .split("<rect ")
            .skip(1)
            .map(|r| {
                let h = r.split("height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(heights.len(), 3);
        assert!((heights[0] - 2.0 * heights[1]).abs() < 0.2, "{heights:?}");
        assert_eq!(heights[2], 0.0);
    }
}
