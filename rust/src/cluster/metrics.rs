//! The per-host families of the Prometheus exposition (`meshplane_host_*`), written from the
//! hosts themselves: a scrape of 10,000 hosts builds no per-host JSON value or Python object.
//!
//! The text is exactly what `meshplane.admin.prometheus.render` writes for the hosts of a
//! `Core.stats()` copy (tests/unit/test_prometheus.py and the e2e scrape tests compare them):
//! families in first-seen order (clusters by name, hosts by name, a host's stats in
//! `HostRow::map` order), each with its `# HELP` and `# TYPE` lines.

use super::{Cluster, Host, HostSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Where one family's samples come from in a host's numbers (`Numbers`).
#[derive(Clone, Copy)]
enum Value {
    /// One sample: the number at this index.
    One(usize),
    /// One sample: the number at this index, which holds an `i64` (a gauge that may dip
    /// below zero in a race is written as it is).
    Signed(usize),
    /// Five samples, by status class (`response_code_class` 1 to 5).
    Classes,
    /// One sample per exact status code seen (`response_code`).
    Codes,
}

/// One family: its name, type and help, and where its samples come from.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: Value,
}

const fn family(
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: Value,
) -> Family {
    Family {
        name,
        kind,
        help,
        value,
    }
}

// A host's numbers, read once (`Numbers::of`), at these indexes.
const RQ_TOTAL: usize = 0;
const RQ_ERROR: usize = 1;
const RQ_TIMEOUT: usize = 2;
const CX_TOTAL: usize = 3;
const CX_CONNECT_FAIL: usize = 4;
const CX_ACTIVE: usize = 5;
const CLASSES: usize = 6; // 6..11: classes 1 to 5
const RQ_ACTIVE: usize = 11;
const HEALTHY: usize = 12;
const FAILED_ACTIVE_HC: usize = 13;
const EJECTED: usize = 14;
const WEIGHT: usize = 15;
const IDLE: usize = 16;
const BUSY_AT: usize = 17;
const NUMBERS: usize = 18;

const BEFORE_CODES: [Family; 7] = [
    family(
        "meshplane_host_rq_total",
        "counter",
        "host: requests",
        Value::One(RQ_TOTAL),
    ),
    family(
        "meshplane_host_rq_error_total",
        "counter",
        "host: requests with no response (connect failure, reset, timeout)",
        Value::One(RQ_ERROR),
    ),
    family(
        "meshplane_host_rq_timeout_total",
        "counter",
        "host: requests that timed out",
        Value::One(RQ_TIMEOUT),
    ),
    family(
        "meshplane_host_cx_total",
        "counter",
        "host: connections",
        Value::One(CX_TOTAL),
    ),
    family(
        "meshplane_host_cx_connect_fail_total",
        "counter",
        "host: connection attempts that failed",
        Value::One(CX_CONNECT_FAIL),
    ),
    family(
        "meshplane_host_cx_active",
        "gauge",
        "host: open connections",
        Value::Signed(CX_ACTIVE),
    ),
    family(
        "meshplane_host_rq_xx_total",
        "counter",
        "host: responses by status class",
        Value::Classes,
    ),
];

const CODES: Family = family(
    "meshplane_host_rq_code_total",
    "counter",
    "host: responses by exact status code",
    Value::Codes,
);

const AFTER_CODES: [Family; 6] = [
    family(
        "meshplane_host_rq_active",
        "gauge",
        "host: requests in flight",
        Value::One(RQ_ACTIVE),
    ),
    family(
        "meshplane_host_healthy",
        "gauge",
        "host: 1 if the host is healthy",
        Value::One(HEALTHY),
    ),
    family(
        "meshplane_host_failed_active_hc",
        "gauge",
        "host: 1 if active health checking failed the host",
        Value::One(FAILED_ACTIVE_HC),
    ),
    family(
        "meshplane_host_ejected",
        "gauge",
        "host: 1 if outlier detection has ejected the host",
        Value::One(EJECTED),
    ),
    family(
        "meshplane_host_weight",
        "gauge",
        "host: the host's load-balancing weight",
        Value::One(WEIGHT),
    ),
    family(
        "meshplane_host_idle_connections",
        "gauge",
        "host: idle pooled connections",
        Value::One(IDLE),
    ),
];

/// Function clusters' hosts only, after all the others (`HostSet` JSON order).
const BUSY: Family = family(
    "meshplane_host_busy",
    "gauge",
    "host: 1 if the function instance is serving a request",
    Value::One(BUSY_AT),
);

