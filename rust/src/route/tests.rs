use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use super::conditions::{decoded_eq, split_query};
use super::*;

// ---- helpers -------------------------------------------------------------------------------

fn spec(v: Value) -> RouteTableSpec {
    serde_json::from_value(v).expect("valid RouteTableSpec")
}

fn route(name: &str, matcher: Value) -> Value {
    json!({"name": name, "match": matcher, "action": {}})
}

/// One "*" virtual host holding `routes`.
fn host(routes: Vec<Value>) -> RouteTable<()> {
    RouteTable::build(
        &spec(json!({"virtualHosts": [{"name": "vh", "domains": ["*"], "routes": routes}]})),
        |_| Ok(()),
    )
    .expect("table builds")
}

fn build_err(v: Value) -> RouteBuildError {
    RouteTable::build(&spec(v), |_| Ok(())).expect_err("table must not build")
}

fn one_route_err(matcher: Value) -> RouteBuildError {
    build_err(
        json!({"virtualHosts": [{"name": "vh", "domains": ["*"], "routes": [route("r", matcher)]}]}),
    )
}

struct Req {
    method: &'static str,
    path: String,
    authority: String,
    scheme: &'static str,
    port: u16,
    headers: HeaderMap,
}

fn get(path: &str) -> Req {
    Req {
        method: "GET",
        path: path.into(),
        authority: "svc".into(),
        scheme: "http",
        port: 0,
        headers: HeaderMap::new(),
    }
}

impl Req {
    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        self
    }
    fn authority(mut self, a: &str) -> Req {
        self.authority = a.into();
        self
    }
    fn method(mut self, m: &'static str) -> Req {
        self.method = m;
        self
    }
    fn scheme(mut self, s: &'static str) -> Req {
        self.scheme = s;
        self
    }
    fn port(mut self, p: u16) -> Req {
        self.port = p;
        self
    }
    fn request(&self) -> Request<'_> {
        Request {
            method: self.method,
            path: &self.path,
            authority: &self.authority,
            scheme: self.scheme,
            port: self.port,
            headers: &self.headers,
        }
    }
}

fn found<A>(t: &RouteTable<A>, r: &Req) -> Option<String> {
    t.find(&r.request()).map(|route| route.name.to_string())
}

fn matches(matcher: Value, r: &Req) -> bool {
    found(&host(vec![route("r", matcher)]), r).is_some()
}

// ---- paths ---------------------------------------------------------------------------------

#[test]
fn prefix_is_a_plain_string_prefix_of_the_target_including_query() {
    let m = json!({"path": {"kind": "prefix", "value": "/api"}});
    assert!(matches(m.clone(), &get("/api")));
    assert!(matches(m.clone(), &get("/api/v1")));
    assert!(
        matches(m.clone(), &get("/apixyz")),
        "not path-segment aware"
    );
    assert!(!matches(m.clone(), &get("/ap")));
    assert!(!matches(m, &get("/API")), "case-sensitive");
    let q = json!({"path": {"kind": "prefix", "value": "/a?x=1"}});
    assert!(matches(q.clone(), &get("/a?x=1&y=2")));
    assert!(!matches(q, &get("/a?y=2")));
    assert!(matches(
        json!({"path": {"kind": "prefix", "value": "/"}}),
        &get("/anything")
    ));
    assert!(matches(
        json!({"path": {"kind": "prefix", "value": ""}}),
        &get("")
    ));
}

#[test]
fn exact_compares_the_path_without_its_query() {
    let m = json!({"path": {"kind": "exact", "value": "/a/b"}});
    assert!(matches(m.clone(), &get("/a/b")));
    assert!(matches(m.clone(), &get("/a/b?x=1")));
    assert!(matches(m.clone(), &get("/a/b?")));
    assert!(!matches(m.clone(), &get("/a/b/")));
    assert!(!matches(m, &get("/a")));
    assert!(!matches(
        json!({"path": {"kind": "exact", "value": "/a?x=1"}}),
        &get("/a?x=1")
    ));
}

