use super::*;
use crate::balance::HostView;
use crate::stats::ClusterStats;

fn spec(protocol: &str, endpoints: &[(String, u32)]) -> config::Cluster {
    let endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(a, w)| serde_json::json!({"address": a, "weight": w}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "name": "c", "protocol": protocol, "endpoints": endpoints,
    }))
    .expect("cluster spec")
}

fn addr(i: usize) -> UpstreamAddress {
    UpstreamAddress::Tcp(std::net::SocketAddr::from((
        [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
        80,
    )))
}

fn cluster(n: usize) -> Cluster {
    let eps: Vec<(String, u32)> = (0..n).map(|i| (addr(i).to_string(), 1)).collect();
    Cluster::build(
        &spec("tcp", &eps),
        Arc::new(ClusterStats::default()),
        None,
        ClusterSinks::default(),
    )
    .expect("cluster")
}

/// (address, weight) of every host, in order.
fn members(c: &Cluster) -> Vec<(UpstreamAddress, u32)> {
    c.hosts
        .load()
        .hosts
        .iter()
        .map(|m| (m.host.addr.clone(), m.weight))
        .collect()
}

fn host(c: &Cluster, a: UpstreamAddress) -> Arc<Host> {
    let set = c.hosts.load();
    let i = set
        .hosts
        .iter()
        .position(|m| m.host.addr == a)
        .expect("member");
    set.hosts[i].clone()
}

/// The invariants every membership keeps: the index finds each host where it is, the
/// balancer and the healthy count match the list.
fn check(c: &Cluster) {
    let set = c.hosts.load();
    let m = c.membership();
    assert_eq!(m.index.len(), set.hosts.len());
    for (i, member) in set.hosts.iter().enumerate() {
        assert_eq!(m.index[&member.host.addr], i);
    }
    assert_eq!(set.balancer.len(), set.hosts.len());
    let healthy = set.hosts.iter().filter(|m| m.host.healthy()).count();
    assert_eq!(set.healthy_count(), healthy);
    let mut weights: Vec<u32> = set
        .hosts
        .iter()
        .map(|m| m.weight)
        .filter(|&w| w > 0)
        .collect();
    weights.sort_unstable();
    weights.dedup();
    assert_eq!(m.weighted(), weights.len() > 1);
}

#[test]
fn a_delta_keeps_the_other_hosts_and_their_state() {
    let c = cluster(300); // three chunks
    let kept = host(&c, addr(5));
    kept.stats.rq_total.inc();
    assert_eq!(
        c.set_host_flag(&addr(7), HealthFlag::Ejected, true),
        Some(true)
    );
    c.update_endpoints(
        &[(addr(1000), 1), (addr(6), 3)],
        &[addr(0), addr(299), addr(9999)],
    );
    check(&c);
    let now = members(&c);
    assert_eq!(now.len(), 299);
    assert!(!now.iter().any(|(a, _)| *a == addr(0) || *a == addr(299)));
    assert!(now.contains(&(addr(1000), 1)));
    assert!(now.contains(&(addr(6), 3)));
    assert!(Arc::ptr_eq(&kept, &host(&c, addr(5))));
    assert_eq!(host(&c, addr(5)).stats.rq_total.get(), 1);
    assert!(!host(&c, addr(7)).healthy());
    assert_eq!(c.hosts.load().healthy_count(), 298);
    // The host moved into the removed one's place is still found by address.
    assert_eq!(
        c.set_host_flag(&addr(298), HealthFlag::FailedActiveHealthCheck, true),
        Some(true)
    );
    assert!(!host(&c, addr(298)).healthy());
    assert_eq!(
        c.set_host_flag(&addr(0), HealthFlag::Ejected, true),
        Some(false)
    );
    check(&c);
}

#[test]
fn deltas_match_a_whole_list_model() {
    // Random adds, removes and reweights across chunk boundaries, checked against a list.
    let c = cluster(0);
    let mut model: Vec<(UpstreamAddress, u32)> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..3000 {
        let a = addr(next(400) as usize);
        if next(3) == 0 {
            c.update_endpoints(&[], std::slice::from_ref(&a));
            model.retain(|(m, _)| *m != a);
        } else {
            let w = 1 + next(2) as u32;
            c.update_endpoints(&[(a.clone(), w)], &[]);
            match model.iter_mut().find(|(m, _)| *m == a) {
                Some(entry) => entry.1 = w,
                None => model.push((a, w)),
            }
        }
        let mut got = members(&c);
        let mut want = model.clone();
        got.sort_by_key(|(a, w)| (a.to_string(), *w));
        want.sort_by_key(|(a, w)| (a.to_string(), *w));
        assert_eq!(got, want);
    }
    check(&c);
}

#[test]
fn an_apply_reuses_hosts_by_address_and_protocol() {
    let old = cluster(200);
    let h = host(&old, addr(150));
    let eps: Vec<(String, u32)> = (100..250).map(|i| (addr(i).to_string(), 1)).collect();
    let new = Cluster::build(
        &spec("tcp", &eps),
        Arc::new(ClusterStats::default()),
        Some(&old),
        ClusterSinks::default(),
    )
    .expect("cluster");
    check(&new);
    assert!(Arc::ptr_eq(&h, &host(&new, addr(150))));
    let other = Cluster::build(
        &spec("http1", &eps),
        Arc::new(ClusterStats::default()),
        Some(&old),
        ClusterSinks::default(),
    )
    .expect("cluster");
    assert!(!Arc::ptr_eq(&h, &host(&other, addr(150))));
}

#[test]
fn an_apply_of_the_same_hosts_keeps_every_host_and_a_working_index() {
    // The list unchanged (order and weights): every host is the old one, the index finds each,
    // and a delta afterwards is made on the new version as on a freshly built one.
    for weights in [[1u32, 1, 1], [1, 2, 1], [0, 3, 3]] {
        let eps: Vec<(String, u32)> = (0..300)
            .map(|i| (addr(i).to_string(), weights[i % 3]))
            .collect();
        let build = |previous: Option<&Cluster>, protocol: &str| {
            Cluster::build(
                &spec(protocol, &eps),
                Arc::new(ClusterStats::default()),
                previous,
                ClusterSinks::default(),
            )
            .expect("cluster")
        };
        let old = build(None, "tcp");
        old.set_host_flag(&addr(7), HealthFlag::Ejected, true);
        let new = build(Some(&old), "tcp");
        check(&new);
        assert_eq!(members(&new), members(&old));
        for i in [0, 7, 128, 299] {
            assert!(Arc::ptr_eq(&host(&old, addr(i)), &host(&new, addr(i))));
        }
        assert_eq!(new.hosts.load().healthy_count(), 299);
        new.update_endpoints(&[(addr(1000), 2)], &[addr(0)]);
        check(&new);
        check(&old); // the old version's membership is its own
        assert_eq!(members(&old).len(), 300);
        // Another protocol keeps no host, as before.
        let other = build(Some(&old), "http1");
        check(&other);
        assert!(!Arc::ptr_eq(&host(&old, addr(5)), &host(&other, addr(5))));
    }
    // An address listed twice takes the general path (its repeat shares the first's host).
    let twice = [(addr(1), 1), (addr(2), 1), (addr(1), 1)];
    let c = cluster(0);
    c.set_endpoints(&twice, None);
    let first = c.hosts.load().hosts[0].clone();
    c.set_endpoints(&twice, None);
    check_repeated(&c);
    assert!(Arc::ptr_eq(&first, &c.hosts.load().hosts[2]));
}

#[test]
fn a_repeated_address_falls_back_to_the_whole_list() {
    let c = cluster(0);
    c.set_endpoints(&[(addr(1), 1), (addr(2), 1), (addr(1), 1)], None);
    check_repeated(&c);
    c.update_endpoints(&[(addr(3), 2)], &[addr(1)]);
    assert_eq!(members(&c), [(addr(2), 1), (addr(3), 2)]);
    check(&c);
}

fn check_repeated(c: &Cluster) {
    let m = c.membership();
    assert!(m.repeated);
    assert_eq!(m.index[&addr(1)], 0);
}

#[test]
fn outlier_samples_leave_out_the_hosts_without_traffic() {
    let c = cluster(300);
    let spec = config::OutlierSpec::default();
    let busy = host(&c, addr(200));
    busy.outcomes.record(Outcome::Status(200), &spec, |_| {});
    busy.outcomes.record(Outcome::Status(503), &spec, |_| {});
    let samples = c.take_samples();
    assert_eq!(samples.len(), 1);
    assert_eq!(&*samples[0].0, busy.name.as_ref());
    assert_eq!((samples[0].1.success, samples[0].1.total), (1, 2));
    // Taken: the next interval starts empty.
    assert!(c.take_samples().is_empty());
}

#[test]
fn a_flag_set_on_a_retired_version_reaches_the_new_ones_count() {
    let old = cluster(10);
    let eps: Vec<(String, u32)> = (0..10).map(|i| (addr(i).to_string(), 1)).collect();
    let new = Cluster::build(
        &spec("tcp", &eps),
        Arc::new(ClusterStats::default()),
        Some(&old),
        ClusterSinks::default(),
    )
    .expect("cluster");
    // Set on the old version after the new one counted its healthy hosts.
    assert_eq!(
        old.set_host_flag(&addr(3), HealthFlag::Ejected, true),
        Some(true)
    );
    assert_eq!(new.hosts.load().healthy_count(), 10);
    old.retire();
    new.recount_healthy();
    assert_eq!(new.hosts.load().healthy_count(), 9);
    assert_eq!(old.set_host_flag(&addr(4), HealthFlag::Ejected, true), None);
    assert_eq!(
        new.set_host_flag(&addr(4), HealthFlag::Ejected, true),
        Some(true)
    );
    check(&new);
}

fn function_cluster(
    endpoints: &[&str],
    concurrency: u32,
    wait_ms: u64,
) -> (Cluster, Arc<Mutex<Vec<InstanceWanted>>>) {
    let doc = serde_json::json!({
        "name": "fn", "protocol": "http1",
        "function": {"concurrency": concurrency, "instanceWaitMs": wait_ms},
        "endpoints": endpoints.iter().map(|a| serde_json::json!({"address": a})).collect::<Vec<_>>(),
    });
    let spec: config::Cluster = serde_json::from_value(doc).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink_seen = seen.clone();
    let sinks = ClusterSinks {
        outlier: None,
        instance_wanted: Some(Arc::new(move |w| sink_seen.lock().unwrap().push(w))),
    };
    let c = Cluster::build(&spec, Arc::new(ClusterStats::default()), None, sinks).unwrap();
    (c, seen)
}

#[tokio::test]
async fn claim_instance_throttles_waits_with_an_event_and_gives_up() {
    let (c, seen) = function_cluster(&["unix:/tmp/a.sock"], 2, 20);
    let (held, i) = c.claim_instance(&[]).await.unwrap();
    assert_eq!(i, Some(0));
    assert_eq!(&*held.host().name, "unix:/tmp/a.sock");
    // The one host is busy: this request waits, the control layer hears of it, and no
    // instance comes within instanceWaitMs.
    let e = c.claim_instance(&[]).await.err().unwrap();
    assert_eq!((e.kind, e.status()), (Kind::NoInstance, 503));
    assert_eq!(c.stats.rq_instance_wait_timeout.get(), 1);
    assert_eq!(c.stats.rq_waiting.get(), 0);
    let wanted = seen.lock().unwrap().clone();
    assert_eq!(
        wanted,
        [InstanceWanted {
            cluster: "fn".into(),
            waiting: 1,
            busy: 1,
            hosts: 1
        }]
    );
    // A waiter plus the busy host reach concurrency 2: the next one is throttled; the
    // waiter gets the host once it is released.
    drop(held);
    let (c, _) = function_cluster(&["unix:/tmp/a.sock"], 2, 60_000);
    let c = Arc::new(c);
    let (held, _) = c.claim_instance(&[]).await.unwrap();
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.claim_instance(&[]).await.map(|(claim, _)| claim) }
    });
    while c.stats.rq_waiting.get() == 0 {
        tokio::task::yield_now().await;
    }
    let e = c.claim_instance(&[]).await.err().unwrap();
    assert_eq!((e.kind, e.status()), (Kind::Throttled, 429));
    assert_eq!(c.stats.rq_throttled.get(), 1);
    let host = held.host().clone();
    drop(held);
    let handed = waiting.await.unwrap().unwrap();
    assert!(Arc::ptr_eq(handed.host(), &host));
    assert_eq!(c.stats.rq_waiting.get(), 0);
}

