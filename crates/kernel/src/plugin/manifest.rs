//! A plugin's manifest (`<name>.info.toml`) and the names it contains.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::PluginError;

/// A plugin's machine name: 1-64 characters of `[a-z0-9_]`, starting with
/// a letter. It names the plugin's directory, files and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginName(String);

impl PluginName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if crate::text::is_machine_name(raw, 64) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "`{raw}` is not a plugin name (1-64 of a-z, 0-9, _, starting with a letter)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a tap name: `tap_` followed by `[a-z0-9_]`, at most 64 bytes.
/// Tap names become export names and metric labels, so they stay small.
pub fn check_tap_name(raw: &str) -> Result<(), String> {
    let ok = raw.len() <= 64
        && raw
            .strip_prefix("tap_")
            .is_some_and(crate::text::is_name_chars);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{raw}` is not a tap name (`tap_` then a-z, 0-9, _; at most 64 bytes)"
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    #[serde(default)]
    description: String,
    version: String,
    #[serde(default)]
    taps: Vec<String>,
    #[serde(default)]
    dependencies: Vec<String>,
    #[serde(default)]
    weight: i32,
    #[serde(default)]
    permissions: BTreeMap<String, String>,
}

/// Checks a permission a manifest declares: 1 to 128 characters without
/// control characters or surrounding space (what a role may store), not
/// one of the kernel's, with a description.
fn check_permission(name: &str, description: &str) -> Result<(), String> {
    let len = name.chars().count();
    if len == 0 || len > 128 || name.trim() != name || name.chars().any(char::is_control) {
        return Err(format!(
            "permission `{}` must be 1 to 128 characters without control characters or \
             surrounding space",
            name.escape_debug()
        ));
    }
    if crate::user::permission::KERNEL
        .iter()
        .any(|(kernel, _)| *kernel == name)
    {
        return Err(format!(
            "permission `{name}` is the kernel's; declare a permission of the plugin's own"
        ));
    }
    if description.trim().is_empty() {
        return Err(format!("permission `{name}` needs a description"));
    }
    Ok(())
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: PluginName,
    pub description: String,
    pub version: String,
    pub taps: Vec<String>,
    pub dependencies: Vec<PluginName>,
    /// Dispatch order: lower first, ties by name.
    pub weight: i32,
    /// The permissions the plugin checks, `(name, description)` by name.
    pub permissions: Vec<(String, String)>,
}

impl Manifest {
    /// Parses `text`, the manifest of the plugin in directory `dir_name`.
    pub fn parse(dir_name: &str, text: &str) -> Result<Self, PluginError> {
        let invalid = |reason: String| PluginError::InvalidManifest {
            plugin: dir_name.to_owned(),
            reason,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| invalid(e.message().into()))?;
        if raw.name != dir_name {
            return Err(invalid(format!(
                "name `{}` differs from the directory name `{dir_name}`",
                raw.name
            )));
        }
        let name = PluginName::parse(&raw.name).map_err(invalid)?;
        if raw.version.trim().is_empty() {
            return Err(invalid("version must not be empty".into()));
        }
        let mut taps = raw.taps;
        for tap in &taps {
            check_tap_name(tap).map_err(invalid)?;
        }
        taps.sort();
        taps.dedup();
        let mut dependencies = Vec::with_capacity(raw.dependencies.len());
        for dep in &raw.dependencies {
            let dep = PluginName::parse(dep).map_err(invalid)?;
            if dep == name {
                return Err(PluginError::CircularDependency {
                    plugin: name.to_string(),
                    cycle: format!("{name} -> {name}"),
                });
            }
            dependencies.push(dep);
        }
        dependencies.sort();
        dependencies.dedup();
        for (permission, description) in &raw.permissions {
            check_permission(permission, description).map_err(invalid)?;
        }
        Ok(Self {
            name,
            description: raw.description,
            version: raw.version,
            taps,
            dependencies,
            weight: raw.weight,
            permissions: raw.permissions.into_iter().collect(),
        })
    }
}

/// One plugin directory found on disk.
#[derive(Debug)]
pub struct Found {
    /// The directory name (the plugin's name if its manifest is valid).
    pub dir_name: String,
    pub manifest: Result<Manifest, PluginError>,
    /// `<name>.wasm`, else `<name>.wat`.
    pub module_path: Option<PathBuf>,
}

/// Lists the plugins under `plugin_dir`: every subdirectory holding
/// `<dirname>.info.toml`. Other entries (build output, notes) are skipped.
/// A missing plugin directory holds no plugins (and is logged as a
/// warning naming it: a mistyped `plugin.dir` must not pass unnoticed).
pub fn discover(plugin_dir: &Path) -> Vec<Found> {
    let entries = match std::fs::read_dir(plugin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                dir = %plugin_dir.display(),
                "plugin directory {} does not exist (plugin.dir, TROVATO_PLUGIN_DIR); running without plugins",
                plugin_dir.display()
            );
            return Vec::new();
        }
        Err(e) => {
            tracing::warn!(dir = %plugin_dir.display(), error = %e, "cannot read the plugin directory");
            return Vec::new();
        }
    };
    let mut found: Vec<Found> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let dir_name = e.file_name().to_str()?.to_owned();
            let manifest_path = e.path().join(format!("{dir_name}.info.toml"));
            if !manifest_path.is_file() {
                return None;
            }
            Some(read_one(&e.path(), &dir_name))
        })
        .collect();
    found.sort_by(|a, b| a.dir_name.cmp(&b.dir_name));
    found
}

/// Reads the plugin in `dir` (named `dir_name`).
pub fn read_one(dir: &Path, dir_name: &str) -> Found {
    let manifest_path = dir.join(format!("{dir_name}.info.toml"));
    let manifest = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => Manifest::parse(dir_name, &text),
        Err(e) => Err(PluginError::InvalidManifest {
            plugin: dir_name.to_owned(),
            reason: format!("cannot read {}: {e}", manifest_path.display()),
        }),
    };
    let module_path = ["wasm", "wat"]
        .iter()
        .map(|ext| dir.join(format!("{dir_name}.{ext}")))
        .find(|p| p.is_file());
    Found {
        dir_name: dir_name.to_owned(),
        manifest,
        module_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_with_all_keys_parses() {
        let m = Manifest::parse(
            "blog",
            "name = \"blog\"\ndescription = \"d\"\nversion = \"1.0\"\ntaps = [\"tap_cron\"]\ndependencies = [\"core_x\"]\nweight = -5\n",
        )
        .expect("valid");
        assert_eq!(m.weight, -5);
        assert_eq!(m.taps, vec!["tap_cron"]);
        assert_eq!(m.dependencies[0].as_str(), "core_x");
    }

    #[test]
    fn manifest_name_must_match_the_directory() {
        let e = Manifest::parse("blog", "name = \"news\"\nversion = \"1\"\n").expect_err("bad");
        assert!(e.to_string().contains("directory"), "{e}");
    }

    #[test]
    fn bad_tap_and_plugin_names_are_rejected() {
        assert!(check_tap_name("tap_cron").is_ok());
        assert!(check_tap_name("cron").is_err());
        assert!(check_tap_name("tap_").is_err());
        assert!(check_tap_name("tap_Cron").is_err());
        assert!(PluginName::parse("9lives").is_err());
        assert!(PluginName::parse("../x").is_err());
        assert!(PluginName::parse("").is_err());
    }

    #[test]
    fn declared_permissions_are_read_and_checked() {
        let m = Manifest::parse(
            "blog",
            "name = \"blog\"\nversion = \"1\"\n[permissions]\n\"publish posts\" = \"Publish blog posts\"\n",
        )
        .expect("valid");
        assert_eq!(
            m.permissions,
            vec![("publish posts".to_owned(), "Publish blog posts".to_owned())]
        );
        for (table, needle) in [
            ("\"access content\" = \"mine\"", "kernel"),
            ("\" padded\" = \"x\"", "surrounding space"),
            ("\"publish posts\" = \" \"", "description"),
        ] {
            let e = Manifest::parse(
                "blog",
                &format!("name = \"blog\"\nversion = \"1\"\n[permissions]\n{table}\n"),
            )
            .expect_err(table);
            assert!(e.to_string().contains(needle), "{table}: {e}");
        }
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let e = Manifest::parse(
            "a",
            "name = \"a\"\nversion = \"1\"\ndependencies = [\"a\"]\n",
        )
        .expect_err("cycle");
        assert!(matches!(e, PluginError::CircularDependency { .. }), "{e}");
    }
}
