//! Who may ask what, checked for every request before any handler runs: a `Host` that is this
//! API's address (a web page that re-points its own name at this machine, DNS rebinding, is
//! refused on every request), and for changes an `Origin`, if any, of this API's address and a
//! bearer token; reads of `/api/v1` need a token too when the API listens beyond loopback.
//! Health, readiness and metrics stay open to probes and Prometheus. Content types are checked
//! by each change's handler ([`require_type`], [`require_no_body`]), which knows its body.

use super::AdminState;
use super::error::{ApiError, ApiResult};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The name of the token a change was made with (audit lines, version histories).
#[derive(Clone, Debug)]
pub struct Caller(pub String);

/// The checks, as an axum middleware; a change reaches its handler with its [`Caller`].
pub(super) async fn guard(
    State(st): State<Arc<AdminState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match st.admit(request.method(), request.uri(), request.headers()) {
        Ok(caller) => {
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

impl AdminState {
    fn admit(
        &self,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
    ) -> ApiResult<Option<Caller>> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "the request has no Host"))?;
        if !self.host_allowed(host, 80) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {host:?} is not this API's address ({}, or localhost with its port); add it to admin.allowed_hosts if clients use that name",
                    self.address
                ),
            ));
        }
        let read = method == Method::GET || method == Method::HEAD;
        if !read {
            self.check_origin(headers)?;
            return self.authorize(headers).map(Some);
        }
        if uri.path().starts_with("/api/") && !self.address.ip().is_loopback() {
            self.authorize(headers)?;
        }
        Ok(None)
    }

    fn host_allowed(&self, host: &str, default_port: u16) -> bool {
        names_this_api(host, default_port, self.address, &self.allowed_hosts)
    }

    /// A change coming from a web page of another site (its `Origin`) is refused; a request
    /// without `Origin` (not from a browser's page) passes.
    fn check_origin(&self, headers: &HeaderMap) -> ApiResult<()> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let text = origin.to_str().unwrap_or("");
        let allowed = match text.split_once("://") {
            Some(("http", host)) => self.host_allowed(host, 80),
            Some(("https", host)) => self.host_allowed(host, 443),
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Origin {text:?} is not this API's address: changes are refused from another site's web page"
                ),
            ))
        }
    }

    /// Who is asking: the name of the token presented.
    fn authorize(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this endpoint needs an Authorization: Bearer <token> header (with no token configured, the router's own is in admin-token in its state directory; `switchyard` finds it by itself)",
                )
            })?;
        self.tokens
            .iter()
            .find(|(_, token)| constant_time_eq(token.as_bytes(), presented.as_bytes()))
            .map(|(name, _)| Caller(name.clone()))
            .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "the bearer token is not valid"))
    }
}

/// Whether `host` (`name[:port]`, `default_port` if it has none) names the API listening on
/// `address`: on its port, `localhost`, a loopback address, the address it listens on (any
/// address when it listens on all of them: an address cannot be re-pointed as a name can), or
/// one of `allowed` (compared whole, as clients send it).
fn names_this_api(host: &str, default_port: u16, address: SocketAddr, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        return true;
    }
    let Some((name, port)) = split_host(host, default_port) else {
        return false;
    };
    if port != address.port() {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip == address.ip() || address.ip().is_unspecified())
}

/// `host` as `(name, port)`: `name`, `name:port`, `[v6]` or `[v6]:port`.
pub(crate) fn split_host(host: &str, default_port: u16) -> Option<(&str, u16)> {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let (name, after) = rest.split_once(']')?;
            match after {
                "" => (name, None),
                after => (name, Some(after.strip_prefix(':')?)),
            }
        }
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let port = match port {
        None => default_port,
        Some(port) => port.parse().ok()?,
    };
    (!name.is_empty()).then_some((name, port))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The media type of a request's body, lower case, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    headers.get(header::CONTENT_TYPE).map(|v| {
        let text = v.to_str().unwrap_or("");
        text.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

/// Refuses (415) a body whose `Content-Type` is not one of `accepted`.
pub(super) fn require_type(headers: &HeaderMap, accepted: &[&str]) -> ApiResult<()> {
    let got = media_type(headers);
    if got.as_deref().is_some_and(|t| accepted.contains(&t)) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "this endpoint takes Content-Type: {} (got {})",
            accepted.join(" or "),
            got.map_or_else(|| "none".to_owned(), |t| format!("{t:?}"))
        ),
    ))
}

/// Refuses (415) a body for an endpoint that takes none: no `Content-Type`, or
/// `application/json` (which some clients send on every request), never a form.
pub(super) fn require_no_body(headers: &HeaderMap) -> ApiResult<()> {
    match media_type(headers) {
        None => Ok(()),
        Some(t) if t == "application/json" => Ok(()),
        Some(t) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("this endpoint takes no body: send no Content-Type (got {t:?})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_name_and_port() {
        assert_eq!(split_host("localhost:9644", 80), Some(("localhost", 9644)));
        assert_eq!(split_host("localhost", 80), Some(("localhost", 80)));
        assert_eq!(split_host("[::1]:9644", 80), Some(("::1", 9644)));
        assert_eq!(split_host("[::1]", 443), Some(("::1", 443)));
        assert_eq!(split_host("[::1]x", 80), None);
        assert_eq!(split_host("a:b:c", 80), None);
        assert_eq!(split_host(":80", 80), None);
        assert_eq!(split_host("host:99999", 80), None);
    }

    #[test]
    fn a_host_names_the_api_by_its_address_or_a_loopback_name() {
        let loopback: SocketAddr = "127.0.0.1:9644".parse().expect("address");
        let all: SocketAddr = "0.0.0.0:9644".parse().expect("address");
        let one: SocketAddr = "10.0.0.5:9644".parse().expect("address");
        let allowed = ["Router.Internal:9644".to_owned()];
        let cases: &[(&str, SocketAddr, bool)] = &[
            ("127.0.0.1:9644", loopback, true),
            ("localhost:9644", loopback, true),
            ("LOCALHOST:9644", loopback, true),
            ("[::1]:9644", loopback, true),
            ("127.0.0.2:9644", loopback, true),
            ("localhost:9645", loopback, false),
            ("localhost", loopback, false),
            ("evil.example:9644", loopback, false),
            ("localhost.evil.example:9644", loopback, false),
            ("10.0.0.5:9644", loopback, false),
            ("10.0.0.5:9644", one, true),
            ("10.0.0.6:9644", one, false),
            ("10.0.0.6:9644", all, true),
            ("[fe80::1]:9644", all, true),
            ("router.internal:9644", all, true),
            ("router.internal", all, false),
            ("router.example:9644", all, false),
            ("", loopback, false),
        ];
        for (host, address, expected) in cases {
            assert_eq!(
                names_this_api(host, 80, *address, &allowed),
                *expected,
                "{host:?} on {address}"
            );
        }
        let on_80: SocketAddr = "127.0.0.1:80".parse().expect("address");
        assert!(names_this_api("localhost", 80, on_80, &[]));
    }

    #[test]
    fn media_types_ignore_parameters_and_case() {
        let mut h = HeaderMap::new();
        assert!(require_type(&h, &["application/json"]).is_err());
        assert!(require_no_body(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().expect("header"),
        );
        assert!(require_type(&h, &["application/json"]).is_ok());
        assert!(require_no_body(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=x".parse().expect("header"),
        );
        let e = require_no_body(&h).expect_err("a form");
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = require_type(&h, &["application/wasm", "application/octet-stream"])
            .expect_err("a form");
        assert!(
            e.message()
                .contains("application/wasm or application/octet-stream"),
            "{}",
            e.message()
        );
    }
}