#[tokio::test]
async fn set_endpoints_hands_a_new_host_to_a_waiter_and_retires_removed_ones() {
    let (c, seen) = function_cluster(&[], 5, 60_000);
    let c = Arc::new(c);
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.claim_instance(&[]).await.map(|(claim, _)| claim) }
    });
    while seen.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    let addr: UpstreamAddress = "unix:/tmp/new.sock".parse().unwrap();
    c.set_endpoints(&[(addr.clone(), 1)], None);
    let claim = waiting.await.unwrap().unwrap();
    assert_eq!(claim.host().addr, addr);
    let host = claim.host().clone();
    c.set_endpoints(&[], None);
    assert!(host.retired.load(Relaxed));
    drop(claim);
    assert!(!host.claimed.load(Relaxed));
    assert_eq!(c.function.as_ref().unwrap().busy(), 0);
}

async fn wait_in_line(
    c: &Arc<Cluster>,
    seen: &Mutex<Vec<InstanceWanted>>,
) -> tokio::task::JoinHandle<Result<Claim, ProxyError>> {
    let before = seen.lock().unwrap().len();
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.claim_instance(&[]).await.map(|(claim, _)| claim) }
    });
    while seen.lock().unwrap().len() == before {
        tokio::task::yield_now().await;
    }
    waiting
}

