//! OTLP/HTTP protobuf, written straight into one buffer: no message structs, no allocation
//! per span or attribute. Field numbers and wire types are those of
//! opentelemetry-proto's `collector/trace/v1` (`ExportTraceServiceRequest`), `trace/v1`
//! (`ResourceSpans`, `ScopeSpans`, `Span`, `Event`, `Status`), `common/v1` (`KeyValue`,
//! `AnyValue`, `InstrumentationScope`) and `resource/v1`. Fields left at their default are
//! not written, as protobuf encoders do. The tests decode the output with prost definitions
//! of the same messages (below, test only), and the e2e tests with the official ones.

use std::mem::MaybeUninit;

pub const SPAN_KIND_SERVER: i32 = 2;
pub const SPAN_KIND_CLIENT: i32 = 3;
pub const STATUS_ERROR: i32 = 2;

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

pub fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 takes one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn key_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

/// A length-delimited field whose length is `len` (its bytes written next by the caller).
fn len_prefix(out: &mut Vec<u8>, field: u32, len: usize) {
    tag(out, field, LEN);
    varint(out, len as u64);
}

fn delimited_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    if !b.is_empty() {
        len_prefix(out, field, b.len());
        out.extend_from_slice(b);
    }
}

pub fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        tag(out, field, FIXED32);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub fn int(out: &mut Vec<u8>, field: u32, v: i64) {
    if v != 0 {
        tag(out, field, VARINT);
        varint(out, v as u64);
    }
}

/// An attribute key as written: `KeyValue.key` (field 1, its length, the key), then the tag
/// of `KeyValue.value` (field 2, length-delimited). Made at compile time by `key!`; `N` is the
/// key's length + 3 (a key is shorter than 128 bytes).
pub const fn key_bytes<const N: usize>(k: &str) -> [u8; N] {
    let k = k.as_bytes();
    assert!(
        k.len() + 3 == N && k.len() < 128,
        "an attribute key is 1-127 bytes"
    );
    let mut out = [0u8; N];
    out[0] = 1 << 3 | LEN as u8;
    out[1] = k.len() as u8;
    let mut i = 0;
    while i < k.len() {
        out[2 + i] = k[i];
        i += 1;
    }
    out[N - 1] = 2 << 3 | LEN as u8;
    out
}

/// An attribute key encoded once, at compile time (`otlp::key_bytes`).
macro_rules! key {
    ($k:literal) => {{
        const K: [u8; $k.len() + 3] = $crate::trace::otlp::key_bytes($k);
        &K
    }};
}
pub(crate) use key;

/// The start of a `KeyValue` of key `k` as the repeated field `field` (< 16), whose
/// `AnyValue` is `any` bytes long; room reserved for `extra` more bytes after it.
// NOTE: one reservation per attribute, then the constant key is copied by a fixed-size move
// (its length is known at compile time); only the value's bytes need a `memcpy` call.
#[inline]
fn kv_head<const N: usize>(out: &mut Vec<u8>, field: u32, k: &[u8; N], any: usize) {
    let kv = N + varint_len(any as u64) + any;
    out.reserve(1 + varint_len(kv as u64) + kv);
    out.push((field << 3 | LEN) as u8);
    varint(out, kv as u64);
    out.extend_from_slice(k);
    varint(out, any as u64);
}

/// A `KeyValue` (common/v1) with a string `AnyValue`, as the repeated field `field`.
#[inline]
pub fn attr_str<const N: usize>(out: &mut Vec<u8>, field: u32, k: &[u8; N], v: &str) {
    attr_str_parts(out, field, k, &[v]);
}

/// A `KeyValue` whose string value is `parts` concatenated (written without joining them first).
// NOTE: these `Vec` writers serve the cold paths (the constant parts cached per route, cluster
// and host; the resource) and are the plain reference the tests hold `Room`'s writers to; the
// per-span path writes through `Room`.
#[inline]
pub fn attr_str_parts<const N: usize>(out: &mut Vec<u8>, field: u32, k: &[u8; N], parts: &[&str]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    kv_head(out, field, k, delimited_len(1, len));
    len_prefix(out, 1, len);
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
}

/// A `KeyValue` with an int `AnyValue`.
#[inline]
pub fn attr_int<const N: usize>(out: &mut Vec<u8>, field: u32, k: &[u8; N], v: i64) {
    kv_head(out, field, k, key_len(3) + varint_len(v as u64));
    tag(out, 3, VARINT);
    varint(out, v as u64);
}

