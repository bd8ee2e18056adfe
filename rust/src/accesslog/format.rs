//! Envoy access-log format strings: parsed once into literals and command operators.

use crate::config::AccessLogFormat;
use http::HeaderName;

/// Envoy's default format (its `DEFAULT_FORMAT`, one line per request).
pub const DEFAULT_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

#[derive(Debug, Clone, PartialEq)]
pub enum ReqName {
    Method,
    Path,
    Authority,
    Scheme,
    Header(HeaderName),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    StartTime,
    /// Request header (or pseudo-header), with a fallback name; evaluated when the request
    /// arrives.
    Req(Vec<ReqName>, Option<usize>),
    Resp(Vec<HeaderName>, Option<usize>),
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    RouteName,
    Protocol,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    DownstreamPeerUriSan,
}

impl Op {
    /// Whether the operator's value is a number (written bare in JSON).
    pub fn numeric(&self) -> bool {
        matches!(
            self,
            Op::ResponseCode | Op::BytesReceived | Op::BytesSent | Op::Duration
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Lit(String),
    Op(Op),
}

pub type Template = Vec<Piece>;

#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Text(Template),
    Json(Vec<(String, Template)>),
}

impl Format {
    pub fn parse(spec: Option<&AccessLogFormat>) -> Result<Format, String> {
        match spec {
            None => Ok(Format::Text(parse_template(DEFAULT_TEXT)?)),
            Some(AccessLogFormat::Text(t)) => Ok(Format::Text(parse_template(t)?)),
            Some(AccessLogFormat::Json(fields)) => fields
                .iter()
                .map(|f| parse_template(&f.value).map(|t| (f.key.clone(), t)))
                .collect::<Result<_, _>>()
                .map(Format::Json),
        }
    }

    /// Every operator, in the order a record evaluates them.
    pub fn ops(&self) -> Box<dyn Iterator<Item = &Op> + '_> {
        match self {
            Format::Text(t) => Box::new(template_ops(t)),
            Format::Json(fields) => Box::new(fields.iter().flat_map(|(_, t)| template_ops(t))),
        }
    }
}

fn template_ops(t: &Template) -> impl Iterator<Item = &Op> {
    t.iter().filter_map(|p| match p {
        Piece::Op(o) => Some(o),
        Piece::Lit(_) => None,
    })
}

fn req_name(s: &str) -> Result<ReqName, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        ":method" => ReqName::Method,
        ":path" => ReqName::Path,
        ":authority" | "host" => ReqName::Authority,
        ":scheme" => ReqName::Scheme,
        h => ReqName::Header(
            HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("bad header name {s:?}"))?,
        ),
    })
}

fn parse_op(body: &str) -> Result<Op, String> {
    if let Some(rest) = body
        .strip_prefix("REQ(")
        .or_else(|| body.strip_prefix("RESP("))
    {
        let close = rest
            .find(')')
            .ok_or_else(|| format!("missing ')' in %{body}%"))?;
        // "X?Y": X, or Y when X is absent.
        let names: Vec<&str> = rest[..close].split('?').collect();
        let max = match &rest[close + 1..] {
            "" => None,
            s => Some(
                s.strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("bad length in %{body}%"))?,
            ),
        };
        return if body.starts_with("REQ(") {
            Ok(Op::Req(
                names.into_iter().map(req_name).collect::<Result<_, _>>()?,
                max,
            ))
        } else {
            let names = names
                .into_iter()
                .map(|n| {
                    HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("bad header name {n:?}"))
                })
                .collect::<Result<_, _>>()?;
            Ok(Op::Resp(names, max))
        };
    }
    Ok(match body {
        "START_TIME" => Op::StartTime,
        "RESPONSE_CODE" => Op::ResponseCode,
        "RESPONSE_FLAGS" => Op::ResponseFlags,
        "RESPONSE_CODE_DETAILS" => Op::ResponseCodeDetails,
        "BYTES_RECEIVED" => Op::BytesReceived,
        "BYTES_SENT" => Op::BytesSent,
        "DURATION" => Op::Duration,
        "UPSTREAM_HOST" => Op::UpstreamHost,
        "UPSTREAM_CLUSTER" => Op::UpstreamCluster,
        "ROUTE_NAME" => Op::RouteName,
        "PROTOCOL" => Op::Protocol,
        "DOWNSTREAM_REMOTE_ADDRESS" => Op::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Op::DownstreamRemoteAddressWithoutPort,
        "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocalAddress,
        "DOWNSTREAM_PEER_URI_SAN" => Op::DownstreamPeerUriSan,
        other => return Err(format!("unsupported command operator %{other}%")),
    })
}

