//! The `upkeep` command line. Thin: parses arguments, calls the library, prints, picks the exit code.
//!
//! Exit codes: 0 success, 1 problems found (e.g. an invalid config repo), 2 usage errors.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::diag::{Diagnostic, Severity};
use crate::model;

#[derive(Debug, Parser)]
#[command(
    name = "upkeep",
    version,
    about = "Keeps a k3s cluster's platform up to date, safely, with git as the source of truth."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config repo (versions.yaml and policies/) and print every problem found.
    Validate {
        /// The cluster directory holding versions.yaml and policies/.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Judge windows as of this time (RFC 3339) instead of now.
        #[arg(long, value_parser = parse_now)]
        now: Option<DateTime<Utc>>,
    },
    /// Print the JSON Schemas of versions.yaml and policy files, or write them to a directory.
    Schema {
        /// Write versions.schema.json and policy.schema.json here instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

fn parse_now(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time like 2026-11-21T22:00:00Z: {e}"))
}

/// Parse the process arguments and run; returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    init_tracing();
    match cli.command {
        Command::Validate { repo, output, now } => {
            validate(&repo, output, now.unwrap_or_else(Utc::now))
        }
        Command::Schema { out } => schema(out.as_deref()),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("UPKEEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[derive(Serialize)]
struct ValidateReport<'a> {
    valid: bool,
    errors: usize,
    warnings: usize,
    diagnostics: &'a [Diagnostic],
}

fn validate(repo: &Path, output: Output, now: DateTime<Utc>) -> i32 {
    let loaded = match model::load_repo(repo, now) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 2;
        }
    };
    let (errors, warnings) = (loaded.errors(), loaded.warnings());
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let report = ValidateReport {
                valid: errors == 0,
                errors,
                warnings,
                diagnostics: &loaded.diagnostics,
            };
            let _ = serde_json::to_writer_pretty(&mut out, &report);
            let _ = writeln!(out);
        }
        Output::Text => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let prefix = if repo == Path::new(".") {
                String::new()
            } else {
                format!("{}/", repo.display())
            };
            for d in &loaded.diagnostics {
                let line = format!("{prefix}{d}");
                let _ = match (color, d.severity) {
                    (true, Severity::Error) => writeln!(
                        out,
                        "{}",
                        line.replacen(": error:", ": \x1b[31merror\x1b[0m:", 1)
                    ),
                    (true, Severity::Warning) => writeln!(
                        out,
                        "{}",
                        line.replacen(": warning:", ": \x1b[33mwarning\x1b[0m:", 1)
                    ),
                    _ => writeln!(out, "{line}"),
                };
            }
            let summary = match &loaded.repo {
                Some(r) => format!(
                    "{}: valid: {}, {}, {}, {}{}",
                    repo.display(),
                    count(r.components.len(), "component"),
                    count(r.windows.len(), "window"),
                    count(r.freezes.len(), "freeze"),
                    count(r.rules.len(), "update rule"),
                    if warnings > 0 {
                        format!(", {}", count(warnings, "warning"))
                    } else {
                        String::new()
                    }
                ),
                None => format!(
                    "{}: invalid: {}, {}",
                    repo.display(),
                    count(errors, "error"),
                    count(warnings, "warning")
                ),
            };
            let _ = writeln!(out, "{summary}");
        }
    }
    if errors > 0 { 1 } else { 0 }
}

/// `1 window`, `2 windows`.
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn schema(out: Option<&Path>) -> i32 {
    let schemas = model::files::schemas();
    match out {
        None => {
            for (name, text) in &schemas {
                println!("# {name}\n{text}");
            }
            0
        }
        Some(dir) => {
            for (name, text) in &schemas {
                let path = dir.join(name);
                if let Err(e) =
                    std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, text))
                {
                    eprintln!("upkeep: cannot write {}: {e}", path.display());
                    return 1;
                }
                println!("wrote {}", path.display());
            }
            0
        }
    }
}