#[tokio::test]
async fn a_delta_hands_a_unix_host_to_a_waiter_and_retires_a_removed_one() {
    let (c, seen) = function_cluster(&[], 5, 60_000);
    let c = Arc::new(c);
    let waiting = wait_in_line(&c, &seen).await;
    let a: UpstreamAddress = "unix:/tmp/a.sock".parse().unwrap();
    let b: UpstreamAddress = "unix:/tmp/b.sock".parse().unwrap();
    c.update_endpoints(&[(a.clone(), 1), (b.clone(), 1)], &[]);
    check(&c);
    let claim = waiting.await.unwrap().unwrap();
    let held = claim.host().clone();
    let other = if held.addr == a { b } else { a };
    // The held host leaves: it retires, and once released it goes to no waiter.
    c.update_endpoints(&[], std::slice::from_ref(&held.addr));
    check(&c);
    assert!(held.retired.load(Relaxed));
    assert_eq!(
        c.set_host_flag(&held.addr, HealthFlag::Ejected, true),
        Some(false)
    );
    assert_eq!(
        c.set_host_flag(&other, HealthFlag::Ejected, true),
        Some(true)
    );
    let waiting = wait_in_line(&c, &seen).await;
    drop(claim);
    assert!(!held.claimed.load(Relaxed));
    assert_eq!(c.function.as_ref().unwrap().busy(), 0);
    // The other host turning healthy again is handed to the waiter at once.
    assert_eq!(
        c.set_host_flag(&other, HealthFlag::Ejected, false),
        Some(true)
    );
    let claim = waiting.await.unwrap().unwrap();
    assert_eq!(claim.host().addr, other);
    check(&c);
}

