//! Proxy header hygiene: hop-by-hop removal, x-forwarded-for/-proto, x-request-id.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
pub static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
/// Lambda's service-error type header (`x-amzn-ErrorType`; header names are case-insensitive).
pub static X_AMZN_ERROR_TYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop names removed in any case, in `strip_hop_by_hop`'s bit order.
static ALWAYS: [&HeaderName; 8] = [
    &HOP_BY_HOP[0],
    &HOP_BY_HOP[1],
    &HOP_BY_HOP[2],
    &HOP_BY_HOP[3],
    &HOP_BY_HOP[4],
    &HOP_BY_HOP[5],
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
];
const CONNECTION_BIT: u8 = 1 << 0;
const TE_BIT: u8 = 1 << 5;

/// What `strip_hop_by_hop`'s pass over the header names saw besides hop-by-hop headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// A `traceparent` header is there (W3C trace context).
    pub traceparent: bool,
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), including those named in `Connection`.
/// `TE: trailers` survives: gRPC needs it end to end.
pub fn strip_hop_by_hop(h: &mut HeaderMap) -> Seen {
    // NOTE: one pass over the (few) names first, noting which of the eight are present: most
    // messages carry none, and a response from nginx carries only `Connection: keep-alive`;
    // only the present ones are removed (each `remove` hashes and probes: ~1,000 instructions
    // for eight). The same pass notes a `traceparent`, so tracing looks it up only when it
    // is there (~220 instructions).
    let mut present = 0u16;
    for n in h.keys() {
        present |= hop_bit(n);
    }
    let seen = Seen {
        traceparent: present & TRACEPARENT_BIT != 0,
    };
    let present = present as u8;
    if present == 0 {
        return seen;
    }
    // The fixed names `Connection` lists: removed below with the others if present (`TE`
    // named there goes even when it is `trailers`).
    let mut named = 0u8;
    if present & CONNECTION_BIT != 0 {
        if let Some(Ok(s)) = h.get(header::CONNECTION).map(|v| v.to_str()) {
            let mut others: Vec<HeaderName> = Vec::new();
            for token in s.split(',').map(str::trim) {
                if let Some(i) = ALWAYS
                    .iter()
                    .position(|a| a.as_str().eq_ignore_ascii_case(token))
                {
                    named |= 1 << i;
                } else {
                    others.extend(HeaderName::from_bytes(token.as_bytes()).ok());
                }
            }
            for n in others {
                h.remove(n);
            }
        }
    }
    let te_trailers = present & TE_BIT != 0
        && named & TE_BIT == 0
        && h.get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for (i, n) in ALWAYS.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(*n);
        }
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    seen
}

/// Not hop-by-hop: `Seen::traceparent`.
const TRACEPARENT_BIT: u16 = 1 << 8;

/// `n`'s bit in `ALWAYS` order (or `TRACEPARENT_BIT`), 0 for any other name. NOTE: a `match`
/// on the name (its length, then one comparison) instead of eight `HeaderName` comparisons
/// per name.
fn hop_bit(n: &HeaderName) -> u16 {
    match n.as_str() {
        "traceparent" => TRACEPARENT_BIT,
        "connection" => 1 << 0,
        "transfer-encoding" => 1 << 1,
        "upgrade" => 1 << 2,
        "proxy-authenticate" => 1 << 3,
        "proxy-authorization" => 1 << 4,
        "te" => 1 << 5,
        "keep-alive" => 1 << 6,
        "proxy-connection" => 1 << 7,
        _ => 0,
    }
}

