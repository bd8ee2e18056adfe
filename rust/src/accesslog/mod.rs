//! Access logs (App Mesh `logging.accessLog.file`, Envoy's command operators).
//!
//! A record is started when a request arrives (request-side operators are evaluated then, so
//! no header map is kept), completed with the response, and written when the response stream
//! ends (bytes sent and duration are then known). Formatting happens on the worker thread;
//! writing happens on one writer thread per file, fed by a bounded channel: if the file can't
//! keep up, lines are dropped and counted rather than slowing traffic.

mod flags;
mod format;

pub use flags::ResponseFlags;
pub use format::{Format, Op, ReqName};

use crate::config::AccessLogSpec;
use format::Piece;
use http::HeaderMap;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Lines queued for a writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// One log file and its writer thread.
pub struct Sink {
    path: String,
    tx: SyncSender<String>,
    pub written: Arc<AtomicU64>,
    pub dropped: AtomicU64,
}

impl Sink {
    fn open(path: &str) -> std::io::Result<Arc<Sink>> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        std::thread::Builder::new()
            .name("meshplane-accesslog".into())
            .spawn(move || {
                // Ends when every sender (the Sink) is gone.
                while let Ok(line) = rx.recv() {
                    let mut n = 1;
                    let mut buf = line;
                    while let Ok(more) = rx.try_recv() {
                        buf.push_str(&more);
                        n += 1;
                        if buf.len() > 64 * 1024 {
                            break;
                        }
                    }
                    let _ = file.write_all(buf.as_bytes());
                    let _ = file.flush();
                    count.fetch_add(n, Relaxed);
                }
            })?;
        Ok(Arc::new(Sink {
            path: path.to_string(),
            tx,
            written,
            dropped: AtomicU64::new(0),
        }))
    }

    fn send(&self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Open log files by path, shared by every listener writing to the same file.
#[derive(Default)]
pub struct Sinks(Mutex<HashMap<String, Arc<Sink>>>);

impl Sinks {
    pub fn get(&self, path: &str) -> std::io::Result<Arc<Sink>> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = m.get(path) {
            return Ok(s.clone());
        }
        let s = Sink::open(path)?;
        m.insert(path.to_string(), s.clone());
        Ok(s)
    }

    /// Close files no listener writes to any more.
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.values()
            .map(|s| {
                let v = serde_json::json!({"written": s.written.load(Relaxed), "dropped": s.dropped.load(Relaxed)});
                (s.path.clone(), v)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

pub struct AccessLog {
    format: Format,
    sink: Arc<Sink>,
}

/// What a log line needs, gathered over the request's life.
pub struct Record {
    start: SystemTime,
    started: Instant,
    req: Vec<Option<String>>,
    resp: Vec<Option<String>>,
    protocol: &'static str,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    peer_uri_san: Option<String>,
    pub status: u16,
    pub flags: ResponseFlags,
    pub details: &'static str,
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub upstream_host: Option<Arc<str>>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

fn truncate(mut s: String, max: Option<usize>) -> String {
    if let Some(m) = max {
        if s.len() > m {
            let mut cut = m;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
    }
    s
}

impl AccessLog {
    pub fn build(spec: &AccessLogSpec, sinks: &Sinks) -> Result<AccessLog, String> {
        let format = Format::parse(spec.format.as_ref())?;
        let sink = sinks
            .get(&spec.path)
            .map_err(|e| format!("cannot open {}: {e}", spec.path))?;
        Ok(AccessLog { format, sink })
    }

    /// Whether the format prints the request header `name` (`%REQ(name)%`, also as a
    /// fallback name).
    pub fn reads_request_header(&self, name: &http::HeaderName) -> bool {
        self.format.ops().any(|op| match op {
            Op::Req(names, _) => names
                .iter()
                .any(|n| matches!(n, ReqName::Header(h) if h == name)),
            _ => false,
        })
    }

    /// Start a record: evaluates the request-side operators now.
    pub fn begin<B>(
        &self,
        parts: &http::Request<B>,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        peer_uri_san: Option<String>,
    ) -> Record {
        let mut req = Vec::new();
        for op in self.format.ops() {
            if let Op::Req(names, max) = op {
                let v = names.iter().find_map(|n| match n {
                    ReqName::Method => Some(parts.method().as_str().to_string()),
                    ReqName::Path => parts.uri().path_and_query().map(|p| p.as_str().to_string()),
                    ReqName::Authority => parts
                        .uri()
                        .authority()
                        .map(|a| a.as_str().to_string())
                        .or_else(|| {
                            parts
                                .headers()
                                .get(http::header::HOST)
                                .and_then(|v| v.to_str().ok())
                                .map(String::from)
                        }),
                    ReqName::Scheme => parts.uri().scheme_str().map(String::from),
                    ReqName::Header(h) => parts
                        .headers()
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from),
                });
                req.push(v.map(|s| truncate(s, *max)));
            }
        }
        let protocol = match parts.version() {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let bytes_received = parts
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Record {
            start: SystemTime::now(),
            started: Instant::now(),
            req,
            resp: Vec::new(),
            protocol,
            remote,
            local,
            peer_uri_san,
            status: 0,
            flags: ResponseFlags::NONE,
            details: "via_upstream",
            route: None,
            cluster: None,
            upstream_host: None,
            bytes_received,
            bytes_sent: 0,
        }
    }

    /// Start a record for a TCP connection: request and response operators have no value.
    pub fn begin_connection(&self, remote: SocketAddr, local: Option<SocketAddr>) -> Record {
        let n_req = self
            .format
            .ops()
            .filter(|o| matches!(o, Op::Req(..)))
            .count();
        let n_resp = self
            .format
            .ops()
            .filter(|o| matches!(o, Op::Resp(..)))
            .count();
        Record {
            start: SystemTime::now(),
            started: Instant::now(),
            req: vec![None; n_req],
            resp: vec![None; n_resp],
            protocol: "-",
            remote,
            local,
            peer_uri_san: None,
            status: 0,
            flags: ResponseFlags::NONE,
            details: "-",
            route: None,
            cluster: None,
            upstream_host: None,
            bytes_received: 0,
            bytes_sent: 0,
        }
    }

    /// The response head is known.
    pub fn response(&self, rec: &mut Record, status: u16, headers: &HeaderMap) {
        rec.status = status;
        for op in self.format.ops() {
            if let Op::Resp(names, max) = op {
                let v = names.iter().find_map(|h| {
                    headers
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from)
                });
                rec.resp.push(v.map(|s| truncate(s, *max)));
            }
        }
    }

    /// The stream ended: format and hand the line to the writer.
    pub fn finish(&self, rec: &Record) {
        let line = self.render(rec);
        self.sink.send(line);
    }

    pub fn render(&self, rec: &Record) -> String {
        let duration = rec.started.elapsed().as_millis() as u64;
        let mut req = rec.req.iter();
        let mut resp = rec.resp.iter();
        let mut value = |op: &Op| -> Option<String> {
            match op {
                Op::StartTime => Some(rfc3339_millis(rec.start)),
                Op::Req(..) => req.next().cloned().flatten(),
                Op::Resp(..) => resp.next().cloned().flatten(),
                Op::ResponseCode => Some(rec.status.to_string()),
                Op::ResponseFlags => Some(rec.flags.to_string()),
                Op::ResponseCodeDetails => Some(rec.details.to_string()),
                Op::BytesReceived => Some(rec.bytes_received.to_string()),
                Op::BytesSent => Some(rec.bytes_sent.to_string()),
                Op::Duration => Some(duration.to_string()),
                Op::UpstreamHost => rec.upstream_host.as_deref().map(String::from),
                Op::UpstreamCluster => rec.cluster.as_deref().map(String::from),
                Op::RouteName => rec.route.as_deref().map(String::from),
                Op::Protocol => Some(rec.protocol.to_string()),
                Op::DownstreamRemoteAddress => Some(rec.remote.to_string()),
                Op::DownstreamRemoteAddressWithoutPort => Some(rec.remote.ip().to_string()),
                Op::DownstreamLocalAddress => rec.local.map(|a| a.to_string()),
                Op::DownstreamPeerUriSan => rec.peer_uri_san.clone(),
            }
        };
        match &self.format {
            Format::Text(t) => {
                let mut out = String::with_capacity(256);
                for p in t {
                    match p {
                        Piece::Lit(s) => out.push_str(s),
                        Piece::Op(op) => out.push_str(value(op).as_deref().unwrap_or("-")),
                    }
                }
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                out
            }
            Format::Json(fields) => {
                let mut obj = serde_json::Map::new();
                for (key, t) in fields {
                    let v = match t.as_slice() {
                        [Piece::Op(op)] => match value(op) {
                            None => serde_json::Value::Null,
                            Some(s) if op.numeric() => {
                                s.parse::<u64>().map(Into::into).unwrap_or(s.into())
                            }
                            Some(s) => s.into(),
                        },
                        pieces => {
                            let mut s = String::new();
                            for p in pieces {
                                match p {
                                    Piece::Lit(l) => s.push_str(l),
                                    Piece::Op(op) => {
                                        s.push_str(value(op).as_deref().unwrap_or("-"))
                                    }
                                }
                            }
                            s.into()
                        }
                    };
                    obj.insert(key.clone(), v);
                }
                let mut line = serde_json::Value::Object(obj).to_string();
                line.push('\n');
                line
            }
        }
    }
}

/// "2026-11-25T01:02:03.456Z" (Envoy's default START_TIME), without a date library.
fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let mut s = String::with_capacity(24);
    let _ = write!(
        s,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
    s
}

/// (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's civil_from_days).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AccessLogFormat, JsonLogField};

    #[test]
    fn start_time_is_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_032_523_456);
        assert_eq!(rfc3339_millis(t), "2025-11-25T01:02:03.456Z");
        assert_eq!(
            rfc3339_millis(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
    }

    fn record_for(log: &AccessLog) -> Record {
        let req = http::Request::builder()
            .method("POST")
            .uri("/a/b?x=1")
            .header("host", "svc.local")
            .header("user-agent", "ua")
            .body(())
            .unwrap();
        let mut rec = log.begin(&req, "10.0.0.1:5555".parse().unwrap(), None, None);
        let mut h = HeaderMap::new();
        h.insert("server", "up".parse().unwrap());
        log.response(&mut rec, 503, &h);
        rec.flags = ResponseFlags::UF;
        rec.bytes_sent = 42;
        rec
    }

    #[test]
    fn text_and_json_lines() {
        let dir = std::env::temp_dir().join(format!("mp-log-{}", std::process::id()));
        let sinks = Sinks::default();
        let spec = AccessLogSpec {
            path: dir.to_string_lossy().into(),
            format: Some(AccessLogFormat::Text("%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESP(SERVER)% %UPSTREAM_HOST%".into())),
        };
        let log = AccessLog::build(&spec, &sinks).unwrap();
        assert_eq!(log.render(&record_for(&log)), "POST /a/b?x=1 503 UF up -\n");
        let spec = AccessLogSpec {
            path: dir.to_string_lossy().into(),
            format: Some(AccessLogFormat::Json(vec![
                JsonLogField {
                    key: "code".into(),
                    value: "%RESPONSE_CODE%".into(),
                },
                JsonLogField {
                    key: "host".into(),
                    value: "%REQ(:AUTHORITY)%".into(),
                },
                JsonLogField {
                    key: "up".into(),
                    value: "%UPSTREAM_HOST%".into(),
                },
                JsonLogField {
                    key: "both".into(),
                    value: "%BYTES_SENT%/%REQ(USER-AGENT)%".into(),
                },
            ])),
        };
        let log = AccessLog::build(&spec, &sinks).unwrap();
        let v: serde_json::Value = serde_json::from_str(&log.render(&record_for(&log))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 503, "host": "svc.local", "up": null, "both": "42/ua"})
        );
        let _ = std::fs::remove_file(dir);
    }
}
