//! The one output layer: every command's result is a typed report ([`Report`]) that this module
//! prints either as text or as one JSON document, on stdout (through [`crate::ui::out`], so a
//! closed pipe ends the run quietly and every line is redacted).
//!
//! A command hands back its report together with how it ended ([`conclude`]): the report is
//! printed first, even when a late step failed, and the failure is returned after it. Nothing a
//! run did is lost because its last step went wrong.
//!
//! JSON documents carry [`VERSION`] as their `version` field. Bump it when a released key
//! changes meaning or disappears; adding a key does not need a bump.

use crate::cmd::Outcome;
use serde::Serialize;

/// The version of every `--json` document's shape.
pub const VERSION: u32 = 1;

/// A command's result, rendered as a text table or as JSON by [`emit`].
pub trait Report: Serialize {
    /// Prints the report for a human, with `outln!`.
    fn render_text(&self) -> std::io::Result<()>;

    /// How the run ended when nothing failed late: done, or done with gaps (and what they are).
    fn outcome(&self) -> Outcome {
        Outcome::Done
    }
}

/// `{"version": VERSION, ...report}`: the report's fields next to the version.
#[derive(Serialize)]
struct Versioned<'a, R> {
    version: u32,
    #[serde(flatten)]
    report: &'a R,
}

/// Prints `report` as JSON (`json`) or as text; under `-q` the text is left out (the JSON,
/// asked for, is not).
pub fn emit<R: Report>(json: bool, report: &R) -> std::io::Result<()> {
    if json {
        crate::ui::print_json(&Versioned {
            version: VERSION,
            report,
        })
    } else if crate::ui::quiet() {
        Ok(())
    } else {
        report.render_text()
    }
}

/// Prints `report`, then ends the command: with `late`'s error if a step after the report's
/// work failed, else with the report's outcome. The report is printed either way.
pub fn conclude<R: Report>(
    json: bool,
    report: &R,
    late: anyhow::Result<()>,
) -> anyhow::Result<Outcome> {
    let printed = emit(json, report);
    late?;
    printed?;
    Ok(report.outcome())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Rows {
        rows: Vec<u32>,
    }

    impl Report for Rows {
        fn render_text(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_documents_carry_the_version_next_to_the_report_fields() {
        let v = serde_json::to_value(Versioned {
            version: VERSION,
            report: &Rows { rows: vec![1, 2] },
        })
        .unwrap();
        assert_eq!(v, serde_json::json!({"version": VERSION, "rows": [1, 2]}));
    }

    #[test]
    fn a_late_failure_is_returned_after_the_report() {
        let r = conclude(false, &Rows { rows: vec![] }, Err(anyhow::anyhow!("late")));
        assert_eq!(r.unwrap_err().to_string(), "late");
        let r = conclude(false, &Rows { rows: vec![] }, Ok(()));
        assert_eq!(r.unwrap(), Outcome::Done);
    }
}
