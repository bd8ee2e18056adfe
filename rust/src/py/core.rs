//! `meshplane._core.Core`: one data plane (runtime, listeners, clusters, stats) driven from
//! Python by method calls that never wait on the network or on traffic (draining runs on the
//! runtime and ends in an event). `apply`, `reload_tls` (when TLS files are in use) and `stats`
//! run on the calling thread with the GIL released (they parse, compile and bind, read files,
//! or copy every counter; `meshplane.Proxy` calls `apply` from a worker thread); none of the
//! others waits for an apply in progress: endpoint changes given during one are made right
//! after it, on the version it leaves running (`crate::runtime`).

use crate::cluster::{
    HealthFlag, HostNote, HostRows, Notes, PackedHealth, PackedKeys, SparseOutliers,
};
use crate::error::{Kind, ProxyError, Source};
use crate::runtime::Runtime;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

create_exception!(
    meshplane._core,
    CoreError,
    PyException,
    "Raised by the core; carries kind, retryable, status and path."
);

/// The one way a Rust error becomes a Python exception: `kind`, `retryable` and `status` are the
/// error's own (`ProxyError::source_name`, `retryable`, `reply_status`); `path` says where in a
/// snapshot document a config error is.
fn core_error(py: Python<'_>, error: &ProxyError, path: Option<String>) -> PyErr {
    let err = CoreError::new_err(error.detail.clone());
    let value = err.value(py);
    let set = || -> PyResult<()> {
        value.setattr("kind", error.source_name())?;
        value.setattr("retryable", error.retryable())?;
        value.setattr("status", error.reply_status())?;
        value.setattr("path", path)?;
        Ok(())
    };
    match set() {
        Ok(()) => err,
        Err(e) => e,
    }
}

fn config_error(py: Python<'_>, message: String, path: Option<String>) -> PyErr {
    core_error(
        py,
        &ProxyError::new(Source::Config, Kind::Config, message),
        path,
    )
}

#[pyclass(name = "Core", module = "meshplane._core", frozen)]
pub struct Core {
    rt: Arc<Runtime>,
    health_keys: KeysSeen,
    outlier_keys: KeysSeen,
}

/// The keys of the compact health views (or sparse outlier views) given last, by cluster,
/// with the tuple they came in: a view whose keys are that same tuple (immutable, and kept
/// alive here, so the same object means the same keys) reuses them, neither copied nor
/// indexed again.
// NOTE: the control layer keeps one keys tuple per cluster while its hosts stay
// (`HealthChecker.view`); copying and indexing 10,000 keys was ~0.9 ms of every
// `Proxy.stats()` on the Trio loop. Only the views of the last call are kept (bounded).
#[derive(Default)]
struct KeysSeen(std::sync::Mutex<ClusterKeys>);

/// Cluster name -> the keys' tuple and what the core made of them.
type ClusterKeys = HashMap<String, (Py<PyTuple>, Arc<PackedKeys>)>;

impl KeysSeen {
    fn take(&self) -> ClusterKeys {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn keep(&self, keys: ClusterKeys) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = keys;
    }
}

/// Text the core wrote (UTF-8), kept in the core and handed out in pieces of bounded size,
/// so that no Python object of the whole (megabytes with many hosts) is made.
#[pyclass(name = "Text", module = "meshplane._core", frozen)]
pub struct Text {
    text: String,
}

#[pymethods]
impl Text {
    fn __len__(&self) -> usize {
        self.text.len()
    }

    /// The bytes `[start, start + size)` of the text (fewer at its end, none past it).
    fn piece<'py>(&self, py: Python<'py>, start: usize, size: usize) -> Bound<'py, PyBytes> {
        let bytes = self.text.as_bytes();
        let start = start.min(bytes.len());
        let end = start.saturating_add(size).min(bytes.len());
        PyBytes::new(py, &bytes[start..end])
    }
}

/// One cluster's hosts in a stats copy (`Core.stats()`): a read-only mapping of host name
/// (`IP:PORT`, `unix:/path`) to that host's stats, in the cluster's order. The copy is taken
/// by the core with the GIL released and kept there; a host's dict is made only when it is
/// read, so a copy of 10,000 hosts makes no Python object per host until someone looks.
// NOTE: `dict(table)`, `table.items()`, `to_dict()` make every host's dict, as the stats with
// hosts did before; the conversion lets the GIL go every `VALUES_PER_GIL_HOLD` values.
#[pyclass(name = "HostTable", module = "meshplane._core", frozen, mapping)]
pub struct HostTable {
    hosts: HostRows,
}

