//! Every host's part of the admin API's `/stats?format=json` and `/clusters` (text and JSON),
//! written by the core as text exactly as the Python renderers wrote it from one dict per host
//! (`meshplane.admin.server`), so with 10,000 hosts no per-host Python object is made: the
//! admin API encodes the rest of the document and splices these in.
//!
//! What the control layer knows of a host (its health checker's and outlier detector's state)
//! comes in as `Notes`.

use super::{Cluster, FastHash, Member};
use crate::stats::pyjson::{newline, write_entries, write_f64, write_object, write_str};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

/// The control layer's view of one host.
#[derive(Default, Debug, Clone)]
pub struct HostNote {
    /// `active_hc`: state, last_result, consecutive_healthy, consecutive_unhealthy.
    pub active_hc: Option<Map<String, Value>>,
    /// `outlier`: the outlier detector's entry, as it gives it.
    pub outlier: Option<Map<String, Value>>,
    /// The last probe timed out (Envoy's `/active_hc_timeout` flag).
    pub hc_timeout: bool,
}

/// The control layer's view of every host it tracks, by cluster and host name.
#[derive(Default, Debug)]
pub struct Notes {
    pub hosts: HashMap<String, HashMap<String, HostNote>>,
    /// Whether `/stats` hosts carry `health_flags` (the control layer's drivers run).
    pub health_flags: bool,
    /// Outlier views in sparse form, by cluster: a host they list without an `outlier` of its
    /// own in `hosts` has theirs (`expand_outliers` gives each its note).
    pub outliers: HashMap<String, SparseOutliers>,
}

/// An outlier detector's view of one cluster's hosts in sparse form (Python's
/// `OutlierEjections.sparse`): every host of `keys` whose note has no `outlier` of its own
/// has `clean` (the entry of a host that is as new), so that only the others need one.
#[derive(Default, Debug, Clone)]
pub struct SparseOutliers {
    pub keys: Arc<PackedKeys>,
    pub clean: Map<String, Value>,
}

impl Notes {
    fn get(&self, cluster: &str, host: &str) -> Option<&HostNote> {
        self.hosts.get(cluster)?.get(host)
    }

    /// Add a cluster's health-check view given in compact form: each host's `active_hc`
    /// (state, last_result, consecutive_healthy, consecutive_unhealthy) and timeout flag.
    pub fn add_health(&mut self, cluster: String, packed: PackedHealth) {
        let hosts = self.hosts.entry(cluster).or_default();
        for (i, key) in packed.keys.iter().enumerate() {
            if let Some(view) = packed.view(i) {
                let note = hosts.entry(key.to_owned()).or_default();
                note.set_health(view);
            }
        }
    }
}

impl Notes {
    /// Give every host of the sparse outlier views (`outliers`) its note's `outlier`.
    pub fn expand_outliers(&mut self) {
        for (cluster, sparse) in std::mem::take(&mut self.outliers) {
            let hosts = self.hosts.entry(cluster).or_default();
            for key in sparse.keys.iter() {
                let note = hosts.entry(key.to_owned()).or_default();
                if note.outlier.is_none() {
                    note.outlier = Some(sparse.clean.clone());
                }
            }
        }
    }
}

impl HostNote {
    /// The health checker's part of the note: `active_hc` and the timeout flag.
    fn set_health(&mut self, (active, timeout): (Map<String, Value>, bool)) {
        self.hc_timeout = timeout;
        self.active_hc = Some(active);
    }
}

/// A health checker's view of one cluster's hosts in compact form (Python's
/// `HealthChecker.pack`), so that no object per host is made to pass it: `FIELDS` numbers per
/// key of `keys`: the state and the last result as indexes into `names` (None: null), the
/// consecutive healthy and unhealthy counts, and 1 when the health flags say
/// `active_hc_timeout`. A key whose first number is `ABSENT` is no host (any more).
#[derive(Default, Debug)]
pub struct PackedHealth {
    pub keys: Arc<PackedKeys>,
    pub records: Vec<u64>,
    pub names: Vec<Option<String>>,
}

/// The keys of a compact health view, with an index of where each is, made when first asked
/// for. Shared (`Arc`) so that a view whose keys did not change since the last one reuses
/// them: the control layer keeps the same keys while a cluster's hosts stay (`py::core`).
#[derive(Default, Debug)]
pub struct PackedKeys {
    keys: Vec<String>,
    index: OnceLock<HashMap<String, usize, FastHash>>,
}

