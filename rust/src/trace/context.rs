//! Trace context on the wire: W3C `traceparent`, B3 (single `b3` header and multi
//! `X-B3-*`) and AWS X-Ray `X-Amzn-Trace-Id`. Pure: parse from and write into a header map.

use crate::config::Propagation;
use bytes::{Bytes, BytesMut};
use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static B3: HeaderName = HeaderName::from_static("b3");
pub static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
pub static XRAY: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// What the caller said: its trace, its span (our parent) and its sampling decision
/// (`None`: the caller left it to us).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: Option<bool>,
}

/// The caller's context in `format`; a request in another format (or none) starts a trace.
pub fn extract(format: Propagation, h: &HeaderMap) -> Option<Parent> {
    match format {
        Propagation::W3c => w3c(h),
        Propagation::B3 => b3_single(h).or_else(|| b3_multi(h)),
        Propagation::B3multi => b3_multi(h).or_else(|| b3_single(h)),
        Propagation::Xray => xray(h),
    }
}

/// A request's context header, looked up once to read the caller's context and write ours:
/// W3C's single `traceparent` through one map entry (one hash of the header name, not two,
/// and a caller's value replaced in place); the other formats through the map.
pub enum Carrier<'a> {
    W3c(Entry<'a, HeaderValue>),
    Other(Propagation, &'a mut HeaderMap),
}

impl<'a> Carrier<'a> {
    pub fn new(format: Propagation, h: &'a mut HeaderMap) -> Self {
        match format {
            Propagation::W3c => Carrier::W3c(h.entry(&TRACEPARENT)),
            other => Carrier::Other(other, h),
        }
    }

    /// The caller's context, as `extract` reads it.
    pub fn extract(&self) -> Option<Parent> {
        match self {
            Carrier::W3c(Entry::Occupied(o)) => w3c_value(o.get()),
            Carrier::W3c(Entry::Vacant(_)) => None,
            Carrier::Other(format, h) => extract(*format, h),
        }
    }

    /// Start a trace that is not sampled: a new trace id and span id (`new_ids`) written as
    /// `inject` would write them; they are not needed afterwards.
    // NOTE: W3C's value comes pre-rendered from the thread's chunk (`unsampled_traceparent`).
    pub fn inject_new_unsampled(self, new_ids: impl FnOnce() -> ([u8; 16], [u8; 8])) {
        match self {
            Carrier::W3c(Entry::Vacant(v)) => {
                v.insert(unsampled_traceparent());
            }
            Carrier::W3c(Entry::Occupied(mut o)) => {
                o.insert(unsampled_traceparent());
            }
            other => {
                let (trace_id, span_id) = new_ids();
                other.inject(&trace_id, &span_id, false);
            }
        }
    }

    /// Write our context, as `inject` does.
    pub fn inject(self, trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) {
        match self {
            Carrier::W3c(entry) => {
                let value = header_value(&traceparent(trace_id, span_id, sampled));
                match entry {
                    Entry::Occupied(mut o) => {
                        o.insert(value);
                    }
                    Entry::Vacant(v) => {
                        v.insert(value);
                    }
                }
            }
            Carrier::Other(format, h) => inject(format, h, trace_id, span_id, sampled),
        }
    }
}

/// A `traceparent` value (version 00): written at fixed offsets, no formatting.
fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> [u8; TRACEPARENT_LEN] {
    let mut v = [0u8; TRACEPARENT_LEN];
    let (hi, lo) = trace_id.split_at(8);
    let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    write_traceparent(
        &mut v,
        word(hi),
        word(lo),
        u64::from_be_bytes(*span_id),
        sampled,
    );
    v
}

const TRACEPARENT_LEN: usize = 55;

/// `traceparent` of the trace id `hi`,`lo` (its two halves, big-endian) and span id `span`.
#[inline]
fn write_traceparent(v: &mut [u8; TRACEPARENT_LEN], hi: u64, lo: u64, span: u64, sampled: bool) {
    v[..3].copy_from_slice(b"00-");
    v[3..19].copy_from_slice(&hex16(hi));
    v[19..35].copy_from_slice(&hex16(lo));
    v[35] = b'-';
    v[36..52].copy_from_slice(&hex16(span));
    v[52..].copy_from_slice(if sampled { b"-01" } else { b"-00" });
}

/// The 16 lower-case hex digits of `w`, most significant first.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn hex16(w: u64) -> [u8; 16] {
    use std::arch::x86_64::*;
    // NOTE: SSE2 (in every x86_64): the nibbles of the 8 bytes interleaved and turned into
    // digits 16 at a time, ~10 instructions instead of a table lookup and a store per byte.
    // SAFETY: SSE2 is enabled (the cfg above); `out` is 16 writable bytes and the store needs
    // no alignment.
    unsafe {
        let x = _mm_cvtsi64_si128(w.swap_bytes() as i64);
        let low4 = _mm_set1_epi8(0x0f);
        let high = _mm_and_si128(_mm_srli_epi16::<4>(x), low4);
        let nibbles = _mm_unpacklo_epi8(high, _mm_and_si128(x, low4));
        let letters = _mm_and_si128(
            _mm_cmpgt_epi8(nibbles, _mm_set1_epi8(9)),
            _mm_set1_epi8((b'a' - b'0' - 10) as i8),
        );
        let digits = _mm_add_epi8(_mm_add_epi8(nibbles, _mm_set1_epi8(b'0' as i8)), letters);
        let mut out = [0u8; 16];
        _mm_storeu_si128(out.as_mut_ptr().cast(), digits);
        out
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn hex16(w: u64) -> [u8; 16] {
    hex16_table(w)
}

#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn hex16_table(w: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (pair, b) in out.chunks_exact_mut(2).zip(w.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[b as usize]);
    }
    out
}

