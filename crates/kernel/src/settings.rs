//! The kernel's configuration: every subsystem's settings section put
//! together.
//!
//! Each section is defined once, by the subsystem that owns it: one struct
//! that is the TOML table (`[cache]`), the environment variables and the
//! command-line flags at once, with its `validate` next to its fields.
//! A setting's doc comment is its `--help` text and its row in the README's
//! configuration table ([`table`] renders it; a test holds the README to
//! it). Precedence: flag, then environment, then the file, then the default.
//!
//! This module sits above the subsystems (it imports their sections); the
//! shared base every section uses is [`crate::config`].

use std::path::Path;

use clap::{ArgMatches, Command, FromArgMatches};
use serde::{Deserialize, Serialize};

use crate::cache::CacheSettings;
use crate::config::{ConfigError, redact_url};
use crate::cron::settings::CronSettings;
use crate::db::DbSettings;
use crate::file::settings::FileSettings;
use crate::http::ServerSettings;
use crate::kv::RedisSettings;
use crate::observe::ObserveSettings;
use crate::page::settings::SiteSettings;
use crate::plugin::PluginSettings;
use crate::queue::settings::QueueSettings;
use crate::search::settings::SearchSettings;
use crate::user::settings::{LoginSettings, SessionSettings};

/// The configuration the kernel runs with: one field per section, each a
/// table of the TOML file. Unknown tables and keys are an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerSettings,
    #[command(flatten)]
    pub db: DbSettings,
    #[command(flatten)]
    pub redis: RedisSettings,
    #[command(flatten)]
    pub observe: ObserveSettings,
    #[command(flatten)]
    pub session: SessionSettings,
    #[command(flatten)]
    pub login: LoginSettings,
    #[command(flatten)]
    pub cache: CacheSettings,
    #[command(flatten)]
    pub plugin: PluginSettings,
    #[command(flatten)]
    pub files: FileSettings,
    #[command(flatten)]
    pub cron: CronSettings,
    #[command(flatten)]
    pub queue: QueueSettings,
    #[command(flatten)]
    pub search: SearchSettings,
    #[command(flatten)]
    pub site: SiteSettings,
}

impl Config {
    /// Checks every section; the error names the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.db.validate()?;
        self.redis.validate()?;
        self.observe.validate()?;
        self.session.validate()?;
        self.login.validate()?;
        self.cache.validate()?;
        self.plugin.validate()?;
        self.files.validate()?;
        self.cron.validate()?;
        self.queue.validate()?;
        self.search.validate()?;
        self.site.validate()
    }

    /// Parses a TOML file over the defaults.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            // toml's own rendering spans several lines (it quotes the
            // source); keep the summary and say where.
            let mut message = e.message().trim_end().to_owned();
            if let Some(span) = e.span() {
                let line = 1 + text
                    .get(..span.start)
                    .map_or(0, |before| before.matches('\n').count());
                message.push_str(&format!(" (line {line})"));
            }
            ConfigError::Parse {
                path: path.to_owned(),
                message,
            }
        })
    }

    /// Reads the TOML file at `path` over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    /// Adds every setting to `cmd` and to each of its subcommands, at any
    /// depth, as a flag, so a setting may follow any command. None has a
    /// clap default, so one that is neither given nor set in the
    /// environment leaves the file's value in place ([`Config::layer`]).
    ///
    /// The environment is read once, by the top level's copies; the
    /// subcommands' copies carry none, so a flag given anywhere beats the
    /// environment (`layer` lays each level over the one above it), and a
    /// setting the environment gives is never a subcommand's argument (no
    /// usage line of an error lists it). Help lists the settings only for
    /// the top-level subcommands for which `listed(name)` holds.
    pub fn command_listing(cmd: Command, listed: impl Fn(&str) -> bool) -> Command {
        let settings = <Config as clap::Args>::augment_args(Command::new("settings"));
        let settings: Vec<clap::Arg> = settings
            .get_arguments()
            .map(|a| a.clone().required(false))
            .collect();
        let cmd = settings
            .iter()
            .fold(cmd, |cmd, arg| cmd.arg(arg.clone().hide(true)));
        cmd.mut_subcommands(|sc| {
            let shown = listed(sc.get_name());
            with_settings(sc, &settings, shown)
        })
    }

    /// [`Config::command_listing`] with the settings listed by every
    /// top-level subcommand.
    pub fn command(cmd: Command) -> Command {
        Self::command_listing(cmd, |_| true)
    }

    /// Lays the flags and environment variables in `matches` (from a
    /// command built by [`Config::command_listing`]) over `self`, the top
    /// level first and then each subcommand's, then validates.
    pub fn layer(mut self, matches: &ArgMatches) -> Result<Self, ConfigError> {
        let mut level = Some(matches);
        while let Some(m) = level {
            self.update_from_arg_matches(m)
                .map_err(|e| ConfigError::Invalid {
                    setting: "command line".into(),
                    message: e.to_string().trim_end().to_owned(),
                })?;
            level = m.subcommand().map(|(_, sub)| sub);
        }
        self.validate()?;
        Ok(self)
    }

    /// The configuration as a TOML file, with passwords in URLs replaced.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for url in [&mut shown.db.url, &mut shown.redis.url]
            .into_iter()
            .flatten()
        {
            *url = redact_url(url);
        }
        if shown.files.s3_secret_access_key.is_some() {
            shown.files.s3_secret_access_key = Some("***".into());
        }
        if shown.cron.key.is_some() {
            shown.cron.key = Some("***".into());
        }
        // Every section serializes: its fields are plain values.
        toml::to_string(&shown).unwrap_or_default()
    }
}

