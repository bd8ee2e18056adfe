//! Property tests (proptest) of the matchers against plain reference implementations. They run
//! under `cargo test` with a few hundred cases each; `PROPTEST_CASES=100000 cargo test --lib
//! proptests` runs them long (docs/fuzzing.md).

use super::conditions::{decoded_eq, split_query};
use super::domains::DomainIndex;
use super::prefix_trie::PrefixTrieBuilder;
use proptest::prelude::*;

/// Short strings over a few bytes, so that prefixes, suffixes and collisions are common.
fn short(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::sample::select(alphabet.as_bytes().to_vec()),
        0..max,
    )
    .prop_map(|v| String::from_utf8(v).expect("ASCII alphabet"))
}

/// Envoy's virtual-host order, by scanning: exact, longest suffix wildcard, longest prefix
/// wildcard, then `*`; a wildcard stands for at least one character.
fn reference_host(domains: &[(String, usize)], authority: &str) -> Option<usize> {
    let a = authority.to_ascii_lowercase();
    let exact = domains.iter().find(|(d, _)| !d.contains('*') && *d == a);
    let suffix = domains
        .iter()
        .filter_map(|(d, h)| Some((d.strip_prefix('*')?, h)))
        .filter(|(s, _)| !s.is_empty() && a.len() > s.len() && a.ends_with(*s))
        .max_by_key(|(s, _)| s.len());
    let prefix = domains
        .iter()
        .filter_map(|(d, h)| Some((d.strip_suffix('*')?, h)))
        .filter(|(p, _)| !p.is_empty() && a.len() > p.len() && a.starts_with(*p))
        .max_by_key(|(p, _)| p.len());
    let any = domains.iter().find(|(d, _)| d == "*");
    exact
        .map(|(_, h)| *h)
        .or(suffix.map(|(_, h)| *h))
        .or(prefix.map(|(_, h)| *h))
        .or(any.map(|(_, h)| *h))
}

fn percent_encode_all(s: &[u8]) -> String {
    s.iter().map(|b| format!("%{b:02X}")).collect()
}

proptest! {
    #[test]
    fn prefix_trie_visits_exactly_the_prefixes_of_the_path(
        prefixes in proptest::collection::vec(short("/ab", 6), 0..12),
        path in short("/abc", 10),
    ) {
        let mut b = PrefixTrieBuilder::default();
        for (rank, p) in prefixes.iter().enumerate() {
            b.insert(p.as_bytes(), rank as u32);
        }
        let trie = b.build();
        let mut seen = Vec::new();
        trie.for_each_match(path.as_bytes(), |ranks| seen.push(ranks.to_vec()));
        // Reference: every prefix the path starts with, grouped by prefix, shortest first.
        let mut by_len: std::collections::BTreeMap<usize, Vec<u32>> = Default::default();
        for (rank, p) in prefixes.iter().enumerate() {
            if path.starts_with(p.as_str()) {
                by_len.entry(p.len()).or_default().push(rank as u32);
            }
        }
        let expected: Vec<Vec<u32>> = by_len.into_values().collect();
        prop_assert_eq!(seen, expected);
    }

    #[test]
    fn domain_index_follows_envoys_order(
        domains in proptest::collection::vec(
            (short("ab.", 4), 0..4u8).prop_map(|(d, kind)| match kind {
                0 => format!("*{d}"),
                1 => format!("{d}*"),
                2 if d.is_empty() => "*".to_string(),
                _ => d,
            }),
            0..10,
        ),
        authority in short("aAbB.", 7),
    ) {
        let mut index = DomainIndex::default();
        let mut kept = Vec::new();
        for (host, d) in domains.iter().enumerate() {
            // Empty literals ("", "*" twice...) and duplicates are refused; skip them as the
            // table builder would report them.
            if d.is_empty() || d == "**" {
                continue;
            }
            if index.insert(d, host).is_ok() {
                kept.push((d.to_ascii_lowercase(), host));
            }
        }
        prop_assert_eq!(index.find(&authority), reference_host(&kept, &authority));
    }

    #[test]
    fn percent_decoding_compares_like_decode_then_eq(raw in proptest::collection::vec(any::<u8>(), 0..12),
                                                    other in proptest::collection::vec(any::<u8>(), 0..12)) {
        // Fully encoded bytes decode to themselves; bytes without '%' compare as they are.
        prop_assert!(decoded_eq(percent_encode_all(&raw).as_bytes(), &raw));
        if !raw.contains(&b'%') {
            prop_assert_eq!(decoded_eq(&raw, &other), raw == other);
        }
    }

    #[test]
    fn split_query_splits_at_the_first_question_mark(path in "[/a?=&%]{0,16}") {
        let (p, q) = split_query(&path);
        prop_assert!(!p.contains('?'));
        match path.find('?') {
            Some(i) => { prop_assert_eq!(p, &path[..i]); prop_assert_eq!(q, &path[i + 1..]); }
            None => { prop_assert_eq!(p, path.as_str()); prop_assert_eq!(q, ""); }
        }
    }
}
