//! Diagnostics: one problem in a user's file, with where it is and what to do.
//!
//! Shared by `upkeep validate`, the dependency dashboard and the controller's logs, so that a
//! problem reads the same wherever a user meets it: `file:line:column: severity: what (hint: ...)`.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A place in a file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Path relative to the config repo root, with `/` separators.
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub severity: Severity,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: pos.line.max(1),
            column: pos.column.max(1),
            severity: Severity::Error,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Self::error(file, pos, message)
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {}",
            Printable(&self.file),
            self.line,
            self.column,
            Printable(&self.message)
        )?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {})", Printable(h))?;
        }
        Ok(())
    }
}

/// A control or bidirectional-text character: harmless in a file, but it can rewrite what a
/// terminal or a rendered page shows.
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// Text for a terminal: control and bidirectional-override characters (from a file name or a
/// value in the repository) are shown escaped (`\u{1b}`), never sent to the terminal as codes.
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if hidden(c) {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Sort by file, then position, errors before warnings at the same place, and drop exact repeats.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity, &a.message)
            .cmp(&(&b.file, b.line, b.column, b.severity, &b.message))
    });
    diags.dedup();
}

/// The line and column of a byte offset in `text` (column counted in characters).
pub fn pos_of_offset(text: &[u8], offset: usize) -> Pos {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count() as u64
        + 1;
    Pos { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_a_compiler() {
        let d = Diagnostic::error(
            "versions.yaml",
            Pos {
                line: 3,
                column: 14,
            },
            "bad",
        )
        .hint("fix it");
        assert_eq!(
            d.to_string(),
            "versions.yaml:3:14: error: bad (hint: fix it)"
        );
    }

    #[test]
    fn offsets_to_positions() {
        assert_eq!(pos_of_offset(b"ab\ncd", 4), Pos { line: 2, column: 2 });
        assert_eq!(pos_of_offset(b"", 0), Pos::START);
        assert_eq!(
            pos_of_offset("é\nx".as_bytes(), 2),
            Pos { line: 1, column: 2 }
        );
    }
}
