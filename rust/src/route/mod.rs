//! Route matching: pick the virtual host for a request's authority, then the first route in it
//! whose whole match holds. Tables are built once from a [`RouteTableSpec`] and are immutable
//! afterwards, so a snapshot can share them across worker threads.
//!
//! Semantics follow `spec/appmesh.md` §2 and, where App Mesh is silent, `spec/envoy-semantics.md`
//! §8. The module is pure data: no I/O, no async, no pyo3. It imports only `config` (and the
//! `http`/`regex` crates); nothing above it in the layering.
//!
//! Envoy scans a host's routes linearly. Here each host indexes its routes by path at build time
//! (exact paths in a hash map, prefixes in a byte trie, regex / path-less routes in an
//! "always check" list) and only the candidates from those indexes have their remaining
//! conditions evaluated, so a lookup costs O(path length + candidates), not O(routes).

mod conditions;
mod domains;
mod prefix_trie;
mod weighted;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{PathMatchSpec, RouteSpec, RouteTableSpec};
use conditions::{split_query, Conditions};
use domains::DomainIndex;
use prefix_trie::{PrefixTrie, PrefixTrieBuilder};

pub use weighted::WeightedTargets;

/// The parts of a request that routing reads. Borrowed: building one costs nothing.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method as sent, e.g. "GET" (compared case-sensitively, as methods are).
    pub method: &'a str,
    /// Request target path including its query string, e.g. "/a/b?x=1".
    pub path: &'a str,
    /// Host / :authority as sent, port included when sent ("svc.local:8080").
    pub authority: &'a str,
    /// "http" or "https".
    pub scheme: &'a str,
    /// Local port the connection arrived on.
    pub port: u16,
    pub headers: &'a http::HeaderMap,
}

/// A route table built from one [`RouteTableSpec`]: immutable, `Send + Sync` when `A` is.
#[derive(Debug)]
pub struct RouteTable<A> {
    hosts: Vec<VirtualHost<A>>,
    domains: DomainIndex,
    len: usize,
}

/// One virtual host: its routes in evaluation order and the path index over them.
#[derive(Debug)]
pub struct VirtualHost<A> {
    pub name: Arc<str>,
    routes: Vec<Route<A>>,
    /// Routes (by rank = index in `routes`) whose path is an exact match, keyed by that path.
    exact: HashMap<Box<str>, Box<[u32]>>,
    /// Routes whose path is a prefix match.
    prefixes: PrefixTrie,
    /// Routes with a regex path or no path: candidates for every request.
    always: Box<[u32]>,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route<A> {
    pub name: Arc<str>,
    /// The caller's action, produced by the `action` function given to [`RouteTable::build`].
    pub action: A,
    /// The matched path prefix (for prefix rewrites); `None` unless the route matches a prefix.
    pub prefix: Option<Box<str>>,
    /// Name of the virtual host this route belongs to.
    pub virtual_host: Arc<str>,
    conditions: Conditions,
}

/// Why a route table could not be built; `path` says where in the `RouteTableSpec`, e.g.
/// `virtualHosts[0].routes[2].match.headers[1].value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteBuildError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for RouteBuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for RouteBuildError {}

impl<A> RouteTable<A> {
    /// Build from the spec. `action` converts each route's spec into the caller's action type
    /// (the proxy resolves cluster names to indices there); its error is reported at the
    /// route's `action` path. Never partially succeeds.
    pub fn build(
        spec: &RouteTableSpec,
        mut action: impl FnMut(&RouteSpec) -> Result<A, String>,
    ) -> Result<Self, RouteBuildError> {
        let mut domains = DomainIndex::default();
        let mut hosts = Vec::with_capacity(spec.virtual_hosts.len());
        let mut len = 0;
        for (v, vh) in spec.virtual_hosts.iter().enumerate() {
            for (d, domain) in vh.domains.iter().enumerate() {
                domains
                    .insert(domain, v)
                    .map_err(|message| RouteBuildError {
                        path: format!("virtualHosts[{v}].domains[{d}]"),
                        message,
                    })?;
            }
            let host = VirtualHost::build(vh.name.as_str(), &vh.routes, v, &mut action)?;
            len += host.routes.len();
            hosts.push(host);
        }
        Ok(RouteTable {
            hosts,
            domains,
            len,
        })
    }

