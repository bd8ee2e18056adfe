//! One error type for the request path: who caused it (downstream, upstream, local), whether a
//! retry may help, and the local reply and access-log flag it becomes. It never reaches Python:
//! a proxied request creates no Python object, so the control layer sees these errors only as
//! counters, outlier outcomes and access-log lines. (`py/` raises `CoreError` for the calls
//! Python makes: apply, set endpoints, reload certificates.)

use crate::accesslog::ResponseFlags;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client: sent something we refuse (malformed, too large), went away mid-request, or
    /// stalled its upload. Never charged to an upstream host, never retried.
    Downstream,
    /// The upstream failed: connect, reset, timeout, bad response.
    Upstream,
    /// Local: our own limits or state (no route, no healthy host, a tripped breaker). Never
    /// charged to an upstream host, never retried.
    Internal,
    /// A snapshot document that cannot be applied.
    Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NoRoute,
    NoHealthyUpstream,
    Overflow,
    ConnectFailure,
    ConnectTimeout,
    /// The TLS handshake with the upstream failed (certificate not trusted, SAN mismatch...).
    TlsFailure,
    /// The upstream reset or closed before a complete response head.
    Reset,
    /// HTTP/2 REFUSED_STREAM from the upstream.
    RefusedStream,
    Timeout,
    BadUpstreamResponse,
    /// The client sent something malformed (a request target we cannot forward, a bad chunk).
    BadRequest,
    /// The client went away (or reset its stream) before its request body was complete.
    DownstreamDisconnect,
    /// No request body arrived for the stream idle timeout while the upstream had not answered.
    StreamIdleTimeout,
    /// A function cluster's concurrency limit is reached (Lambda's throttle: 429
    /// `TooManyRequestsException`).
    Throttled,
    /// A function cluster's request waited `instanceWaitMs` and no instance became idle.
    NoInstance,
    /// A call from the control layer that cannot be carried out (a snapshot, a host update,
    /// starting the runtime); it is refused to the caller, never sent as a local reply.
    Config,
}

#[derive(Debug, Clone)]
pub struct ProxyError {
    pub source: Source,
    pub kind: Kind,
    pub detail: String,
    /// The attempt ran on a pooled connection that had carried a request before.
    pub reused: bool,
    /// The connection was gone under the request before any response byte: hyper handed the
    /// request back unsent, the write found the peer closed, or the first read was EOF. On a
    /// reused connection that is the keep-alive race (the upstream closed an idle connection
    /// as we picked it), not the host failing: pingora's `RetryType::ReusedOnly`.
    pub closed_before_response: bool,
}

impl ProxyError {
    pub fn new(source: Source, kind: Kind, detail: impl Into<String>) -> Self {
        ProxyError {
            source,
            kind,
            detail: detail.into(),
            reused: false,
            closed_before_response: false,
        }
    }

    pub fn downstream(kind: Kind, detail: impl Into<String>) -> Self {
        Self::new(Source::Downstream, kind, detail)
    }

    pub fn upstream(kind: Kind, detail: impl Into<String>) -> Self {
        Self::new(Source::Upstream, kind, detail)
    }

    pub fn internal(kind: Kind, detail: impl Into<String>) -> Self {
        Self::new(Source::Internal, kind, detail)
    }

    /// Whether another attempt (on another host) could succeed: an upstream failure without a
    /// response. Whether one is made is the route's retry policy's call.
    pub fn retryable(&self) -> bool {
        self.source == Source::Upstream
            && matches!(
                self.kind,
                Kind::ConnectFailure
                    | Kind::ConnectTimeout
                    | Kind::TlsFailure
                    | Kind::Reset
                    | Kind::RefusedStream
            )
    }

    /// A pooled connection the upstream had already closed: worth one more try on a fresh
    /// connection to the same host, whatever the retry policy says.
    pub fn stale_connection(&self) -> bool {
        self.source == Source::Upstream && self.reused && self.closed_before_response
    }

