//! The process-file subcommands: `run -c`, `check` and `convert`.
//!
//! Exit codes: `check` and `convert` exit 0 when the file is valid and 1
//! when it is not; `run` exits 2 (a configuration error, see `exit.rs`)
//! before starting anything when the file is invalid.

use serde::Serialize;

use super::error::{Errors, Problem};
use super::load::{self, Loaded, Selection};
use super::{AgentSettings, AppSpec};
use crate::cli::{CheckArgs, ConvertArgs, FileArgs, RunArgs};

/// Loads the process file with the `--env` and `--only` selection.
fn load_file(file: &FileArgs) -> Result<Loaded, Errors> {
    let sel = Selection {
        env: file.env.clone(),
        only: file.only.clone(),
    };
    load::load(&file.config, &sel)
}

/// Loads the file of `procward run -c`, applies the CLI overrides, and
/// returns what to run; warnings go to stderr.
pub fn plan_run(args: RunArgs) -> Result<(Vec<AppSpec>, AgentSettings), String> {
    let mut loaded = load_file(&args.file).map_err(|e| with_prefix(&e))?;
    print_warnings(&loaded.warnings);
    if args.app.name.is_some() && loaded.apps.len() > 1 {
        return Err(format!(
            "error: --name would give all {} apps the same name\n  hint: rename apps in the file, or pick one with --only",
            loaded.apps.len()
        ));
    }
    for app in &mut loaded.apps {
        args.app.apply(app);
    }
    args.agent.apply(&mut loaded.agent);
    Ok((loaded.apps, loaded.agent))
}

/// The normalized form printed by `procward check`. Environment values are
/// not printed (they may be secrets); their names are.
#[derive(Serialize)]
struct Normalized<'a> {
    procward: &'a AgentSettings,
    apps: &'a [AppSpec],
}

/// `procward check -c FILE`.
pub fn check(args: &CheckArgs) -> i32 {
    match load_file(&args.file) {
        Ok(Loaded {
            apps,
            agent,
            warnings,
            ..
        }) => {
            print_warnings(&warnings);
            match serde_norway::to_string(&Normalized {
                procward: &agent,
                apps: &apps,
            }) {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("procward: error: cannot print the apps: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!(
                "{}",
                with_prefix(&e).replacen("error:", "procward: error:", 1)
            );
            1
        }
    }
}

/// `procward convert FILE`: the file as procward YAML. It is validated
/// first, so a converted file always loads.
pub fn convert(args: &ConvertArgs) -> i32 {
    match load::load(&args.file, &Selection::default()) {
        Ok(loaded) => {
            print_warnings(&loaded.warnings);
            match serde_norway::to_string(&loaded.tree) {
                Ok(text) => {
                    println!(
                        "# Converted from {} by `procward convert`.",
                        args.file.display()
                    );
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("procward: error: cannot print the file: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!(
                "{}",
                with_prefix(&e).replacen("error:", "procward: error:", 1)
            );
            1
        }
    }
}

fn print_warnings(warnings: &[Problem]) {
    for w in warnings {
        eprintln!("procward: warning: {w}");
    }
}

/// Every problem on its own `error:` line; the caller prefixes the first
/// with `procward: `, as every other line already is.
fn with_prefix(e: &Errors) -> String {
    e.0.iter()
        .map(|p| format!("error: {p}"))
        .collect::<Vec<_>>()
        .join("\nprocward: ")
}