/// How many new unsampled `traceparent` values a thread renders at a time.
const UNSAMPLED_CHUNK: usize = 64;

thread_local! {
    static UNSAMPLED: RefCell<(Bytes, usize)> = const { RefCell::new((Bytes::new(), 0)) };
}

/// The `traceparent` of a new trace that is not sampled (random trace and span ids, flags
/// 00), cut from a chunk of such values the calling thread rendered ahead.
// NOTE: a request that starts an unsampled trace needs its ids only in this header, so they
// are drawn and rendered UNSAMPLED_CHUNK at a time (one thread-local access, one
// allocation) and each request takes a slice (a reference count). The ids are as random as
// ever; they are only drawn earlier.
pub fn unsampled_traceparent() -> HeaderValue {
    let value = UNSAMPLED.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (chunk, at) = &mut *cell;
        if *at >= chunk.len() {
            *chunk = render_unsampled_chunk();
            *at = 0;
        }
        let value = chunk.slice(*at..*at + TRACEPARENT_LEN);
        *at += TRACEPARENT_LEN;
        value
    });
    // SAFETY: hex digits and '-' only (`write_traceparent`). NOTE: no check per request.
    unsafe { HeaderValue::from_maybe_shared_unchecked(value) }
}

fn render_unsampled_chunk() -> Bytes {
    // NOTE: filled by appending, not zeroed first (a `memset` of the chunk).
    let mut buf = Vec::with_capacity(UNSAMPLED_CHUNK * TRACEPARENT_LEN);
    let mut v = [0u8; TRACEPARENT_LEN];
    for _ in 0..UNSAMPLED_CHUNK {
        let mut id = [0u64; 3];
        crate::balance::thread_random_fill(&mut id);
        // All-zero ids are invalid (a draw of 0 is redrawn, as `nonzero_u64` does).
        for w in &mut id {
            while *w == 0 {
                *w = crate::balance::thread_random_u64();
            }
        }
        write_traceparent(&mut v, id[0], id[1], id[2], false);
        buf.extend_from_slice(&v);
    }
    Bytes::from(buf)
}

