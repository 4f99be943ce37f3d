//! The template environment: every template compiled into the binary,
//! HTML autoescaped, and a fingerprint of their sources for cache keys.

use minijinja::Environment;

use crate::error::AppError;

/// Every template, embedded at build time: (name, source).
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("front.html", include_str!("../../templates/front.html")),
    ("item.html", include_str!("../../templates/item.html")),
    ("items.html", include_str!("../../templates/items.html")),
    ("term.html", include_str!("../../templates/term.html")),
    (
        "admin/layout.html",
        include_str!("../../templates/admin/layout.html"),
    ),
    (
        "admin/index.html",
        include_str!("../../templates/admin/index.html"),
    ),
    (
        "admin/files.html",
        include_str!("../../templates/admin/files.html"),
    ),
    (
        "admin/cron.html",
        include_str!("../../templates/admin/cron.html"),
    ),
    (
        "admin/batches.html",
        include_str!("../../templates/admin/batches.html"),
    ),
    (
        "admin/batch.html",
        include_str!("../../templates/admin/batch.html"),
    ),
    (
        "admin/queues.html",
        include_str!("../../templates/admin/queues.html"),
    ),
    (
        "admin/search.html",
        include_str!("../../templates/admin/search.html"),
    ),
    ("search.html", include_str!("../../templates/search.html")),
    ("error.html", include_str!("../../templates/error.html")),
    (
        "admin/content.html",
        include_str!("../../templates/admin/content.html"),
    ),
    (
        "admin/item_form.html",
        include_str!("../../templates/admin/item_form.html"),
    ),
    (
        "admin/stages.html",
        include_str!("../../templates/admin/stages.html"),
    ),
    (
        "admin/stage.html",
        include_str!("../../templates/admin/stage.html"),
    ),
    (
        "admin/types.html",
        include_str!("../../templates/admin/types.html"),
    ),
    (
        "admin/type.html",
        include_str!("../../templates/admin/type.html"),
    ),
    (
        "admin/people.html",
        include_str!("../../templates/admin/people.html"),
    ),
    (
        "admin/person.html",
        include_str!("../../templates/admin/person.html"),
    ),
    (
        "admin/roles.html",
        include_str!("../../templates/admin/roles.html"),
    ),
    (
        "admin/plugins.html",
        include_str!("../../templates/admin/plugins.html"),
    ),
    (
        "admin/categories.html",
        include_str!("../../templates/admin/categories.html"),
    ),
    (
        "admin/category.html",
        include_str!("../../templates/admin/category.html"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("template {name}: {source}")]
    Template {
        name: String,
        source: minijinja::Error,
    },
}

impl From<PageError> for AppError {
    fn from(e: PageError) -> Self {
        AppError::Internal(e.to_string())
    }
}

/// The template environment. HTML templates autoescape (minijinja's default
/// for `.html` names).
pub struct Templates {
    env: Environment<'static>,
    fingerprint: String,
}

impl Templates {
    /// The shipped templates; every page sees `site_name`.
    pub fn new(site_name: &str) -> Result<Self, PageError> {
        let mut t = Self::from_sources(TEMPLATES)?;
        t.env.add_global("site_name", site_name.to_owned());
        t.fingerprint = fingerprint_with(TEMPLATES, site_name);
        Ok(t)
    }

    fn from_sources(templates: &[(&'static str, &'static str)]) -> Result<Self, PageError> {
        let mut env = Environment::new();
        for (name, source) in templates {
            env.add_template(name, source)
                .map_err(|source| PageError::Template {
                    name: (*name).to_owned(),
                    source,
                })?;
        }
        Ok(Self {
            env,
            fingerprint: fingerprint(templates),
        })
    }

    /// Names what renders pages: the kernel's version and every
    /// template's source. Cached pages are keyed by it, so a deployment
    /// that changes either serves fresh pages at once instead of the old
    /// build's until they expire.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, PageError> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|source| PageError::Template {
                name: name.to_owned(),
                source,
            })
    }
}

fn fingerprint(templates: &[(&str, &str)]) -> String {
    fingerprint_with(templates, "")
}

/// The fingerprint of `templates` rendering for a site named `site_name`
/// (the name is in every page, so a new one must not serve old pages).
fn fingerprint_with(templates: &[(&str, &str)], site_name: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update((site_name.len() as u64).to_le_bytes());
    h.update(site_name);
    for (name, source) in templates {
        // Lengths first, so no two different lists hash the same bytes.
        h.update((name.len() as u64).to_le_bytes());
        h.update(name);
        h.update((source.len() as u64).to_le_bytes());
        h.update(source);
    }
    crate::text::hex(&h.finalize()[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_every_template_source() {
        let a = Templates::from_sources(&[("a.html", "<p>{{ x }}</p>")]).expect("a");
        let same = Templates::from_sources(&[("a.html", "<p>{{ x }}</p>")]).expect("same");
        let edited = Templates::from_sources(&[("a.html", "<p>{{ x }}!</p>")]).expect("edited");
        let renamed = Templates::from_sources(&[("b.html", "<p>{{ x }}</p>")]).expect("renamed");
        assert_eq!(a.fingerprint(), same.fingerprint());
        assert_ne!(a.fingerprint(), edited.fingerprint());
        assert_ne!(a.fingerprint(), renamed.fingerprint());
        assert_eq!(a.fingerprint().len(), 12);
        let shipped = Templates::new("Trovato").expect("shipped templates");
        assert_ne!(shipped.fingerprint(), a.fingerprint());
        let renamed_site = Templates::new("Other").expect("shipped templates");
        assert_ne!(shipped.fingerprint(), renamed_site.fingerprint());
    }
}