#[test]
fn regex_is_a_full_match_of_the_path_without_query() {
    let m = json!({"path": {"kind": "regex", "value": "/v[0-9]+/.*"}});
    assert!(matches(m.clone(), &get("/v1/users")));
    assert!(matches(m.clone(), &get("/v12/x?y=/z")));
    assert!(
        !matches(m.clone(), &get("/api/v1/users")),
        "anchored at the start"
    );
    assert!(
        !matches(
            json!({"path": {"kind": "regex", "value": "/a|/b"}}),
            &get("/ab")
        ),
        "alternation is grouped"
    );
    assert!(matches(
        json!({"path": {"kind": "regex", "value": "/a|/b"}}),
        &get("/b")
    ));
    assert!(
        !matches(
            json!({"path": {"kind": "regex", "value": "/a"}}),
            &get("/a/b")
        ),
        "anchored at the end"
    );
    assert!(!matches(m, &get("/vx/")));
}

#[test]
fn no_path_matches_every_path() {
    assert!(matches(json!({}), &get("/")));
    assert!(matches(json!({}), &get("/x?y")));
}

#[test]
fn route_prefix_is_exposed_for_rewrites() {
    let t = host(vec![
        route("p", json!({"path": {"kind": "prefix", "value": "/old/"}})),
        route("e", json!({"path": {"kind": "exact", "value": "/e"}})),
    ]);
    let r = get("/old/x");
    assert_eq!(
        t.find(&r.request()).unwrap().prefix.as_deref(),
        Some("/old/")
    );
    let r = get("/e");
    assert_eq!(t.find(&r.request()).unwrap().prefix, None);
}

// ---- hostname, method, scheme, port --------------------------------------------------------

#[test]
fn hostname_exact_keeps_the_port_and_ignores_case() {
    let m = json!({"hostname": {"kind": "exact", "value": "host"}});
    assert!(matches(m.clone(), &get("/").authority("host")));
    assert!(matches(m.clone(), &get("/").authority("HOST")));
    assert!(
        !matches(m.clone(), &get("/").authority("host:80")),
        "App Mesh: host:80 is not host"
    );
    assert!(!matches(m, &get("/").authority("ahost")));
    assert!(matches(
        json!({"hostname": {"kind": "exact", "value": "host:80"}}),
        &get("/").authority("host:80")
    ));
}

#[test]
fn hostname_suffix_is_a_case_insensitive_ends_with() {
    let m = json!({"hostname": {"kind": "suffix", "value": ".example.com"}});
    assert!(matches(m.clone(), &get("/").authority("a.example.com")));
    assert!(matches(m.clone(), &get("/").authority("A.Example.COM")));
    assert!(!matches(
        m.clone(),
        &get("/").authority("a.example.com:443")
    ));
    assert!(!matches(m, &get("/").authority("example.com")));
}

#[test]
fn method_scheme_and_port_are_equalities() {
    assert!(matches(json!({"method": "POST"}), &get("/").method("POST")));
    assert!(!matches(json!({"method": "POST"}), &get("/")));
    assert!(!matches(
        json!({"method": "POST"}),
        &get("/").method("post")
    ));
    assert!(matches(
        json!({"scheme": "https"}),
        &get("/").scheme("https")
    ));
    assert!(!matches(json!({"scheme": "https"}), &get("/")));
    assert!(matches(json!({"port": 8080}), &get("/").port(8080)));
    assert!(!matches(json!({"port": 8080}), &get("/").port(8081)));
}

// ---- headers -------------------------------------------------------------------------------

fn header(rule: Value) -> Value {
    json!({"headers": [rule]})
}