/// The `traceparent` value of a span (version 00).
pub fn traceparent_value(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> HeaderValue {
    header_value(&traceparent(trace_id, span_id, sampled))
}

/// Replace the context in `format` with ours: our span is the next hop's parent.
pub fn inject(
    format: Propagation,
    h: &mut HeaderMap,
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    sampled: bool,
) {
    // NOTE: formatted on the stack, then copied into the thread's arena (`Line::value`).
    let mut buf = Line::default();
    match format {
        Propagation::W3c => {
            h.insert(&TRACEPARENT, traceparent_value(trace_id, span_id, sampled));
        }
        Propagation::B3 => {
            buf.hex(trace_id);
            buf.push(b"-");
            buf.hex(span_id);
            buf.push(if sampled { b"-1" } else { b"-0" });
            buf.put(h, &B3);
        }
        Propagation::B3multi => {
            buf.hex(trace_id);
            buf.put(h, &B3_TRACE_ID);
            let mut s = Line::default();
            s.hex(span_id);
            s.put(h, &B3_SPAN_ID);
            // The next hop's parent is our span: the caller's span is not its parent.
            h.remove(&B3_PARENT_SPAN_ID);
            h.remove(&B3_FLAGS);
            h.insert(
                B3_SAMPLED.clone(),
                HeaderValue::from_static(if sampled { "1" } else { "0" }),
            );
        }
        Propagation::Xray => {
            buf.push(b"Root=1-");
            buf.hex(&trace_id[..4]);
            buf.push(b"-");
            buf.hex(&trace_id[4..]);
            buf.push(b";Parent=");
            buf.hex(span_id);
            buf.push(if sampled {
                b";Sampled=1"
            } else {
                b";Sampled=0"
            });
            buf.put(h, &XRAY);
        }
    }
}

/// Each byte's two lower-case hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    table
};

/// A header value being formatted (the longest, X-Ray's, is 79 bytes).
struct Line {
    buf: [u8; 96],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 96],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    fn hex(&mut self, bytes: &[u8]) {
        let out = &mut self.buf[self.len..self.len + 2 * bytes.len()];
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair.copy_from_slice(&HEX_PAIRS[*b as usize]);
        }
        self.len += 2 * bytes.len();
    }

    fn put(&self, h: &mut HeaderMap, name: &HeaderName) {
        h.insert(name, header_value(&self.buf[..self.len]));
    }
}

/// A header value of the ASCII hex digits, letters, '-', ';' and '=' that `traceparent`
/// and `Line` write, cut from the thread's arena.
fn header_value(b: &[u8]) -> HeaderValue {
    debug_assert!(b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || b"-;=".contains(c)));
    // SAFETY: the bytes are all valid in a header value (above). NOTE: this skips the
    // byte-by-byte check that `from_bytes` would repeat on every request.
    unsafe { HeaderValue::from_maybe_shared_unchecked(arena_copy(b)) }
}

/// How much a thread's header-value arena allocates at a time.
const ARENA_CHUNK: usize = 4096;

thread_local! {
    static ARENA: RefCell<Option<BytesMut>> = const { RefCell::new(None) };
}

/// `b` as `Bytes` cut from the calling thread's arena.
// NOTE: one allocation per ~70 header values instead of one each, and a value that is
// cloned (the request copied for an attempt) or dropped costs a reference count, not an
// allocation and a free. A chunk is freed when the last value cut from it is.
fn arena_copy(b: &[u8]) -> Bytes {
    ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        if arena.as_ref().is_none_or(|a| a.capacity() < b.len()) {
            *arena = Some(BytesMut::with_capacity(ARENA_CHUNK.max(b.len())));
        }
        let chunk = arena.as_mut().expect("made above");
        chunk.extend_from_slice(b);
        chunk.split().freeze()
    })
}

pub fn hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

/// Lower- or upper-case hex of exactly `N` bytes; all zeros is invalid (W3C, B3, X-Ray).
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        out[i] = d(pair[0])? << 4 | d(pair[1])?;
    }
    (out != [0u8; N]).then_some(out)
}

/// A B3 trace id: 128-bit, or 64-bit (left-padded with zeros).
fn b3_trace_id(s: &str) -> Option<[u8; 16]> {
    if s.len() == 16 {
        let low: [u8; 8] = unhex(s)?;
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&low);
        Some(id)
    } else {
        unhex(s)
    }
}

fn header<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn w3c(h: &HeaderMap) -> Option<Parent> {
    w3c_value(h.get(&TRACEPARENT)?)
}

fn w3c_value(v: &HeaderValue) -> Option<Parent> {
    let v = v.to_str().ok()?.trim();
    let mut parts = v.split('-');
    let version = parts.next()?;
    if version.len() != 2 || version == "ff" {
        return None;
    }
    let trace_id = unhex(parts.next()?)?;
    let span_id = unhex(parts.next()?)?;
    let flags: [u8; 1] = {
        let f = parts.next()?;
        if f.len() != 2 {
            return None;
        }
        [u8::from_str_radix(f, 16).ok()?]
    };
    // Version 00 has exactly four fields; later versions may append more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: Some(flags[0] & 1 == 1),
    })
}

