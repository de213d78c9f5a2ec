//! `corvid ctl`'s text output: what a person reads at a terminal (`--json` gives the rest).

use std::fmt::Write;

use super::protocol::Outcome;

pub fn text(outcome: &Outcome) -> String {
    let mut out = String::new();
    for note in &outcome.notes {
        let _ = writeln!(out, "{}: {}", note.kind, note.text);
    }
    for field in &outcome.fields {
        let label = field.label.as_deref().unwrap_or(&field.name);
        match field.values.as_slice() {
            [] => {
                let _ = writeln!(out, "{label}: (none)");
            }
            [one] if !one.contains('\n') => {
                let _ = writeln!(out, "{label}: {one}");
            }
            many => {
                let _ = writeln!(out, "{label}:");
                for value in many {
                    for line in value.lines() {
                        let _ = writeln!(out, "  {line}");
                    }
                }
            }
        }
    }
    for row in &outcome.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|(name, values)| format!("{name}={}", values.join(",")))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::Note;

    #[test]
    fn one_value_on_its_line_many_indented() {
        let mut outcome = Outcome::default();
        outcome.notes.push(Note {
            kind: "info".into(),
            text: "done".into(),
        });
        outcome.field("n", "Online users", vec!["2".into()]);
        outcome.field(
            "jids",
            "Online JIDs",
            vec!["a@localhost".into(), "b@localhost".into()],
        );
        outcome.field("none", "Disabled", vec![]);
        assert_eq!(
            text(&outcome),
            "info: done\nOnline users: 2\nOnline JIDs:\n  a@localhost\n  b@localhost\nDisabled: (none)\n"
        );
    }
}
