//! Path-prefix index: a radix trie over bytes. Walking a request path from the root visits, in
//! order of increasing length, every node whose prefix the path starts with, so the candidate
//! prefix routes come out in O(path length) whatever the number of routes.

use std::collections::BTreeMap;

/// Collects (prefix, rank) pairs; [`PrefixTrieBuilder::build`] compresses them into the trie.
#[derive(Debug, Default)]
pub(super) struct PrefixTrieBuilder {
    /// A plain one-byte-per-edge trie; node 0 is the root (the empty prefix).
    nodes: Vec<BuildNode>,
}

#[derive(Debug, Default)]
struct BuildNode {
    children: BTreeMap<u8, usize>,
    ranks: Vec<u32>,
}

#[derive(Debug)]
pub(super) struct PrefixTrie {
    /// Node 0 is the root, with an empty label.
    nodes: Box<[Node]>,
}

#[derive(Debug)]
struct Node {
    /// Bytes on the edge from the parent to this node (a chain of single-child nodes folded
    /// into one edge).
    label: Box<[u8]>,
    /// Routes whose prefix ends exactly here, ascending.
    ranks: Box<[u32]>,
    /// First byte of each child's label, sorted; `children[i]` is the node it leads to.
    first_bytes: Box<[u8]>,
    children: Box<[u32]>,
}

impl PrefixTrieBuilder {
    /// Add a route. Ranks must be inserted in increasing order.
    pub(super) fn insert(&mut self, prefix: &[u8], rank: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(BuildNode::default());
        }
        let mut at = 0;
        for &b in prefix {
            at = match self.nodes[at].children.get(&b) {
                Some(&next) => next,
                None => {
                    let next = self.nodes.len();
                    self.nodes.push(BuildNode::default());
                    self.nodes[at].children.insert(b, next);
                    next
                }
            };
        }
        self.nodes[at].ranks.push(rank);
    }

    /// Fold single-child chains into labelled edges and lay the nodes out flat.
    pub(super) fn build(self) -> PrefixTrie {
        let Some(root) = self.nodes.first() else {
            return PrefixTrie {
                nodes: Box::new([Node::leaf(Box::new([]), &[])]),
            };
        };
        let mut out = vec![Node::leaf(Box::new([]), &root.ranks)];
        // (builder node, output node) pairs whose children are still to be laid out. An
        // explicit stack: prefixes can be long, recursion depth would follow them.
        let mut pending = vec![(0usize, 0usize)];
        while let Some((b, o)) = pending.pop() {
            let mut first_bytes = Vec::with_capacity(self.nodes[b].children.len());
            let mut children = Vec::with_capacity(self.nodes[b].children.len());
            for (&byte, &child) in &self.nodes[b].children {
                let mut label = vec![byte];
                let mut end = child;
                while self.nodes[end].ranks.is_empty() && self.nodes[end].children.len() == 1 {
                    let (&next_byte, &next) =
                        self.nodes[end].children.iter().next().expect("one child");
                    label.push(next_byte);
                    end = next;
                }
                let index = out.len();
                out.push(Node::leaf(label.into(), &self.nodes[end].ranks));
                first_bytes.push(byte);
                children.push(u32::try_from(index).expect("trie node count fits in u32"));
                pending.push((end, index));
            }
            out[o].first_bytes = first_bytes.into();
            out[o].children = children.into();
        }
        PrefixTrie { nodes: out.into() }
    }
}

impl Node {
    fn leaf(label: Box<[u8]>, ranks: &[u32]) -> Node {
        Node {
            label,
            ranks: ranks.into(),
            first_bytes: Box::new([]),
            children: Box::new([]),
        }
    }
}

impl PrefixTrie {
    /// Call `f` with the ranks of every prefix `path` starts with, shortest prefix first.
    pub(super) fn for_each_match(&self, path: &[u8], mut f: impl FnMut(&[u32])) {
        let mut node = &self.nodes[0];
        if !node.ranks.is_empty() {
            f(&node.ranks);
        }
        let mut rest = path;
        while let Some(&b) = rest.first() {
            let Some(i) = node.child_for(b) else { return };
            let child = &self.nodes[node.children[i] as usize];
            let Some(after) = rest.strip_prefix(&*child.label) else {
                return;
            };
            rest = after;
            if !child.ranks.is_empty() {
                f(&child.ranks);
            }
            node = child;
        }
    }
}

impl Node {
    fn child_for(&self, b: u8) -> Option<usize> {
        // NOTE: most nodes branch a few ways, where a linear scan of a short byte array beats
        // a binary search; wide fan-outs (e.g. "/svc" + every digit and letter) use the latter.
        if self.first_bytes.len() <= 16 {
            self.first_bytes.iter().position(|&x| x == b)
        } else {
            self.first_bytes.binary_search(&b).ok()
        }
    }
}