/// Append the peer address to `x-forwarded-for` (Envoy with `use_remote_address: true`, which
/// is what an App Mesh gateway or sidecar ingress does) and set `x-forwarded-proto` to the
/// listener's scheme.
/// `peer` is the client's IP as a header value, made once per connection.
pub fn forwarded(h: &mut HeaderMap, peer: &HeaderValue, scheme: &'static str) {
    // NOTE: `entry` hashes the name once for the lookup and the insert.
    match h.entry(&X_FORWARDED_FOR) {
        Entry::Occupied(mut e) => {
            let value = match e.get().to_str() {
                Ok(prev) if !prev.is_empty() => {
                    let ip = peer.to_str().unwrap_or_default();
                    HeaderValue::from_str(&format!("{prev}, {ip}")).ok()
                }
                _ => Some(peer.clone()),
            };
            if let Some(v) = value {
                e.insert(v);
            }
        }
        // NOTE: the common case costs a refcount, not a format and an allocation.
        Entry::Vacant(e) => {
            e.insert(peer.clone());
        }
    }
    // The listener's real scheme, whatever the client claimed: a plaintext client must not pass
    // for an HTTPS one (Envoy with `use_remote_address`).
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
}

/// Keep a client's `x-request-id`, or generate a UUIDv4 (Envoy `generate_request_id`).
pub fn request_id(h: &mut HeaderMap) {
    let Entry::Vacant(slot) = h.entry(&X_REQUEST_ID) else {
        return;
    };
    let out = uuid4_text(rand::random());
    if let Ok(v) = HeaderValue::from_bytes(&out) {
        slot.insert(v);
    }
}

/// A UUIDv4's text from 128 random bits (the version and variant bits set here).
fn uuid4_text(r: u128) -> [u8; 36] {
    let b = (r & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    // NOTE: hand-rolled hex, a byte (two digits) at a time: `format!` showed up in profiles at
    // ~1% of the request path, and a loop over 32 nibbles of a u128 at ~700 instructions.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[usize::from(byte >> 4)];
        out[o + 1] = HEX[usize::from(byte & 0xf)];
        o += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_headers_and_keeps_te_trailers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-app", HeaderValue::from_static("ok"));
        strip_hop_by_hop(&mut h);
        assert!(
            !h.contains_key("x-secret")
                && !h.contains_key("connection")
                && !h.contains_key("keep-alive")
        );
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-app"], "ok");
        // Each one alone is found and removed (the early return must not skip any).
        for name in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "keep-alive",
            "proxy-connection",
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert("x-app", HeaderValue::from_static("ok"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name}");
            assert_eq!(h.len(), 1);
        }
    }

    #[test]
    fn the_pass_over_the_names_notes_a_traceparent_and_keeps_it() {
        let mut h = HeaderMap::new();
        h.insert("x-app", HeaderValue::from_static("ok"));
        assert_eq!(strip_hop_by_hop(&mut h), Seen { traceparent: false });
        h.insert("traceparent", HeaderValue::from_static("00-a-b-01"));
        assert_eq!(strip_hop_by_hop(&mut h), Seen { traceparent: true });
        // Also beside hop-by-hop headers (the path past the early return).
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(strip_hop_by_hop(&mut h), Seen { traceparent: true });
        assert_eq!(h["traceparent"], "00-a-b-01");
        assert!(!h.contains_key(header::CONNECTION));
        h.remove("traceparent");
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(strip_hop_by_hop(&mut h), Seen { traceparent: false });
    }

    #[test]
    fn te_named_in_connection_goes_and_other_names_are_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, TE"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("close", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("te") && !h.contains_key("connection"));
        assert_eq!(h["close"], "1");
        // `close` as a token names a header like any other (as before).
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn hop_bit_follows_the_order_of_always() {
        for (i, n) in ALWAYS.iter().enumerate() {
            assert_eq!(hop_bit(n), 1 << i, "{n}");
        }
        assert_eq!(hop_bit(&X_REQUEST_ID), 0);
    }

    #[test]
    fn uuid4_text_is_the_hyphenated_hex_of_the_bits() {
        for r in [0u128, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            let b = (r & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
            let hex = format!("{b:032x}");
            let want = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            assert_eq!(std::str::from_utf8(&uuid4_text(r)).unwrap(), want);
        }
    }

    #[test]
    fn xff_appends_and_request_id_is_uuid4() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "http");
        assert_eq!(h["x-forwarded-proto"], "http");
        request_id(&mut h);
        let id = h["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        request_id(&mut h);
        assert_eq!(h["x-request-id"], id.as_str());
    }
}