impl PackedKeys {
    pub fn new(keys: Vec<String>) -> PackedKeys {
        PackedKeys {
            keys,
            index: OnceLock::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
    }

    /// Where `key` is (a key given twice: its last place, as `Notes::add_health` takes it).
    pub fn position(&self, key: &str) -> Option<usize> {
        self.index
            .get_or_init(|| {
                let mut index =
                    HashMap::with_capacity_and_hasher(self.keys.len(), FastHash::default());
                for (i, k) in self.keys.iter().enumerate() {
                    index.insert(k.clone(), i);
                }
                index
            })
            .get(key)
            .copied()
    }
}

impl PackedHealth {
    pub const FIELDS: usize = 5;
    pub const ABSENT: u64 = u64::MAX;

    /// The `active_hc` object and the timeout flag of the host at `i` (None if it is absent).
    fn view(&self, i: usize) -> Option<(Map<String, Value>, bool)> {
        let r = self.records.get(i * Self::FIELDS..(i + 1) * Self::FIELDS)?;
        if r[0] == Self::ABSENT {
            return None;
        }
        let name = |i: u64| -> Value {
            usize::try_from(i)
                .ok()
                .and_then(|i| self.names.get(i).cloned().flatten())
                .map_or(Value::Null, Value::String)
        };
        let mut active = Map::new();
        active.insert("state".into(), name(r[0]));
        active.insert("last_result".into(), name(r[1]));
        active.insert("consecutive_healthy".into(), Value::from(r[2]));
        active.insert("consecutive_unhealthy".into(), Value::from(r[3]));
        Some((active, r[4] != 0))
    }
}

/// Envoy's health flags of a host: `healthy`, or `/failed_active_hc` (with
/// `/active_hc_timeout`), `/failed_outlier_check` as they apply.
fn health_flags(stats: &Map<String, Value>, timeout: bool) -> String {
    let flag = |k: &str| stats.get(k).is_some_and(truthy);
    let mut flags = String::new();
    if flag("failed_active_hc") {
        flags.push_str("/failed_active_hc");
        if timeout {
            flags.push_str("/active_hc_timeout");
        }
    }
    if flag("ejected") {
        flags.push_str("/failed_outlier_check");
    }
    if flags.is_empty() && !stats.get("healthy").is_none_or(truthy) {
        flags.push_str("/failed_active_hc");
    }
    if flags.is_empty() {
        flags.push_str("healthy");
    }
    flags
}

/// Python's truth value of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `str()` of a JSON value (what an f-string writes).
fn py_str(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::String(s) => out.push_str(s),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.is_nan() {
                out.push_str("nan");
            } else if x.is_infinite() {
                out.push_str(if x > 0.0 { "inf" } else { "-inf" });
            } else {
                write_f64(out, x);
            }
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// An integer stat (Python `int`, not `bool`).
fn is_int(v: &Value) -> bool {
    matches!(v, Value::Number(n) if !n.is_f64())
}

/// `datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")`.
fn unix_to_iso(out: &mut String, t: f64) {
    // As CPython: whole seconds and microseconds rounded half to even, then cut to ms.
    let mut secs = t.trunc();
    let mut us = ((t - secs) * 1e6).round_ties_even();
    if us >= 1e6 {
        us -= 1e6;
        secs += 1.0;
    } else if us < 0.0 {
        us += 1e6;
        secs -= 1.0;
    }
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::accesslog::civil_from_days(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        us as i64 / 1000
    );
}

/// One host's stats with what the control layer adds (`/stats`): `active_hc`, `outlier` and
/// `health_flags`, in that order, after the core's own.
fn annotated(cluster: &Cluster, m: &Member, notes: &Notes) -> Map<String, Value> {
    HostRow::of(cluster, m).annotated(notes.get(&cluster.name, &m.host.name), notes.health_flags)
}

/// Names of `HostRow::counters`, in the order a host's stats list them.
const HOST_COUNTERS: [&str; 5] = [
    "rq_total",
    "rq_error",
    "rq_timeout",
    "cx_total",
    "cx_connect_fail",
];

/// One host's stats at one moment as plain numbers, copied without building a map (a
/// `HostTable` keeps 10,000 of them); `map` makes the object every stats reader sees, so
/// `Cluster::host_stats`, the admin API's texts and the tables share one spelling.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRow {
    pub name: Arc<str>,
    counters: [u64; 5],
    cx_active: i64,
    classes: [u64; 5],
    /// (code, count) of every exact code seen, in code order.
    codes: Vec<(u16, u64)>,
    rq_active: u32,
    healthy: bool,
    failed_active_hc: bool,
    ejected: bool,
    weight: u32,
    idle_connections: usize,
    /// Function clusters only: serving a request now.
    busy: Option<bool>,
}

impl HostRow {
    pub fn of(cluster: &Cluster, Member { host: h, weight }: &Member) -> HostRow {
        let s = &h.stats;
        HostRow {
            name: h.name.clone(),
            counters: [
                s.rq_total.get(),
                s.rq_error.get(),
                s.rq_timeout.get(),
                s.cx_total.get(),
                s.cx_connect_fail.get(),
            ],
            cx_active: s.cx_active.get(),
            classes: std::array::from_fn(|i| s.rq.class(i + 1)),
            codes: s.rq.codes().collect(),
            rq_active: h.active.load(Relaxed),
            healthy: h.healthy(),
            failed_active_hc: h.failed_active_hc.load(Relaxed),
            ejected: h.ejected.load(Relaxed),
            weight: *weight,
            idle_connections: h.pool.idle_count(),
            busy: cluster.function.is_some().then(|| h.claimed.load(Relaxed)),
        }
    }