pub fn parse_template(s: &str) -> Result<Template, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        lit.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            lit.push('%');
            rest = r;
            continue;
        }
        let end = rest
            .find('%')
            .ok_or_else(|| format!("unterminated command operator in {s:?}"))?;
        if !lit.is_empty() {
            out.push(Piece::Lit(std::mem::take(&mut lit)));
        }
        out.push(Piece::Op(parse_op(&rest[..end])?));
        rest = &rest[end + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_format() {
        let t = parse_template(DEFAULT_TEXT).unwrap();
        assert_eq!(t[0], Piece::Lit("[".into()));
        assert_eq!(t[1], Piece::Op(Op::StartTime));
        assert!(t.contains(&Piece::Op(Op::Req(
            vec![
                ReqName::Header(HeaderName::from_static("x-envoy-original-path")),
                ReqName::Path
            ],
            None
        ))));
    }

    #[test]
    fn literal_percent_length_and_errors() {
        let t = parse_template("100%% %REQ(:PATH):5% %RESP(Server)%").unwrap();
        assert_eq!(t[0], Piece::Lit("100% ".into()));
        assert_eq!(t[1], Piece::Op(Op::Req(vec![ReqName::Path], Some(5))));
        assert_eq!(
            t[3],
            Piece::Op(Op::Resp(vec![HeaderName::from_static("server")], None))
        );
        assert!(parse_template("%NOPE%").unwrap_err().contains("NOPE"));
        assert!(parse_template("%START_TIME").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Operators with their text, for templates built from parts.
        fn operators() -> Vec<(&'static str, Op)> {
            vec![
                ("START_TIME", Op::StartTime),
                ("RESPONSE_CODE", Op::ResponseCode),
                ("UPSTREAM_HOST", Op::UpstreamHost),
                ("REQ(:PATH)", Op::Req(vec![ReqName::Path], None)),
                (
                    "REQ(X-A?:AUTHORITY):7",
                    Op::Req(
                        vec![
                            ReqName::Header(HeaderName::from_static("x-a")),
                            ReqName::Authority,
                        ],
                        Some(7),
                    ),
                ),
                (
                    "RESP(Server)",
                    Op::Resp(vec![HeaderName::from_static("server")], None),
                ),
            ]
        }

        /// A part: a literal (any text, '%' included) or an operator by index.
        fn part() -> impl Strategy<Value = Result<String, usize>> {
            prop_oneof![
                "[a-z %\\[\\]\"]{0,6}".prop_map(Ok),
                (0..operators().len()).prop_map(Err),
            ]
        }

        proptest! {
            #[test]
            fn parse_never_panics(s in "[%A-Z_():?a-z0-9 -]{0,40}|\\PC{0,40}") {
                let _ = parse_template(&s);
            }

            #[test]
            fn templates_round_trip(parts in proptest::collection::vec(part(), 0..8)) {
                let ops = operators();
                let mut text = String::new();
                let mut expected: Template = Vec::new();
                for p in &parts {
                    match p {
                        Ok(lit) => {
                            text.push_str(&lit.replace('%', "%%"));
                            match expected.last_mut() {
                                Some(Piece::Lit(prev)) => prev.push_str(lit),
                                _ if lit.is_empty() => {}
                                _ => expected.push(Piece::Lit(lit.clone())),
                            }
                        }
                        Err(i) => {
                            text.push('%');
                            text.push_str(ops[*i].0);
                            text.push('%');
                            expected.push(Piece::Op(ops[*i].1.clone()));
                        }
                    }
                }
                prop_assert_eq!(parse_template(&text).unwrap(), expected);
            }
        }
    }
}
