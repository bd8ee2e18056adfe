//! The per-route conditions left to evaluate once the path index has produced a candidate:
//! a regex path, hostname, method, scheme, port, headers and query parameters (all AND-ed).

use http::{HeaderMap, HeaderName};
use regex::bytes::Regex;

use super::{Request, RouteBuildError};
use crate::config::{
    HeaderMatchSpec, HeaderRule, HostnameMatchSpec, PathMatchSpec, QueryMatchSpec, RouteMatchSpec,
};

#[derive(Debug)]
pub(super) struct Conditions {
    port: Option<u16>,
    method: Option<Box<str>>,
    scheme: Option<Box<str>>,
    hostname: Option<Hostname>,
    headers: Box<[HeaderCondition]>,
    query: Box<[QueryCondition]>,
    /// Only for regex paths: exact and prefix paths are settled by the index.
    path_regex: Option<Regex>,
}

#[derive(Debug)]
enum Hostname {
    Exact(Box<[u8]>),
    Suffix(Box<[u8]>),
}

#[derive(Debug)]
struct HeaderCondition {
    // NOTE: parsed once at build time; `HeaderMap::get_all(&HeaderName)` then skips the
    // per-lookup name validation and lowercasing that a `&str` key costs.
    name: HeaderName,
    test: HeaderTest,
    invert: bool,
}

#[derive(Debug)]
enum HeaderTest {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    Regex(Regex),
    Range(i64, i64),
    Present,
}

#[derive(Debug)]
struct QueryCondition {
    name: Box<[u8]>,
    exact: Option<Box<[u8]>>,
}

fn err(path: String, message: impl Into<String>) -> RouteBuildError {
    RouteBuildError {
        path,
        message: message.into(),
    }
}

/// Compile a regex for a full (anchored) match, as Envoy's `safe_regex` does.
fn full_match_regex(pattern: &str, path: String) -> Result<Regex, RouteBuildError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| err(path, format!("invalid regex: {e}")))
}

impl Conditions {
    pub(super) fn build(spec: &RouteMatchSpec, at: &str) -> Result<Self, RouteBuildError> {
        let path_regex = match &spec.path {
            Some(PathMatchSpec::Regex(p)) => Some(full_match_regex(p, format!("{at}.path.value"))?),
            _ => None,
        };
        let hostname = spec.hostname.as_ref().map(|h| match h {
            HostnameMatchSpec::Exact(v) => {
                Hostname::Exact(v.to_ascii_lowercase().into_bytes().into())
            }
            HostnameMatchSpec::Suffix(v) => {
                Hostname::Suffix(v.to_ascii_lowercase().into_bytes().into())
            }
        });
        let headers = spec
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| HeaderCondition::build(h, &format!("{at}.headers[{i}]")))
            .collect::<Result<_, _>>()?;
        let query = spec
            .query
            .iter()
            .map(|q: &QueryMatchSpec| QueryCondition {
                name: q.name.as_bytes().into(),
                exact: q.exact.as_ref().map(|e| e.as_bytes().into()),
            })
            .collect();
        Ok(Conditions {
            port: spec.port,
            method: spec.method.as_deref().map(Into::into),
            scheme: spec.scheme.as_deref().map(Into::into),
            hostname,
            headers,
            query,
            path_regex,
        })
    }

    /// Whether every condition holds. `path_only` / `query` are `req.path` split at the first
    /// '?'. Cheap scalar tests run first; the regex path, the costliest, runs last.
    pub(super) fn hold(&self, req: &Request<'_>, path_only: &str, query: &str) -> bool {
        self.port.is_none_or(|p| p == req.port)
            && self.method.as_deref().is_none_or(|m| m == req.method)
            && self.scheme.as_deref().is_none_or(|s| s == req.scheme)
            && self
                .hostname
                .as_ref()
                .is_none_or(|h| h.matches(req.authority.as_bytes()))
            && self.headers.iter().all(|h| h.holds(req.headers))
            && self.query.iter().all(|q| q.holds(query.as_bytes()))
            && self
                .path_regex
                .as_ref()
                .is_none_or(|r| r.is_match(path_only.as_bytes()))
    }
}

impl Hostname {
    /// The authority is compared as sent, port included (App Mesh: `host:80` ≠ `host`), but
    /// case-insensitively, as host names are.
    fn matches(&self, authority: &[u8]) -> bool {
        match self {
            Hostname::Exact(v) => authority.eq_ignore_ascii_case(v),
            Hostname::Suffix(v) => {
                authority.len() >= v.len()
                    && authority[authority.len() - v.len()..].eq_ignore_ascii_case(v)
            }
        }
    }
}

