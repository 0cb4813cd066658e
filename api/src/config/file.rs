//! The optional TOML configuration file: its keys are the long flags without `--`
//! (`database-url = "…"`), and its values become the defaults of those flags, so a flag beats an
//! environment variable, which beats the file, which beats the built-in default.

use std::ffi::OsString;
use std::path::Path;

use clap::builder::OsStr;
use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

use super::Cli;

/// Arguments of the top-level command that are not settings, so not keys of the file.
const NOT_SETTINGS: [&str; 3] = ["config_file", "help", "version"];

impl Cli {
    /// Parses the command line and the environment over the TOML file that `--config` or
    /// `TWOFOLD_CONFIG` names, if any. The error prints itself and exits like any clap error.
    pub fn load() -> Result<Self, clap::Error> {
        Self::load_from(std::env::args_os())
    }

    /// [`Cli::load`] over `args` (the first is the program name).
    pub fn load_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let plain = Self::try_parse_from(&args)?;
        let Some(path) = plain.config_file else {
            return Ok(plain);
        };
        let mut command = Self::command();
        let defaults =
            read(&path, &command).map_err(|problems| command.error(ErrorKind::Io, problems))?;
        for (id, values) in defaults {
            command = command.mut_arg(id, |arg| {
                // The file may hold secrets: never show them in `--help`.
                arg.default_values(values).hide_default_value(true)
            });
        }
        let matches = command.try_get_matches_from_mut(&args)?;
        Self::from_arg_matches(&matches).map_err(|error| error.format(&mut command))
    }
}

/// The defaults `path` sets, by argument id, or every problem with the file, one per line.
fn read(path: &Path, command: &clap::Command) -> Result<Vec<(String, Vec<OsStr>)>, String> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("configuration file {name} cannot be read: {error}"))?;
    // Only the position and the parser's reason: the offending line may hold a secret.
    let table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
        let line = error
            .span()
            .and_then(|span| text.get(..span.start))
            .map_or(0, |before| before.matches('\n').count() + 1);
        format!(
            "configuration file {name}, line {line}: not valid TOML: {}",
            error.message()
        )
    })?;
    let mut defaults = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in &table {
        let Some(arg) = setting(command, key) else {
            problems.push(unknown_key(&name, command, key));
            continue;
        };
        let list = matches!(arg.get_action(), ArgAction::Append);
        match values(value) {
            Some(values) if list || values.len() == 1 => {
                defaults.push((arg.get_id().to_string(), values));
            }
            Some(_) => problems.push(format!(
                "configuration file {name}: `{key}` takes one value, not a list"
            )),
            None => problems.push(format!(
                "configuration file {name}: `{key}` must be a string, a number, a boolean{}",
                if list { " or a list of them" } else { "" }
            )),
        }
    }
    if problems.is_empty() {
        Ok(defaults)
    } else {
        Err(problems.join("\n"))
    }
}

/// The setting whose long flag is `key`.
fn setting<'a>(command: &'a clap::Command, key: &str) -> Option<&'a clap::Arg> {
    command
        .get_arguments()
        .filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str()))
        .find(|arg| arg.get_long() == Some(key))
}

fn unknown_key(file: &impl std::fmt::Display, command: &clap::Command, key: &str) -> String {
    let hint = match setting(command, &key.replace('_', "-")) {
        Some(arg) => format!("did you mean `{}`?", arg.get_long().unwrap_or_default()),
        None => "the keys are the long flags of `twofold --help` without `--`".to_owned(),
    };
    format!("configuration file {file}: unknown key `{key}` ({hint})")
}

/// A value as clap's defaults: a scalar, or a list of scalars for a list setting.
fn values(value: &toml::Value) -> Option<Vec<OsStr>> {
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|value| vec![value]),
    }
}

fn scalar(value: &toml::Value) -> Option<OsStr> {
    match value {
        toml::Value::String(text) => Some(text.clone().into()),
        toml::Value::Integer(number) => Some(number.to_string().into()),
        toml::Value::Float(number) => Some(number.to_string().into()),
        toml::Value::Boolean(flag) => Some(flag.to_string().into()),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}