/// Room reserved at the end of a buffer, filled without a capacity check per write: a write
/// is checked only against the room's end (a compare of a local index; overrunning the room
/// panics, it never writes past it). Made by `write_in`; the writers mirror the functions
/// above that append to a `Vec` and write the same bytes.
// NOTE: a `Vec` push reloads and compares the length and capacity and stores the length each
// time (~600 instructions a request at 100% sampling, two spans of ~25 fields).
pub struct Room<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    /// Bytes written from the start of `buf` (all of `buf[..at]` is initialised).
    at: usize,
}

/// Reserve `room` bytes at the end of `out`, let `fill` write at most that many, and keep what
/// it wrote.
#[inline]
pub fn write_in<R>(out: &mut Vec<u8>, room: usize, fill: impl FnOnce(&mut Room<'_>) -> R) -> R {
    out.reserve(room);
    let start = out.len();
    let mut r = Room {
        buf: &mut out.spare_capacity_mut()[..room],
        at: 0,
    };
    let value = fill(&mut r);
    let written = r.at;
    // SAFETY: every byte `Room` counts in `at` was written (`take`'s callers write all it
    // gives them before returning), all within `out`'s spare capacity from `start`.
    unsafe { out.set_len(start + written) };
    value
}

impl Room<'_> {
    /// The next `n` bytes of the room, which the caller writes in full (every writer below
    /// does, before it returns; a panic on the way leaves `write_in` before it keeps anything).
    // NOTE: one bounds check for a whole field; its bytes are then written at offsets the
    // compiler can check against the slice's known length.
    #[inline]
    fn take(&mut self, n: usize) -> &mut [MaybeUninit<u8>] {
        let at = self.at;
        let dst = &mut self.buf[at..at + n];
        self.at = at + n;
        dst
    }

    /// Bytes written so far, from the room's start: where the next field goes.
    #[inline]
    pub fn at(&self) -> usize {
        self.at
    }

    #[inline]
    pub fn byte(&mut self, b: u8) {
        self.take(1)[0].write(b);
    }

    #[inline]
    pub fn slice(&mut self, s: &[u8]) {
        copy(self.take(s.len()), 0, s);
    }

    #[inline]
    fn put<const M: usize>(&mut self, b: [u8; M]) {
        copy(self.take(M), 0, &b);
    }

    #[inline]
    fn varint(&mut self, v: u64) {
        if v < 0x80 {
            self.put([v as u8]);
        } else if v < 0x4000 {
            self.put([v as u8 | 0x80, (v >> 7) as u8]);
        } else {
            let mut v = v;
            while v >= 0x80 {
                self.byte(v as u8 | 0x80);
                v >>= 7;
            }
            self.byte(v as u8);
        }
    }

    #[inline]
    fn tag(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    #[inline]
    fn len_prefix(&mut self, field: u32, len: usize) {
        self.tag(field, LEN);
        self.varint(len as u64);
    }

    /// As `message_start`: the start of a message field (< 16) whose body follows; returns
    /// where the body starts in the room, for `message_end` (at the room's start plus that).
    #[inline]
    pub fn message_start(&mut self, field: u32) -> usize {
        self.put([(field << 3 | LEN) as u8, 0, 0]);
        self.at
    }

    /// As `bytes`.
    #[inline]
    pub fn bytes(&mut self, field: u32, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        if field < 16 && b.len() < 128 {
            let dst = self.take(2 + b.len());
            dst[0].write((field << 3 | LEN) as u8);
            dst[1].write(b.len() as u8);
            copy(dst, 2, b);
        } else {
            self.len_prefix(field, b.len());
            self.slice(b);
        }
    }

    /// As `fixed64`.
    #[inline]
    pub fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.tag(field, FIXED64);
            self.put(v.to_le_bytes());
        }
    }

    /// As `fixed32`.
    #[inline]
    pub fn fixed32(&mut self, field: u32, v: u32) {
        if v != 0 {
            self.tag(field, FIXED32);
            self.put(v.to_le_bytes());
        }
    }

    /// As `attr_str_parts`.
    #[inline]
    pub fn attr_str_parts<const N: usize>(&mut self, field: u32, k: &[u8; N], parts: &[&str]) {
        const { assert!(N <= KEY_MAX) };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let Some(dst) = self.attr_str_head(field, k, len) else {
            for p in parts {
                self.slice(p.as_bytes());
            }
            return;
        };
        let mut at = dst.len() - len;
        for p in parts {
            copy(dst, at, p.as_bytes());
            at += p.len();
        }
    }

    /// As `attr_str`.
    #[inline]
    pub fn attr_str<const N: usize>(&mut self, field: u32, k: &[u8; N], v: &str) {
        self.attr_bytes(field, k, v.as_bytes());
    }

    /// As `attr_str` of a string given as its UTF-8 bytes.
    #[inline]
    pub fn attr_bytes<const N: usize>(&mut self, field: u32, k: &[u8; N], v: &[u8]) {
        const { assert!(N <= KEY_MAX) };
        match self.attr_str_head(field, k, v.len()) {
            Some(dst) => copy(dst, dst.len() - v.len(), v),
            None => self.slice(v),
        }
    }

    /// A string `KeyValue` up to its value's `len` bytes. When every length in it takes one
    /// byte (most attributes): the whole field's room, its value's `len` bytes left to write
    /// at its end; else the head is written and the value is to follow.
    #[inline]
    fn attr_str_head<const N: usize>(
        &mut self,
        field: u32,
        k: &[u8; N],
        len: usize,
    ) -> Option<&mut [MaybeUninit<u8>]> {
        let kv = N + 3 + len;
        if field < 16 && kv < 128 {
            let dst = self.take(2 + kv);
            dst[0].write((field << 3 | LEN) as u8);
            dst[1].write(kv as u8);
            copy(dst, 2, k);
            // AnyValue: its length, then `string_value` (field 1) and the string's length.
            dst[2 + N].write((len + 2) as u8);
            dst[3 + N].write((1 << 3 | LEN) as u8);
            dst[4 + N].write(len as u8);
            return Some(dst);
        }
        let any = delimited_len(1, len);
        self.tag(field, LEN);
        self.varint((N + varint_len(any as u64) + any) as u64);
        self.slice(k);
        self.varint(any as u64);
        self.len_prefix(1, len);
        None
    }

    /// As `attr_int`.
    #[inline]
    pub fn attr_int<const N: usize>(&mut self, field: u32, k: &[u8; N], v: i64) {
        const { assert!(N <= KEY_MAX) };
        let any = key_len(3) + varint_len(v as u64);
        let kv = N + 1 + any;
        if field < 16 && kv < 128 {
            let dst = self.take(2 + kv);
            dst[0].write((field << 3 | LEN) as u8);
            dst[1].write(kv as u8);
            copy(dst, 2, k);
            dst[2 + N].write(any as u8);
            // AnyValue's `int_value` (field 3).
            dst[3 + N].write((3 << 3 | VARINT) as u8);
            let mut at = 4 + N;
            let mut x = v as u64;
            while x >= 0x80 {
                dst[at].write(x as u8 | 0x80);
                x >>= 7;
                at += 1;
            }
            dst[at].write(x as u8);
            return;
        }
        self.tag(field, LEN);
        self.varint(kv as u64);
        self.slice(k);
        self.varint(any as u64);
        self.tag(3, VARINT);
        self.varint(v as u64);
    }

    /// As `event`.
    #[inline]
    pub fn event(&mut self, field: u32, time_unix_nano: u64, name: &str) {
        let body = (key_len(1) + 8) + delimited_len(2, name.len());
        if field < 16 && body < 128 {
            let dst = self.take(2 + body);
            dst[0].write((field << 3 | LEN) as u8);
            dst[1].write(body as u8);
            dst[2].write((1 << 3 | FIXED64) as u8);
            copy(dst, 3, &time_unix_nano.to_le_bytes());
            dst[11].write((2 << 3 | LEN) as u8);
            dst[12].write(name.len() as u8);
            copy(dst, 13, name.as_bytes());
            return;
        }
        self.len_prefix(field, body);
        self.tag(1, FIXED64);
        self.put(time_unix_nano.to_le_bytes());
        self.len_prefix(2, name.len());
        self.slice(name.as_bytes());
    }

    /// As `error_status`.
    pub fn error_status(&mut self, field: u32, message: &str) {
        let msg = if message.is_empty() {
            0
        } else {
            delimited_len(2, message.len())
        };
        self.len_prefix(field, msg + key_len(3) + 1);
        self.bytes(2, message.as_bytes());
        self.tag(3, VARINT);
        self.varint(STATUS_ERROR as u64);
    }
}

