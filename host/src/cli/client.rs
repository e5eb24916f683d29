//! The command line's client of the admin API: `switchyard plugin push|rollback|versions`
//! and `switchyard pipelines`. Answers are read into the server's own answer types
//! ([`crate::admin::views`]), so a change to one side that the other does not follow fails
//! to compile or fails a test instead of printing something else.
//!
//! The token comes from `--token`, else `--token-file`, else, for an API on this machine,
//! from the router that listens on its port (the token it generated, see
//! [`crate::admin::token`]); never is a local token sent to another machine.

use crate::admin::views::{ErrorView, SwitchedView};
use anyhow::Context as _;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;

/// Default address of the admin API, as a URL.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9644";

/// Where the API is and how to authenticate.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the API at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish<T: DeserializeOwned>(
        &self,
        what: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut response = response
            .with_context(|| format!("{what}: cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("{what}: cannot read the answer"))?;
        if status.is_success() {
            return decode(&text).with_context(|| format!("{what}: unexpected answer"));
        }
        let message = decode::<ErrorView>(&text).map_or(text, |e| e.error);
        if status.as_u16() == 401 && self.token.is_none() {
            anyhow::bail!(
                "{what}: 401 {message}; no token was found: give --token or --token-file (a router on this machine run by this user is found by itself)"
            )
        }
        anyhow::bail!("{what}: {} {message}", status.as_u16())
    }

    fn auth<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// `GET path`, its answer read as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.auth(self.agent.get(&self.url(path))).call();
        self.finish(&format!("GET {path}"), response)
    }

    /// `POST path` with no body, its answer read as `T`.
    pub fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.auth(self.agent.post(&self.url(path))).send_empty();
        self.finish(&format!("POST {path}"), response)
    }

    /// Uploads a plugin to a stage; `config` replaces the stage's config map if given;
    /// `reset_state` starts a stateful stage's state empty.
    pub fn push(
        &self,
        pipeline: &str,
        stage: &str,
        plugin: &Path,
        config: Option<&BTreeMap<String, String>>,
        reset_state: bool,
    ) -> anyhow::Result<SwitchedView> {
        let bytes =
            std::fs::read(plugin).with_context(|| format!("cannot read {}", plugin.display()))?;
        let path = format!("/api/v1/pipelines/{pipeline}/stages/{stage}/plugin");
        let mut request = self
            .auth(self.agent.put(&self.url(&path)))
            .header("Content-Type", "application/wasm");
        if let Some(config) = config {
            request = request.query("config", serde_json::to_string(config)?);
        }
        if reset_state {
            request = request.query("reset_state", "true");
        }
        let response = request.send(&bytes[..]);
        self.finish(&format!("PUT {path}"), response)
    }
}

/// The token to send to the API at `base`: `token` if given, else the one in `token_file`,
/// else, when `base` is on this machine (localhost, a loopback address), the one the router
/// listening on its port generated. `None`: no token (a read on loopback needs none).
pub fn find_token(
    base: &str,
    token: Option<String>,
    token_file: Option<&Path>,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        return Ok(Some(token));
    }
    if let Some(file) = token_file {
        return crate::admin::token::read(file).map(Some);
    }
    match local_port(base) {
        Some(port) => crate::admin::token::find(port),
        None => Ok(None),
    }
}

/// The port of `base` (`http://host[:port][/...]`) when its host is this machine.
fn local_port(base: &str) -> Option<u16> {
    let rest = base.strip_prefix("http://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (name, port) = crate::admin::guard::split_host(authority, 80)?;
    let local = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    local.then_some(port)
}

/// Reads an answer of the admin API as `T`.
pub fn decode<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        let start: String = text.chars().take(200).collect();
        anyhow::anyhow!("{e} in {start:?}")
    })
}

/// Parses `key=value` pairs.
pub fn parse_pairs(pairs: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("{what} {pair:?} is not key=value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_api_on_this_machine_gets_the_local_token() {
        assert_eq!(local_port("http://127.0.0.1:9644"), Some(9644));
        assert_eq!(local_port("http://localhost:9700/"), Some(9700));
        assert_eq!(local_port("http://[::1]:9644"), Some(9644));
        assert_eq!(local_port("http://localhost"), Some(80));
        assert_eq!(local_port("http://router.internal:9644"), None);
        assert_eq!(local_port("http://10.0.0.5:9644"), None);
        assert_eq!(local_port("https://127.0.0.1:9644"), None);
    }
}