/// A Prometheus label value, escaped (backslash, double quote, newline).
fn escape(value: &str, out: &mut String) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One host's numbers and labels, read once: the text is written from these alone, so it can
/// be measured before it is written (`HostFamilies::len`) and comes out the same both times.
struct Numbers {
    /// `{cluster="…",host="…"} `: what a sample without labels of its own has between its
    /// name and its number (`open` is it without the closing `} `).
    labels: String,
    values: [u64; NUMBERS],
    codes: Vec<(u16, u64)>,
    function: bool,
}

impl Numbers {
    /// `{cluster="…",host="…"`, for samples with one more label.
    fn open(&self) -> &[u8] {
        &self.labels.as_bytes()[..self.labels.len() - 2]
    }

    fn of(cluster: &Cluster, host: &Host, weight: u32) -> Numbers {
        let mut labels = String::from("{cluster=\"");
        escape(&cluster.name, &mut labels);
        labels.push_str("\",host=\"");
        escape(&host.name, &mut labels);
        labels.push_str("\"} ");
        let s = &host.stats;
        let mut values = [0u64; NUMBERS];
        values[RQ_TOTAL] = s.rq_total.get();
        values[RQ_ERROR] = s.rq_error.get();
        values[RQ_TIMEOUT] = s.rq_timeout.get();
        values[CX_TOTAL] = s.cx_total.get();
        values[CX_CONNECT_FAIL] = s.cx_connect_fail.get();
        values[CX_ACTIVE] = s.cx_active.get() as u64; // an i64's bits (`Value::Signed`)
        for class in 1..=5 {
            values[CLASSES + class - 1] = s.rq.class(class);
        }
        values[RQ_ACTIVE] = u64::from(host.active.load(Relaxed));
        values[HEALTHY] = u64::from(host.healthy());
        values[FAILED_ACTIVE_HC] = u64::from(host.failed_active_hc.load(Relaxed));
        values[EJECTED] = u64::from(host.ejected.load(Relaxed));
        values[WEIGHT] = u64::from(weight);
        values[IDLE] = host.pool.idle_count() as u64;
        values[BUSY_AT] = u64::from(host.claimed.load(Relaxed));
        Numbers {
            labels,
            values,
            codes: s.rq.codes().collect(),
            function: cluster.function.is_some(),
        }
    }
}

/// Where the text goes: counted (`Count`) or written (`Write`).
trait Out {
    fn put(&mut self, text: &[u8]);
    fn number(&mut self, n: u64);
    /// `n` and a newline.
    fn number_line(&mut self, n: u64);
}

/// Counts the bytes the text takes.
struct Count(usize);

impl Out for Count {
    fn put(&mut self, text: &[u8]) {
        self.0 += text.len();
    }

    fn number(&mut self, n: u64) {
        self.0 += n.checked_ilog10().map_or(1, |d| d as usize + 1);
    }

    fn number_line(&mut self, n: u64) {
        self.number(n);
        self.0 += 1;
    }
}

/// Writes the text into a buffer of exactly its size.
struct Write<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Out for Write<'_> {
    fn put(&mut self, text: &[u8]) {
        self.buf[self.at..self.at + text.len()].copy_from_slice(text);
        self.at += text.len();
    }

    fn number(&mut self, n: u64) {
        let mut digits = [0; 21];
        let digits = decimal(n, &mut digits, 0);
        self.put(digits);
    }

    fn number_line(&mut self, n: u64) {
        let mut digits = [0; 21];
        let digits = decimal(n, &mut digits, 1);
        self.put(digits);
    }
}

/// `n` in decimal, in the end of `buf`, followed by `newlines` (0 or 1) newline.
fn decimal(mut n: u64, buf: &mut [u8; 21], newlines: usize) -> &[u8] {
    let end = buf.len() - 1 + newlines;
    buf[buf.len() - 1] = b'\n';
    let mut at = buf.len() - 1;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..end];
        }
    }
}

/// Every family a text may have, in no particular order: `HostFamilies` counts each one's
/// lines for each part of the hosts before it knows which it writes where.
const ALL: [&Family; 15] = [
    &BEFORE_CODES[0],
    &BEFORE_CODES[1],
    &BEFORE_CODES[2],
    &BEFORE_CODES[3],
    &BEFORE_CODES[4],
    &BEFORE_CODES[5],
    &BEFORE_CODES[6],
    &CODES,
    &AFTER_CODES[0],
    &AFTER_CODES[1],
    &AFTER_CODES[2],
    &AFTER_CODES[3],
    &AFTER_CODES[4],
    &AFTER_CODES[5],
    &BUSY,
];

/// Hosts from which the numbers are read and the text written in two parts at once (one on
/// a thread of its own), each part a contiguous range of hosts.
const HOSTS_PER_PART: usize = 2048;

