//! The `[site]` section: what the public pages call the site.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The `[site]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Site")]
pub struct SiteSettings {
    /// The site's name, shown in every page's header and title.
    #[arg(
        id = "site.name",
        long = "site-name",
        env = "TROVATO_SITE_NAME",
        value_name = "NAME"
    )]
    pub name: String,
    /// Items per page of the front page (promoted first, then the newest).
    #[arg(
        id = "site.front_page_items",
        long = "front-page-items",
        env = "TROVATO_FRONT_PAGE_ITEMS",
        value_name = "N"
    )]
    pub front_page_items: u32,
}

impl Default for SiteSettings {
    fn default() -> Self {
        Self {
            name: "Trovato".to_owned(),
            front_page_items: 10,
        }
    }
}

impl SiteSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ConfigError::invalid::<Self>(
                "site.name",
                "must be 1-100 characters without control characters",
            ));
        }
        if !(1..=crate::item::list::ListSpec::MAX_PER_PAGE).contains(&self.front_page_items) {
            return Err(ConfigError::invalid::<Self>(
                "site.front_page_items",
                format!("must be 1 to {}", crate::item::list::ListSpec::MAX_PER_PAGE),
            ));
        }
        Ok(())
    }
}
