//! The downstream request phase: what a request must satisfy before anything else looks at it,
//! checked once at the start of request handling. hyper's parsers already refuse what cannot be
//! framed at all (bad request line, differing Content-Length, Transfer-Encoding not ending in
//! chunked, heads over the size limit, more than [`MAX_REQUEST_HEADERS`] HTTP/1.1 header
//! lines); this refuses what they let through but RFC 9112 and Envoy do not:
//!
//! - HTTP/1.1 without a Host header, or with more than one: 400 (RFC 9112 §3.2).
//! - A Transfer-Encoding other than a lone `chunked` (`identity, chunked`, `chunked, chunked`,
//!   `gzip, chunked`, unknown codings): 501 (RFC 9112 §6.1, as Envoy).
//! - More than [`MAX_REQUEST_HEADERS`] header fields, on HTTP/2 too: 431 (Envoy's
//!   `max_request_headers_count`), so both protocols have the same limit.
//!
//! Content-Length together with Transfer-Encoding never reaches this check: hyper drops the
//! Content-Length, reads the body as chunked and closes the connection after the response (the
//! other choice RFC 9112 §6.1 allows; no desync), and does not expose that both were sent.
//!
//! A refused HTTP/1.x request's connection is closed after the reply: its framing is not to be
//! trusted. Pure apart from the counters: no I/O, no awaits.

use super::body::DownBody;
use crate::stats::ListenerStats;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};

/// Header fields one request may carry, on every protocol (Envoy's `max_request_headers_count`
/// default, and hyper's HTTP/1.1 default, which the listener relies on: setting it explicitly
/// costs hyper a heap copy per request head).
pub const MAX_REQUEST_HEADERS: usize = 100;

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingHost,
    DuplicateHost,
    UnsupportedTransferEncoding,
    TooManyHeaders,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::MissingHost | Refusal::DuplicateHost => StatusCode::BAD_REQUEST,
            Refusal::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
            Refusal::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    fn body(self) -> &'static str {
        match self {
            Refusal::MissingHost => "bad request: missing host header\n",
            Refusal::DuplicateHost => "bad request: more than one host header\n",
            Refusal::UnsupportedTransferEncoding => "not implemented: transfer-encoding\n",
            Refusal::TooManyHeaders => "too many request headers\n",
        }
    }
}

/// The checks of the module docs, on the request as the client sent it (before hop-by-hop
/// headers are stripped).
pub fn check(version: Version, headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.len() > MAX_REQUEST_HEADERS {
        return Err(Refusal::TooManyHeaders);
    }
    if version == Version::HTTP_11 {
        match headers.get_all(header::HOST).iter().count() {
            0 => return Err(Refusal::MissingHost),
            1 => {}
            _ => return Err(Refusal::DuplicateHost),
        }
    }
    if headers.contains_key(header::TRANSFER_ENCODING)
        && !is_lone_chunked(headers.get_all(header::TRANSFER_ENCODING).iter())
    {
        return Err(Refusal::UnsupportedTransferEncoding);
    }
    Ok(())
}

/// Whether the Transfer-Encoding field lines list exactly one coding, `chunked`.
fn is_lone_chunked<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> bool {
    let mut codings = values
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty());
    matches!(
        (codings.next(), codings.next()),
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked")
    )
}

/// Check a request at the start of handling: None to carry on, or the local reply (counted as
/// rejected) that answers it instead.
pub fn refuse<B>(req: &Request<B>, stats: &ListenerStats) -> Option<Response<DownBody>> {
    let refusal = check(req.version(), req.headers()).err()?;
    stats.rq_rejected.inc();
    stats.downstream_rq.record(refusal.status().as_u16());
    let mut r = Response::new(DownBody::local(refusal.body()));
    *r.status_mut() = refusal.status();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if req.version() <= Version::HTTP_11 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(k, v) in pairs {
            h.append(k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn host_is_required_once_on_http_1_1_only() {
        let one = headers(&[("host", "a")]);
        assert_eq!(check(Version::HTTP_11, &one), Ok(()));
        assert_eq!(
            check(Version::HTTP_11, &headers(&[])),
            Err(Refusal::MissingHost)
        );
        let two = headers(&[("host", "a"), ("host", "b")]);
        assert_eq!(check(Version::HTTP_11, &two), Err(Refusal::DuplicateHost));
        assert_eq!(check(Version::HTTP_10, &headers(&[])), Ok(()));
        assert_eq!(check(Version::HTTP_2, &headers(&[])), Ok(()));
    }

    #[test]
    fn transfer_encoding_must_be_a_lone_chunked() {
        for ok in ["chunked", "Chunked", " chunked ", "chunked,"] {
            let h = headers(&[("host", "a"), ("transfer-encoding", ok)]);
            assert_eq!(check(Version::HTTP_11, &h), Ok(()), "{ok}");
        }
        for bad in [
            "identity, chunked",
            "chunked, chunked",
            "gzip, chunked",
            "x-custom",
        ] {
            let h = headers(&[("host", "a"), ("transfer-encoding", bad)]);
            assert_eq!(
                check(Version::HTTP_11, &h),
                Err(Refusal::UnsupportedTransferEncoding),
                "{bad}"
            );
        }
        // Two field lines are one list.
        let h = headers(&[
            ("host", "a"),
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(
            check(Version::HTTP_11, &h),
            Err(Refusal::UnsupportedTransferEncoding)
        );
    }

    #[test]
    fn header_count_is_limited() {
        let mut h = headers(&[("host", "a")]);
        for i in 1..MAX_REQUEST_HEADERS {
            h.append(
                http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert_eq!(check(Version::HTTP_2, &h), Ok(()));
        h.append("x-one-more", HeaderValue::from_static("v"));
        assert_eq!(check(Version::HTTP_2, &h), Err(Refusal::TooManyHeaders));
        assert_eq!(
            Refusal::TooManyHeaders.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn field_line() -> impl Strategy<Value = String> {
            let coding = proptest::sample::select(vec![
                "chunked",
                "CHUNKED",
                " chunked ",
                "gzip",
                "identity",
                "",
                "x-y",
            ]);
            proptest::collection::vec(coding, 0..3).prop_map(|v| v.join(","))
        }

        proptest! {
            #[test]
            fn transfer_encoding_passes_only_as_one_chunked(
                lines in proptest::collection::vec(field_line(), 1..3),
            ) {
                let codings: Vec<String> = lines
                    .iter()
                    .flat_map(|l| l.split(','))
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect();
                let values: Vec<HeaderValue> =
                    lines.iter().map(|l| HeaderValue::from_str(l).unwrap()).collect();
                prop_assert_eq!(is_lone_chunked(values.iter()), codings == ["chunked"]);
            }

            #[test]
            fn check_never_panics(
                names in proptest::collection::vec("host|transfer-encoding|x-[a-z]{1,3}", 0..120),
                value in "[ -~]{0,10}",
                h2 in any::<bool>(),
            ) {
                let mut h = HeaderMap::new();
                for n in &names {
                    h.append(
                        http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                        HeaderValue::from_str(&value).unwrap(),
                    );
                }
                let version = if h2 { Version::HTTP_2 } else { Version::HTTP_11 };
                let r = check(version, &h);
                prop_assert_eq!(r == Err(Refusal::TooManyHeaders), h.len() > MAX_REQUEST_HEADERS);
            }
        }
    }
}
