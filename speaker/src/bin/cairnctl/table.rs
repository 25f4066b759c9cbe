//! Aligned plain-text tables, kubectl style: upper-case headers, columns separated by at least
//! two spaces, no borders. Widths count characters, not bytes.

/// Renders `rows` under `headers`, each column as wide as its widest cell.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_and_lines_have_no_trailing_spaces() {
        let text = render(
            &["NAME", "IP"],
            &[
                vec!["a".into(), "192.0.2.200".into()],
                vec!["longer-name".into(), "".into()],
            ],
        );
        assert_eq!(
            text,
            "NAME         IP\na            192.0.2.200\nlonger-name\n"
        );
    }
}