impl HeaderCondition {
    fn build(spec: &HeaderMatchSpec, at: &str) -> Result<Self, RouteBuildError> {
        let name = HeaderName::from_bytes(spec.name.as_bytes()).map_err(|_| {
            err(
                format!("{at}.name"),
                format!("invalid header name {:?}", spec.name),
            )
        })?;
        let test = match &spec.rule {
            HeaderRule::Exact { value } => HeaderTest::Exact(value.as_bytes().into()),
            HeaderRule::Prefix { value } => HeaderTest::Prefix(value.as_bytes().into()),
            HeaderRule::Suffix { value } => HeaderTest::Suffix(value.as_bytes().into()),
            HeaderRule::Regex { value } => {
                HeaderTest::Regex(full_match_regex(value, format!("{at}.value"))?)
            }
            HeaderRule::Range { start, end } => HeaderTest::Range(*start, *end),
            HeaderRule::Present => HeaderTest::Present,
        };
        Ok(HeaderCondition {
            name,
            test,
            invert: spec.invert,
        })
    }

    /// Envoy: a missing header fails every rule, inverted or not, except `present`, whose
    /// inversion means "absent".
    fn holds(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return matches!(self.test, HeaderTest::Present) && self.invert;
        };
        let matched = match values.next() {
            None => self.test.matches(first.as_bytes()),
            Some(second) => {
                if matches!(self.test, HeaderTest::Present) {
                    true
                } else {
                    // NOTE: repeated headers are joined with "," (Envoy). They are rare in
                    // routed requests, so only this path allocates; single values are tested
                    // in place.
                    let mut joined = Vec::with_capacity(first.len() + second.len() + 16);
                    joined.extend_from_slice(first.as_bytes());
                    for v in std::iter::once(second).chain(values) {
                        joined.push(b',');
                        joined.extend_from_slice(v.as_bytes());
                    }
                    self.test.matches(&joined)
                }
            }
        };
        matched != self.invert
    }
}

impl HeaderTest {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            HeaderTest::Exact(v) => value == &v[..],
            HeaderTest::Prefix(v) => value.starts_with(v),
            HeaderTest::Suffix(v) => value.ends_with(v),
            HeaderTest::Regex(r) => r.is_match(value),
            HeaderTest::Range(start, end) => {
                parse_i64(value).is_some_and(|n| *start <= n && n < *end)
            }
            HeaderTest::Present => true,
        }
    }
}

/// Base-10 i64: optional sign, then ASCII digits only (no spaces); anything else is `None`.
fn parse_i64(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl QueryCondition {
    /// Scan the query string for the first parameter with this name (names and values are
    /// percent-decoded, as Envoy's `parseAndDecodeQueryString` does; '+' stays '+').
    // NOTE: parsed lazily, per condition, straight from the request target and compared while
    // decoding: routes without query conditions pay nothing and nothing is allocated.
    fn holds(&self, query: &[u8]) -> bool {
        for param in query.split(|&b| b == b'&') {
            if param.is_empty() {
                continue;
            }
            let (key, value) = match param.iter().position(|&b| b == b'=') {
                Some(i) => (&param[..i], &param[i + 1..]),
                None => (param, &[][..]),
            };
            if decoded_eq(key, &self.name) {
                return self
                    .exact
                    .as_deref()
                    .is_none_or(|want| decoded_eq(value, want));
            }
        }
        false
    }
}

/// `path` and its query string (empty when there is none), split at the first '?'.
pub(super) fn split_query(path: &str) -> (&str, &str) {
    path.split_once('?').unwrap_or((path, ""))
}

/// Whether percent-decoding `encoded` yields exactly `want`. A '%' not followed by two hex
/// digits is kept literally.
pub(super) fn decoded_eq(encoded: &[u8], want: &[u8]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < encoded.len() {
        let mut b = encoded[i];
        i += 1;
        if b == b'%' {
            let digit = |k: usize| encoded.get(k).copied().and_then(hex);
            if let (Some(hi), Some(lo)) = (digit(i), digit(i + 1)) {
                b = hi << 4 | lo;
                i += 2;
            }
        }
        if want.get(j) != Some(&b) {
            return false;
        }
        j += 1;
    }
    j == want.len()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