    /// The host's stats (docs/stats.md: `clusters.<name>.hosts.<host>`).
    pub fn map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in HOST_COUNTERS.iter().zip(self.counters) {
            m.insert((*k).into(), v.into());
        }
        m.insert("cx_active".into(), self.cx_active.into());
        for (i, n) in self.classes.iter().enumerate() {
            m.insert(format!("rq_{}xx", i + 1), (*n).into());
        }
        let codes = self
            .codes
            .iter()
            .map(|(code, n)| (code.to_string(), Value::from(*n)))
            .collect();
        m.insert("rq_codes".into(), Value::Object(codes));
        m.insert("rq_active".into(), self.rq_active.into());
        m.insert("healthy".into(), self.healthy.into());
        m.insert("failed_active_hc".into(), self.failed_active_hc.into());
        m.insert("ejected".into(), self.ejected.into());
        m.insert("weight".into(), self.weight.into());
        m.insert("idle_connections".into(), self.idle_connections.into());
        if let Some(busy) = self.busy {
            m.insert("busy".into(), busy.into());
        }
        m
    }

    /// `map()` with the control layer's view of the host (`note`) and, when its drivers
    /// run (`health_flags`), Envoy's health flags.
    pub fn annotated(&self, note: Option<&HostNote>, health_flags: bool) -> Map<String, Value> {
        let mut stats = self.map();
        if let Some(note) = note {
            if let Some(hc) = &note.active_hc {
                stats.insert("active_hc".into(), Value::Object(hc.clone()));
            }
            if let Some(od) = &note.outlier {
                stats.insert("outlier".into(), Value::Object(od.clone()));
            }
        }
        if health_flags {
            let flags = self::health_flags(&stats, note.is_some_and(|n| n.hc_timeout));
            stats.insert("health_flags".into(), Value::String(flags));
        }
        stats
    }
}

/// One cluster's hosts at one moment (`Core.stats()`'s `HostTable`): a row of numbers per
/// host in the cluster's order, and the control layer's view of them; each host's object is
/// made when asked for.
#[derive(Debug, Default)]
pub struct HostRows {
    rows: Vec<HostRow>,
    index: HashMap<Arc<str>, usize>,
    notes: HashMap<String, HostNote>,
    /// The health checker's view in compact form (with where each host's record is):
    /// unpacked when a host is read (no object per host made for the copy).
    packed: PackedHealth,
    /// The outlier detector's view in sparse form, for the hosts without an entry in `notes`.
    outliers: Option<SparseOutliers>,
    health_flags: bool,
}

impl HostRows {
    /// `cluster`'s hosts now, with its part of `notes` (taken out of them) and its health
    /// view in compact form (`packed`), which overrides a note's.
    pub fn of(cluster: &Cluster, notes: &mut Notes, packed: Option<PackedHealth>) -> HostRows {
        let set = cluster.hosts.load();
        let mut rows: Vec<HostRow> = Vec::with_capacity(set.hosts.len());
        let mut index = HashMap::with_capacity(set.hosts.len());
        for m in set.hosts.iter() {
            let row = HostRow::of(cluster, m);
            // An address listed twice has one entry, where it first appears, with the last
            // one's numbers (as a map of host name to stats has).
            match index.entry(row.name.clone()) {
                std::collections::hash_map::Entry::Occupied(at) => rows[*at.get()] = row,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(rows.len());
                    rows.push(row);
                }
            }
        }
        HostRows {
            rows,
            index,
            notes: notes.hosts.remove(&*cluster.name).unwrap_or_default(),
            packed: packed.unwrap_or_default(),
            outliers: notes.outliers.remove(&*cluster.name),
            health_flags: notes.health_flags,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Host names, in the cluster's order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|r| &*r.name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The stats of host `name` (with the control layer's view).
    pub fn get(&self, name: &str) -> Option<Map<String, Value>> {
        self.index.get(name).map(|&i| self.object(&self.rows[i]))
    }