    /// Whether the failure counts against the upstream host (outlier detection, host stats).
    pub fn charged_to_upstream(&self) -> bool {
        self.source == Source::Upstream && !self.stale_connection()
    }

    /// The status of the local reply (Envoy's choices: resets and connect failures are 503,
    /// a response that is not HTTP is 502, the route timeout is 504).
    pub fn status(&self) -> u16 {
        match self.kind {
            Kind::NoRoute => 404,
            Kind::BadRequest | Kind::DownstreamDisconnect => 400,
            Kind::StreamIdleTimeout => 408,
            Kind::Throttled => 429,
            Kind::NoInstance
            | Kind::NoHealthyUpstream
            | Kind::Overflow
            | Kind::ConnectFailure
            | Kind::ConnectTimeout
            | Kind::TlsFailure
            | Kind::Reset
            | Kind::RefusedStream => 503,
            Kind::Timeout => 504,
            Kind::BadUpstreamResponse => 502,
            Kind::Config => 500,
        }
    }

    /// The status of the local reply this error becomes, or None for an error that never
    /// reaches a client (`Kind::Config`: refused to the control layer, never sent as a reply).
    /// This is what `CoreError.status` carries.
    pub fn reply_status(&self) -> Option<u16> {
        (self.kind != Kind::Config).then(|| self.status())
    }

