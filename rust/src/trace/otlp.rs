//! OTLP/HTTP protobuf, written straight into one buffer: no message structs, no allocation
//! per span or attribute. Field numbers and wire types are those of
//! opentelemetry-proto's `collector/trace/v1` (`ExportTraceServiceRequest`), `trace/v1`
//! (`ResourceSpans`, `ScopeSpans`, `Span`, `Event`, `Status`), `common/v1` (`KeyValue`,
//! `AnyValue`, `InstrumentationScope`) and `resource/v1`. Fields left at their default are
//! not written, as protobuf encoders do. The tests decode the output with prost definitions
//! of the same messages (below, test only), and the e2e tests with the official ones.

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

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn key_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

/// A length-delimited field whose length is `len` (its bytes written next by the caller).
fn len_prefix(out: &mut Vec<u8>, field: u32, len: usize) {
    key(out, field, LEN);
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
        key(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        key(out, field, FIXED32);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub fn int(out: &mut Vec<u8>, field: u32, v: i64) {
    if v != 0 {
        key(out, field, VARINT);
        varint(out, v as u64);
    }
}

/// A `KeyValue` (common/v1) with a string `AnyValue`, as the repeated field `field`.
pub fn attr_str(out: &mut Vec<u8>, field: u32, k: &str, v: &str) {
    let any = delimited_len(1, v.len());
    len_prefix(
        out,
        field,
        delimited_len(1, k.len()) + delimited_len(2, any),
    );
    len_prefix(out, 1, k.len());
    out.extend_from_slice(k.as_bytes());
    len_prefix(out, 2, any);
    len_prefix(out, 1, v.len());
    out.extend_from_slice(v.as_bytes());
}

/// A `KeyValue` with an int `AnyValue`.
pub fn attr_int(out: &mut Vec<u8>, field: u32, k: &str, v: i64) {
    let any = key_len(3) + varint_len(v as u64);
    len_prefix(
        out,
        field,
        delimited_len(1, k.len()) + delimited_len(2, any),
    );
    len_prefix(out, 1, k.len());
    out.extend_from_slice(k.as_bytes());
    len_prefix(out, 2, any);
    key(out, 3, VARINT);
    varint(out, v as u64);
}

/// A message field whose body is already encoded in `body`.
pub fn message(out: &mut Vec<u8>, field: u32, body: &[u8]) {
    len_prefix(out, field, body.len());
    out.extend_from_slice(body);
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
    key(out, 1, FIXED64);
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
    key(out, 3, VARINT);
    varint(out, STATUS_ERROR as u64);
}

/// The `ExportTraceServiceRequest` of one resource and one scope around `spans`, the `Span`
/// messages already encoded as `ScopeSpans.spans` fields (2).
pub fn request(
    resource_attrs: &[u8],
    scope_name: &str,
    scope_version: &str,
    spans: &[u8],
) -> Vec<u8> {
    let scope = delimited_len(1, scope_name.len()) + delimited_len(2, scope_version.len());
    let scope_spans = delimited_len(1, scope) + spans.len();
    let resource_spans = delimited_len(1, resource_attrs.len()) + delimited_len(2, scope_spans);
    let mut out = Vec::with_capacity(delimited_len(1, resource_spans));
    len_prefix(&mut out, 1, resource_spans);
    message(&mut out, 1, resource_attrs);
    len_prefix(&mut out, 2, scope_spans);
    len_prefix(&mut out, 1, scope);
    bytes(&mut out, 1, scope_name.as_bytes());
    bytes(&mut out, 2, scope_version.as_bytes());
    out.extend_from_slice(spans);
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
    fn attributes_decode_as_key_values() {
        use prost::Message;
        let long = "x".repeat(200);
        let mut out = Vec::new();
        attr_str(&mut out, 1, "k", &long);
        attr_int(&mut out, 1, "n", -3);
        let resource = decode::Resource::decode(&out[..]).unwrap();
        assert_eq!(resource.attributes.len(), 2);
        assert_eq!(resource.attributes[0].key, "k");
        let value = |i: usize| resource.attributes[i].value.clone().unwrap().value.unwrap();
        assert_eq!(value(0), decode::Value::String(long));
        assert_eq!(value(1), decode::Value::Int(-3));
    }
}