/// `src` written into `dst` from `at`.
#[inline]
fn copy(dst: &mut [MaybeUninit<u8>], at: usize, src: &[u8]) {
    let dst = &mut dst[at..at + src.len()];
    // SAFETY: `dst` is `src.len()` bytes (the indexing checked it) and cannot overlap `src`
    // (it is borrowed mutably).
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len())
    };
}

/// The most any of `Room`'s field writers adds to its variable bytes (a string's, a name's):
/// its tags and lengths (at most 10 bytes each, 5 of them), a fixed value's 8 bytes and an
/// attribute key of at most `KEY_MAX` bytes as written (`key!`).
pub const FIELD_MAX: usize = KEY_MAX + 5 * 10 + 8;
const KEY_MAX: usize = 40;

/// A message field whose body is already encoded in `body`.
pub fn message(out: &mut Vec<u8>, field: u32, body: &[u8]) {
    len_prefix(out, field, body.len());
    out.extend_from_slice(body);
}

/// The start of a message field (< 16) whose body the caller writes next, in place; returns
/// where the body starts, for `message_end`.
// NOTE: room is left for a two-byte length (a body of 128 to 16,383 bytes, as a span's is),
// so the body is not written elsewhere and copied behind its length; `message_end` moves it
// when its length takes another size.
pub fn message_start(out: &mut Vec<u8>, field: u32) -> usize {
    tag(out, field, LEN);
    out.extend_from_slice(&[0, 0]);
    out.len()
}