    /// Every host's stats, in the cluster's order.
    pub fn objects(&self) -> impl Iterator<Item = (&str, Map<String, Value>)> {
        self.rows.iter().map(|r| (&*r.name, self.object(r)))
    }

    fn object(&self, row: &HostRow) -> Map<String, Value> {
        let note = self.notes.get(&*row.name);
        let health = self
            .packed
            .keys
            .position(&row.name)
            .and_then(|i| self.packed.view(i));
        let clean = self.outliers.as_ref().filter(|o| {
            note.is_none_or(|n| n.outlier.is_none()) && o.keys.position(&row.name).is_some()
        });
        if health.is_none() && clean.is_none() {
            return row.annotated(note, self.health_flags);
        }
        let mut note = note.cloned().unwrap_or_default();
        if let Some(health) = health {
            note.set_health(health);
        }
        if let Some(sparse) = clean {
            note.outlier = Some(sparse.clean.clone());
        }
        row.annotated(Some(&note), self.health_flags)
    }
}

/// The value of `/stats?format=json`'s `clusters.<name>.hosts` (the key at nesting `depth`):
/// every host in the cluster's order.
pub fn hosts_json(cluster: &Cluster, notes: &Notes, depth: usize) -> String {
    let set = cluster.hosts.load();
    let mut out = String::with_capacity(set.hosts.len() * 720 + 2);
    if set.hosts.is_empty() {
        out.push_str("{}");
        return out;
    }
    for (i, m) in set.hosts.iter().enumerate() {
        out.push_str(if i == 0 { "{" } else { "," });
        newline(&mut out, depth + 1);
        write_str(&mut out, &m.host.name);
        out.push_str(": ");
        write_object(&mut out, &annotated(cluster, m, notes), depth + 1);
    }
    newline(&mut out, depth);
    out.push('}');
    out
}

fn sorted_members(cluster: &Cluster) -> Vec<Member> {
    cluster.hosts.load().by_name().cloned().collect()
}

/// `/clusters` text lines of every host (`cluster::host::stat::value`), clusters and hosts
/// sorted by name, each line ending in a newline.
pub fn clusters_text(clusters: &[Arc<Cluster>], notes: &Notes) -> String {
    let mut clusters: Vec<&Arc<Cluster>> = clusters.iter().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for cluster in clusters {
        for m in sorted_members(cluster) {
            let stats = cluster.host_stats(&m);
            let note = notes.get(&cluster.name, &m.host.name);
            let mut prefix = String::new();
            let _ = write!(prefix, "{}::{}", cluster.name, m.host.name);
            let mut keys: Vec<(&String, &Value)> = stats
                .iter()
                .filter(|(k, v)| is_int(v) && *k != "weight")
                .collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (key, value) in keys {
                let _ = writeln!(out, "{prefix}::{key}::{value}");
            }
            let timeout = note.is_some_and(|n| n.hc_timeout);
            let _ = writeln!(
                out,
                "{prefix}::health_flags::{}",
                health_flags(&stats, timeout)
            );
            if let Some(note) = note {
                resilience_lines(&mut out, &prefix, note);
            }
            let _ = writeln!(out, "{prefix}::weight::{}", m.weight);
        }
    }
    out
}

/// `/clusters` lines for what the health checker and outlier detector know of a host.
fn resilience_lines(out: &mut String, prefix: &str, note: &HostNote) {
    if let Some(hc) = &note.active_hc {
        let _ = write!(out, "{prefix}::active_hc_state::");
        py_str(out, hc.get("state").unwrap_or(&Value::Null));
        out.push('\n');
        if let Some(result) = hc.get("last_result").filter(|v| truthy(v)) {
            let _ = write!(out, "{prefix}::active_hc_last_result::");
            py_str(out, result);
            out.push('\n');
        }
    }
    if let Some(od) = &note.outlier {
        let _ = write!(out, "{prefix}::outlier_num_ejections::");
        py_str(out, od.get("num_ejections").unwrap_or(&Value::from(0)));
        out.push('\n');
        if od.get("ejected").is_some_and(truthy) {
            let _ = write!(out, "{prefix}::outlier_ejection_reason::");
            py_str(out, od.get("reason").unwrap_or(&Value::Null));
            out.push('\n');
            if let Some(until) = od.get("ejected_until").and_then(Value::as_f64) {
                let _ = write!(out, "{prefix}::outlier_ejected_until::");
                unix_to_iso(out, until);
                out.push('\n');
            }
        }
        if let Some(rate) = od.get("success_rate").and_then(Value::as_f64) {
            let _ = writeln!(out, "{prefix}::success_rate::{}", fixed_1(rate));
        }
    }
}

