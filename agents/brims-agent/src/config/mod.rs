//! Run configuration: TOML files in configs/, `--set key=value` overrides, validation.

use std::path::Path;

use anyhow::{bail, Context};

pub(crate) mod run;

/// Applies `key.path=value` overrides to a parsed TOML document.
///
/// The value is read as a TOML value (`1e-4`, `true`, `"x"`, `[1, 2]`); anything that does not
/// parse as one is taken as a bare string (`--set env.game=Pong`). Unknown keys are not caught
/// here but by the typed deserialisation that follows, which names them.
pub(crate) fn apply_overrides(doc: &mut toml::Table, overrides: &[String]) -> anyhow::Result<()> {
    for assignment in overrides {
        let Some((path, raw_value)) = assignment.split_once('=') else {
            bail!("--set {assignment:?}: expected key=value, e.g. --set ppo.learning_rate=1e-4");
        };
        let path = path.trim();
        if path.is_empty() || path.split('.').any(str::is_empty) {
            bail!("--set {assignment:?}: the key must be a dotted path like ppo.learning_rate");
        }
        let value = parse_value(raw_value.trim());
        let keys: Vec<&str> = path.split('.').collect();
        let (last, parents) = keys.split_last().context("empty key")?;
        let mut table = &mut *doc;
        for (depth, key) in parents.iter().enumerate() {
            let entry = table
                .entry(key.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => bail!(
                    "--set {assignment:?}: `{}` is a value, not a section",
                    keys[..=depth].join(".")
                ),
            };
        }
        table.insert(last.to_string(), value);
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Reads a TOML file into a table, with a one-line error naming the file.
pub(crate) fn read_toml(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e.to_string())))
}

/// Collapses a multi-line parser message into one line.
pub(crate) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn overrides_set_typed_values_and_create_sections() {
        let mut d = doc("[ppo]\nlearning_rate = 2.5e-4\n[core]\nkind = \"brims\"\n");
        apply_overrides(
            &mut d,
            &[
                "ppo.learning_rate=1e-4".into(),
                "core.kind=lstm".into(),
                "ppo.anneal_lr=false".into(),
                "env.atari.frame_stack=4".into(),
            ],
        )
        .unwrap();
        assert_eq!(d["ppo"]["learning_rate"].as_float(), Some(1e-4));
        assert_eq!(d["core"]["kind"].as_str(), Some("lstm"));
        assert_eq!(d["ppo"]["anneal_lr"].as_bool(), Some(false));
        assert_eq!(d["env"]["atari"]["frame_stack"].as_integer(), Some(4));
    }

    #[test]
    fn overrides_reject_malformed_assignments() {
        let mut d = doc("seed = 1\n");
        assert!(apply_overrides(&mut d, &["seed".into()]).is_err());
        assert!(apply_overrides(&mut d, &["a..b=1".into()]).is_err());
        let err = apply_overrides(&mut d, &["seed.x=1".into()]).unwrap_err();
        assert!(err.to_string().contains("`seed` is a value"), "{err}");
    }
}