#[test]
fn header_string_rules() {
    let exact = header(json!({"name": "x-v", "kind": "exact", "value": "beta"}));
    assert!(matches(exact.clone(), &get("/").header("x-v", "beta")));
    assert!(!matches(exact.clone(), &get("/").header("x-v", "beta2")));
    assert!(!matches(exact, &get("/")));
    let prefix = header(json!({"name": "x-v", "kind": "prefix", "value": "be"}));
    assert!(matches(prefix.clone(), &get("/").header("x-v", "beta")));
    assert!(!matches(prefix, &get("/").header("x-v", "alpha")));
    let suffix = header(json!({"name": "x-v", "kind": "suffix", "value": "ta"}));
    assert!(matches(suffix.clone(), &get("/").header("x-v", "beta")));
    assert!(!matches(suffix, &get("/").header("x-v", "tab")));
    let regex = header(json!({"name": "x-v", "kind": "regex", "value": "b.t"}));
    assert!(matches(regex.clone(), &get("/").header("x-v", "bet")));
    assert!(
        !matches(regex, &get("/").header("x-v", "beta")),
        "full match"
    );
    let empty = header(json!({"name": "x-v", "kind": "exact", "value": ""}));
    assert!(matches(empty, &get("/").header("x-v", "")));
}

#[test]
fn header_names_are_case_insensitive() {
    let m = header(json!({"name": "X-Version", "kind": "exact", "value": "1"}));
    assert!(matches(m, &get("/").header("x-version", "1")));
}

#[test]
fn header_range_is_half_open_on_integers() {
    let m = header(json!({"name": "x-n", "kind": "range", "start": -5, "end": 10}));
    for (value, expected) in [
        ("-5", true),
        ("0", true),
        ("9", true),
        ("+9", true),
        ("10", false),
        ("-6", false),
        ("1.5", false),
        ("", false),
        (" 1", false),
        ("x", false),
        ("99999999999999999999", false),
    ] {
        assert_eq!(
            matches(m.clone(), &get("/").header("x-n", value)),
            expected,
            "value {value:?}"
        );
    }
    assert!(!matches(m, &get("/")));
}

#[test]
fn header_present_and_absent() {
    let present = header(json!({"name": "x-p", "kind": "present"}));
    assert!(matches(present.clone(), &get("/").header("x-p", "")));
    assert!(!matches(present, &get("/")));
    let absent = header(json!({"name": "x-p", "kind": "present", "invert": true}));
    assert!(matches(absent.clone(), &get("/")));
    assert!(!matches(absent, &get("/").header("x-p", "v")));
}

#[test]
fn invert_negates_but_a_missing_header_still_fails() {
    for rule in [
        json!({"name": "x-v", "kind": "exact", "value": "a", "invert": true}),
        json!({"name": "x-v", "kind": "prefix", "value": "a", "invert": true}),
        json!({"name": "x-v", "kind": "suffix", "value": "a", "invert": true}),
        json!({"name": "x-v", "kind": "regex", "value": "a", "invert": true}),
        json!({"name": "x-v", "kind": "range", "start": 0, "end": 5, "invert": true}),
    ] {
        assert!(
            !matches(header(rule.clone()), &get("/")),
            "missing header fails {rule}"
        );
        assert!(
            matches(header(rule.clone()), &get("/").header("x-v", "zz")),
            "mismatch inverted holds {rule}"
        );
        let hit = if rule["kind"] == "range" { "3" } else { "a" };
        assert!(
            !matches(header(rule.clone()), &get("/").header("x-v", hit)),
            "match inverted fails {rule}"
        );
    }
}

#[test]
fn repeated_headers_are_joined_with_commas() {
    let r = get("/").header("x-v", "a").header("x-v", "b");
    assert!(matches(
        header(json!({"name": "x-v", "kind": "exact", "value": "a,b"})),
        &r
    ));
    assert!(!matches(
        header(json!({"name": "x-v", "kind": "exact", "value": "a"})),
        &r
    ));
    assert!(matches(
        header(json!({"name": "x-v", "kind": "suffix", "value": ",b"})),
        &r
    ));
    assert!(matches(
        header(json!({"name": "x-v", "kind": "regex", "value": "a,.*"})),
        &r
    ));
    assert!(matches(
        header(json!({"name": "x-v", "kind": "present"})),
        &r
    ));
    let n = get("/").header("x-n", "1").header("x-n", "2");
    assert!(!matches(
        header(json!({"name": "x-n", "kind": "range", "start": 0, "end": 100})),
        &n
    ));
    assert!(matches(
        header(json!({"name": "x-n", "kind": "range", "start": 0, "end": 100, "invert": true})),
        &n
    ));
}