/// `cmd` and its subcommands with a copy of each setting that reads no
/// environment variable (its help names the variable instead), listed in
/// help when `shown`.
fn with_settings(cmd: Command, settings: &[clap::Arg], shown: bool) -> Command {
    let cmd = settings.iter().fold(cmd, |cmd, arg| {
        let mut copy = arg.clone().hide(!shown);
        if let (Some(env), Some(help)) = (arg.get_env(), arg.get_help()) {
            copy = copy.help(format!("{help} [env: {}]", env.to_string_lossy()));
        }
        cmd.arg(copy.env(None::<&'static str>))
    });
    cmd.mut_subcommands(|sc| with_settings(sc, settings, shown))
}

/// The README's configuration table: one row per setting, from the
/// sections' own definitions (file key, environment variable, flag,
/// default, doc comment).
pub fn table() -> String {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let cmd = <Config as clap::Args>::augment_args(Command::new("settings"));
    let mut out = String::from(
        "| setting (file key) | environment / flag | default | meaning |\n|---|---|---|---|\n",
    );
    for arg in cmd.get_arguments() {
        let key = arg.get_id().as_str();
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let flag = arg
            .get_long()
            .map(|l| format!("`--{l}`"))
            .unwrap_or_default();
        let default = default_of(&defaults, key);
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        out.push_str(&format!(
            "| `{key}` | {env} / {flag} | {default} | {help} |\n"
        ));
    }
    out
}

/// The default of `section.key` as TOML, or `unset`.
fn default_of(defaults: &toml::Table, key: &str) -> String {
    let value = key
        .split_once('.')
        .and_then(|(section, field)| defaults.get(section)?.get(field));
    match value {
        None => "unset".into(),
        Some(toml::Value::Array(a)) => {
            let items: Vec<String> = a.iter().map(toml::Value::to_string).collect();
            format!("`[{}]`", items.join(", "))
        }
        Some(v) => format!("`{v}`"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&PathBuf::from("test.toml"), text)
    }

    fn matches(args: &[&str]) -> ArgMatches {
        Config::command(Command::new("trovato").subcommand(Command::new("serve")))
            .try_get_matches_from(args)
            .expect("valid arguments")
    }

    #[test]
    fn unknown_key_in_file_is_rejected_by_name() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
            .expect_err("unknown key must fail")
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = parse("[cahce]\nl1_capacity = 3\n")
            .expect_err("unknown table must fail")
            .to_string();
        assert!(err.contains("cahce"), "{err}");
    }

    #[test]
    fn malformed_database_url_names_the_setting() {
        let mut c = Config::default();
        c.db.url = Some("not a url".into());
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(msg.contains("db.url (DATABASE_URL)"), "{msg}");
    }

    #[test]
    fn wrong_scheme_for_redis_is_rejected() {
        let mut c = Config::default();
        c.redis.url = Some("http://127.0.0.1:6379".into());
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(msg.contains("REDIS_URL") && msg.contains("http"), "{msg}");
    }

    #[test]
    fn redis_prefix_with_glob_characters_is_rejected() {
        let mut c = Config::default();
        c.redis.prefix = "a*b".into();
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(msg.contains("redis.prefix (TROVATO_REDIS_PREFIX)"), "{msg}");
    }

    #[test]
    fn file_values_override_defaults() {
        let c = parse("[redis]\nprefix = \"site1:\"\n[server]\nmax_body_bytes = 10\n")
            .expect("valid toml");
        assert_eq!(c.redis.prefix, "site1:");
        assert_eq!(c.server.max_body_bytes, 10);
        assert_eq!(c.server.listen, Config::default().server.listen);
        // Dotted keys are the same thing.
        let d = parse("redis.prefix = \"site1:\"\nserver.max_body_bytes = 10\n").expect("valid");
        assert_eq!(c, d);
    }

    #[test]
    fn zero_cache_ttl_is_rejected_by_name() {
        let mut c = Config::default();
        c.cache.l1_ttl_secs = 0;
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(
            msg.contains("cache.l1_ttl_secs (TROVATO_CACHE_L1_TTL)"),
            "{msg}"
        );
        let c = parse("[cache]\nl1_capacity = 5\nl2_ttl_secs = 7\n").expect("valid toml");
        assert_eq!(c.cache.l1_capacity, 5);
        assert_eq!(c.cache.l2_ttl_secs, 7);
        assert_eq!(c.cache.l1_ttl_secs, 60);
    }

    #[test]
    fn login_limits_come_from_the_file_and_a_zero_window_is_rejected_by_name() {
        let c = parse(
            "[login]\nname_limit = 0\naddress_window_secs = 60\n\
             trusted_proxies = [\"10.0.0.0/8\"]\n",
        )
        .expect("valid toml");
        let limits = c.login.limits();
        assert_eq!(limits.per_name, 0);
        assert_eq!(limits.per_address, 50);
        assert_eq!(limits.address_window, std::time::Duration::from_secs(60));
        assert_eq!(c.login.trusted_proxies.len(), 1);
        c.validate().expect("valid");
        for (window, env) in [
            ("name_window_secs", "TROVATO_LOGIN_NAME_WINDOW"),
            ("address_window_secs", "TROVATO_LOGIN_ADDRESS_WINDOW"),
        ] {
            let c = parse(&format!("[login]\n{window} = 0\n")).expect("valid toml");
            let msg = c.validate().expect_err("must fail").to_string();
            assert!(msg.contains(&format!("login.{window} ({env})")), "{msg}");
        }
        let mut c = Config::default();
        c.login.name_window_secs = crate::user::settings::MAX_LOGIN_WINDOW.as_secs() + 1;
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(msg.contains("30 days"), "{msg}");
    }

    /// Breaks one setting.
    type Breaker = fn(&mut Config);

    #[test]
    fn every_section_names_its_bad_values() {
        let cases: [(Breaker, &str); 9] = [
            (|c| c.server.max_body_bytes = 0, "TROVATO_MAX_BODY_BYTES"),
            (
                |c| c.server.connect_timeout_secs = 0,
                "TROVATO_CONNECT_TIMEOUT",
            ),
            (|c| c.db.max_connections = 0, "TROVATO_DB_MAX_CONNECTIONS"),
            (
                |c| c.session.idle_timeout_secs = 0,
                "TROVATO_SESSION_IDLE_TIMEOUT",
            ),
            (
                |c| c.plugin.request_deadline_ms = 0,
                "TROVATO_PLUGIN_REQUEST_DEADLINE_MS",
            ),
            (
                |c| c.plugin.background_deadline_secs = 0,
                "TROVATO_PLUGIN_BACKGROUND_DEADLINE",
            ),
            (
                |c| c.plugin.memory_limit_bytes = 1,
                "TROVATO_PLUGIN_MEMORY_LIMIT",
            ),
            (
                |c| c.plugin.output_limit_bytes = 0,
                "TROVATO_PLUGIN_OUTPUT_LIMIT",
            ),
            (
                |c| c.plugin.max_instances = 0,
                "TROVATO_PLUGIN_MAX_INSTANCES",
            ),
        ];
        for (spoil, env) in cases {
            let mut c = Config::default();
            spoil(&mut c);
            let msg = c.validate().expect_err(env).to_string();
            assert!(msg.contains(env), "{msg}");
        }
        Config::default()
            .validate()
            .expect("the defaults are valid");
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file() {
        let file = parse(
            "[cache]\nl1_capacity = 5\nl2_ttl_secs = 7\n[server]\nlisten = \"127.0.0.1:1\"\n",
        )
        .expect("valid toml");
        // The environment's place (between the two) is tested on the
        // binary itself, in the integration tests.
        let c = file
            .clone()
            .layer(&matches(&["trovato", "serve", "--cache-l2-ttl", "9"]))
            .expect("valid");
        assert_eq!(c.cache.l2_ttl_secs, 9, "flag over file");
        assert_eq!(
            c.cache.l1_capacity, 5,
            "an absent flag keeps the file's value"
        );
        assert_eq!(c.server.listen.port(), 1);
        let c = file
            .clone()
            .layer(&matches(&["trovato", "--listen", "127.0.0.1:2", "serve"]))
            .expect("valid");
        assert_eq!(c.server.listen.port(), 2, "a flag before the subcommand");
        let c = file
            .layer(&matches(&[
                "trovato",
                "serve",
                "--trusted-proxies",
                "10.0.0.0/8,::1/128",
            ]))
            .expect("valid");
        assert_eq!(c.login.trusted_proxies.len(), 2, "comma-separated list");
        let err = Config::default()
            .layer(&matches(&["trovato", "serve", "--cache-l1-ttl", "0"]))
            .expect_err("validated after layering")
            .to_string();
        assert!(err.contains("TROVATO_CACHE_L1_TTL"), "{err}");
    }

    #[test]
    fn every_setting_has_a_file_key_an_environment_variable_a_flag_and_help() {
        let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
        let cmd = <Config as clap::Args>::augment_args(Command::new("settings"));
        let mut keys = Vec::new();
        for arg in cmd.get_arguments() {
            let key = arg.get_id().as_str().to_owned();
            assert!(arg.get_env().is_some(), "{key} has no environment variable");
            assert!(arg.get_long().is_some(), "{key} has no flag");
            assert!(arg.get_help().is_some(), "{key} has no doc comment");
            // The clap id is the file key: a file setting it parses.
            let (section, field) = key.split_once('.').expect("section.key");
            let value = defaults
                .get(section)
                .and_then(|t| t.get(field))
                .map_or_else(|| "\"x\"".to_owned(), toml::Value::to_string);
            parse(&format!("{key} = {value}")).unwrap_or_else(|e| panic!("{key}: {e}"));
            keys.push(key);
        }
        // And every key of the file is a setting.
        for (section, table) in &defaults {
            for field in table.as_table().expect("sections are tables").keys() {
                let key = format!("{section}.{field}");
                assert!(keys.contains(&key), "{key} has no flag");
            }
        }
    }

    #[test]
    fn readme_configuration_table_is_generated_from_the_settings() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .expect("README.md");
        let documented = readme
            .split_once("<!-- settings table -->\n")
            .and_then(|(_, rest)| rest.split_once("<!-- end of settings table -->"))
            .map(|(table, _)| table)
            .expect("README.md marks its settings table");
        let expected = table();
        assert!(
            documented == expected,
            "README.md's configuration table differs from the settings; replace it with:\n\n{expected}"
        );
    }
}
