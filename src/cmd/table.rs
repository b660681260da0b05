//! Text tables, the one way `status` and `verify` lay out their reports: rows of cells as
//! left-aligned columns two spaces apart, no trailing blanks.

use crate::outln;

/// Prints rows (the first is the header) as left-aligned columns.
pub fn print_rows(rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        outln!("{}", line.join("  ").trim_end())?;
    }
    Ok(())
}