/// The `meshplane_host_*` families of a set of clusters, read once (every host's numbers),
/// measured (`len`), and written where the caller wants them (`write`, `text`).
// NOTE: `Core.host_metrics()` writes straight into a bytes object of the measured size: with
// 10,000 hosts (~12 MB) the render with `fmt` and the copy into the bytes were ~18 + 2 ms of
// the calling thread (on the Trio loop for the synchronous `Proxy.host_metrics()`). Numbers
// read once, written without `fmt`, no intermediate copy, and the hosts in two parts on two
// threads (the text is family by family, so each family's part of each range of hosts has its
// own place, known from the counts) make it a fraction of that (benches/README.md, control
// plane, seventh pass).
pub struct HostFamilies {
    /// Every host's numbers, in the text's order, in parts of contiguous hosts.
    parts: Vec<Vec<Numbers>>,
    /// The families in the text's order (indexes into `ALL`).
    order: Vec<usize>,
    /// The bytes of each family's (in `ALL`) lines of each part: `lines[part][family]`.
    lines: Vec<[usize; ALL.len()]>,
}

impl HostFamilies {
    /// Every host's numbers now (clusters by name, hosts by name).
    pub fn read(clusters: &[Arc<Cluster>]) -> HostFamilies {
        let mut clusters: Vec<&Arc<Cluster>> = clusters.iter().collect();
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let sets: Vec<Arc<HostSet>> = clusters.iter().map(|c| c.hosts.load_full()).collect();
        let mut members: Vec<(&Cluster, &Arc<Host>, u32)> = Vec::new();
        for (cluster, set) in clusters.iter().zip(&sets) {
            members.extend(set.by_name().map(|m| (&***cluster, &m.host, m.weight)));
        }
        let read = |hosts: &[(&Cluster, &Arc<Host>, u32)]| {
            let numbers: Vec<Numbers> = hosts
                .iter()
                .map(|&(c, h, w)| Numbers::of(c, h, w))
                .collect();
            let mut lines = [0; ALL.len()];
            for (family, n) in ALL.iter().zip(lines.iter_mut()) {
                let mut count = Count(0);
                for h in &numbers {
                    Self::samples(&mut count, family, h);
                }
                *n = count.0;
            }
            (numbers, lines)
        };
        let (parts, lines): (Vec<_>, Vec<_>) = if members.len() < 2 * HOSTS_PER_PART {
            std::iter::once(read(&members)).unzip()
        } else {
            let (first, second) = members.split_at(members.len() / 2);
            std::thread::scope(|s| {
                let other = s.spawn(|| read(second));
                let mine = read(first);
                [mine, other.join().expect("reading host numbers")]
            })
            .into_iter()
            .unzip()
        };
        let order = Self::order(&parts);
        HostFamilies {
            parts,
            order,
            lines,
        }
    }

    /// The families in the order the renderer writes them (indexes into `ALL`).
    fn order(parts: &[Vec<Numbers>]) -> Vec<usize> {
        let hosts = || parts.iter().flatten();
        let Some(first) = hosts().next() else {
            return Vec::new();
        };
        let at = |f: &Family| ALL.iter().position(|&a| a.name == f.name).expect("in ALL");
        // A family is placed where the renderer first sees it: the exact codes with the first
        // host that has a code, `busy` with the first host of a function cluster (the last of
        // its stats); families first seen with a later host follow all of the first host's.
        let codes_early = !first.codes.is_empty();
        let mut late: Vec<(usize, u8, usize)> = Vec::new();
        if !codes_early {
            if let Some(i) = hosts().position(|h| !h.codes.is_empty()) {
                late.push((i, 0, at(&CODES)));
            }
        }
        if let Some(i) = hosts().position(|h| h.function) {
            late.push((i, 1, at(&BUSY)));
        }
        late.sort_by_key(|&(i, n, _)| (i, n));
        let mut order: Vec<usize> = BEFORE_CODES.iter().map(at).collect();
        if codes_early {
            order.push(at(&CODES));
        }
        order.extend(AFTER_CODES.iter().map(at));
        order.extend(late.into_iter().map(|(_, _, f)| f));
        order
    }

    fn header_len(family: &Family) -> usize {
        let mut count = Count(0);
        Self::header(&mut count, family);
        count.0
    }