impl HostTable {
    fn row<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.hosts
            .get(key)
            .map(|m| JsonToPy { converted: 0 }.convert_map(py, &m))
            .transpose()
    }
}

#[pymethods]
impl HostTable {
    fn __len__(&self) -> usize {
        self.hosts.len()
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> bool {
        key.cast::<PyString>()
            .ok()
            .and_then(|k| k.to_str().ok().map(|k| self.hosts.contains(k)))
            .unwrap_or(false)
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        self.row(py, key)?
            .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(key.to_owned()))
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.keys(py)?.try_iter().map(Bound::into_any)
    }

    /// The host names, in the cluster's order.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.hosts.names())
    }

    /// Every host's stats (a dict each, made now), in the cluster's order.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut convert = JsonToPy { converted: 0 };
        let rows = self
            .hosts
            .objects()
            .map(|(_, m)| convert.convert_map(py, &m))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, rows)
    }

    /// (host name, its stats) pairs (a dict each, made now), in the cluster's order.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut convert = JsonToPy { converted: 0 };
        let rows = self
            .hosts
            .objects()
            .map(|(k, m)| Ok((k, convert.convert_map(py, &m)?)))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, rows)
    }

    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let found = match key.cast::<PyString>() {
            Ok(k) => self.row(py, k.to_str()?)?,
            Err(_) => None,
        };
        Ok(found.or(default))
    }

    /// One stat of every host, in the cluster's order (None for a host without it, such as
    /// `active_hc` of a host the health checker has not seen): `sum(t.column("rq_total"))`.
    fn column<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyList>> {
        let mut convert = JsonToPy { converted: 0 };
        let null = serde_json::Value::Null;
        let values = self
            .hosts
            .objects()
            .map(|(_, m)| convert.convert(py, m.get(name).unwrap_or(&null)))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, values)
    }

    /// Every host's stats as a plain dict of dicts (what `stats()` gave before the table):
    /// for `json.dumps`, a copy to change, or comparing with a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut convert = JsonToPy { converted: 0 };
        let d = PyDict::new(py);
        for (k, m) in self.hosts.objects() {
            d.set_item(k, convert.convert_map(py, &m)?)?;
        }
        Ok(d)
    }

    /// Equal to another table or mapping with the same hosts and stats.
    fn __eq__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<bool> {
        let mapping = py.import("collections.abc")?.getattr("Mapping")?;
        if !other.is_instance(&mapping)? {
            return Ok(false);
        }
        let other = match other.cast::<HostTable>() {
            Ok(t) => t.get().to_dict(py)?.into_any(),
            Err(_) => other.clone(),
        };
        self.to_dict(py)?.eq(other)
    }

    fn __repr__(&self) -> String {
        format!("<HostTable of {} hosts>", self.hosts.len())
    }

    /// Read-only: a copy is the table itself.
    fn __copy__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __deepcopy__<'py>(slf: Bound<'py, Self>, _memo: &Bound<'py, PyAny>) -> Bound<'py, Self> {
        slf
    }
}

fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    JsonToPy { converted: 0 }.convert(py, v)
}

/// Values converted between two releases of the GIL.
const VALUES_PER_GIL_HOLD: usize = 4096;

/// Converts a JSON value into Python objects, letting other threads take the GIL every
/// `VALUES_PER_GIL_HOLD` values.
// NOTE: 10,000 hosts are ~300,000 values, a few hundred milliseconds in one call; called from a
// worker thread (`Proxy.read_stats`), it would still stop the Trio thread all that time, since
// a call into Rust never gives up the GIL by itself.
struct JsonToPy {
    converted: usize,
}