    /// The virtual host for `req.authority` (Envoy order: exact, longest `*.suffix`, longest
    /// `prefix.*`, `*`; case-insensitive, port kept), then the first route in it, in order,
    /// whose whole match holds.
    pub fn find(&self, req: &Request<'_>) -> Option<&Route<A>> {
        self.virtual_host(req.authority)?.find(req)
    }

    /// The virtual host an authority selects, if any.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost<A>> {
        self.domains.find(authority).map(|i| &self.hosts[i])
    }

    /// Number of routes, over all virtual hosts.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every route, host by host, in evaluation order.
    pub fn routes(&self) -> impl Iterator<Item = &Route<A>> {
        self.hosts.iter().flat_map(|h| h.routes.iter())
    }
}

impl<A> VirtualHost<A> {
    fn build(
        name: &str,
        specs: &[RouteSpec],
        v: usize,
        action: &mut impl FnMut(&RouteSpec) -> Result<A, String>,
    ) -> Result<Self, RouteBuildError> {
        let host_name: Arc<str> = Arc::from(name);
        let mut routes = Vec::with_capacity(specs.len());
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut prefixes = PrefixTrieBuilder::default();
        let mut always = Vec::new();
        for (r, spec) in specs.iter().enumerate() {
            let at = format!("virtualHosts[{v}].routes[{r}]");
            let rank = u32::try_from(r).map_err(|_| RouteBuildError {
                path: at.clone(),
                message: "too many routes in one virtual host".into(),
            })?;
            let conditions = Conditions::build(&spec.matcher, &format!("{at}.match"))?;
            let mut prefix = None;
            // Ranks are pushed in increasing order, so every index list stays sorted.
            match &spec.matcher.path {
                Some(PathMatchSpec::Exact(p)) => {
                    exact.entry(p.as_str().into()).or_default().push(rank)
                }
                Some(PathMatchSpec::Prefix(p)) => {
                    prefixes.insert(p.as_bytes(), rank);
                    prefix = Some(p.as_str().into());
                }
                Some(PathMatchSpec::Regex(_)) | None => always.push(rank),
            }
            let action = action(spec).map_err(|message| RouteBuildError {
                path: format!("{at}.action"),
                message,
            })?;
            routes.push(Route {
                name: Arc::from(spec.name.as_str()),
                action,
                prefix,
                virtual_host: host_name.clone(),
                conditions,
            });
        }
        Ok(VirtualHost {
            name: host_name,
            routes,
            exact: exact
                .into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect(),
            prefixes: prefixes.build(),
            always: always.into_boxed_slice(),
        })
    }

    /// The first route, in order, whose whole match holds.
    pub fn find(&self, req: &Request<'_>) -> Option<&Route<A>> {
        let (path_only, query) = split_query(req.path);
        // NOTE: each index yields candidate ranks in ascending order. The answer is the lowest
        // rank whose conditions hold, i.e. the minimum over the indexes of each one's first
        // holding candidate; scanning each list only while `rank < best` gives exactly the
        // result of a merged, in-order scan (conditions are pure) without a merge buffer, and
        // stops early once a low rank has been found.
        let mut best = u32::MAX;
        let mut scan = |ranks: &[u32]| {
            for &rank in ranks {
                if rank >= best {
                    return;
                }
                if self.routes[rank as usize]
                    .conditions
                    .hold(req, path_only, query)
                {
                    best = rank;
                    return;
                }
            }
        };
        // NOTE: exact paths first: the compiler ranks them before regexes and prefixes, so the
        // hash lookup usually settles `best` and prunes the other lists to nothing.
        if let Some(ranks) = self.exact.get(path_only) {
            scan(ranks);
        }
        // Prefixes match the whole target, query included (Envoy `prefix`).
        self.prefixes.for_each_match(req.path.as_bytes(), &mut scan);
        scan(&self.always);
        self.routes.get(best as usize)
    }

    /// Routes in evaluation order.
    pub fn routes(&self) -> &[Route<A>] {
        &self.routes
    }
}
