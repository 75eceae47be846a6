use super::ConfigError;

/// Applies `ENRICHD_<SECTION>__<KEY>` (and deeper: `ENRICHD_SOURCES__GITHUB__BASE_URL`) onto the table.
/// Variables without `__` (`ENRICHD_LISTEN`, `ENRICHD_EXCLUSION_KEY`) are not config keys and are left alone.
/// Values are read as TOML scalars when they parse as one (`3`, `true`, `0.5`), else as strings.
pub fn apply_overrides(
    table: &mut toml::Table,
    vars: &[(String, String)],
) -> Result<(), ConfigError> {
    for (name, value) in vars {
        let Some(path) = name.strip_prefix("ENRICHD_").filter(|p| p.contains("__")) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if keys.iter().any(String::is_empty) {
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
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::Parse(format!("{name}: '{key}' is not a section")))?;
        }
        node.insert(last.clone(), scalar(value));
    }
    Ok(())
}

fn scalar(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table() && !v.is_array())
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}