impl JsonToPy {
    fn convert<'py>(
        &mut self,
        py: Python<'py>,
        v: &serde_json::Value,
    ) -> PyResult<Bound<'py, PyAny>> {
        use serde_json::Value::*;
        self.converted += 1;
        if self.converted.is_multiple_of(VALUES_PER_GIL_HOLD) {
            py.detach(|| ());
        }
        Ok(match v {
            Null => py.None().into_bound(py),
            Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
            Number(n) => {
                if let Some(i) = n.as_i64() {
                    i.into_pyobject(py)?.into_any()
                } else if let Some(u) = n.as_u64() {
                    u.into_pyobject(py)?.into_any()
                } else {
                    n.as_f64().unwrap_or(0.0).into_pyobject(py)?.into_any()
                }
            }
            String(s) => s.into_pyobject(py)?.into_any(),
            Array(a) => {
                let items: Vec<Bound<'py, PyAny>> = a
                    .iter()
                    .map(|x| self.convert(py, x))
                    .collect::<PyResult<_>>()?;
                PyList::new(py, items)?.into_any()
            }
            Object(o) => self.convert_map(py, o)?,
        })
    }

    fn convert_map<'py>(
        &mut self,
        py: Python<'py>,
        o: &serde_json::Map<String, serde_json::Value>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let d = PyDict::new(py);
        for (k, x) in o {
            d.set_item(k, self.convert(py, x)?)?;
        }
        Ok(d.into_any())
    }
}

/// Nesting depth of the "hosts" key in `/stats?format=json` (document → "clusters" → name →
/// "hosts") and of "host_statuses" in `/clusters?format=json` (document → "cluster_statuses"
/// → item → "host_statuses").
const HOSTS_KEY_DEPTH: usize = 3;

/// A Python value (as the drivers keep it: None, bool, int, float, str, list, tuple, dict) as
/// JSON; anything else as its `str()`.
fn py_to_json(v: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    use serde_json::Value;
    Ok(if v.is_none() {
        Value::Null
    } else if let Ok(b) = v.cast::<PyBool>() {
        Value::Bool(b.is_true())
    } else if v.is_instance_of::<PyInt>() {
        match v.extract::<i64>() {
            Ok(i) => i.into(),
            Err(_) => v.extract::<u64>().map(Value::from).unwrap_or(Value::Null),
        }
    } else if let Ok(f) = v.cast::<PyFloat>() {
        serde_json::Number::from_f64(f.value()).map_or(Value::Null, Value::Number)
    } else if let Ok(s) = v.cast::<PyString>() {
        Value::String(s.to_cow()?.into_owned())
    } else if let Ok(d) = v.cast::<PyDict>() {
        Value::Object(py_dict_to_json(d)?)
    } else if let Ok(l) = v.cast::<PyList>() {
        Value::Array(l.iter().map(|x| py_to_json(&x)).collect::<PyResult<_>>()?)
    } else if let Ok(t) = v.cast::<PyTuple>() {
        Value::Array(t.iter().map(|x| py_to_json(&x)).collect::<PyResult<_>>()?)
    } else {
        Value::String(v.str()?.to_cow()?.into_owned())
    })
}

fn py_dict_to_json(d: &Bound<'_, PyDict>) -> PyResult<serde_json::Map<String, serde_json::Value>> {
    d.iter()
        .map(|(k, x)| Ok((k.str()?.to_cow()?.into_owned(), py_to_json(&x)?)))
        .collect()
}

/// Endpoint lists at least this long are set with the GIL released (`set_endpoints`).
const ENDPOINTS_SET_WITHOUT_THE_GIL: usize = 1024;

/// Hosts of the control layer's view read between two releases of the GIL (`notes_of`).
const HOSTS_PER_GIL_HOLD: usize = 1024;

/// What `notes_of` read under the GIL: the notes, and the health views given in compact form,
/// to be added (`Notes::add_health`) with the GIL released.
struct ReadNotes {
    notes: Notes,
    packed: Vec<(String, PackedHealth)>,
}

impl ReadNotes {
    fn into_notes(self) -> Notes {
        let mut notes = self.notes;
        for (cluster, packed) in self.packed {
            notes.add_health(cluster, packed);
        }
        notes.expand_outliers();
        notes
    }
}

