//! Virtual-host selection by authority, in Envoy's order: exact, longest suffix wildcard
//! (`*.foo.com`, `*-bar.foo.com`), longest prefix wildcard (`foo.*`), then `*`. Domains and the
//! authority are compared lowercased; the port stays part of the authority. A wildcard stands
//! for at least one character.

use std::collections::HashMap;

/// Domain (lowercased, without its wildcard) → virtual host index.
type HostByDomain = HashMap<Box<[u8]>, usize>;

/// Wildcard domains grouped by the length of their literal part, longest first.
type ByLength = Vec<(usize, HostByDomain)>;

#[derive(Debug, Default)]
pub(super) struct DomainIndex {
    exact: HostByDomain,
    /// Suffix wildcards without their '*', grouped by length, longest first.
    suffixes: ByLength,
    /// Prefix wildcards without their '*', grouped by length, longest first.
    prefixes: ByLength,
    any: Option<usize>,
}

/// Authorities up to this length are lowercased on the stack.
const STACK_AUTHORITY: usize = 256;

impl DomainIndex {
    /// Register `domain` for virtual host `host`. A domain may appear once in a table.
    pub(super) fn insert(&mut self, domain: &str, host: usize) -> Result<(), String> {
        let lower = domain.to_ascii_lowercase();
        let stars = lower.bytes().filter(|&b| b == b'*').count();
        let duplicate = |_| format!("domain {domain:?} is already used by another virtual host");
        match (stars, lower.as_bytes()) {
            (0, _) => insert_new(&mut self.exact, lower.as_bytes(), host).map_err(duplicate),
            // A refused domain leaves the index as it was (found by route::proptests).
            (1, b"*") if self.any.is_some() => Err(duplicate(())),
            (1, b"*") => {
                self.any = Some(host);
                Ok(())
            }
            (1, [b'*', rest @ ..]) => {
                insert_by_len(&mut self.suffixes, rest, host).map_err(duplicate)
            }
            (1, [rest @ .., b'*']) => {
                insert_by_len(&mut self.prefixes, rest, host).map_err(duplicate)
            }
            _ => Err(format!(
                "domain {domain:?}: a wildcard '*' is allowed only as the first or last character"
            )),
        }
    }

    /// Index of the virtual host for `authority`, if any.
    pub(super) fn find(&self, authority: &str) -> Option<usize> {
        // NOTE: the common sidecar table has a single "*" host: answer without touching the
        // authority at all.
        if self.exact.is_empty() && self.suffixes.is_empty() && self.prefixes.is_empty() {
            return self.any;
        }
        // NOTE: lowercase into a stack buffer (or not at all when already lowercase, the usual
        // case) so selection does not allocate; only absurdly long authorities use the heap.
        let mut buf = [0u8; STACK_AUTHORITY];
        let heap;
        let host: &[u8] = if !authority.bytes().any(|b| b.is_ascii_uppercase()) {
            authority.as_bytes()
        } else if authority.len() <= STACK_AUTHORITY {
            let b = &mut buf[..authority.len()];
            b.copy_from_slice(authority.as_bytes());
            b.make_ascii_lowercase();
            b
        } else {
            heap = authority.to_ascii_lowercase();
            heap.as_bytes()
        };
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        // NOTE: one hash lookup per distinct wildcard length (Envoy's layout) rather than a
        // scan over every wildcard domain.
        for (len, by_suffix) in &self.suffixes {
            if host.len() > *len {
                if let Some(&i) = by_suffix.get(&host[host.len() - len..]) {
                    return Some(i);
                }
            }
        }
        for (len, by_prefix) in &self.prefixes {
            if host.len() > *len {
                if let Some(&i) = by_prefix.get(&host[..*len]) {
                    return Some(i);
                }
            }
        }
        self.any
    }
}

fn insert_new(map: &mut HostByDomain, key: &[u8], host: usize) -> Result<(), ()> {
    if map.contains_key(key) {
        return Err(());
    }
    map.insert(key.into(), host);
    Ok(())
}

fn insert_by_len(groups: &mut ByLength, key: &[u8], host: usize) -> Result<(), ()> {
    let at = match groups.binary_search_by(|(len, _)| key.len().cmp(len)) {
        Ok(at) => at,
        Err(at) => {
            groups.insert(at, (key.len(), HashMap::new()));
            at
        }
    };
    insert_new(&mut groups[at].1, key, host)
}
