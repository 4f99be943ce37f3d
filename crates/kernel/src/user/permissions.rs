//! The permission registry (every permission the kernel and the plugins
//! check, with its description and owner), and the permissions a set of
//! roles grants, read from `role_permission` and cached in process for a
//! few seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use sqlx::PgExecutor;

use super::permission;
use crate::db::{DbError, timed};

/// The owner of the kernel's permissions in [`PermissionInfo::owner`].
pub const KERNEL_OWNER: &str = "kernel";

/// One declared permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PermissionInfo {
    pub name: String,
    pub description: String,
    /// `kernel`, or the name of the plugin that declares it.
    pub owner: String,
}

/// Every permission that may be granted: the kernel's
/// ([`permission::KERNEL`]) and those the plugins' manifests declare.
/// Built once at start-up, like the plugin registry it reads.
#[derive(Debug, Clone)]
pub struct Registry {
    by_name: BTreeMap<String, PermissionInfo>,
}

impl Registry {
    /// The kernel's permissions and `declared`, `(plugin, name,
    /// description)` in dispatch order. A name declared twice keeps its
    /// first owner (the kernel's come first); the repeat is logged.
    pub fn new(declared: impl IntoIterator<Item = (String, String, String)>) -> Self {
        let mut by_name = BTreeMap::new();
        for (name, description) in permission::KERNEL {
            by_name.insert(
                (*name).to_owned(),
                PermissionInfo {
                    name: (*name).to_owned(),
                    description: (*description).to_owned(),
                    owner: KERNEL_OWNER.to_owned(),
                },
            );
        }
        for (owner, name, description) in declared {
            if let Some(first) = by_name.get(&name) {
                tracing::warn!(
                    plugin = %owner, permission = %name, declared_by = %first.owner,
                    "a plugin declares a permission that is already declared; ignored"
                );
                continue;
            }
            by_name.insert(
                name.clone(),
                PermissionInfo {
                    name,
                    description,
                    owner,
                },
            );
        }
        Self { by_name }
    }

    /// The kernel's permissions only.
    pub fn kernel() -> Self {
        Self::new([])
    }

    /// Every permission, by name.
    pub fn all(&self) -> impl Iterator<Item = &PermissionInfo> {
        self.by_name.values()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Those of `names` that are not declared, in their order.
    pub fn unknown(&self, names: &[String]) -> Vec<String> {
        names
            .iter()
            .filter(|n| !self.contains(n))
            .cloned()
            .collect()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::kernel()
    }
}

/// The README's list of the kernel's permissions, generated from
/// [`permission::KERNEL`] (a test holds the README to it).
pub fn table() -> String {
    let mut out = String::from("| permission | lets its holders |\n|---|---|\n");
    for (name, description) in permission::KERNEL {
        out.push_str(&format!("| `{name}` | {description} |\n"));
    }
    out
}

/// Permissions by role set, cached in process for a few seconds: every
/// request needs them, and they change rarely (an edit takes effect within
/// [`PermissionCache::TTL`] on every process).
///
/// It also holds the [`Registry`]: what may be granted, and what an
/// administrator (who holds everything) is shown to hold.
pub struct PermissionCache {
    cache: moka::future::Cache<Vec<String>, Arc<BTreeSet<String>>>,
    registry: Registry,
}

impl PermissionCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(5);

    pub fn new(registry: Registry) -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Self::TTL)
                .build(),
            registry,
        }
    }

    /// Every permission that may be granted.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Forgets every cached set, after roles or permissions changed.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// The union of the permissions of `roles` (order-insensitive).
    pub async fn of(
        &self,
        db: &sqlx::PgPool,
        roles: &[String],
    ) -> Result<BTreeSet<String>, DbError> {
        let mut key = roles.to_vec();
        key.sort();
        key.dedup();
        let loaded = self
            .cache
            .try_get_with(key.clone(), async move {
                permissions_of(db, &key).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<DbError>| match Arc::try_unwrap(e) {
                Ok(e) => e,
                // Another caller shared this load; its error cannot be moved out.
                Err(shared) => DbError::Unavailable(shared.to_string()),
            })?;
        Ok((*loaded).clone())
    }
}

impl Default for PermissionCache {
    fn default() -> Self {
        Self::new(Registry::kernel())
    }
}

/// The union of the permissions of `roles`.
pub async fn permissions_of(
    db: impl PgExecutor<'_>,
    roles: &[String],
) -> Result<BTreeSet<String>, DbError> {
    let perms = timed(
        "user.permissions",
        sqlx::query_scalar::<_, String>(
            "SELECT DISTINCT permission FROM role_permission WHERE role = ANY($1)",
        )
        .bind(roles)
        .fetch_all(db),
    )
    .await?;
    Ok(perms.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_cannot_take_over_a_kernel_permission_and_its_own_are_listed() {
        let r = Registry::new([
            ("blog".into(), "access content".into(), "mine now".into()),
            (
                "blog".into(),
                "publish posts".into(),
                "Publish blog posts".into(),
            ),
            ("news".into(), "publish posts".into(), "Also mine".into()),
        ]);
        let access = r
            .all()
            .find(|p| p.name == "access content")
            .expect("kernel's");
        assert_eq!(access.owner, KERNEL_OWNER);
        let posts = r
            .all()
            .find(|p| p.name == "publish posts")
            .expect("plugin's");
        assert_eq!(
            (posts.owner.as_str(), posts.description.as_str()),
            ("blog", "Publish blog posts")
        );
        assert_eq!(
            r.unknown(&["publish posts".into(), "frobnicate".into()]),
            vec!["frobnicate".to_owned()]
        );
        assert_eq!(r.all().count(), permission::KERNEL.len() + 1);
    }

    #[test]
    fn readme_permission_list_is_generated_from_the_registry() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .expect("README.md");
        let documented = readme
            .split_once("<!-- permissions table -->\n")
            .and_then(|(_, rest)| rest.split_once("<!-- end of permissions table -->"))
            .map(|(table, _)| table)
            .expect("README.md marks its permissions table");
        let expected = table();
        assert!(
            documented == expected,
            "README.md's permission list differs from the kernel's permissions; replace it with:\n\n{expected}"
        );
    }
}