/// A cluster's health view in compact form, `(keys, records, names)` (`PackedHealth`): the
/// keys' text (unless they are the tuple `known` came in: then its keys) and the records'
/// bytes copied, no Python object made. Also the keys' tuple, if they came in one.
fn packed_health<'py>(
    view: &Bound<'py, PyTuple>,
    known: Option<&(Py<PyTuple>, Arc<PackedKeys>)>,
    mut breathe: impl FnMut(),
) -> PyResult<(PackedHealth, Option<Bound<'py, PyTuple>>)> {
    let (keys, records, names): (Bound<'_, PyAny>, Bound<'_, PyBytes>, Bound<'_, PyAny>) =
        view.extract()?;
    let (keys, tuple) = packed_keys(&keys, known, &mut breathe)?;
    let bytes = records.as_bytes();
    if bytes.len() != keys.len() * PackedHealth::FIELDS * 8 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "a packed health view needs {} 8-byte numbers per key: {} keys, {} bytes",
            PackedHealth::FIELDS,
            keys.len(),
            bytes.len()
        )));
    }
    let packed = PackedHealth {
        keys,
        records: bytes
            .chunks_exact(8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        names: names.extract()?,
    };
    Ok((packed, tuple))
}

/// The keys of a compact or sparse view (a sequence of str): those of `known` if they are its
/// tuple, else copied. Also the keys' tuple, if they came in one.
fn packed_keys<'py>(
    keys: &Bound<'py, PyAny>,
    known: Option<&(Py<PyTuple>, Arc<PackedKeys>)>,
    mut breathe: impl FnMut(),
) -> PyResult<(Arc<PackedKeys>, Option<Bound<'py, PyTuple>>)> {
    let tuple = keys.cast::<PyTuple>().ok().cloned();
    if let (Some(t), Some((seen, keys))) = (&tuple, known) {
        if t.as_ptr() == seen.as_ptr() {
            return Ok((keys.clone(), tuple));
        }
    }
    let mut copied = Vec::with_capacity(keys.len()?);
    for key in keys.try_iter()? {
        breathe();
        copied.push(key?.cast::<PyString>()?.to_str()?.to_owned());
    }
    Ok((Arc::new(PackedKeys::new(copied)), tuple))
}

/// `Notes` from the control layer's per-host views (`ResilienceView.hc_hosts` and
/// `od_hosts`: cluster -> host -> dict; a cluster's health view may instead be the compact
/// `(keys, records, names)` of `PackedHealth`). Read under the GIL: one entry per host the
/// health checker or outlier detector tracks, no Python object made.
fn notes_of(
    health: Option<&Bound<'_, PyDict>>,
    outliers: Option<&Bound<'_, PyDict>>,
    health_flags: bool,
    (health_keys, outlier_keys): (&KeysSeen, &KeysSeen),
) -> PyResult<ReadNotes> {
    let mut notes = Notes {
        health_flags,
        ..Notes::default()
    };
    let mut packed = Vec::new();
    let field = |d: &Bound<'_, PyDict>, k: &str| -> PyResult<serde_json::Value> {
        match d.get_item(k)? {
            Some(v) => py_to_json(&v),
            None => Ok(serde_json::Value::Null),
        }
    };
    // NOTE: this runs in a worker thread with the GIL held, and Rust code never lets the
    // interpreter switch threads: with 10,000 hosts the whole walk kept the Trio loop waiting
    // for ~15 ms. The GIL is let go (and the thread yields) every `HOSTS_PER_GIL_HOLD` hosts.
    let mut walked = 0usize;
    let mut breathe = |py: Python<'_>| {
        walked += 1;
        if walked.is_multiple_of(HOSTS_PER_GIL_HOLD) {
            py.detach(std::thread::yield_now);
        }
    };
    // Taken out while the views are read (the GIL is let go meanwhile: no lock is held then).
    let known = if health.is_some() {
        health_keys.take()
    } else {
        HashMap::new()
    };
    let mut seen = HashMap::new();
    for (cluster, hosts) in health.iter().flat_map(|d| d.iter()) {
        let name = cluster.extract::<String>()?;
        if let Ok(view) = hosts.cast::<PyTuple>() {
            let py = view.py();
            let (view, tuple) = packed_health(view, known.get(&name), || breathe(py))?;
            if let Some(tuple) = tuple {
                seen.insert(name.clone(), (tuple.unbind(), view.keys.clone()));
            }
            packed.push((name, view));
            continue;
        }
        let cluster = notes.hosts.entry(name).or_default();
        for (host, hc) in hosts.cast::<PyDict>()?.iter() {
            breathe(host.py());
            let hc = hc.cast::<PyDict>()?;
            let mut active = serde_json::Map::new();
            active.insert("state".into(), field(hc, "state")?);
            active.insert("last_result".into(), field(hc, "last_result")?);
            active.insert("consecutive_healthy".into(), field(hc, "num_healthy")?);
            active.insert("consecutive_unhealthy".into(), field(hc, "num_unhealthy")?);
            let flags = field(hc, "health_flags")?;
            let note = cluster.entry(host.extract::<String>()?).or_default();
            note.hc_timeout = flags
                .as_str()
                .is_some_and(|f| f.contains("active_hc_timeout"));
            note.active_hc = Some(active);
        }
    }
    if health.is_some() {
        health_keys.keep(seen);
    }
    let known = if outliers.is_some() {
        outlier_keys.take()
    } else {
        HashMap::new()
    };
    let mut seen = HashMap::new();
    for (cluster, hosts) in outliers.iter().flat_map(|d| d.iter()) {
        let name = cluster.extract::<String>()?;
        let hosts = match hosts.cast::<PyTuple>() {
            Ok(view) => {
                // Sparse: `(keys, clean, entries)`, an entry only for hosts not as new.
                let (keys, clean, entries): (
                    Bound<'_, PyAny>,
                    Bound<'_, PyDict>,
                    Bound<'_, PyDict>,
                ) = view.extract()?;
                let py = view.py();
                let (keys, tuple) = packed_keys(&keys, known.get(&name), || breathe(py))?;
                if let Some(tuple) = tuple {
                    seen.insert(name.clone(), (tuple.unbind(), keys.clone()));
                }
                let clean = py_dict_to_json(&clean)?;
                notes
                    .outliers
                    .insert(name.clone(), SparseOutliers { keys, clean });
                entries
            }
            Err(_) => hosts.cast_into::<PyDict>()?,
        };
        let cluster = notes.hosts.entry(name).or_default();
        for (host, od) in hosts.iter() {
            breathe(host.py());
            let note: &mut HostNote = cluster.entry(host.extract::<String>()?).or_default();
            note.outlier = Some(py_dict_to_json(od.cast::<PyDict>()?)?);
        }
    }
    if outliers.is_some() {
        outlier_keys.keep(seen);
    }
    Ok(ReadNotes { notes, packed })
}