fn b3_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn b3_single(h: &HeaderMap) -> Option<Parent> {
    let v = header(h, &B3)?;
    let mut parts = v.split('-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let span_id = unhex(parts.next()?)?;
    let sampled = parts.next().and_then(b3_sampled);
    Some(Parent {
        trace_id,
        span_id,
        sampled,
    })
}

fn b3_multi(h: &HeaderMap) -> Option<Parent> {
    let trace_id = b3_trace_id(header(h, &B3_TRACE_ID)?)?;
    let span_id = unhex(header(h, &B3_SPAN_ID)?)?;
    let sampled = if header(h, &B3_FLAGS) == Some("1") {
        Some(true)
    } else {
        header(h, &B3_SAMPLED).and_then(b3_sampled)
    };
    Some(Parent {
        trace_id,
        span_id,
        sampled,
    })
}

fn xray(h: &HeaderMap) -> Option<Parent> {
    let v = header(h, &XRAY)?;
    let (mut root, mut parent, mut sampled) = (None, None, None);
    for field in v.split(';') {
        let (k, val) = field.trim().split_once('=')?;
        match k {
            "Root" => {
                let mut p = val.split('-');
                if p.next()? != "1" {
                    return None;
                }
                let (epoch, rest) = (p.next()?, p.next()?);
                if epoch.len() != 8 || rest.len() != 24 {
                    return None;
                }
                root = unhex::<16>(&format!("{epoch}{rest}"));
            }
            "Parent" => parent = unhex::<8>(val),
            "Sampled" => {
                sampled = match val {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    // A Root without a Parent starts a new span tree in the same trace: not expressible here.
    Some(Parent {
        trace_id: root?,
        span_id: parent?,
        sampled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: [u8; 16] = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    const SPAN: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn w3c_round_trip_and_rejects() {
        let h = map(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let p = extract(Propagation::W3c, &h).unwrap();
        assert_eq!(
            (p.trace_id, p.span_id, p.sampled),
            (TRACE, SPAN, Some(true))
        );
        let mut out = HeaderMap::new();
        inject(Propagation::W3c, &mut out, &TRACE, &SPAN, false);
        assert_eq!(
            out["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert_eq!(
                extract(Propagation::W3c, &map(&[("traceparent", bad)])),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn carrier_reads_and_replaces_the_callers_context_in_place() {
        let mut h = map(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let c = Carrier::new(Propagation::W3c, &mut h);
        let p = c.extract().unwrap();
        assert_eq!(
            (p.trace_id, p.span_id, p.sampled),
            (TRACE, SPAN, Some(true))
        );
        c.inject(&p.trace_id, &[1; 8], false);
        assert_eq!(h.get_all("traceparent").iter().count(), 1);
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0101010101010101-00"
        );
        let mut h = HeaderMap::new();
        let c = Carrier::new(Propagation::W3c, &mut h);
        assert_eq!(c.extract(), None);
        c.inject(&TRACE, &SPAN, true);
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let mut h = map(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")]);
        let c = Carrier::new(Propagation::B3, &mut h);
        assert_eq!(c.extract().unwrap().span_id, SPAN);
        c.inject(&TRACE, &[2; 8], false);
        assert_eq!(
            h["b3"],
            "4bf92f3577b34da6a3ce929d0e0e4736-0202020202020202-0"
        );
    }

    #[test]
    fn values_cut_from_the_arena_stay_whole_across_chunks() {
        // More values than one chunk holds; each kept alive while later ones are cut.
        let values: Vec<(u8, HeaderMap)> = (0..=255u8)
            .map(|i| {
                let mut h = HeaderMap::new();
                inject(Propagation::W3c, &mut h, &[i; 16], &[i | 1; 8], i % 2 == 0);
                (i, h)
            })
            .collect();
        for (i, h) in &values {
            let mut want = String::from("00-");
            hex(&mut want, &[*i; 16]);
            want.push('-');
            hex(&mut want, &[*i | 1; 8]);
            want.push_str(if i % 2 == 0 { "-01" } else { "-00" });
            assert_eq!(h["traceparent"], want.as_str());
        }
    }

    #[test]
    fn hex16_is_the_table_hex() {
        let mut w = 0x0123_4567_89ab_cdefu64;
        for _ in 0..1000 {
            let mut want = String::new();
            hex(&mut want, &w.to_be_bytes());
            assert_eq!(hex16(w), want.as_bytes(), "{w:#x}");
            assert_eq!(hex16_table(w), want.as_bytes(), "{w:#x}");
            w = w.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(7) ^ 0xff;
        }
        for w in [0, u64::MAX, 0x0a0a_0a0a_0a0a_0a0a, 0x9999_9999_9999_9999] {
            let mut want = String::new();
            hex(&mut want, &w.to_be_bytes());
            assert_eq!(hex16(w), want.as_bytes(), "{w:#x}");
        }
    }

    #[test]
    fn new_unsampled_traces_are_valid_distinct_and_not_sampled() {
        // Across more than one pre-rendered chunk, each value kept while later ones are cut.
        let (mut traces, mut spans) = (
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
        );
        let mut maps = Vec::new();
        for _ in 0..3 * UNSAMPLED_CHUNK + 5 {
            let mut h = HeaderMap::new();
            let c = Carrier::new(Propagation::W3c, &mut h);
            c.inject_new_unsampled(|| unreachable!("W3C values are pre-rendered"));
            maps.push(h);
        }
        for h in &maps {
            let v = h["traceparent"].to_str().unwrap();
            let p = w3c_value(&h["traceparent"]).unwrap();
            assert_eq!(p.sampled, Some(false));
            let mut want = String::from("00-");
            hex(&mut want, &p.trace_id);
            want.push('-');
            hex(&mut want, &p.span_id);
            want.push_str("-00");
            assert_eq!(v, want);
            assert!(traces.insert(p.trace_id), "trace ids repeat");
            assert!(spans.insert(p.span_id), "span ids repeat");
        }
        // A caller's value (here unsampled, and not used: a new trace) is replaced in place.
        let mut h = map(&[("traceparent", "garbage")]);
        Carrier::new(Propagation::W3c, &mut h).inject_new_unsampled(|| unreachable!());
        assert_eq!(h.get_all("traceparent").iter().count(), 1);
        assert!(w3c(&h).is_some());
        // Other formats write the ids they are given.
        let mut h = HeaderMap::new();
        Carrier::new(Propagation::B3, &mut h).inject_new_unsampled(|| (TRACE, SPAN));
        assert_eq!(
            h["b3"],
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"
        );
    }

    #[test]
    fn b3_single_and_multi() {
        let h = map(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")]);
        let p = extract(Propagation::B3, &h).unwrap();
        assert_eq!(
            (p.trace_id, p.span_id, p.sampled),
            (TRACE, SPAN, Some(true))
        );
        let h = map(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-flags", "1"),
        ]);
        let p = extract(Propagation::B3multi, &h).unwrap();
        assert_eq!(&p.trace_id[..8], &[0; 8]);
        assert_eq!(&p.trace_id[8..], &TRACE[8..]);
        assert_eq!(p.sampled, Some(true));
        let h = map(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7")]);
        assert_eq!(extract(Propagation::B3, &h).unwrap().sampled, None);
        let mut out = map(&[("x-b3-parentspanid", "1111111111111111")]);
        inject(Propagation::B3multi, &mut out, &TRACE, &SPAN, true);
        assert_eq!(out["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(out["x-b3-spanid"], "00f067aa0ba902b7");
        assert_eq!(out["x-b3-sampled"], "1");
        assert!(!out.contains_key("x-b3-parentspanid"));
        let mut out = HeaderMap::new();
        inject(Propagation::B3, &mut out, &TRACE, &SPAN, true);
        assert_eq!(
            out["b3"],
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"
        );
    }

    #[test]
    fn xray_round_trip() {
        let v = "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1";
        let p = extract(Propagation::Xray, &map(&[("x-amzn-trace-id", v)])).unwrap();
        assert_eq!(
            (p.trace_id, p.span_id, p.sampled),
            (TRACE, SPAN, Some(true))
        );
        let mut out = HeaderMap::new();
        inject(Propagation::Xray, &mut out, &TRACE, &SPAN, true);
        assert_eq!(out["x-amzn-trace-id"], v);
        let no_parent = "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Sampled=1";
        assert_eq!(
            extract(Propagation::Xray, &map(&[("x-amzn-trace-id", no_parent)])),
            None
        );
    }
}