/// The end of the message begun by `message_start`: its length written before it.
pub fn message_end(out: &mut Vec<u8>, body: usize) {
    let len = out.len() - body;
    if varint_len(len as u64) == 2 {
        out[body - 2] = len as u8 | 0x80;
        out[body - 1] = (len >> 7) as u8;
    } else {
        let mut prefix = Vec::with_capacity(10);
        varint(&mut prefix, len as u64);
        out.splice(body - 2..body, prefix);
    }
}

/// `Span` (trace/v1) field numbers.
pub mod span {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const EVENTS: u32 = 11;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
}

/// An `Event` (time, name, no attributes) as the repeated field `field`.
pub fn event(out: &mut Vec<u8>, field: u32, time_unix_nano: u64, name: &str) {
    let len = (key_len(1) + 8) + delimited_len(2, name.len());
    len_prefix(out, field, len);
    tag(out, 1, FIXED64);
    out.extend_from_slice(&time_unix_nano.to_le_bytes());
    len_prefix(out, 2, name.len());
    out.extend_from_slice(name.as_bytes());
}

/// A `Status` with code ERROR and `message`.
pub fn error_status(out: &mut Vec<u8>, field: u32, message: &str) {
    let msg = if message.is_empty() {
        0
    } else {
        delimited_len(2, message.len())
    };
    len_prefix(out, field, msg + key_len(3) + 1);
    bytes(out, 2, message.as_bytes());
    tag(out, 3, VARINT);
    varint(out, STATUS_ERROR as u64);
}

/// The start of the `ExportTraceServiceRequest` of one resource and one scope around
/// `spans_len` bytes of `Span` messages already encoded as `ScopeSpans.spans` fields (2),
/// which follow it.
pub fn request_head(
    resource_attrs: &[u8],
    scope_name: &str,
    scope_version: &str,
    spans_len: usize,
) -> Vec<u8> {
    let scope = delimited_len(1, scope_name.len()) + delimited_len(2, scope_version.len());
    let scope_spans = delimited_len(1, scope) + spans_len;
    let resource_spans = delimited_len(1, resource_attrs.len()) + delimited_len(2, scope_spans);
    let mut out = Vec::with_capacity(delimited_len(1, resource_spans) - spans_len);
    len_prefix(&mut out, 1, resource_spans);
    message(&mut out, 1, resource_attrs);
    len_prefix(&mut out, 2, scope_spans);
    len_prefix(&mut out, 1, scope);
    bytes(&mut out, 1, scope_name.as_bytes());
    bytes(&mut out, 2, scope_version.as_bytes());
    out
}