#[test]
fn all_headers_must_hold() {
    let m = json!({"headers": [
        {"name": "a", "kind": "exact", "value": "1"},
        {"name": "b", "kind": "present", "invert": true},
    ]});
    assert!(matches(m.clone(), &get("/").header("a", "1")));
    assert!(!matches(
        m.clone(),
        &get("/").header("a", "1").header("b", "")
    ));
    assert!(!matches(m, &get("/").header("a", "2")));
}

// ---- query parameters ----------------------------------------------------------------------

#[test]
fn query_presence_and_exact_value() {
    let present = json!({"query": [{"name": "debug"}]});
    assert!(matches(present.clone(), &get("/?debug")));
    assert!(matches(present.clone(), &get("/?a=1&debug=")));
    assert!(!matches(present.clone(), &get("/?debugx=1")));
    assert!(!matches(present.clone(), &get("/debug")));
    assert!(!matches(present, &get("/")));
    let exact = json!({"query": [{"name": "v", "exact": "2"}]});
    assert!(matches(exact.clone(), &get("/p?v=2")));
    assert!(matches(exact.clone(), &get("/p?&&x=1&v=2&")));
    assert!(!matches(exact.clone(), &get("/p?v=20")));
    assert!(!matches(exact, &get("/p?v")));
    assert!(matches(
        json!({"query": [{"name": "v", "exact": ""}]}),
        &get("/p?v")
    ));
}

#[test]
fn query_first_occurrence_wins() {
    let m = json!({"query": [{"name": "v", "exact": "2"}]});
    assert!(matches(m.clone(), &get("/?v=2&v=3")));
    assert!(!matches(m, &get("/?v=3&v=2")));
}

#[test]
fn query_names_and_values_are_percent_decoded() {
    let m = json!({"query": [{"name": "a b", "exact": "x/y&z"}]});
    assert!(matches(m.clone(), &get("/?a%20b=x%2Fy%26z")));
    assert!(matches(m.clone(), &get("/?a%20b=x%2fy%26z")));
    assert!(!matches(m, &get("/?a+b=x%2Fy%26z")), "'+' is not a space");
    assert!(matches(
        json!({"query": [{"name": "p", "exact": "100%"}]}),
        &get("/?p=100%")
    ));
    assert!(matches(
        json!({"query": [{"name": "p", "exact": "%zz"}]}),
        &get("/?p=%zz")
    ));
    assert!(matches(
        json!({"query": [{"name": "p", "exact": "a=b"}]}),
        &get("/?p=a=b")
    ));
}

#[test]
fn decoding_compares_without_allocating() {
    assert!(decoded_eq(b"%41%42c", b"ABc"));
    assert!(!decoded_eq(b"%41", b"AB"));
    assert!(!decoded_eq(b"%41B", b"A"));
    assert!(decoded_eq(b"%4", b"%4"));
    assert!(decoded_eq(b"", b""));
    assert_eq!(split_query("/a?b?c"), ("/a", "b?c"));
    assert_eq!(split_query("/a"), ("/a", ""));
}

// ---- virtual hosts -------------------------------------------------------------------------

fn hosts_table(domains: &[(&str, &[&str])]) -> RouteTable<()> {
    let vhosts: Vec<Value> = domains
        .iter()
        .map(|(name, ds)| json!({"name": name, "domains": ds, "routes": [route(name, json!({}))]}))
        .collect();
    RouteTable::build(&spec(json!({"virtualHosts": vhosts})), |_| Ok(())).unwrap()
}

