//! `meshplane._core.Balancer`: a load balancer with its own host state (active counters and
//! health flags), for tests, tools and Python proxies. The proxy's clusters use
//! `crate::balance` directly and never go through this class.

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;

use crate::balance::{Balancer as Inner, HostTable, HostView};
use crate::config::LbPolicy;

/// A load balancer over hosts 0..n-1 with the given weights.
#[pyclass(name = "Balancer", module = "meshplane._core", frozen)]
pub struct Balancer {
    inner: Inner,
    hosts: HostTable,
}

impl Balancer {
    fn host(&self, host: i64) -> PyResult<usize> {
        usize::try_from(host)
            .ok()
            .filter(|&i| i < self.hosts.len())
            .ok_or_else(|| {
                PyIndexError::new_err(format!("host {host} out of range 0..{}", self.hosts.len()))
            })
    }
}

#[pymethods]
impl Balancer {
    #[new]
    #[pyo3(signature = (weights, policy = "least_request", active_request_bias = 1.0, seed = None))]
    fn new(
        weights: Vec<i64>,
        policy: &str,
        active_request_bias: f64,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        // The snapshot's own names for policies, so the two cannot drift apart.
        let policy: LbPolicy = serde_json::from_value(serde_json::Value::from(policy)).map_err(|_| {
            PyValueError::new_err(format!(
                "unknown policy {policy:?}: expected \"least_request\", \"round_robin\" or \"random\""
            ))
        })?;
        if !(active_request_bias.is_finite() && active_request_bias >= 0.0) {
            return Err(PyValueError::new_err(format!(
                "active_request_bias must be a finite number >= 0, got {active_request_bias}"
            )));
        }
        let weights = weights
            .iter()
            .map(|&w| u32::try_from(w))
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|_| PyValueError::new_err("weights must be integers in 0..=4294967295"))?;
        let inner = match seed {
            Some(seed) => Inner::with_seed(policy, &weights, active_request_bias, seed),
            None => Inner::new(policy, &weights, active_request_bias),
        };
        Ok(Balancer {
            inner,
            hosts: HostTable::new(&weights),
        })
    }

    /// Pick a healthy host (any host in panic) not in `exclude`, the hosts a retry already
    /// tried; when every such host is excluded, one of them again (as Envoy's retry host
    /// predicate falls back to its last pick). None only when no host has a weight.
    #[pyo3(signature = (exclude = Vec::new()))]
    fn pick(&self, exclude: Vec<i64>) -> PyResult<Option<usize>> {
        if exclude.is_empty() {
            return Ok(self.inner.pick(&self.hosts, |_| false));
        }
        let mut skipped = vec![false; self.hosts.len()];
        for host in exclude {
            skipped[self.host(host)?] = true;
        }
        Ok(self.inner.pick(&self.hosts, |i| skipped[i]))
    }

    /// A request to `host` began (raises its active count).
    fn start(&self, host: i64) -> PyResult<()> {
        self.hosts.start(self.host(host)?);
        Ok(())
    }

    /// A request to `host` ended (lowers its active count, not below 0).
    fn end(&self, host: i64) -> PyResult<()> {
        self.hosts.end(self.host(host)?);
        Ok(())
    }

    fn active(&self, host: i64) -> PyResult<u32> {
        Ok(self.hosts.active(self.host(host)?))
    }

    fn set_healthy(&self, host: i64, healthy: bool) -> PyResult<()> {
        self.hosts.set_healthy(self.host(host)?, healthy);
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.hosts.len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Balancer>()
}