/// A new bytes object of `len` bytes, filled by `fill` with the GIL released (nothing else
/// can see the object yet). Unlike `PyBytes::new_with` it does not first zero them: a pass
/// over megabytes with many hosts, with the GIL held.
fn bytes_filled(
    py: Python<'_>,
    len: usize,
    fill: impl FnOnce(&mut [u8]) + Send,
) -> PyResult<Bound<'_, PyBytes>> {
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("text too long"))?;
    // SAFETY: `PyBytes_FromStringAndSize(NULL, n)` makes a new bytes object of `n` bytes (or
    // returns NULL with an exception set, which `from_owned_ptr_or_err` turns into the error);
    // its buffer (`PyBytes_AsString`) is written only here, before the object is returned:
    // no one else holds a reference to it meanwhile, with the GIL or without.
    unsafe {
        let bytes = Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
        )?;
        let buf = std::slice::from_raw_parts_mut(
            pyo3::ffi::PyBytes_AsString(bytes.as_ptr()).cast::<u8>(),
            len,
        );
        py.detach(|| fill(buf));
        Ok(bytes.cast_into_unchecked())
    }
}

/// `text` as a bytes object, copied with the GIL released (megabytes with many hosts).
fn bytes_of<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, text.len(), |buf| {
        py.detach(|| buf.copy_from_slice(text.as_bytes()));
        Ok(())
    })
}

#[pymethods]
impl Core {
    #[new]
    #[pyo3(signature = (workers = 1))]
    fn new(py: Python<'_>, workers: usize) -> PyResult<Self> {
        let rt = Runtime::new(workers).map_err(|e| {
            let error = ProxyError::internal(Kind::Config, format!("cannot start runtime: {e}"));
            core_error(py, &error, None)
        })?;
        Ok(Core {
            rt: Arc::new(rt),
            health_keys: KeysSeen::default(),
            outlier_keys: KeysSeen::default(),
        })
    }

    fn apply(&self, py: Python<'_>, snapshot: Vec<u8>) -> PyResult<String> {
        let rt = self.rt.clone();
        py.detach(move || rt.apply(&snapshot)).map_err(|e| {
            config_error(
                py,
                format!("snapshot rejected at {}: {}", e.path, e.message),
                Some(e.path),
            )
        })
    }