/// The messages above as prost structs, to decode what this module wrote, in tests.
#[cfg(test)]
pub mod decode {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        /// SpanKind: 2 = SERVER.
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, repeated, tag = "11")]
        pub events: Vec<Event>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
        /// W3C trace flags in the low byte (bit 0: sampled).
        #[prost(fixed32, tag = "16")]
        pub flags: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        /// 0 UNSET, 1 OK, 2 ERROR.
        #[prost(int32, tag = "3")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
        pub value: Option<Value>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_their_lengths_agree() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let decoded = prost::encoding::decode_varint(&mut &out[..]).unwrap();
            assert_eq!(decoded, v);
        }
    }

    #[test]
    fn a_message_written_in_place_is_the_message_copied_behind_its_length() {
        for len in [0, 1, 127, 128, 300, 16_383, 16_384, 20_000, 2_097_152] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut copied = vec![7u8];
            message(&mut copied, 2, &body);
            let mut in_place = vec![7u8];
            let start = message_start(&mut in_place, 2);
            in_place.extend_from_slice(&body);
            message_end(&mut in_place, start);
            assert!(copied == in_place, "body of {len} bytes");
        }
    }

    #[test]
    fn room_writers_write_what_the_vec_writers_append() {
        // Either side of each writer's short path (every length in one byte) and of the
        // two-byte lengths.
        for len in (0..140).chain([200, 16_383, 16_384, 20_000]) {
            let v = "v".repeat(len);
            let n = len as u64 * 1_000_003;
            let mut want = vec![9u8];
            attr_str(&mut want, 9, key!("url.path"), &v);
            attr_str_parts(&mut want, 9, key!("url.full"), &["http://", &v, "/p"]);
            attr_int(&mut want, 9, key!("server.port"), n as i64);
            attr_int(&mut want, 9, key!("server.port"), -(len as i64));
            bytes(&mut want, 1, v.as_bytes());
            bytes(&mut want, 16, v.as_bytes());
            fixed64(&mut want, 7, n);
            fixed32(&mut want, 16, len as u32);
            event(&mut want, 11, n, &v);
            error_status(&mut want, 15, &v);
            let body = message_start(&mut want, 2);
            want.extend_from_slice(v.as_bytes());
            message_end(&mut want, body);
            let mut got = vec![9u8];
            let room = 11 * FIELD_MAX + 8 * len + 10;
            let body = write_in(&mut got, room, |o| {
                o.attr_str(9, key!("url.path"), &v);
                o.attr_str_parts(9, key!("url.full"), &["http://", &v, "/p"]);
                o.attr_int(9, key!("server.port"), n as i64);
                o.attr_int(9, key!("server.port"), -(len as i64));
                o.bytes(1, v.as_bytes());
                o.bytes(16, v.as_bytes());
                o.fixed64(7, n);
                o.fixed32(16, len as u32);
                o.event(11, n, &v);
                o.error_status(15, &v);
                let body = o.message_start(2);
                o.slice(v.as_bytes());
                body
            });
            message_end(&mut got, 1 + body);
            assert!(got == want, "{len}");
        }
    }

    #[test]
    #[should_panic]
    fn a_room_is_never_written_past() {
        let mut out = Vec::with_capacity(64);
        write_in(&mut out, 4, |o| o.slice(b"12345"));
    }

    #[test]
    fn attributes_decode_as_key_values() {
        use prost::Message;
        let long = "x".repeat(200);
        // Either side of the one-byte-lengths short path (`Room::attr_str_head`), against
        // the general encoding.
        for len in 0..140 {
            let v = "v".repeat(len);
            let mut short = Vec::new();
            write_in(&mut short, 32 + len, |r| {
                r.attr_str(9, key!("url.path"), &v)
            });
            let mut general = Vec::new();
            kv_head(&mut general, 9, key!("url.path"), delimited_len(1, len));
            len_prefix(&mut general, 1, len);
            general.extend_from_slice(v.as_bytes());
            assert_eq!(short, general, "{len}");
        }
        for v in [0i64, 1, 127, 128, 200, 65_535, -1, i64::MAX, i64::MIN] {
            let mut short = Vec::new();
            write_in(&mut short, 48, |r| {
                r.attr_int(9, key!("http.response.status_code"), v)
            });
            let mut general = Vec::new();
            let any = key_len(3) + varint_len(v as u64);
            kv_head(&mut general, 9, key!("http.response.status_code"), any);
            tag(&mut general, 3, VARINT);
            varint(&mut general, v as u64);
            assert_eq!(short, general, "{v}");
        }
        let mut out = Vec::new();
        attr_str(&mut out, 1, key!("k"), &long);
        attr_int(&mut out, 1, key!("n"), -3);
        attr_str_parts(&mut out, 1, key!("joined"), &["http://", "h:1", "/p"]);
        let resource = decode::Resource::decode(&out[..]).unwrap();
        assert_eq!(resource.attributes.len(), 3);
        assert_eq!(resource.attributes[2].key, "joined");
        assert_eq!(resource.attributes[0].key, "k");
        let value = |i: usize| resource.attributes[i].value.clone().unwrap().value.unwrap();
        assert_eq!(value(0), decode::Value::String(long));
        assert_eq!(value(1), decode::Value::Int(-3));
        assert_eq!(value(2), decode::Value::String("http://h:1/p".into()));
    }
}