#[test]
fn virtual_host_selection_follows_envoy_order() {
    let t = hosts_table(&[
        ("any", &["*"]),
        ("prefix_short", &["api.*"]),
        ("prefix_long", &["api.example.*"]),
        ("suffix_short", &["*.com"]),
        ("suffix_long", &["*.example.com"]),
        ("exact", &["api.example.com", "svc:8080"]),
    ]);
    let pick = |authority: &str| found(&t, &get("/").authority(authority));
    assert_eq!(pick("api.example.com").as_deref(), Some("exact"));
    assert_eq!(pick("API.Example.COM").as_deref(), Some("exact"));
    assert_eq!(pick("svc:8080").as_deref(), Some("exact"));
    assert_eq!(
        pick("svc").as_deref(),
        Some("any"),
        "the port is part of the authority"
    );
    assert_eq!(pick("www.example.com").as_deref(), Some("suffix_long"));
    assert_eq!(
        pick("api.example.com:80").as_deref(),
        Some("prefix_long"),
        "suffix fails, prefix holds"
    );
    assert_eq!(pick("x.com").as_deref(), Some("suffix_short"));
    assert_eq!(pick("api.example.org").as_deref(), Some("prefix_long"));
    assert_eq!(pick("api.org").as_deref(), Some("prefix_short"));
    assert_eq!(
        pick("api.com").as_deref(),
        Some("suffix_short"),
        "suffix wildcards before prefix ones"
    );
    assert_eq!(
        pick(".example.com").as_deref(),
        Some("suffix_short"),
        "a wildcard stands for ≥ 1 char"
    );
    assert_eq!(pick("api.").as_deref(), Some("any"));
    assert_eq!(pick("").as_deref(), Some("any"));
    let long = format!("{}.EXAMPLE.com", "A".repeat(400));
    assert_eq!(
        pick(&long).as_deref(),
        Some("suffix_long"),
        "heap lowercasing path"
    );
}

#[test]
fn no_virtual_host_means_no_route() {
    let t = hosts_table(&[("exact", &["a.b"]), ("wild", &["*-x.b"])]);
    assert_eq!(found(&t, &get("/").authority("c.b")), None);
    assert_eq!(
        found(&t, &get("/").authority("q-x.b")).as_deref(),
        Some("wild")
    );
    assert!(t.virtual_host("nope").is_none());
    assert_eq!(&*t.virtual_host("A.B").unwrap().name, "exact");
}

#[test]
fn bad_domains_are_refused_with_their_path() {
    let e = build_err(json!({"virtualHosts": [
        {"name": "a", "domains": ["x.com"], "routes": []},
        {"name": "b", "domains": ["y", "X.COM"], "routes": []},
    ]}));
    assert_eq!(e.path, "virtualHosts[1].domains[1]");
    assert!(e.message.contains("already used"), "{e}");
    let e =
        build_err(json!({"virtualHosts": [{"name": "a", "domains": ["a.*.com"], "routes": []}]}));
    assert_eq!(e.path, "virtualHosts[0].domains[0]");
    let e =
        build_err(json!({"virtualHosts": [{"name": "a", "domains": ["*", "*"], "routes": []}]}));
    assert_eq!(e.path, "virtualHosts[0].domains[1]");
}

// ---- ordering across indexes ---------------------------------------------------------------

#[test]
fn first_match_wins_across_exact_prefix_and_always_lists() {
    let t = host(vec![
        route(
            "prefix_long",
            json!({"path": {"kind": "prefix", "value": "/a/b/"}, "method": "POST"}),
        ),
        route(
            "regex",
            json!({"path": {"kind": "regex", "value": "/a/.*"}, "method": "PUT"}),
        ),
        route(
            "exact",
            json!({"path": {"kind": "exact", "value": "/a/b/c"}}),
        ),
        route(
            "prefix_short",
            json!({"path": {"kind": "prefix", "value": "/a/"}}),
        ),
        route(
            "any_with_header",
            json!({"headers": [{"name": "x", "kind": "present"}]}),
        ),
        route(
            "catch_all",
            json!({"path": {"kind": "prefix", "value": "/"}}),
        ),
    ]);
    assert_eq!(
        found(&t, &get("/a/b/c").method("POST")).as_deref(),
        Some("prefix_long")
    );
    assert_eq!(
        found(&t, &get("/a/b/c").method("PUT")).as_deref(),
        Some("regex")
    );
    assert_eq!(found(&t, &get("/a/b/c")).as_deref(), Some("exact"));
    assert_eq!(found(&t, &get("/a/b/d")).as_deref(), Some("prefix_short"));
    assert_eq!(
        found(&t, &get("/z").header("x", "1")).as_deref(),
        Some("any_with_header")
    );
    assert_eq!(
        found(&t, &get("/a/x").header("x", "1")).as_deref(),
        Some("prefix_short")
    );
    assert_eq!(found(&t, &get("/z")).as_deref(), Some("catch_all"));
    assert_eq!(found(&t, &get("z")), None);
}