#[test]
fn an_apply_retires_the_hosts_the_new_version_does_not_keep() {
    let old = cluster(200);
    let eps: Vec<(String, u32)> = (100..300).map(|i| (addr(i).to_string(), 1)).collect();
    let new = Cluster::build(
        &spec("tcp", &eps),
        Arc::new(ClusterStats::default()),
        Some(&old),
        ClusterSinks::default(),
    )
    .expect("cluster");
    assert!(
        !host(&old, addr(50)).retired.load(Relaxed),
        "not before the commit"
    );
    old.retire_replaced_hosts(Some(&new));
    assert!(host(&old, addr(50)).retired.load(Relaxed));
    assert!(!host(&new, addr(150)).retired.load(Relaxed));
    assert!(!host(&new, addr(250)).retired.load(Relaxed));
    new.retire_replaced_hosts(None);
    assert!(host(&new, addr(150)).retired.load(Relaxed));
}

#[test]
fn host_rows_read_as_the_host_objects_with_the_view() {
    // A row per address (an address listed twice: its first place, the last one's numbers,
    // as a map of host name to stats), each read as `host_stats` plus the control layer's
    // view; the compact health view overrides a note's, an absent record leaves it be.
    use serde_json::{Map, Value};
    let c = cluster(0);
    c.set_endpoints(&[(addr(1), 1), (addr(2), 2), (addr(1), 3)], None);
    c.set_host_flag(&addr(2), HealthFlag::FailedActiveHealthCheck, true);
    let (one, two) = (addr(1).to_string(), addr(2).to_string());
    let mut notes = Notes {
        health_flags: true,
        ..Notes::default()
    };
    let mut outlier = Map::new();
    outlier.insert("ejected".into(), Value::Bool(false));
    let mut stale = Map::new();
    stale.insert("state".into(), Value::String("stale".into()));
    let hosts = notes.hosts.entry("c".into()).or_default();
    hosts.insert(
        one.clone(),
        HostNote {
            active_hc: Some(stale.clone()),
            outlier: Some(outlier.clone()),
            hc_timeout: false,
        },
    );
    hosts.insert(
        two.clone(),
        HostNote {
            active_hc: Some(stale.clone()),
            outlier: None,
            hc_timeout: false,
        },
    );
    let packed = PackedHealth {
        keys: Arc::new(PackedKeys::new(vec![one.clone(), two.clone()])),
        records: vec![1, 0, 4, 0, 0, PackedHealth::ABSENT, 0, 0, 0, 0],
        names: vec![Some("healthy".into()), Some("unhealthy".into())],
    };
    let rows = HostRows::of(&c, &mut notes, Some(packed));
    assert!(notes.hosts.is_empty()); // taken out
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.names().collect::<Vec<_>>(),
        [one.as_str(), two.as_str()]
    );
    let set = c.hosts.load();
    let first = rows.get(&one).expect("row");
    let mut want = c.host_stats(set.hosts.get(2));
    let mut active = Map::new();
    active.insert("state".into(), Value::String("unhealthy".into()));
    active.insert("last_result".into(), Value::String("healthy".into()));
    active.insert("consecutive_healthy".into(), Value::from(4u64));
    active.insert("consecutive_unhealthy".into(), Value::from(0u64));
    want.insert("active_hc".into(), Value::Object(active));
    want.insert("outlier".into(), Value::Object(outlier));
    want.insert("health_flags".into(), Value::String("healthy".into()));
    assert_eq!(first, want);
    assert_eq!(first["weight"], Value::from(3u32));
    let second = rows.get(&two).expect("row");
    assert_eq!(second["active_hc"], Value::Object(stale));
    assert_eq!(
        second["health_flags"],
        Value::String("/failed_active_hc".into())
    );
    assert!(rows.get("10.9.9.9:80").is_none() && !rows.contains("10.9.9.9:80"));
    let objects: Vec<_> = rows.objects().map(|(k, m)| (k.to_owned(), m)).collect();
    assert_eq!(objects, [(one, first), (two, second)]);
}

#[test]
fn host_sets_list_their_hosts_by_name_a_name_twice_in_its_order() {
    // As a stable sort by name would: the admin texts' and the Prometheus text's order.
    let eps: Vec<(String, u32)> = [12, 3, 250, 3, 40]
        .iter()
        .enumerate()
        .map(|(w, &i)| (addr(i).to_string(), w as u32 + 1))
        .collect();
    let c = Cluster::build(
        &spec("tcp", &eps),
        Arc::new(ClusterStats::default()),
        None,
        ClusterSinks::default(),
    )
    .expect("cluster");
    let set = c.hosts.load();
    let listed: Vec<(String, u32)> = set
        .by_name()
        .map(|m| (m.host.name.to_string(), m.weight))
        .collect();
    let mut want: Vec<(String, u32)> = set
        .hosts
        .iter()
        .map(|m| (m.host.name.to_string(), m.weight))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, want);
    assert_eq!(set.by_name().count(), set.hosts.len()); // made once, read again
}