    /// The body of the local reply, in Envoy's words where Envoy has them.
    pub fn reply_body(&self) -> String {
        match self.kind {
            Kind::NoRoute => "no route\n".into(),
            Kind::NoHealthyUpstream => "no healthy upstream\n".into(),
            Kind::Overflow => format!("upstream overflow: {}\n", self.detail),
            Kind::Timeout => "upstream request timeout\n".into(),
            Kind::ConnectFailure
            | Kind::ConnectTimeout
            | Kind::TlsFailure
            | Kind::Reset
            | Kind::RefusedStream => {
                format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: {}\n",
                    self.detail
                )
            }
            Kind::BadUpstreamResponse => format!("bad upstream response: {}\n", self.detail),
            Kind::BadRequest | Kind::DownstreamDisconnect => {
                format!("bad request: {}\n", self.detail)
            }
            Kind::StreamIdleTimeout => "stream timeout\n".into(),
            // Lambda's service-error shape (spec/lambda.md §4); `local_reply` adds the header.
            Kind::Throttled => "{\"Type\":\"User\",\"message\":\"Rate Exceeded.\"}".into(),
            Kind::NoInstance => format!("no healthy upstream: {}\n", self.detail),
            Kind::Config => format!("configuration error: {}\n", self.detail),
        }
    }

    /// Envoy's response flag for the access log.
    pub fn response_flag(&self) -> ResponseFlags {
        match self.kind {
            Kind::NoRoute => ResponseFlags::NR,
            Kind::NoHealthyUpstream => ResponseFlags::UH,
            Kind::Overflow => ResponseFlags::UO,
            Kind::ConnectFailure | Kind::ConnectTimeout | Kind::TlsFailure => ResponseFlags::UF,
            Kind::Timeout => ResponseFlags::UT,
            Kind::Reset | Kind::RefusedStream => ResponseFlags::UC,
            Kind::BadUpstreamResponse => ResponseFlags::UPE,
            Kind::BadRequest => ResponseFlags::DPE,
            Kind::DownstreamDisconnect => ResponseFlags::DC,
            Kind::StreamIdleTimeout => ResponseFlags::SI,
            // Envoy marks a request refused by a limit as overflow, and one that found no
            // host to serve it as no healthy upstream.
            Kind::Throttled => ResponseFlags::UO,
            Kind::NoInstance => ResponseFlags::UH,
            Kind::Config => ResponseFlags::NONE,
        }
    }

    /// Envoy's response code details for the access log.
    pub fn details(&self) -> &'static str {
        match self.kind {
            Kind::NoRoute => "route_not_found",
            Kind::NoHealthyUpstream => "no_healthy_upstream",
            Kind::Overflow => "overflow",
            Kind::ConnectFailure | Kind::ConnectTimeout => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            Kind::TlsFailure => {
                "upstream_reset_before_response_started{connection_failure,TLS_error}"
            }
            Kind::Timeout => "upstream_response_timeout",
            Kind::Reset => "upstream_reset_before_response_started{connection_termination}",
            Kind::RefusedStream => {
                "upstream_reset_before_response_started{remote_refused_stream_reset}"
            }
            Kind::BadUpstreamResponse => "upstream_reset_before_response_started{protocol_error}",
            Kind::BadRequest => "downstream_protocol_error",
            Kind::DownstreamDisconnect => "downstream_remote_disconnect",
            Kind::StreamIdleTimeout => "stream_idle_timeout",
            Kind::Throttled => "function_concurrency_limit_exceeded",
            Kind::NoInstance => "function_instance_wait_timeout",
            Kind::Config => "internal",
        }
    }

    /// The kind, short and stable (a trace's `error.type`).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::NoRoute => "no_route",
            Kind::NoHealthyUpstream => "no_healthy_upstream",
            Kind::Overflow => "overflow",
            Kind::ConnectFailure => "connect_failure",
            Kind::ConnectTimeout => "connect_timeout",
            Kind::TlsFailure => "tls_failure",
            Kind::Reset => "reset",
            Kind::RefusedStream => "refused_stream",
            Kind::Timeout => "timeout",
            Kind::BadUpstreamResponse => "bad_upstream_response",
            Kind::BadRequest => "bad_request",
            Kind::DownstreamDisconnect => "downstream_disconnect",
            Kind::StreamIdleTimeout => "stream_idle_timeout",
            Kind::Throttled => "throttled",
            Kind::NoInstance => "no_instance",
            Kind::Config => "config",
        }
    }

    pub fn source_name(&self) -> &'static str {
        match self.source {
            Source::Downstream => "downstream",
            Source::Upstream => "upstream",
            Source::Internal => "internal",
            Source::Config => "config",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} error ({:?}): {}",
            self.source_name(),
            self.kind,
            self.detail
        )
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields `CoreError` carries (kind, retryable, status) for each kind of error.
    #[test]
    fn boundary_fields_follow_the_error() {
        let cases = [
            (
                Source::Downstream,
                Kind::BadRequest,
                "downstream",
                false,
                Some(400),
            ),
            (
                Source::Internal,
                Kind::NoRoute,
                "internal",
                false,
                Some(404),
            ),
            (
                Source::Internal,
                Kind::NoHealthyUpstream,
                "internal",
                false,
                Some(503),
            ),
            (
                Source::Internal,
                Kind::Overflow,
                "internal",
                false,
                Some(503),
            ),
            (
                Source::Upstream,
                Kind::ConnectFailure,
                "upstream",
                true,
                Some(503),
            ),
            (
                Source::Upstream,
                Kind::ConnectTimeout,
                "upstream",
                true,
                Some(503),
            ),
            (
                Source::Upstream,
                Kind::TlsFailure,
                "upstream",
                true,
                Some(503),
            ),
            (Source::Upstream, Kind::Reset, "upstream", true, Some(503)),
            (
                Source::Upstream,
                Kind::RefusedStream,
                "upstream",
                true,
                Some(503),
            ),
            (
                Source::Upstream,
                Kind::Timeout,
                "upstream",
                false,
                Some(504),
            ),
            (
                Source::Upstream,
                Kind::BadUpstreamResponse,
                "upstream",
                false,
                Some(502),
            ),
            (
                Source::Internal,
                Kind::Throttled,
                "internal",
                false,
                Some(429),
            ),
            (
                Source::Internal,
                Kind::NoInstance,
                "internal",
                false,
                Some(503),
            ),
            (Source::Config, Kind::Config, "config", false, None),
            (Source::Internal, Kind::Config, "internal", false, None),
        ];
        for (source, kind, name, retryable, status) in cases {
            let e = ProxyError::new(source, kind, "x");
            assert_eq!(
                (e.source_name(), e.retryable(), e.reply_status()),
                (name, retryable, status),
                "{e}"
            );
        }
    }
}
