//! The core's events as Python values: one frozen class per `notify::Event` variant, built
//! field by field from the Rust event (no JSON text in between). Each has a `kind`, the name
//! the bridge dispatches by.

use crate::notify::Event;
use pyo3::prelude::*;

/// A host reached one of its cluster's consecutive-failure thresholds.
#[pyclass(module = "meshplane._core", frozen, eq)]
#[derive(PartialEq)]
pub struct OutlierEvent {
    #[pyo3(get)]
    cluster: String,
    #[pyo3(get)]
    host: String,
    /// The threshold reached: "consecutive_5xx", "consecutive_gateway_failure" or
    /// "consecutive_local_origin_failure".
    #[pyo3(get, name = "type")]
    detector: String,
}

#[pymethods]
impl OutlierEvent {
    #[new]
    #[pyo3(signature = (cluster, host, r#type))]
    fn new(cluster: String, host: String, r#type: String) -> Self {
        OutlierEvent {
            cluster,
            host,
            detector: r#type,
        }
    }

    #[getter]
    fn kind(&self) -> &'static str {
        "outlier"
    }

    fn __repr__(&self) -> String {
        format!(
            "OutlierEvent(cluster={:?}, host={:?}, type={:?})",
            self.cluster, self.host, self.detector
        )
    }
}

/// A request of a function cluster found no idle instance and waits for one (up to the
/// cluster's `instanceWaitMs`): the control layer may start an instance and add it with
/// `set_endpoints`, which hands it to the oldest waiting request.
#[pyclass(module = "meshplane._core", frozen, eq)]
#[derive(PartialEq)]
pub struct InstanceWantedEvent {
    #[pyo3(get)]
    cluster: String,
    /// Requests waiting for an instance, the one that caused the event included.
    #[pyo3(get)]
    waiting: u32,
    /// Hosts serving a request.
    #[pyo3(get)]
    busy: u32,
    /// Hosts in the cluster: busy, idle or unhealthy.
    #[pyo3(get)]
    hosts: u32,
}

#[pymethods]
impl InstanceWantedEvent {
    #[new]
    fn new(cluster: String, waiting: u32, busy: u32, hosts: u32) -> Self {
        InstanceWantedEvent {
            cluster,
            waiting,
            busy,
            hosts,
        }
    }

    #[getter]
    fn kind(&self) -> &'static str {
        "instance_wanted"
    }

    fn __repr__(&self) -> String {
        format!(
            "InstanceWantedEvent(cluster={:?}, waiting={}, busy={}, hosts={})",
            self.cluster, self.waiting, self.busy, self.hosts
        )
    }
}

/// The runtime stopped after `Core.shutdown`.
#[pyclass(module = "meshplane._core", frozen, eq)]
#[derive(PartialEq)]
pub struct StoppedEvent {
    /// Every connection finished within the drain.
    #[pyo3(get)]
    clean: bool,
    /// Connections still open when the runtime stopped.
    #[pyo3(get)]
    open: usize,
}

#[pymethods]
impl StoppedEvent {
    #[new]
    fn new(clean: bool, open: usize) -> Self {
        StoppedEvent { clean, open }
    }

    #[getter]
    fn kind(&self) -> &'static str {
        "stopped"
    }

    fn __repr__(&self) -> String {
        let clean = if self.clean { "True" } else { "False" };
        format!("StoppedEvent(clean={clean}, open={})", self.open)
    }
}

/// The Python value of one event.
pub fn to_py(py: Python<'_>, event: Event) -> PyResult<Bound<'_, PyAny>> {
    Ok(match event {
        Event::Outlier {
            cluster,
            host,
            detector,
        } => Bound::new(
            py,
            OutlierEvent {
                cluster,
                host,
                detector: detector.to_string(),
            },
        )?
        .into_any(),
        Event::InstanceWanted {
            cluster,
            waiting,
            busy,
            hosts,
        } => Bound::new(
            py,
            InstanceWantedEvent {
                cluster,
                waiting,
                busy,
                hosts,
            },
        )?
        .into_any(),
        Event::Stopped { clean, open } => Bound::new(py, StoppedEvent { clean, open })?.into_any(),
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<OutlierEvent>()?;
    m.add_class::<InstanceWantedEvent>()?;
    m.add_class::<StoppedEvent>()?;
    Ok(())
}