#[test]
fn a_lower_ranked_shorter_prefix_beats_a_later_longer_one() {
    let t = host(vec![
        route("short", json!({"path": {"kind": "prefix", "value": "/a"}})),
        route(
            "long",
            json!({"path": {"kind": "prefix", "value": "/a/b/c"}}),
        ),
        route(
            "exact",
            json!({"path": {"kind": "exact", "value": "/a/b/c"}}),
        ),
    ]);
    assert_eq!(found(&t, &get("/a/b/c")).as_deref(), Some("short"));
}

#[test]
fn duplicate_paths_keep_their_order() {
    let t = host(vec![
        route(
            "canary",
            json!({"path": {"kind": "exact", "value": "/x"}, "headers": [{"name": "c", "kind": "present"}]}),
        ),
        route("stable", json!({"path": {"kind": "exact", "value": "/x"}})),
        route(
            "p1",
            json!({"path": {"kind": "prefix", "value": "/y"}, "query": [{"name": "c"}]}),
        ),
        route("p2", json!({"path": {"kind": "prefix", "value": "/y"}})),
    ]);
    assert_eq!(
        found(&t, &get("/x").header("c", "")).as_deref(),
        Some("canary")
    );
    assert_eq!(found(&t, &get("/x")).as_deref(), Some("stable"));
    assert_eq!(found(&t, &get("/y?c")).as_deref(), Some("p1"));
    assert_eq!(found(&t, &get("/y?d")).as_deref(), Some("p2"));
}

/// Tiny deterministic generator (no dev-dependency needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// The indexed lookup agrees with a plain linear scan (Envoy's algorithm) on random tables.
#[test]
fn indexed_find_agrees_with_a_linear_scan() {
    let segments = [
        "", "/", "/a", "/a/", "/a/b", "/ab", "/b", "/a/b/c", "/a?x=1",
    ];
    let mut rng = Lcg(7);
    for _ in 0..200 {
        let mut routes = Vec::new();
        for i in 0..rng.next(12) + 1 {
            let seg = segments[rng.next(segments.len())];
            let mut m = match rng.next(4) {
                0 => json!({"path": {"kind": "prefix", "value": seg}}),
                1 => json!({"path": {"kind": "exact", "value": seg}}),
                2 => {
                    json!({"path": {"kind": "regex", "value": format!("{}.*", regex::escape(seg))}})
                }
                _ => json!({}),
            };
            if rng.next(3) == 0 {
                m["method"] = json!(["GET", "POST"][rng.next(2)]);
            }
            if rng.next(3) == 0 {
                m["query"] = json!([{"name": "x"}]);
            }
            routes.push(route(&format!("r{i}"), m));
        }
        let table_spec =
            spec(json!({"virtualHosts": [{"name": "vh", "domains": ["*"], "routes": routes}]}));
        let t = RouteTable::build(&table_spec, |_| Ok(())).unwrap();
        for _ in 0..30 {
            let path = format!(
                "{}{}",
                segments[rng.next(segments.len())],
                ["", "?x=1", "/c", "b"][rng.next(4)]
            );
            let r = get(&path).method(["GET", "POST"][rng.next(2)]);
            let req = r.request();
            let (path_only, query) = split_query(&path);
            let expected =
                t.routes()
                    .zip(&table_spec.virtual_hosts[0].routes)
                    .find(|(compiled, s)| {
                        let path_ok = match &s.matcher.path {
                            None => true,
                            Some(PathMatchSpec::Prefix(p)) => path.starts_with(p.as_str()),
                            Some(PathMatchSpec::Exact(p)) => path_only == p,
                            Some(PathMatchSpec::Regex(_)) => true, // checked by the conditions
                        };
                        path_ok && compiled.conditions.hold(&req, path_only, query)
                    });
            assert_eq!(
                t.find(&req).map(|r| &*r.name),
                expected.map(|(r, _)| &*r.name),
                "path {path:?} in {table_spec:?}"
            );
        }
    }
}

