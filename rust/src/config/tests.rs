use super::*;

fn doc(extra: &str) -> String {
    format!(
        r#"{{"schema": 1, "version": "v1",
            "listeners": [{{"name": "l", "address": "127.0.0.1:0", "protocol": "http", "routeTable": "t"}}],
            "routeTables": {{"t": {{"virtualHosts": [{{"name": "vh", "domains": ["*"], "routes": [
               {{"name": "r", "match": {{"path": {{"kind": "prefix", "value": "/"}},
                 "headers": [{{"name": "x", "kind": "range", "start": 1, "end": 5}}, {{"name": "y", "kind": "present", "invert": true}}]}},
                 "action": {{"clusters": [{{"cluster": {extra}, "weight": 1}}]}}}}]}}]}}}},
            "clusters": [{{"name": "c", "protocol": "http1", "endpoints": [{{"address": "127.0.0.1:1"}}]}}]}}"#
    )
}

#[test]
fn parses_a_full_document_with_defaults() {
    let s = Snapshot::parse(doc("\"c\"").as_bytes()).unwrap();
    let r = &s.route_tables["t"].virtual_hosts[0].routes[0];
    assert_eq!(r.action.timeout_ms, 15_000);
    assert_eq!(
        r.matcher.headers[0].rule,
        HeaderRule::Range { start: 1, end: 5 }
    );
    assert!(r.matcher.headers[1].invert);
    assert_eq!(s.clusters[0].endpoints[0].weight, 1);
    assert_eq!(
        s.clusters[0].circuit_breakers.max_connections,
        2_147_483_647
    );
}

#[test]
fn unknown_cluster_is_named() {
    let e = Snapshot::parse(doc("\"nope\"").as_bytes()).unwrap_err();
    assert!(e.path.ends_with("action.clusters[0].cluster"), "{e}");
}

#[test]
fn syntax_error_has_position() {
    let e = Snapshot::parse(b"{\"schema\": 1,").unwrap_err();
    assert!(e.path.starts_with("line 1"), "{e}");
}

#[test]
fn collector_endpoint_and_tls_are_checked() {
    let with = |tracing: &str| {
        let d = doc("\"c\"");
        let d = format!("{}, \"tracing\": {tracing}}}", &d[..d.len() - 1]);
        Snapshot::parse(d.as_bytes())
    };
    let ok = with(
        r#"{"serviceName": "s", "otlpEndpoint": "https://c:4318", "otlpTls": {"trust": "ca.pem"}}"#,
    )
    .unwrap();
    let tls = ok.tracing.unwrap().otlp_tls.unwrap();
    assert_eq!(tls.trust.as_deref(), Some("ca.pem"));
    assert!(with(r#"{"serviceName": "s", "otlpEndpoint": "http://c:4318"}"#).is_ok());
    let e = with(r#"{"serviceName": "s", "otlpEndpoint": "ftp://c"}"#).unwrap_err();
    assert_eq!(e.path, "tracing.otlpEndpoint", "{e}");
    let e = with(r#"{"serviceName": "s", "otlpEndpoint": "https://"}"#).unwrap_err();
    assert_eq!(e.path, "tracing.otlpEndpoint", "{e}");
    let e = with(r#"{"serviceName": "s", "otlpEndpoint": "http://c:4318", "otlpTls": {}}"#)
        .unwrap_err();
    assert_eq!(e.path, "tracing.otlpTls", "{e}");
}

/// The checked-in schema is the one these types generate. To regenerate after changing a type:
/// `MESHPLANE_WRITE_SCHEMA=1 cargo test --lib config::tests::checked_in_json_schema_is_current`.
#[test]
fn checked_in_json_schema_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(JSON_SCHEMA_PATH);
    let generated = json_schema();
    if std::env::var_os("MESHPLANE_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{JSON_SCHEMA_PATH} differs from the schema rust/src/config/mod.rs generates; \
         regenerate it with `MESHPLANE_WRITE_SCHEMA=1 cargo test --lib \
         config::tests::checked_in_json_schema_is_current` and commit it"
    );
}
