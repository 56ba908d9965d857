//! Server-drawn bar charts: an SVG string, no script, styled by the stylesheet (the CSP allows
//! no inline style). Labels and counts are escaped here because the caller marks the result
//! safe for the template.

/// Horizontal bars, one per category, with the count written beside each; `title` names the
/// chart for screen readers.
pub fn bars(title: &str, data: &[(String, u64)]) -> String {
    const ROW: usize = 24;
    const LABEL_W: usize = 180;
    const BAR_W: usize = 320;
    let max = data.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let height = ROW * data.len().max(1) + 8;
    let width = LABEL_W + BAR_W + 60;
    let mut svg = format!(
        r#"<svg class="chart" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{}</title>"#,
        escape(title)
    );
    for (i, (label, n)) in data.iter().enumerate() {
        let y = i * ROW + 4;
        let w = (*n as usize * BAR_W / max as usize).max(1);
        svg.push_str(&format!(
            r#"<text x="0" y="{ty}">{label}</text><rect x="{LABEL_W}" y="{y}" width="{w}" height="{h}"></rect><text x="{cx}" y="{ty}">{n}</text>"#,
            ty = y + 15,
            label = escape(label),
            h = ROW - 6,
            cx = LABEL_W + w + 6,
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn bars_escape_labels_and_carry_no_style_or_script() {
        let svg = super::bars("t<", &[("<script>".into(), 3), ("能源".into(), 1)]);
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script"));
        assert!(!svg.contains("style"));
        assert!(
            svg.contains(r#"width="320""#),
            "the largest bar is full width"
        );
    }
}
