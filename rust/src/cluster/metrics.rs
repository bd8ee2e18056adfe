//! The per-host families of the Prometheus exposition (`meshplane_host_*`), written from the
//! hosts themselves: a scrape of 10,000 hosts builds no per-host JSON value or Python object.
//!
//! The text is exactly what `meshplane.admin.prometheus.render` writes for the hosts of a
//! `Core.stats()` copy (tests/unit/test_prometheus.py and the e2e scrape tests compare them):
//! families in first-seen order (clusters by name, hosts by name, a host's stats in
//! `HostRow::map` order), each with its `# HELP` and `# TYPE` lines.

use super::{Cluster, Host, HostSet};
use std::fmt::Write;
use std::sync::Arc;

/// One family: its name, type and help, and how to write one host's samples.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: fn(&mut String, &str, &Host, u32),
}

fn value(out: &mut String, family: &str, labels: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "{family}{{{labels}}} {v}");
}

macro_rules! family {
    ($name:literal, $kind:literal, $help:literal, |$h:ident, $w:ident| $v:expr) => {
        Family {
            name: $name,
            kind: $kind,
            help: $help,
            samples: |out, labels, $h, $w| {
                let _ = (&$h, $w);
                value(out, $name, labels, $v)
            },
        }
    };
}

const BEFORE_CODES: [Family; 7] = [
    family!(
        "meshplane_host_rq_total",
        "counter",
        "host: requests",
        |h, w| h.stats.rq_total.get()
    ),
    family!(
        "meshplane_host_rq_error_total",
        "counter",
        "host: requests with no response (connect failure, reset, timeout)",
        |h, w| h.stats.rq_error.get()
    ),
    family!(
        "meshplane_host_rq_timeout_total",
        "counter",
        "host: requests that timed out",
        |h, w| h.stats.rq_timeout.get()
    ),
    family!(
        "meshplane_host_cx_total",
        "counter",
        "host: connections",
        |h, w| h.stats.cx_total.get()
    ),
    family!(
        "meshplane_host_cx_connect_fail_total",
        "counter",
        "host: connection attempts that failed",
        |h, w| h.stats.cx_connect_fail.get()
    ),
    family!(
        "meshplane_host_cx_active",
        "gauge",
        "host: open connections",
        |h, w| h.stats.cx_active.get()
    ),
    Family {
        name: "meshplane_host_rq_xx_total",
        kind: "counter",
        help: "host: responses by status class",
        samples: |out, labels, h, _| {
            for class in 1..=5 {
                let _ = writeln!(
                    out,
                    "meshplane_host_rq_xx_total{{{labels},response_code_class=\"{class}\"}} {}",
                    h.stats.rq.class(class)
                );
            }
        },
    },
];

const CODES: Family = Family {
    name: "meshplane_host_rq_code_total",
    kind: "counter",
    help: "host: responses by exact status code",
    samples: |out, labels, h, _| {
        for (code, n) in h.stats.rq.codes() {
            let _ = writeln!(
                out,
                "meshplane_host_rq_code_total{{{labels},response_code=\"{code}\"}} {n}"
            );
        }
    },
};

const AFTER_CODES: [Family; 6] = [
    family!(
        "meshplane_host_rq_active",
        "gauge",
        "host: requests in flight",
        |h, w| h.active.load(std::sync::atomic::Ordering::Relaxed)
    ),
    family!(
        "meshplane_host_healthy",
        "gauge",
        "host: 1 if the host is healthy",
        |h, w| u8::from(h.healthy())
    ),
    family!(
        "meshplane_host_failed_active_hc",
        "gauge",
        "host: 1 if active health checking failed the host",
        |h, w| u8::from(
            h.failed_active_hc
                .load(std::sync::atomic::Ordering::Relaxed)
        )
    ),
    family!(
        "meshplane_host_ejected",
        "gauge",
        "host: 1 if outlier detection has ejected the host",
        |h, w| u8::from(h.ejected.load(std::sync::atomic::Ordering::Relaxed))
    ),
    family!(
        "meshplane_host_weight",
        "gauge",
        "host: the host's load-balancing weight",
        |h, w| w
    ),
    family!(
        "meshplane_host_idle_connections",
        "gauge",
        "host: idle pooled connections",
        |h, w| h.pool.idle_count()
    ),
];

/// Function clusters' hosts only, after all the others (`HostSet` JSON order).
const BUSY: Family = family!(
    "meshplane_host_busy",
    "gauge",
    "host: 1 if the function instance is serving a request",
    |h, w| u8::from(h.claimed.load(std::sync::atomic::Ordering::Relaxed))
);

/// A Prometheus label value, escaped (backslash, double quote, newline).
fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The `meshplane_host_*` families of `clusters` (in any order) as exposition text; empty if
/// no cluster has a host. Hosts of function clusters have `meshplane_host_busy` too.
pub fn host_families(clusters: &[Arc<Cluster>]) -> String {
    let mut clusters: Vec<&Arc<Cluster>> = clusters.iter().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    // (labels, host, weight, of a function cluster) of every host, in the order the samples go.
    let sets: Vec<Arc<HostSet>> = clusters.iter().map(|c| c.hosts.load_full()).collect();
    let mut rows: Vec<Row> = Vec::new();
    for (cluster, set) in clusters.iter().zip(&sets) {
        let mut hosts: Vec<_> = set.hosts.iter().collect();
        hosts.sort_by(|a, b| a.host.name.cmp(&b.host.name));
        for m in hosts {
            let mut labels = String::from("cluster=\"");
            escape(&cluster.name, &mut labels);
            labels.push_str("\",host=\"");
            escape(&m.host.name, &mut labels);
            labels.push('"');
            rows.push(Row {
                labels,
                host: &m.host,
                weight: m.weight,
                function: cluster.function.is_some(),
            });
        }
    }
    let Some(first) = rows.first() else {
        return String::new();
    };
    // A family is placed where the renderer first sees it: the exact codes with the first host
    // that has a code, `busy` with the first host of a function cluster (the last of its
    // stats); families first seen with a later host follow all of the first host's.
    let has_codes = |r: &Row| r.host.stats.rq.codes().next().is_some();
    let codes_early = has_codes(first);
    let mut late: Vec<(usize, u8, &Family)> = Vec::new();
    if !codes_early {
        if let Some(i) = rows.iter().position(has_codes) {
            late.push((i, 0, &CODES));
        }
    }
    let busy_at = rows.iter().position(|r| r.function);
    if let Some(i) = busy_at {
        late.push((i, 1, &BUSY));
    }
    late.sort_by_key(|&(i, n, _)| (i, n));
    let mut order: Vec<&Family> = BEFORE_CODES.iter().collect();
    if codes_early {
        order.push(&CODES);
    }
    order.extend(AFTER_CODES.iter());
    order.extend(late.into_iter().map(|(_, _, f)| f));
    let mut out = String::with_capacity(rows.len() * 1300);
    for family in order {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        let only_functions = family.name == BUSY.name;
        for r in &rows {
            if !only_functions || r.function {
                (family.samples)(&mut out, &r.labels, r.host, r.weight);
            }
        }
    }
    out
}

struct Row<'a> {
    labels: String,
    host: &'a Arc<Host>,
    weight: u32,
    function: bool,
}
