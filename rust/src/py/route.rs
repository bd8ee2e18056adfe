//! `meshplane._core.RouteTable`: a compiled route table (one `routeTables` entry of a snapshot)
//! for tests and tools. The JSON crosses the boundary once; `match` then passes only request
//! data. The proxy itself never goes through this class.

use http::{HeaderMap, HeaderName, HeaderValue};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::config::RouteTableSpec;
use crate::route::{Request, RouteTable as Table};

/// A compiled route table (the `routeTables` entry of a snapshot), for tests and tools.
#[pyclass(name = "RouteTable", module = "meshplane._core", frozen)]
pub struct RouteTable {
    table: Table<()>,
}

#[pymethods]
impl RouteTable {
    #[new]
    fn new(table: &Bound<'_, PyAny>) -> PyResult<Self> {
        let json: &[u8] = if let Ok(s) = table.cast::<PyString>() {
            s.to_str()?.as_bytes()
        } else if let Ok(b) = table.cast::<PyBytes>() {
            b.as_bytes()
        } else {
            return Err(PyTypeError::new_err(
                "RouteTable() takes the table's JSON as str or bytes",
            ));
        };
        let spec: RouteTableSpec = serde_json::from_slice(json).map_err(|e| {
            // serde_json ends its message with the position, which is the path here.
            let position = format!("line {} column {}", e.line(), e.column());
            let message = e.to_string();
            let message = message
                .strip_suffix(&format!(" at {position}"))
                .unwrap_or(&message);
            PyValueError::new_err(format!("{position}: {message}"))
        })?;
        let table =
            Table::build(&spec, |_| Ok(())).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(RouteTable { table })
    }

    /// Name of the first matching route, or None.
    // `text_signature` spells the `headers` default as the stub does (`()`, not `...`).
    #[pyo3(
        name = "match",
        signature = (method, path, headers = Vec::new(), authority = "", scheme = "http", port = 0),
        text_signature = "($self, /, method, path, headers=(), authority='', scheme='http', port=0)"
    )]
    fn find(
        &self,
        method: &str,
        path: &str,
        headers: Vec<(String, String)>,
        authority: &str,
        scheme: &str,
        port: u16,
    ) -> PyResult<Option<String>> {
        let mut map = HeaderMap::with_capacity(headers.len());
        for (name, value) in &headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| PyValueError::new_err(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| PyValueError::new_err(format!("invalid header value {value:?}")))?;
            map.append(name, value);
        }
        let request = Request {
            method,
            path,
            authority,
            scheme,
            port,
            headers: &map,
        };
        Ok(self.table.find(&request).map(|r| r.name.to_string()))
    }

    fn __len__(&self) -> usize {
        self.table.len()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RouteTable>()
}