    /// The text's length in bytes.
    pub fn len(&self) -> usize {
        self.order
            .iter()
            .map(|&f| Self::header_len(ALL[f]) + self.lines.iter().map(|l| l[f]).sum::<usize>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Write the text into `buf`, which must be `len()` bytes long.
    pub fn write(&self, buf: &mut [u8]) {
        assert_eq!(buf.len(), self.len(), "a buffer of the text's length");
        // Each part's places: its lines of each family, in order (the first part's places
        // begin with the family's header).
        let mut places: Vec<Vec<&mut [u8]>> = self.parts.iter().map(|_| Vec::new()).collect();
        let mut rest = buf;
        for &f in &self.order {
            for (part, lines) in self.lines.iter().enumerate() {
                let len = lines[f]
                    + if part == 0 {
                        Self::header_len(ALL[f])
                    } else {
                        0
                    };
                let (place, after) = std::mem::take(&mut rest).split_at_mut(len);
                places[part].push(place);
                rest = after;
            }
        }
        let write = |part: usize, places: Vec<&mut [u8]>| {
            for (&f, place) in self.order.iter().zip(places) {
                let family = ALL[f];
                let mut out = Write { buf: place, at: 0 };
                if part == 0 {
                    Self::header(&mut out, family);
                }
                for h in &self.parts[part] {
                    Self::samples(&mut out, family, h);
                }
                debug_assert_eq!(out.at, out.buf.len());
            }
        };
        let mut places = places.into_iter().enumerate();
        let first = places.next();
        std::thread::scope(|s| {
            for (part, places) in places {
                s.spawn(move || write(part, places));
            }
            if let Some((part, places)) = first {
                write(part, places);
            }
        });
    }

    /// The text.
    pub fn text(&self) -> String {
        let mut buf = vec![0; self.len()];
        self.write(&mut buf);
        String::from_utf8(buf).expect("the labels are text, the rest ASCII")
    }

    fn header(out: &mut impl Out, family: &Family) {
        for (what, value) in [("# HELP ", family.help), ("# TYPE ", family.kind)] {
            out.put(what.as_bytes());
            out.put(family.name.as_bytes());
            out.put(b" ");
            out.put(value.as_bytes());
            out.put(b"\n");
        }
    }

    /// Host `h`'s samples of `family` (none of `busy` unless it is a function's): each
    /// `name{labels[,label="value"]} n` and a newline.
    // NOTE: a few copies per line, each of a piece made beforehand (240,000 lines with 10,000
    // hosts: each copy less is ~1 ms).
    fn samples(out: &mut impl Out, family: &Family, h: &Numbers) {
        let name = family.name.as_bytes();
        match family.value {
            Value::One(i) => {
                if i != BUSY_AT || h.function {
                    out.put(name);
                    out.put(h.labels.as_bytes());
                    out.number_line(h.values[i]);
                }
            }
            Value::Signed(i) => {
                let n = h.values[i] as i64;
                out.put(name);
                if n < 0 {
                    out.put(h.open());
                    out.put(b"} -");
                } else {
                    out.put(h.labels.as_bytes());
                }
                out.number_line(n.unsigned_abs());
            }
            Value::Classes => {
                const CLASS: [&[u8]; 5] = [
                    b",response_code_class=\"1\"} ",
                    b",response_code_class=\"2\"} ",
                    b",response_code_class=\"3\"} ",
                    b",response_code_class=\"4\"} ",
                    b",response_code_class=\"5\"} ",
                ];
                for (class, label) in CLASS.iter().enumerate() {
                    out.put(name);
                    out.put(h.open());
                    out.put(label);
                    out.number_line(h.values[CLASSES + class]);
                }
            }
            Value::Codes => {
                for &(code, n) in &h.codes {
                    out.put(name);
                    out.put(h.open());
                    out.put(b",response_code=\"");
                    out.number(u64::from(code));
                    out.put(b"\"} ");
                    out.number_line(n);
                }
            }
        }
    }
}

/// The `meshplane_host_*` families of `clusters` (in any order) as exposition text; empty if
/// no cluster has a host. Hosts of function clusters have `meshplane_host_busy` too.
pub fn host_families(clusters: &[Arc<Cluster>]) -> String {
    HostFamilies::read(clusters).text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_counted_as_they_are_written() {
        // The text is measured (`Count`) before it is written (`Write`) into a buffer of
        // exactly that size: both must agree at every digit boundary.
        let mut edges = vec![0, u64::MAX, u64::MAX / 10];
        for d in 0..20 {
            let p = 10u64.pow(d);
            edges.extend([p - 1, p, p + 1]);
        }
        for n in edges {
            let mut count = Count(0);
            count.number(n);
            count.number_line(n);
            let mut buf = vec![0; count.0];
            let mut out = Write {
                buf: &mut buf,
                at: 0,
            };
            out.number(n);
            out.number_line(n);
            assert_eq!(out.at, out.buf.len());
            assert_eq!(std::str::from_utf8(&buf).unwrap(), format!("{n}{n}\n"));
        }
    }

    #[test]
    fn labels_are_escaped() {
        let mut out = String::new();
        escape("plain-name:80", &mut out);
        escape("a\\b\"c\nd", &mut out);
        assert_eq!(out, "plain-name:80a\\\\b\\\"c\\nd");
    }
}
