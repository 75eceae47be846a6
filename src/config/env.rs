use super::ConfigError;
use super::report::explain;

/// The `ENRICHD_` variables that are not config keys. A variable outside this list without `__` is
/// most likely a misspelt one (`ENRICHD_LOOKUP_MAX_HOPS`), which would otherwise be silently unused.
pub const KNOWN_VARS: [&str; 11] = [
    "ENRICHD_LISTEN",
    "ENRICHD_CONFIG",
    "ENRICHD_DATA_DIR",
    "ENRICHD_EXCLUSION_KEY",
    "ENRICHD_WEBHOOK_KEY",
    "ENRICHD_STORAGE_KEY",
    "ENRICHD_STORAGE_KEY_PREVIOUS",
    "ENRICHD_API_KEY",
    "ENRICHD_KEY",
    "ENRICHD_SERVER",
    "ENRICHD_LOG",
];

/// The dotted config key a variable sets (`ENRICHD_LOOKUP__MAX_HOPS` → `lookup.max_hops`), for
/// variables of the `ENRICHD_<SECTION>__<KEY>` form.
pub fn key_of(name: &str) -> Option<String> {
    let path = name.strip_prefix("ENRICHD_").filter(|p| p.contains("__"))?;
    Some(
        path.split("__")
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// Warnings about `ENRICHD_` variables that neither set a config key nor are known to enrichd.
pub fn unknown_vars(vars: &[(String, String)]) -> Vec<String> {
    vars.iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("ENRICHD_") && !name.contains("__"))
        .filter(|name| !KNOWN_VARS.contains(&name.as_str()))
        .map(|name| {
            format!(
                "{name} is not a variable enrichd reads; config keys are set as \
                 ENRICHD_<SECTION>__<KEY> with two underscores, e.g. ENRICHD_LOOKUP__MAX_HOPS"
            )
        })
        .collect()
}

/// Applies `ENRICHD_<SECTION>__<KEY>` (and deeper: `ENRICHD_SOURCES__GITHUB__BASE_URL`) onto the table.
/// Variables without `__` (`ENRICHD_LISTEN`, `ENRICHD_EXCLUSION_KEY`) are not config keys and are left alone.
/// Values are read as TOML scalars when they parse as one (`3`, `true`, `0.5`), else as strings.
pub fn apply_overrides(
    table: &mut toml::Table,
    vars: &[(String, String)],
) -> Result<(), ConfigError> {
    for (name, value) in vars {
        let Some(key) = key_of(name) else {
            continue;
        };
        let keys: Vec<&str> = key.split('.').collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::Parse(format!(
                "environment variable {name} has an empty key segment"
            )));
        }
        let (last, parents) = keys
            .split_last()
            .ok_or_else(|| ConfigError::Parse(format!("{name} names no key")))?;
        let mut node = &mut *table;
        for key in parents {
            let entry = node
                .entry(key.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::Parse(format!("{name}: '{key}' is not a section")))?;
        }
        node.insert(last.to_string(), scalar(value));
    }
    Ok(())
}

/// The variable to blame when the file alone deserializes but the file with the overrides does not:
/// each override is tried alone on the file, and the first that fails is named with the key it sets.
pub fn blame<T: serde::de::DeserializeOwned>(
    file: &toml::Table,
    vars: &[(String, String)],
    whole: toml::de::Error,
) -> ConfigError {
    for var in vars.iter().filter(|(name, _)| key_of(name).is_some()) {
        let mut table = file.clone();
        if let Err(e) = apply_overrides(&mut table, std::slice::from_ref(var)) {
            return e;
        }
        if let Err(e) = T::deserialize(toml::Value::Table(table))
            && let Some(key) = key_of(&var.0)
        {
            return ConfigError::Parse(format!(
                "{name} sets {key}, which {}",
                explain(&key, e.message()),
                name = var.0
            ));
        }
    }
    ConfigError::Parse(whole.message().to_string())
}

fn scalar(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table() && !v.is_array())
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}
