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

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80))
}

fn cluster(n: usize) -> Cluster {
    let eps: Vec<(String, u32)> = (0..n).map(|i| (addr(i).to_string(), 1)).collect();
    Cluster::build(
        &spec("tcp", &eps),
        Arc::new(ClusterStats::default()),
        None,
        None,
    )
    .expect("cluster")
}

/// (address, weight) of every host, in order.
fn members(c: &Cluster) -> Vec<(SocketAddr, u32)> {
    c.hosts
        .load()
        .hosts
        .iter()
        .map(|m| (m.host.addr, m.weight))
        .collect()
}

fn host(c: &Cluster, a: SocketAddr) -> Arc<Host> {
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
        c.set_host_flag(addr(7), HealthFlag::Ejected, true),
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
        c.set_host_flag(addr(298), HealthFlag::FailedActiveHealthCheck, true),
        Some(true)
    );
    assert!(!host(&c, addr(298)).healthy());
    assert_eq!(
        c.set_host_flag(addr(0), HealthFlag::Ejected, true),
        Some(false)
    );
    check(&c);
}

#[test]
fn deltas_match_a_whole_list_model() {
    // Random adds, removes and reweights across chunk boundaries, checked against a list.
    let c = cluster(0);
    let mut model: Vec<(SocketAddr, u32)> = Vec::new();
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
            c.update_endpoints(&[], &[a]);
            model.retain(|(m, _)| *m != a);
        } else {
            let w = 1 + next(2) as u32;
            c.update_endpoints(&[(a, w)], &[]);
            match model.iter_mut().find(|(m, _)| *m == a) {
                Some(entry) => entry.1 = w,
                None => model.push((a, w)),
            }
        }
        let mut got = members(&c);
        let mut want = model.clone();
        got.sort();
        want.sort();
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
        None,
    )
    .expect("cluster");
    check(&new);
    assert!(Arc::ptr_eq(&h, &host(&new, addr(150))));
    let other = Cluster::build(
        &spec("http1", &eps),
        Arc::new(ClusterStats::default()),
        Some(&old),
        None,
    )
    .expect("cluster");
    assert!(!Arc::ptr_eq(&h, &host(&other, addr(150))));
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
        None,
    )
    .expect("cluster");
    // Set on the old version after the new one counted its healthy hosts.
    assert_eq!(
        old.set_host_flag(addr(3), HealthFlag::Ejected, true),
        Some(true)
    );
    assert_eq!(new.hosts.load().healthy_count(), 10);
    old.retire();
    new.recount_healthy();
    assert_eq!(new.hosts.load().healthy_count(), 9);
    assert_eq!(old.set_host_flag(addr(4), HealthFlag::Ejected, true), None);
    assert_eq!(
        new.set_host_flag(addr(4), HealthFlag::Ejected, true),
        Some(true)
    );
    check(&new);
}
