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

fn with_cluster(cluster: &str, listeners: &str) -> String {
    format!(
        r#"{{"schema": 1, "version": "v1", "listeners": [{listeners}],
            "routeTables": {{"t": {{"virtualHosts": []}}}},
            "clusters": [{cluster}]}}"#
    )
}

#[test]
fn function_clusters_and_unix_endpoints_parse() {
    let doc = with_cluster(
        r#"{"name": "f", "protocol": "http1", "function": {"concurrency": 3},
            "endpoints": [{"address": "unix:/run/fn/a.sock"}, {"address": "127.0.0.1:9"}]}"#,
        "",
    );
    let s = Snapshot::parse(doc.as_bytes()).unwrap();
    let c = &s.clusters[0];
    assert_eq!(
        c.function,
        Some(FunctionSpec {
            concurrency: 3,
            concurrency_group: None,
            instance_wait_ms: 10_000
        })
    );
    let a: UpstreamAddress = c.endpoints[0].address.parse().unwrap();
    assert_eq!(a, UpstreamAddress::Unix("/run/fn/a.sock".into()));
    assert_eq!(a.to_string(), "unix:/run/fn/a.sock");
    let t: UpstreamAddress = c.endpoints[1].address.parse().unwrap();
    assert_eq!(t.to_string(), "127.0.0.1:9");
}

#[test]
fn bad_unix_addresses_and_function_misuse_are_named() {
    let long = format!("unix:/{}", "x".repeat(200));
    for (address, says) in [
        ("unix:relative.sock", "absolute"),
        ("unix:", "absolute"),
        (long.as_str(), "at most"),
        ("localhost:80", "IP:PORT or unix:"),
    ] {
        let doc = with_cluster(
            &format!(
                r#"{{"name": "c", "protocol": "http1", "endpoints": [{{"address": "{address}"}}]}}"#
            ),
            "",
        );
        let e = Snapshot::parse(doc.as_bytes()).unwrap_err();
        assert_eq!(e.path, "clusters[0].endpoints[0].address", "{e}");
        assert!(e.message.contains(says), "{address}: {e}");
    }
    let tcp = with_cluster(
        r#"{"name": "f", "protocol": "tcp", "function": {"concurrency": 1}}"#,
        "",
    );
    let e = Snapshot::parse(tcp.as_bytes()).unwrap_err();
    assert_eq!(e.path, "clusters[0].function", "{e}");
    let listener = with_cluster(
        r#"{"name": "f", "protocol": "http1", "function": {"concurrency": 1}}"#,
        r#"{"name": "l", "address": "127.0.0.1:0", "protocol": "tcp",
            "tcpClusters": [{"cluster": "f", "weight": 1}]}"#,
    );
    let e = Snapshot::parse(listener.as_bytes()).unwrap_err();
    assert_eq!(e.path, "listeners[0].tcpClusters[0].cluster", "{e}");
    let unknown = with_cluster(
        r#"{"name": "f", "protocol": "http1", "function": {"concurrency": 1, "memory": 5}}"#,
        "",
    );
    assert!(Snapshot::parse(unknown.as_bytes()).is_err());
    // The clusters of one concurrency group share one limit: they must agree on it.
    let group = |second: u32| {
        with_cluster(
            &format!(
                r#"{{"name": "a", "protocol": "http1",
                     "function": {{"concurrency": 5, "concurrencyGroup": "function/f"}}}},
                   {{"name": "b", "protocol": "http1",
                     "function": {{"concurrency": {second}, "concurrencyGroup": "function/f"}}}}"#
            ),
            "",
        )
    };
    let s = Snapshot::parse(group(5).as_bytes()).unwrap();
    assert_eq!(
        s.clusters[1]
            .function
            .as_ref()
            .and_then(|f| f.concurrency_group.as_deref()),
        Some("function/f")
    );
    let e = Snapshot::parse(group(6).as_bytes()).unwrap_err();
    assert_eq!(e.path, "clusters[1].function.concurrency", "{e}");
    assert!(e.message.contains("has concurrency 5 (clusters[0])"), "{e}");
}

#[test]
fn the_ipv4_fast_path_agrees_with_the_standard_parser() {
    let fixed = [
        "1.2.3.4:80",
        "0.0.0.0:0",
        "255.255.255.255:65535",
        "256.1.1.1:1",
        "1.2.3.4:65536",
        "01.2.3.4:80",
        "1.2.3.4:080",
        "1.2.3:80",
        "1.2.3.4.5:80",
        "1.2.3.4:",
        ":80",
        "1.2.3.4",
        "1..3.4:80",
        "+1.2.3.4:80",
        "1.2.3.4:+80",
        "1.2.3.4:80:1",
        "[::1]:80",
        "1.2.3.4 :80",
        "１.2.3.4:80",
        "127.0.0.1:00000",
        "127.0.0.1:99999",
        "1.2.3.4:0080",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let alphabet = b"0123456789.:25";
    let generated = (0..20_000).map(|_| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 5 + (seed % 17) as usize;
        (0..len)
            .map(|i| alphabet[((seed >> (i * 3)) % alphabet.len() as u64) as usize] as char)
            .collect::<String>()
    });
    for s in fixed.iter().map(|s| s.to_string()).chain(generated) {
        if let Some(fast) = canonical_ipv4(&s) {
            assert_eq!(s.parse::<std::net::SocketAddr>().ok(), Some(fast), "{s}");
            assert_eq!(
                fast.to_string(),
                s,
                "only the canonical spelling takes the fast path"
            );
        }
    }
    assert!(canonical_ipv4("10.0.0.1:8080").is_some());
}
