//! [`Config`]: the stage's configuration map, as given to [`Plugin::init`](crate::Plugin::init).
//!
//! Owns lookup and parsing of values, with errors that name the key. It does not decide what
//! keys a plugin has; each plugin documents its own.

use std::fmt::Display;
use std::str::FromStr;

/// The stage's configuration: `(key, value)` pairs, in the order the host gave them (sorted by
/// key). Both keys and values are strings; the typed accessors parse them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pairs: Vec<(String, String)>,
}

impl Config {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// A configuration from `(key, value)` pairs. Reuses the allocation of a
    /// `Vec<(String, String)>`.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default` when it is not set.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key`; an error ``missing config key `key` `` when it is not set.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("missing config key `{key}`"))
    }

    /// The value of `key` parsed as a `T`; `Ok(None)` when it is not set, an error naming the
    /// key and the value when it does not parse.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.get(key)
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map_err(|e| invalid(key, format_args!("`{value}` ({e})")))
            })
            .transpose()
    }

    /// The value of `key` parsed as a `T`, or `default` when it is not set.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// The value of `key` (or `default`) as a comma-separated list: items trimmed, empty
    /// items dropped.
    pub fn list<'a>(&'a self, key: &str, default: &'a str) -> Vec<&'a str> {
        split_list(self.get_or(key, default)).collect()
    }

    /// The value of `key` (or `default`) as a comma-separated list of `left:right` pairs, both
    /// sides trimmed and non-empty; an error naming the key for any other item.
    pub fn pairs<'a>(
        &'a self,
        key: &str,
        default: &'a str,
    ) -> Result<Vec<(&'a str, &'a str)>, String> {
        split_list(self.get_or(key, default))
            .map(|item| match item.split_once(':') {
                Some((left, right)) if !left.trim().is_empty() && !right.trim().is_empty() => {
                    Ok((left.trim(), right.trim()))
                }
                _ => Err(invalid(
                    key,
                    format_args!("`{item}` is not a `name:name` pair"),
                )),
            })
            .collect()
    }

    /// An error naming the first key that is not one of `known`, so that a typo in a pipeline
    /// file fails the load instead of being silently ignored.
    pub fn check_keys(&self, known: &[&str]) -> Result<(), String> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((key, _)) => Err(format!(
                "unknown config key `{key}` (known keys: {})",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }

    /// The `(key, value)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Self::from_pairs(pairs)
    }
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn invalid(key: &str, what: impl Display) -> String {
    format!("invalid value for config key `{key}`: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_pairs([
            ("batch", "16"),
            ("names", " a, b ,,c "),
            ("map", "a:x, b : y"),
        ])
    }

    #[test]
    fn get_and_defaults() {
        let config = config();
        assert_eq!(config.get("batch"), Some("16"));
        assert_eq!(config.get("nope"), None);
        assert_eq!(config.get_or("nope", "d"), "d");
        assert_eq!(config.require("batch"), Ok("16"));
        assert_eq!(
            config.require("nope"),
            Err("missing config key `nope`".to_owned())
        );
    }

    #[test]
    fn parse_names_the_key() {
        let config = Config::from_pairs([("n", "12"), ("bad", "x1")]);
        assert_eq!(config.parse::<u32>("n"), Ok(Some(12)));
        assert_eq!(config.parse::<u32>("missing"), Ok(None));
        assert_eq!(config.parse_or::<u32>("missing", 7), Ok(7));
        assert_eq!(
            config.parse::<u32>("bad"),
            Err(
                "invalid value for config key `bad`: `x1` (invalid digit found in string)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn lists_and_pairs() {
        let config = config();
        assert_eq!(config.list("names", ""), ["a", "b", "c"]);
        assert_eq!(config.list("nope", "x,y"), ["x", "y"]);
        assert_eq!(config.pairs("map", ""), Ok(vec![("a", "x"), ("b", "y")]));
        assert_eq!(
            config.pairs("names", ""),
            Err("invalid value for config key `names`: `a` is not a `name:name` pair".to_owned())
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let config = config();
        assert_eq!(config.check_keys(&["batch", "names", "map"]), Ok(()));
        assert_eq!(
            config.check_keys(&["names", "map"]),
            Err("unknown config key `batch` (known keys: names, map)".to_owned())
        );
    }

    #[test]
    fn iterates_in_order() {
        let config: Config = [("b", "2"), ("a", "1")].into_iter().collect();
        assert_eq!(config.iter().collect::<Vec<_>>(), [("b", "2"), ("a", "1")]);
        assert_eq!(config.len(), 2);
        assert!(Config::new().is_empty());
    }
}