    fn version(&self) -> Option<String> {
        self.rt.version()
    }

    fn listeners<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, addr, _) in self.rt.listeners() {
            d.set_item(
                name,
                PyTuple::new(
                    py,
                    [
                        addr.ip().to_string().into_pyobject(py)?.into_any(),
                        addr.port().into_pyobject(py)?.into_any(),
                    ],
                )?,
            )?;
        }
        Ok(d)
    }

    fn set_endpoints(
        &self,
        py: Python<'_>,
        cluster: &str,
        endpoints: Vec<(String, u32)>,
    ) -> PyResult<Option<String>> {
        // NOTE: the GIL is let go only for long lists: taking it back costs the Trio thread up
        // to a switch interval whenever another thread runs Python (an apply's compile), far
        // more than the few microseconds a short list takes.
        let result = if endpoints.len() >= ENDPOINTS_SET_WITHOUT_THE_GIL {
            let rt = self.rt.clone();
            py.detach(move || rt.set_endpoints(cluster, &endpoints))
        } else {
            self.rt.set_endpoints(cluster, &endpoints)
        };
        result.map_err(|m| config_error(py, m, None))
    }

    #[pyo3(signature = (cluster, upsert = Vec::new(), remove = Vec::new(), base_version = None))]
    fn update_endpoints(
        &self,
        py: Python<'_>,
        cluster: &str,
        upsert: Vec<(String, u32)>,
        remove: Vec<String>,
        base_version: Option<&str>,
    ) -> PyResult<bool> {
        self.rt
            .update_endpoints(cluster, &upsert, &remove, base_version)
            .map_err(|m| config_error(py, m, None))
    }

    fn set_host_health(
        &self,
        py: Python<'_>,
        cluster: &str,
        address: &str,
        healthy: bool,
    ) -> PyResult<()> {
        self.rt
            .set_host_flag(
                cluster,
                address,
                HealthFlag::FailedActiveHealthCheck,
                !healthy,
            )
            .map_err(|m| config_error(py, m, None))
    }

    fn set_host_ejected(
        &self,
        py: Python<'_>,
        cluster: &str,
        address: &str,
        ejected: bool,
    ) -> PyResult<()> {
        self.rt
            .set_host_flag(cluster, address, HealthFlag::Ejected, ejected)
            .map_err(|m| config_error(py, m, None))
    }

    fn take_outlier_samples<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt.clone();
        let samples = py.detach(move || rt.take_outlier_samples());
        json_to_py(py, &samples)
    }

    /// With `hosts`, each cluster's "hosts" is a `HostTable` (the hosts' stats kept in the
    /// core, with the control layer's view from `health`, `outliers` and `health_flags` as
    /// `stats_hosts_json` takes them); without, "membership" counts.
    #[pyo3(signature = (hosts = true, health = None, outliers = None, health_flags = false))]
    fn stats<'py>(
        &self,
        py: Python<'py>,
        hosts: bool,
        health: Option<&Bound<'py, PyDict>>,
        outliers: Option<&Bound<'py, PyDict>>,
        health_flags: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rt = self.rt.clone();
        if !hosts {
            let v = py.detach(move || rt.stats(false));
            return json_to_py(py, &v);
        }
        let notes = notes_of(
            health,
            outliers,
            health_flags,
            (&self.health_keys, &self.outlier_keys),
        )?;
        // NOTE: the compact health views stay compact in the tables (unpacked per host read):
        // unpacking 10,000 into notes was most of a copy with health-checked hosts.
        let ReadNotes { notes, packed } = notes;
        let (doc, tables) = py.detach(move || rt.stats_host_rows(notes, packed));
        let stats = json_to_py(py, &doc)?;
        let clusters = stats.get_item("clusters")?;
        for (name, hosts) in tables {
            clusters
                .get_item(&name)?
                .set_item("hosts", Bound::new(py, HostTable { hosts })?)?;
        }
        Ok(stats)
    }

    fn host_metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let rt = self.rt.clone();
        let (families, len) = py.detach(move || {
            let families = rt.host_families();
            let len = families.len();
            (families, len)
        });
        // NOTE: megabytes with many hosts: written straight into the bytes object (no text
        // of its own to copy from), with the GIL released.
        bytes_filled(py, len, |buf| families.write(buf))
    }

    /// `host_metrics()` as a `Text`: written with the GIL released and kept in the core, read
    /// in pieces (the admin API's scrape sends it so, from a worker thread's call).
    fn host_metrics_text(&self, py: Python<'_>) -> Text {
        let rt = self.rt.clone();
        Text {
            text: py.detach(move || rt.host_metrics()),
        }
    }

    /// `stats(hosts=False)` where each cluster has "hosts" (in the place of "membership"): its
    /// hosts as `/stats?format=json` text (bytes), written with the GIL released.
    #[pyo3(signature = (health = None, outliers = None, health_flags = false))]
    fn stats_hosts_json<'py>(
        &self,
        py: Python<'py>,
        health: Option<&Bound<'py, PyDict>>,
        outliers: Option<&Bound<'py, PyDict>>,
        health_flags: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let notes = notes_of(
            health,
            outliers,
            health_flags,
            (&self.health_keys, &self.outlier_keys),
        )?;
        let rt = self.rt.clone();
        let (doc, hosts) =
            py.detach(move || rt.stats_hosts_json(&notes.into_notes(), HOSTS_KEY_DEPTH));
        let stats = json_to_py(py, &doc)?;
        let clusters = stats.get_item("clusters")?;
        for (name, text) in hosts {
            clusters
                .get_item(&name)?
                .set_item("hosts", bytes_of(py, &text)?)?;
        }
        Ok(stats)
    }

    /// Every host's `/clusters` lines (bytes), written with the GIL released.
    #[pyo3(signature = (health = None, outliers = None))]
    fn clusters_text<'py>(
        &self,
        py: Python<'py>,
        health: Option<&Bound<'py, PyDict>>,
        outliers: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let notes = notes_of(
            health,
            outliers,
            true,
            (&self.health_keys, &self.outlier_keys),
        )?;
        let rt = self.rt.clone();
        let text = py.detach(move || rt.clusters_text(&notes.into_notes()));
        bytes_of(py, &text)
    }

    /// `[(cluster, host_statuses as /clusters?format=json text)]`, clusters sorted by name.
    #[pyo3(signature = (health = None, outliers = None))]
    fn host_statuses_json<'py>(
        &self,
        py: Python<'py>,
        health: Option<&Bound<'py, PyDict>>,
        outliers: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let notes = notes_of(
            health,
            outliers,
            true,
            (&self.health_keys, &self.outlier_keys),
        )?;
        let rt = self.rt.clone();
        let statuses =
            py.detach(move || rt.host_statuses_json(&notes.into_notes(), HOSTS_KEY_DEPTH));
        let items = statuses
            .iter()
            .map(|(name, text)| {
                PyTuple::new(
                    py,
                    [
                        name.into_pyobject(py)?.into_any(),
                        bytes_of(py, text)?.into_any(),
                    ],
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// The most recent recorded spans, newest first.
    fn recent_spans<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.rt.recent_spans())
    }

    fn reload_tls(&self, py: Python<'_>) -> PyResult<usize> {
        // NOTE: without TLS material there is no file to read: no need to let the GIL go
        // (and wait to take it back behind a thread that holds it, such as an apply's compile).
        if let Some(n) = self.rt.reload_tls_at_once() {
            return Ok(n);
        }
        let rt = self.rt.clone();
        py.detach(move || rt.reload_tls()).map_err(|e| {
            config_error(
                py,
                format!("TLS reload rejected at {}: {}", e.path, e.message),
                Some(e.path),
            )
        })
    }

    fn tls_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.rt.tls_info())
    }

    fn wakeup_fd(&self) -> i32 {
        self.rt.events().fd()
    }

    /// Events dropped so far because the queue was full (Python stopped draining).
    fn events_dropped(&self) -> u64 {
        self.rt.events().dropped()
    }

    fn drain_events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = PyList::empty(py);
        for event in self.rt.events().drain() {
            items.append(super::events::to_py(py, event)?)?;
        }
        Ok(items)
    }

    #[pyo3(signature = (drain_ms = 5000))]
    fn shutdown(&self, drain_ms: u64) {
        self.rt.shutdown(Duration::from_millis(drain_ms));
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<Text>()?;
    m.add_class::<HostTable>()?;
    pyo3::types::PyMapping::register::<HostTable>(m.py())?;
    m.add("CoreError", m.py().get_type::<CoreError>())?;
    Ok(())
}
