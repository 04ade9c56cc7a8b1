//! tree-math.json (RFC 9420 Appendix C): every case.

use hsmls::error::{NodeIndex, TreeMathError};
use hsmls::internal::tree_math::{self, copath, direct_path, left, parent, right, root, sibling};
use hsmls::wire::LeafIndex;
use hsmls_test_vectors::{CaseCounter, load};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    n_leaves: u32,
    n_nodes: u64,
    root: u32,
    left: Vec<Option<u32>>,
    right: Vec<Option<u32>>,
    parent: Vec<Option<u32>>,
    sibling: Vec<Option<u32>>,
}

fn opt(r: Result<NodeIndex, TreeMathError>) -> Option<u32> {
    r.ok().map(|n| n.0)
}

#[test]
fn tree_math_vectors() {
    let cases: Vec<Case> = load("tree-math.json");
    let mut counter = CaseCounter::new("tree-math.json");
    for c in &cases {
        let n = c.n_leaves;
        assert_eq!(tree_math::node_width(n), c.n_nodes, "n_nodes for {n}");
        assert_eq!(root(n).map(|r| r.0), Ok(c.root), "root for {n}");
        assert_eq!(c.left.len() as u64, c.n_nodes);
        assert_eq!(c.right.len() as u64, c.n_nodes);
        assert_eq!(c.parent.len() as u64, c.n_nodes);
        assert_eq!(c.sibling.len() as u64, c.n_nodes);
        for i in 0..c.n_nodes as u32 {
            let x = NodeIndex(i);
            let idx = i as usize;
            assert_eq!(opt(left(x)), c.left[idx], "left({i}) n={n}");
            assert_eq!(opt(right(x)), c.right[idx], "right({i}) n={n}");
            assert_eq!(opt(parent(x, n)), c.parent[idx], "parent({i}) n={n}");
            assert_eq!(opt(sibling(x, n)), c.sibling[idx], "sibling({i}) n={n}");

            // direct path and copath, built from the vector's parent and
            // sibling tables.
            let mut want_dp = Vec::new();
            let mut cur = idx;
            while let Some(p) = c.parent[cur] {
                want_dp.push(NodeIndex(p));
                cur = p as usize;
            }
            assert_eq!(direct_path(x, n), Ok(want_dp.clone()), "direct_path({i})");
            let mut want_cp = Vec::new();
            let mut chain = vec![idx];
            chain.extend(want_dp.iter().map(|p| p.0 as usize));
            chain.pop();
            for y in chain {
                want_cp.push(NodeIndex(c.sibling[y].expect("non-root has sibling")));
            }
            assert_eq!(copath(x, n), Ok(want_cp), "copath({i})");

            if i % 2 == 0 {
                let leaf = NodeIndex(i).leaf_index().expect("even index is a leaf");
                assert_eq!(leaf, LeafIndex(i / 2));
                assert_eq!(leaf.node_index(), Ok(x));
            } else {
                assert_eq!(NodeIndex(i).leaf_index(), None);
            }
        }
        // One past the end is outside the tree.
        let past = NodeIndex(c.n_nodes as u32);
        assert!(matches!(
            parent(past, n),
            Err(TreeMathError::OutOfTree { .. })
        ));
        counter.ran();
    }
    counter.finish(Some(10));
}