// ---- building ------------------------------------------------------------------------------

#[test]
fn build_errors_name_the_route_and_field() {
    let e = one_route_err(json!({"path": {"kind": "regex", "value": "(unclosed"}}));
    assert_eq!(e.path, "virtualHosts[0].routes[0].match.path.value");
    assert!(e.message.starts_with("invalid regex"), "{e}");
    let e = one_route_err(
        json!({"headers": [{"name": "ok", "kind": "present"}, {"name": "x", "kind": "regex", "value": "["}]}),
    );
    assert_eq!(e.path, "virtualHosts[0].routes[0].match.headers[1].value");
    let e = one_route_err(json!({"headers": [{"name": "bad name", "kind": "present"}]}));
    assert_eq!(e.path, "virtualHosts[0].routes[0].match.headers[0].name");
    assert_eq!(e.to_string(), format!("{}: {}", e.path, e.message));
}

#[test]
fn action_builds_each_route_and_its_errors_carry_the_path() {
    let s = spec(json!({"virtualHosts": [
        {"name": "a", "domains": ["a"], "routes": [route("r0", json!({})), route("r1", json!({}))]},
        {"name": "b", "domains": ["b"], "routes": [route("r2", json!({}))]},
    ]}));
    let mut seen = 0;
    let t = RouteTable::build(&s, |r| {
        seen += 1;
        Ok(r.name.len() * 10 + seen)
    })
    .unwrap();
    assert_eq!((t.len(), t.is_empty()), (3, false));
    let r = get("/").authority("b");
    let hit = t.find(&r.request()).unwrap();
    assert_eq!((hit.action, &*hit.virtual_host), (23, "b"));
    let e = RouteTable::build(&s, |r| {
        if r.name == "r1" {
            Err("unknown cluster".into())
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        ("virtualHosts[0].routes[1].action", "unknown cluster")
    );
}

#[test]
fn empty_table_routes_nothing() {
    let t = RouteTable::build(&RouteTableSpec::default(), |_| Ok(())).unwrap();
    assert!(t.is_empty());
    assert_eq!(found(&t, &get("/")), None);
}

#[test]
fn tables_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RouteTable<()>>();
    assert_send_sync::<RouteTable<std::sync::Arc<str>>>();
}

// ---- weighted targets ----------------------------------------------------------------------

#[test]
fn weighted_targets_follow_cumulative_intervals() {
    let w = WeightedTargets::new(&[3, 0, 1, 0]).unwrap();
    assert_eq!((w.total(), w.len(), w.is_empty()), (4, 4, false));
    let picks: Vec<usize> = (0..8).map(|r| w.pick(r)).collect();
    assert_eq!(picks, [0, 0, 0, 2, 0, 0, 0, 2]);
    assert_eq!(w.pick(u64::MAX), (u64::MAX % 4 == 3) as usize * 2);
}

#[test]
fn zero_weight_targets_are_never_picked() {
    let w = WeightedTargets::new(&[0, 5, 0, 0, 2, 0]).unwrap();
    let mut counts = [0; 6];
    for r in 0..7 * 100 {
        counts[w.pick(r)] += 1;
    }
    assert_eq!(counts, [0, 500, 0, 0, 200, 0]);
}

#[test]
fn weighted_targets_need_a_positive_total() {
    assert_eq!(WeightedTargets::new(&[]), None);
    assert_eq!(WeightedTargets::new(&[0, 0]), None);
    let big = WeightedTargets::new(&[u32::MAX, u32::MAX]).unwrap();
    assert_eq!(big.total(), 2 * u64::from(u32::MAX));
    assert_eq!(big.pick(u64::from(u32::MAX)), 1);
}