/// Python's `f"{x:.1f}"`: the exact binary value rounded half to even.
fn fixed_1(x: f64) -> String {
    format!("{x:.1}")
}

/// `/clusters?format=json`'s `host_statuses` of one cluster (the key at nesting `depth`):
/// hosts sorted by name.
pub fn host_statuses_json(cluster: &Cluster, notes: &Notes, depth: usize) -> String {
    let hosts = sorted_members(cluster);
    let mut out = String::with_capacity(hosts.len() * 800 + 2);
    if hosts.is_empty() {
        out.push_str("[]");
        return out;
    }
    for (i, m) in hosts.iter().enumerate() {
        out.push_str(if i == 0 { "[" } else { "," });
        newline(&mut out, depth + 1);
        let stats = cluster.host_stats(m);
        let note = notes.get(&cluster.name, &m.host.name);
        let counters: Map<String, Value> = stats
            .iter()
            .filter(|(k, v)| is_int(v) && *k != "weight")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let flag = |k: &str, default: bool| stats.get(k).map_or(default, truthy);
        let health = serde_json::json!({
            "healthy": flag("healthy", true),
            "failed_active_hc": flag("failed_active_hc", false),
            "ejected": flag("ejected", false),
            "flags": health_flags(&stats, note.is_some_and(|n| n.hc_timeout)),
        });
        let address = Value::String(m.host.name.to_string());
        let counters = Value::Object(counters);
        let weight = stats.get("weight").cloned().unwrap_or(Value::from(1));
        let mut entries: Vec<(&str, &Value)> = vec![
            ("address", &address),
            ("stats", &counters),
            ("health_status", &health),
            ("weight", &weight),
        ];
        let active_hc = note.and_then(|n| n.active_hc.clone()).map(Value::Object);
        if let Some(hc) = &active_hc {
            entries.push(("active_hc", hc));
        }
        let outlier = note.and_then(|n| n.outlier.clone()).map(|mut od| {
            if let Some(until) = od.get("ejected_until").and_then(Value::as_f64) {
                let mut iso = String::new();
                unix_to_iso(&mut iso, until);
                od.insert("ejected_until_iso".into(), Value::String(iso));
            }
            Value::Object(od)
        });
        if let Some(od) = &outlier {
            entries.push(("outlier", od));
        }
        write_entries(&mut out, entries.into_iter(), depth + 1);
    }
    newline(&mut out, depth);
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_match_python_datetime() {
        // Right-hand sides from Python's
        // datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").
        let cases = [
            (0.0, "1970-01-01T00:00:00.000+00:00"),
            (1_780_000_000.123, "2026-05-28T20:26:40.123+00:00"),
            (951_782_400.999_9, "2000-02-29T00:00:00.999+00:00"),
            (951_782_400.999_999_6, "2000-02-29T00:00:01.000+00:00"),
            (4_102_444_799.5, "2099-12-31T23:59:59.500+00:00"),
        ];
        for (t, want) in cases {
            let mut s = String::new();
            unix_to_iso(&mut s, t);
            assert_eq!(s, want, "{t}");
        }
    }

    #[test]
    fn one_decimal_rounds_the_exact_value_half_to_even() {
        // Python: f"{x:.1f}"
        let cases = [
            (0.25, "0.2"),
            (0.35, "0.3"),
            (12.5, "12.5"),
            (99.95, "100.0"),
            (0.05, "0.1"),
            (100.0, "100.0"),
        ];
        for (x, want) in cases {
            assert_eq!(fixed_1(x), want, "{x}");
        }
    }

    #[test]
    fn health_flags_follow_the_core_flags() {
        let host = |healthy: bool, hc: bool, ej: bool| {
            let v = serde_json::json!({"healthy": healthy, "failed_active_hc": hc, "ejected": ej});
            v.as_object().cloned().unwrap_or_default()
        };
        assert_eq!(health_flags(&host(true, false, false), false), "healthy");
        assert_eq!(
            health_flags(&host(false, true, true), true),
            "/failed_active_hc/active_hc_timeout/failed_outlier_check"
        );
        assert_eq!(
            health_flags(&host(false, false, false), false),
            "/failed_active_hc"
        );
    }
}
