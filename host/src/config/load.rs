//! Loading a config file: read it, parse the TOML into the [`raw`](super::raw) layer,
//! replace `${NAME}` with environment variables, resolve relative paths against the file's
//! directory, then check it (`check`). Not the types themselves (the parent module).

use super::raw::RawConfig;
use super::{ADMIN_TOKEN_ENV, Config, ConfigError};
use std::path::{Path, PathBuf};

impl Config {
    /// Reads, parses, expands and validates a config file. Relative plugin paths are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, &|name| std::env::var(name).ok()).map_err(|error| {
            ConfigError::In {
                path: path.to_owned(),
                error: Box::new(error),
            }
        })
    }

    /// Parses and checks config text; `env` looks up `${NAME}` variables; relative paths are
    /// resolved against `base`.
    pub fn parse(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax(e.to_string().trim_end().to_string()))?;
        raw.expand_env(env)?;
        if let Some(token) = env(ADMIN_TOKEN_ENV).filter(|t| !t.is_empty()) {
            raw.admin.tokens.insert("env".into(), token);
        }
        raw.resolve_paths(base);
        Config::try_from(raw)
    }
}

impl RawConfig {
    fn expand_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.kafka.brokers = expand(&self.kafka.brokers, "kafka.brokers", env)?;
        for (section, map) in [
            ("kafka.consumer", &mut self.kafka.consumer),
            ("kafka.producer", &mut self.kafka.producer),
        ] {
            for (key, value) in map.iter_mut() {
                *value = expand(value, &format!("{section}.\"{key}\""), env)?;
            }
        }
        for (name, token) in self.admin.tokens.iter_mut() {
            *token = expand(token, &format!("admin.tokens.{name}"), env)?;
        }
        // Stage config: the written form stays (it is what is shown and stored); the
        // expanded one is what `init` gets.
        for (i, p) in self.pipelines.iter_mut().enumerate() {
            for (j, stage) in p.stages.iter_mut().enumerate() {
                let at = format!("pipeline[{i}] ({}).stage[{j}] ({})", p.name, stage.name);
                stage.config_values = stage
                    .config
                    .iter()
                    .map(|(key, value)| {
                        let expanded = expand(value, &format!("{at}.config.{key}"), env)?;
                        Ok((key.clone(), expanded))
                    })
                    .collect::<Result<_, ConfigError>>()?;
            }
        }
        Ok(())
    }

    /// Relative paths (state directory, table files, plugins, schemas) are relative to `base`,
    /// the config file's directory.
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        let mut state_dir = self
            .admin
            .state_dir
            .take()
            .unwrap_or_else(|| PathBuf::from(".switchyard-state"));
        resolve(&mut state_dir);
        self.admin.state_dir = Some(state_dir);
        for table in &mut self.tables {
            table.path.iter_mut().for_each(resolve);
        }
        for stage in self.pipelines.iter_mut().flat_map(|p| &mut p.stages) {
            stage.plugin.iter_mut().for_each(resolve);
            stage.json_schema.iter_mut().for_each(resolve);
        }
    }
}

/// Replaces every `${NAME}` in `value` by `env(NAME)`; `$${` stands for a literal `${`. The
/// error names `key`.
pub fn expand(
    value: &str,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                ConfigError::Invalid(format!("{key}: unterminated ${{ in {value:?}"))
            })?;
            let name = &after[..end];
            let found = env(name).ok_or_else(|| {
                ConfigError::Invalid(format!("{key}: environment variable {name} is not set"))
            })?;
            out.push_str(&found);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `value` written so that [`expand`] gives it back unchanged: every `${` becomes `$${`.
pub fn escape(value: &str) -> String {
    value.replace("${", "$${")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_value_expands_to_itself() {
        for literal in [
            "plain",
            "${SECRET}",
            "a$${b",
            "$${",
            "$",
            "${",
            "x${SECRET}y${",
        ] {
            let back = expand(&escape(literal), "k", &env).expect("expands");
            assert_eq!(
                back,
                literal,
                "{literal:?} escaped as {:?}",
                escape(literal)
            );
        }
    }

    #[test]
    fn stage_config_keeps_the_written_form_beside_the_expanded_one() {
        let text = r#"
            [kafka]
            brokers = "b:9092"
            [[pipeline]]
            name = "p"
            topics = ["t"]
            default_route = "r"
            dead_letter_topic = "d"
            routes = { r = "out" }
            [[pipeline.stage]]
            name = "s"
            plugin = "Cargo.toml"
            config = { password = "db:${SECRET}", plain = "x" }
        "#;
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = super::Config::parse(text, base, &env).expect("parses");
        let stage = &config.pipelines[0].stages[0];
        assert_eq!(stage.config["password"], "db:${SECRET}");
        assert_eq!(stage.config_values["password"], "db:hunter2");
        assert_eq!(stage.config_values["plain"], "x");
        let e = super::Config::parse(&text.replace("SECRET", "MISSING"), base, &env)
            .expect_err("a missing variable")
            .to_string();
        assert_eq!(
            e,
            "pipeline[0] (p).stage[0] (s).config.password: environment variable MISSING is not set"
        );
    }

    fn env(name: &str) -> Option<String> {
        (name == "SECRET").then(|| "hunter2".to_string())
    }

    #[test]
    fn expands_variables_and_escapes() {
        let e = |v: &str| expand(v, "k", &env).map_err(|e| e.to_string());
        assert_eq!(e("a${SECRET}b").unwrap(), "ahunter2b");
        assert_eq!(e("$${SECRET}").unwrap(), "${SECRET}");
        assert_eq!(e("cost $5").unwrap(), "cost $5");
        assert_eq!(
            e("${MISSING}").unwrap_err(),
            "k: environment variable MISSING is not set"
        );
        assert!(e("${SECRET").unwrap_err().contains("unterminated"));
    }
}
