//! A tree ensemble (LightGBM's trees, as `Booster.dump_model()` describes them) applied to
//! rows of `f64` features with LightGBM's decision rules, bit for bit: the sum over the
//! trees, in tree order, of the leaf each row reaches (or its mean, for `average_output`).
//!
//! A plain forest (every split a `<=` with no missing-value handling: LightGBM's trees when
//! the training data had no missing values) of trees of at most 32 leaves is applied by
//! QuickScorer on CPUs with AVX2 (`QuickScorer`): no walk, each split's threshold compared
//! with 24 rows at once, 3-4x faster than the walk on DLE's loss models. Other forests
//! are walked: the nodes of all trees lie in flat arrays (one per field); rows are
//! evaluated in blocks so that a tree's nodes stay in cache while a block's rows pass
//! through it, several rows at a time so that their independent walks overlap. Both give
//! the same bits (tests).
//!
//! LightGBM's rules (`include/LightGBM/tree.h`, `c_api.cpp`), reproduced here:
//! - a dense row's values within ±`ZERO_THRESHOLD` of zero are read as 0;
//! - numerical split: NaN is read as 0 unless the split's missing type is NaN; then a zero
//!   (missing type Zero) or a NaN (missing type NaN) goes the default side; otherwise left
//!   when `value <= threshold`;
//! - categorical split: NaN and negative values go right; otherwise the value truncated to
//!   an integer goes left when it is in the split's category set.

use std::fmt;

pub mod last_rows;
mod pool;

pub use last_rows::LastRows;

/// LightGBM's `kZeroThreshold` (declared `1e-35f`: the float's value, widened).
pub const ZERO_THRESHOLD: f64 = 1e-35_f32 as f64;

/// What a split does with a missing value (LightGBM's `missing_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// NaN is read as 0 and compared.
    None,
    /// Zero (and NaN, read as 0) goes the default side.
    Zero,
    /// NaN goes the default side.
    NaN,
}

/// A split's test.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    /// Left when `value <= threshold`.
    Numerical {
        threshold: f64,
        missing: Missing,
        default_left: bool,
    },
    /// Left when the value, truncated to an integer, is one of `categories`.
    Categorical { categories: Vec<u32> },
}

/// Where a branch leads: another split of the same tree or a leaf, by index in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Child {
    Split(usize),
    Leaf(usize),
}

/// One split of a tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub feature: usize,
    pub test: Test,
    pub left: Child,
    pub right: Child,
}

/// One tree: its splits (index 0 the root; a branch always leads to a later split, as in
/// a pre-order numbering) and leaf values. No splits: a single leaf.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Tree {
    pub splits: Vec<Split>,
    pub leaves: Vec<f64>,
}

/// Why a forest or an input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The largest category a categorical split may name (LightGBM's own limit is lower).
pub const MAX_CATEGORY: u32 = 1 << 24;

const PLAIN: u32 = 0; // numerical, no missing handling at the split (NaN read as 0 on the way in)
const NUMERICAL: u32 = 1;
const CATEGORICAL: u32 = 2;
const KIND: u32 = 3;
const DEFAULT_LEFT: u32 = 4;
const MISSING_ZERO: u32 = 8;
const MISSING_NAN: u32 = 16;
const LEAF: u32 = 32;
/// A node's feature index sits in the low bits of `Node::feature_kind`, its kind above.
const FEATURE_BITS: u32 = 24;
const FEATURE_MASK: u32 = (1 << FEATURE_BITS) - 1;

/// Rows per block: a block's rows pass through one tree before the next tree.
const BLOCK: usize = 96;
/// Whether this CPU has AVX2 (the binned walk's instructions).
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows walked through a tree together.
const LANES: usize = 8;
/// QuickScorer's rows a pass: `HALVES` masks of eight rows each. Three: each split's mask
/// loaded once for 24 rows, against one for 8 (1.3-1.5x faster on DLE's loss models; 4
/// and 6 no faster). A multiple of `PASS` and of `LANES`, `BLOCK` wastes no pass.
const HALVES: usize = 3;
const PASS: usize = 8 * HALVES;
/// Fewer rows than this a thread are not worth waking a helper thread (tens of microseconds).
pub const MIN_ROWS_PER_THREAD: usize = 1024;
/// The most threads `predict_on` uses, whatever it is asked.
pub const MAX_THREADS: usize = 256;

/// The threads `predict_on` uses for `n_rows` rows when asked for `threads`: 0 picks
/// `min(available parallelism, n_rows / MIN_ROWS_PER_THREAD)`; any count is at least 1 and
/// at most `n_rows` and `MAX_THREADS`.
pub fn threads_for(n_rows: usize, threads: usize) -> usize {
    let wanted = if threads == 0 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.min(n_rows / MIN_ROWS_PER_THREAD)
    } else {
        threads
    };
    wanted.clamp(1, n_rows.clamp(1, MAX_THREADS))
}

/// One node, 16 bytes (four to a cache line). A split's children are adjacent: left at
/// `children`, right at `children + 1`. A leaf's threshold is NaN (so every row goes
/// "right") and its `children` is its own index - 1: a row at a leaf stays there, so
/// several rows walk a tree in lockstep without a branch per row until all are at leaves.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct Node {
    threshold: f64,
    feature_kind: u32,
    children: u32,
}

/// A plain forest laid out for QuickScorer (Lucchese et al., SIGIR 2015): each tree's
/// leaves numbered left to right as bits of a `u32`; each split, listed by feature in
/// ascending threshold, carries the bits of the leaves of its left subtree. A row's leaf in
/// a tree is the lowest bit left after clearing, for every split the row fails (`value >
/// threshold`: it goes right), that split's left leaves. `PASS` rows share a pass (each
/// eight's values compared in two AVX2 vectors, their masks in one), and a feature's list
/// stops at the first threshold no row of the pass exceeds; no walk, no branch per split.
#[derive(Debug, Clone, Default)]
struct QuickScorer {
    /// Each feature's distinct thresholds (`at[f]..at[f + 1]`), ascending; threshold `g`'s
    /// splits are `end[g - 1]..end[g]` (0 for the first) of `tree` and `left_leaves`.
    at: Vec<u32>,
    threshold: Vec<f64>,
    end: Vec<u32>,
    tree: Vec<u32>,
    left_leaves: Vec<u32>,
    /// Per tree (index in `Forest::root`), its 32 leaf values by leaf number.
    leaf_value: Vec<f64>,
}

impl QuickScorer {
    /// Lays out `splits` (feature, threshold, tree, left leaves) by feature and ascending
    /// threshold; splits of one feature and one threshold (-0 and 0 are one) are tested once.
    fn group(&mut self, mut splits: Vec<(u32, f64, u32, u32)>, n_features: usize) {
        splits.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        self.at = vec![0; n_features + 1];
        self.threshold.clear();
        self.end.clear();
        for (i, s) in splits.iter().enumerate() {
            if i == 0 || splits[i - 1].0 != s.0 || splits[i - 1].1 != s.1 {
                self.at[s.0 as usize + 1] += 1;
                self.threshold.push(s.1);
                self.end.push(i as u32);
            }
            *self.end.last_mut().expect("pushed above") += 1;
        }
        for f in 0..n_features {
            self.at[f + 1] += self.at[f];
        }
        self.tree = splits.iter().map(|s| s.2).collect();
        self.left_leaves = splits.iter().map(|s| s.3).collect();
    }

    /// The splits `group` was given, trees numbered from `first`.
    fn splits(&self, first: u32) -> Vec<(u32, f64, u32, u32)> {
        let mut out = Vec::with_capacity(self.tree.len());
        for f in 0..self.at.len().saturating_sub(1) {
            for g in self.at[f] as usize..self.at[f + 1] as usize {
                let start = if g == 0 { 0 } else { self.end[g - 1] as usize };
                for s in start..self.end[g] as usize {
                    out.push((f as u32, self.threshold[g], first + self.tree[s], self.left_leaves[s]));
                }
            }
        }
        out
    }
}

/// Forests applied to the same rows together (DLE's loss models, which read the same
/// features): where every one is applied by QuickScorer, their splits lie in one layout, so
/// a pass reads each row's value of a feature once and tests a threshold that several
/// forests share (the same data's histogram bins) once for all of them. The predictions
/// are each forest's own, bit for bit (the same leaves, summed in each forest's order).
#[derive(Debug, Clone)]
pub struct Forests {
    forests: Vec<Forest>,
    /// The joint layout, and each forest's first tree in it.
    qs: Option<(QuickScorer, Vec<usize>)>,
}

impl Forests {
    pub fn new(forests: Vec<Forest>) -> Forests {
        let qs = if forests.len() > 1 && forests.iter().all(|f| f.qs.is_some()) {
            let mut joint = QuickScorer::default();
            let mut splits = Vec::new();
            let mut first = Vec::with_capacity(forests.len());
            for f in &forests {
                let q = f.qs.as_ref().expect("checked above");
                first.push(joint.leaf_value.len() / 32);
                splits.extend(q.splits(first[first.len() - 1] as u32));
                joint.leaf_value.extend_from_slice(&q.leaf_value);
            }
            let n_features = forests.iter().map(|f| f.n_features).max().unwrap_or(0);
            joint.group(splits, n_features);
            Some((joint, first))
        } else {
            None
        };
        Forests { forests, qs }
    }

    /// Whether the forests are applied by one joint QuickScorer layout: for tests.
    #[doc(hidden)]
    pub fn is_joint(&self) -> bool {
        self.qs.is_some()
    }

    pub fn forests(&self) -> &[Forest] {
        &self.forests
    }

    /// As `predict_each` over these forests (the same checks, threads and bits).
    pub fn predict_on(&self, x: &[f64], n_cols: usize, out: &mut [f64], threads: usize) -> Result<(), Error> {
        let forests: Vec<&Forest> = self.forests.iter().collect();
        predict_chunks(&forests, self.qs.as_ref(), x, n_cols, out, threads)
    }
}

/// The trees in one flat array of nodes (each tree breadth-first, siblings side by side),
/// leaf values and categorical bitsets beside it.
#[derive(Debug, Clone)]
pub struct Forest {
    node: Vec<Node>,
    /// Leaf value (0 for a split), by node.
    value: Vec<f64>,
    /// Categorical splits: the category bitset's range in `bits`, by node.
    bits_at: Vec<(u32, u32)>,
    bits: Vec<u32>,
    /// Each tree's root (trees of one leaf are in `order` instead) and depth.
    root: Vec<u32>,
    depth: Vec<u32>,
    /// Every split is a plain `<=` (no missing handling, no categories).
    plain: bool,
    /// Per tree, in order: its root index in `root`, or its single leaf's value.
    order: Vec<Result<u32, f64>>,
    /// Per feature: NaN may be read as 0 when the row is copied in (no NaN-aware or
    /// categorical split reads the feature).
    nan_is_zero: Vec<bool>,
    /// A plain forest of trees of at most 32 leaves, on a CPU with AVX2: its QuickScorer
    /// layout, which `predict` uses instead of walking `node`.
    qs: Option<QuickScorer>,
    average: bool,
    n_features: usize,
}

impl Forest {
    /// Lays out `trees`; `average` divides the sum by the number of trees (LightGBM's
    /// `average_output`, random-forest mode). Refuses trees whose branches do not lead
    /// forward to a split or leaf of the same tree.
    pub fn new(trees: &[Tree], average: bool) -> Result<Forest, Error> {
        let n_nodes: usize = trees.iter().map(|t| t.splits.len() + t.leaves.len()).sum();
        if n_nodes >= u32::MAX as usize / 2 {
            return Err(Error("too many nodes".into()));
        }
        let mut f = Forest {
            node: Vec::with_capacity(n_nodes),
            value: Vec::with_capacity(n_nodes),
            bits_at: Vec::with_capacity(n_nodes),
            bits: Vec::new(),
            root: Vec::new(),
            depth: Vec::new(),
            plain: true,
            order: Vec::with_capacity(trees.len()),
            nan_is_zero: Vec::new(),
            qs: None,
            average,
            n_features: 0,
        };
        let mut nan_aware = Vec::new();
        for (t, tree) in trees.iter().enumerate() {
            if tree.leaves.len() != tree.splits.len() + 1 {
                return Err(Error(format!(
                    "tree {t}: {} leaves for {} splits (a binary tree has one more)",
                    tree.leaves.len(),
                    tree.splits.len()
                )));
            }
            if tree.splits.is_empty() {
                f.order.push(Err(tree.leaves[0]));
                continue;
            }
            for (i, s) in tree.splits.iter().enumerate() {
                for c in [s.left, s.right] {
                    let ok = match c {
                        Child::Split(j) => j > i && j < tree.splits.len(),
                        Child::Leaf(j) => j < tree.leaves.len(),
                    };
                    if !ok {
                        return Err(Error(format!(
                            "tree {t}, split {i}: branch {c:?} out of order or range"
                        )));
                    }
                }
                if s.feature >= FEATURE_MASK as usize {
                    return Err(Error(format!("tree {t}, split {i}: feature {} too large", s.feature)));
                }
            }
            // Breadth-first: each node's children are given two adjacent places. Branches
            // lead forward (checked above), so each node is reached once... unless two
            // branches name the same node, which `seen` refuses.
            let mut seen = vec![false; tree.splits.len() + tree.leaves.len()];
            let root = f.node.len();
            f.order.push(Ok(f.root.len() as u32));
            f.root.push(root as u32);
            let mut queue = std::collections::VecDeque::from([(Child::Split(0), root, 0u32)]);
            f.push_blank(1);
            let mut depth = 0;
            while let Some((c, at, d)) = queue.pop_front() {
                depth = depth.max(d);
                let key = match c {
                    Child::Split(i) => i,
                    Child::Leaf(i) => tree.splits.len() + i,
                };
                if std::mem::replace(&mut seen[key], true) {
                    return Err(Error(format!("tree {t}: {c:?} reached by two branches")));
                }
                match c {
                    Child::Leaf(i) => {
                        f.node[at] = Node {
                            threshold: f64::NAN,
                            feature_kind: LEAF << FEATURE_BITS,
                            children: at as u32 - 1,
                        };
                        f.value[at] = tree.leaves[i];
                    }
                    Child::Split(i) => {
                        let s = &tree.splits[i];
                        let kids = f.node.len();
                        f.push_blank(2);
                        queue.push_back((s.left, kids, d + 1));
                        queue.push_back((s.right, kids + 1, d + 1));
                        f.n_features = f.n_features.max(s.feature + 1);
                        if nan_aware.len() < f.n_features {
                            nan_aware.resize(f.n_features, false);
                        }
                        let (threshold, kind) = match &s.test {
                            Test::Numerical {
                                threshold,
                                missing,
                                default_left,
                            } => {
                                let mut k = match missing {
                                    Missing::None => PLAIN,
                                    Missing::Zero => NUMERICAL | MISSING_ZERO,
                                    Missing::NaN => {
                                        nan_aware[s.feature] = true;
                                        NUMERICAL | MISSING_NAN
                                    }
                                };
                                if *default_left {
                                    k |= DEFAULT_LEFT;
                                }
                                (*threshold, k)
                            }
                            Test::Categorical { categories } => {
                                nan_aware[s.feature] = true;
                                let top = categories.iter().copied().max().unwrap_or(0);
                                if top > MAX_CATEGORY {
                                    return Err(Error(format!("tree {t}, split {i}: category {top} too large")));
                                }
                                let words = if categories.is_empty() {
                                    0
                                } else {
                                    top as usize / 32 + 1
                                };
                                let b = f.bits.len();
                                f.bits.resize(b + words, 0);
                                for &c in categories {
                                    f.bits[b + c as usize / 32] |= 1 << (c % 32);
                                }
                                f.bits_at[at] = (b as u32, words as u32);
                                (0.0, CATEGORICAL)
                            }
                        };
                        f.node[at] = Node {
                            threshold,
                            feature_kind: s.feature as u32 | kind << FEATURE_BITS,
                            children: kids as u32,
                        };
                    }
                }
            }
            f.depth.push(depth);
        }
        // A plain split reads a NaN as 0: exact only where no split needs the NaN itself;
        // elsewhere the split does LightGBM's full test.
        for n in f.node.iter_mut() {
            let kind = n.feature_kind >> FEATURE_BITS;
            if kind & (KIND | LEAF) == PLAIN && nan_aware[(n.feature_kind & FEATURE_MASK) as usize] {
                n.feature_kind |= NUMERICAL << FEATURE_BITS;
            }
            f.plain &= n.feature_kind >> FEATURE_BITS & KIND == PLAIN;
        }
        f.nan_is_zero = nan_aware.iter().map(|a| !a).collect();
        if f.plain {
            f.qs = f.quick_scorer();
        }
        // A forest is made to be applied: its threads started now, not by its first call.
        pool::start();
        Ok(f)
    }

    /// The QuickScorer layout of a plain forest, or None where a tree has more than 32
    /// leaves, a threshold is NaN or the CPU lacks AVX2.
    fn quick_scorer(&self) -> Option<QuickScorer> {
        if !avx2()
            || self
                .node
                .iter()
                .any(|n| n.feature_kind >> FEATURE_BITS & LEAF == 0 && n.threshold.is_nan())
        {
            return None;
        }
        let mut qs = QuickScorer {
            leaf_value: vec![0.0; self.root.len() * 32],
            ..QuickScorer::default()
        };
        // (feature, threshold, tree, left leaves) of every split.
        let mut splits = Vec::new();
        for (t, &root) in self.root.iter().enumerate() {
            // In-order walk: a split's left leaves are those numbered while its left subtree
            // is walked. Explicit stack: (node, its split's entry in `splits` to close).
            let mut next_leaf = 0u32;
            let mut stack = vec![(root, None::<(usize, u32)>)];
            while let Some((at, close)) = stack.pop() {
                if let Some((entry, first)) = close {
                    // The left subtree is done: its leaves are first..next_leaf.
                    let bits = (first..next_leaf).fold(0u32, |b, l| b | 1 << l);
                    let entry: &mut (u32, f64, u32, u32) = &mut splits[entry];
                    entry.3 = bits;
                }
                let n = self.node[at as usize];
                if n.feature_kind >> FEATURE_BITS & LEAF != 0 {
                    if next_leaf == 32 {
                        return None;
                    }
                    qs.leaf_value[t * 32 + next_leaf as usize] = self.value[at as usize];
                    next_leaf += 1;
                    continue;
                }
                splits.push((n.feature_kind & FEATURE_MASK, n.threshold, t as u32, 0));
                // Left first, then (once the left is done) record its leaves, then right.
                stack.push((n.children + 1, Some((splits.len() - 1, next_leaf))));
                stack.push((n.children, None));
            }
        }
        qs.group(splits, self.n_features);
        Some(qs)
    }

    fn push_blank(&mut self, n: usize) {
        for _ in 0..n {
            self.node.push(Node {
                threshold: 0.0,
                feature_kind: 0,
                children: 0,
            });
            self.value.push(0.0);
            self.bits_at.push((0, 0));
        }
    }

    /// The same forest applied by walking its trees, not by QuickScorer: for tests and
    /// benchmarks, which hold the two equal.
    #[doc(hidden)]
    pub fn walking(mut self) -> Forest {
        self.qs = None;
        self
    }

    /// Whether `predict` uses QuickScorer (a plain forest on an AVX2 CPU): for tests.
    #[doc(hidden)]
    pub fn is_quick_scorer(&self) -> bool {
        self.qs.is_some()
    }

    /// Columns a row needs: one more than the largest feature index a split reads.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_trees(&self) -> usize {
        self.order.len()
    }

    /// The prediction of each row of `x` (row-major, `n_cols` values a row) into `out`,
    /// on as many threads as `threads_for(rows, 0)` gives.
    pub fn predict(&self, x: &[f64], n_cols: usize, out: &mut [f64]) -> Result<(), Error> {
        self.predict_on(x, n_cols, out, 0)
    }

    /// `predict` on `threads_for(rows, threads)` threads (0: as many as pay). Each thread
    /// takes one contiguous run of rows; a row's sum is the same whichever thread makes it,
    /// so the predictions are identical, bit for bit, for every thread count.
    pub fn predict_on(&self, x: &[f64], n_cols: usize, out: &mut [f64], threads: usize) -> Result<(), Error> {
        predict_each(&[self], x, n_cols, out, threads)
    }

    /// `predict` on one thread, for inputs `predict_on` has checked.
    fn predict_rows(&self, x: &[f64], n_cols: usize, out: &mut [f64]) {
        // At least one column: a leaf reads feature 0 (and ignores it).
        let width = self.n_features.max(1);
        if let Some(qs) = &self.qs {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `quick_scorer` made `qs` only where the CPU has AVX2.
            unsafe {
                return self.predict_quick(qs, x, n_cols, out);
            }
        }
        let mut block = vec![0.0; BLOCK * width];
        let mut leaf = vec![0u32; BLOCK * self.root.len()];
        for (b, out) in out.chunks_mut(BLOCK).enumerate() {
            let rows = out.len();
            for r in 0..rows {
                let src = &x[(b * BLOCK + r) * n_cols..][..self.n_features];
                let dst = &mut block[r * width..][..self.n_features];
                for ((d, &v), &nan_zero) in dst.iter_mut().zip(src).zip(&self.nan_is_zero) {
                    // As LightGBM's dense rows: a value this close to 0 is 0.
                    *d = if v.abs() <= ZERO_THRESHOLD || (nan_zero && v.is_nan()) {
                        0.0
                    } else {
                        v
                    };
                }
            }
            self.block(&block[..rows * width], width, &mut leaf, out);
        }
    }

    /// `predict_rows` by QuickScorer.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn predict_quick(&self, qs: &QuickScorer, x: &[f64], n_cols: usize, out: &mut [f64]) {
        predict_quick(qs, &[(self, 0)], self.n_features, x, n_cols, &mut [out]);
    }

    /// Each row's sum over the trees in LightGBM's order (the leaves `block` found). Tree
    /// by tree over all the rows: each row's additions are in the same order as one row's
    /// loop would make them (the same bits), but the rows' additions are independent, not
    /// one chain of a hundred dependent ones.
    fn sum(&self, leaf: &[u32], out: &mut [f64]) {
        self.sum_by(out, |t, r| self.value[leaf[t * BLOCK + r] as usize]);
    }

    /// `sum` with each tree's (index in `root`) leaf value for each row from `leaf_value`.
    #[inline(always)]
    fn sum_by(&self, out: &mut [f64], leaf_value: impl Fn(usize, usize) -> f64) {
        out.fill(0.0);
        for tree in &self.order {
            match *tree {
                Ok(t) => {
                    for (r, o) in out.iter_mut().enumerate() {
                        *o += leaf_value(t as usize, r);
                    }
                }
                Err(v) => out.iter_mut().for_each(|o| *o += v),
            }
        }
        if self.average && !self.order.is_empty() {
            let n = self.order.len() as f64;
            out.iter_mut().for_each(|o| *o /= n);
        }
    }

    /// Every tree's leaf for every row of the block (tree by tree: the tree's nodes stay in
    /// cache), then each row's sum over the trees in LightGBM's order.
    fn block(&self, rows: &[f64], width: usize, leaf: &mut [u32], out: &mut [f64]) {
        let n = out.len();
        for (t, &root) in self.root.iter().enumerate() {
            let leaf = &mut leaf[t * BLOCK..][..n];
            let mut r = 0;
            let depth = self.depth[t];
            while r + LANES <= n {
                let lanes = &rows[r * width..(r + LANES) * width];
                let mut node = [root; LANES];
                if self.plain {
                    // Every split a plain `<=`: as many steps as the tree is deep, no test for
                    // the end (a row at a leaf stays there), nothing but loads and compares.
                    for _ in 0..depth {
                        let mut done = true;
                        for (lane, nd) in node.iter_mut().enumerate() {
                            *nd = self.step_plain(*nd, &lanes[lane * width..(lane + 1) * width]);
                            done &= self.is_leaf(*nd);
                        }
                        if done {
                            break;
                        }
                    }
                } else {
                    loop {
                        let mut done = true;
                        for (lane, nd) in node.iter_mut().enumerate() {
                            *nd = self.step(*nd, &lanes[lane * width..(lane + 1) * width]);
                            done &= self.is_leaf(*nd);
                        }
                        if done {
                            break;
                        }
                    }
                }
                leaf[r..r + LANES].copy_from_slice(&node);
                r += LANES;
            }
            for (l, row) in leaf[r..].iter_mut().zip(rows[r * width..].chunks_exact(width)) {
                let mut nd = root;
                while !self.is_leaf(nd) {
                    nd = self.step(nd, row);
                }
                *l = nd;
            }
        }
        self.sum(leaf, out);
    }

    #[inline(always)]
    fn is_leaf(&self, s: u32) -> bool {
        // SAFETY: `s` is a node index (see `step`).
        unsafe { self.node.get_unchecked(s as usize).feature_kind >> FEATURE_BITS & LEAF != 0 }
    }

    /// `step` where the node is a plain split or a leaf.
    #[inline(always)]
    fn step_plain(&self, s: u32, row: &[f64]) -> u32 {
        // SAFETY: as `step`.
        unsafe {
            let n = self.node.get_unchecked(s as usize);
            let v = *row.get_unchecked((n.feature_kind & FEATURE_MASK) as usize);
            // Not `v > threshold`: NaN (a leaf's threshold) must go right.
            #[allow(clippy::neg_cmp_op_on_partial_ord)]
            let right = !(v <= n.threshold);
            n.children + right as u32
        }
    }

    /// The node a row goes to from node `s` (a leaf: itself).
    #[inline(always)]
    fn step(&self, s: u32, row: &[f64]) -> u32 {
        // SAFETY: `new` made every child index a node of the forest and every feature index
        // below `n_features`; `predict` hands rows of at least `max(n_features, 1)` values.
        unsafe {
            let n = self.node.get_unchecked(s as usize);
            let v = *row.get_unchecked((n.feature_kind & FEATURE_MASK) as usize);
            let k = n.feature_kind >> FEATURE_BITS;
            let left = if k & KIND == PLAIN {
                v <= n.threshold
            } else {
                self.slow_test(s as usize, k, v, n.threshold)
            };
            n.children + !left as u32
        }
    }

    #[inline(never)]
    fn slow_test(&self, s: usize, k: u32, v: f64, threshold: f64) -> bool {
        if k & KIND == CATEGORICAL {
            // C's (int) cast truncates toward zero (-0.5 is category 0); past i32's range it
            // is undefined in C and INT_MIN on x86, so right.
            let t = v.trunc();
            if !(0.0..2147483648.0).contains(&t) {
                return false; // NaN too
            }
            let c = t as u32;
            let (at, words) = self.bits_at[s];
            let w = (c / 32) as usize;
            return w < words as usize && (self.bits[at as usize + w] >> (c % 32)) & 1 == 1;
        }
        let nan_missing = k & MISSING_NAN != 0;
        let v = if v.is_nan() && !nan_missing { 0.0 } else { v };
        if (k & MISSING_ZERO != 0 && (-ZERO_THRESHOLD..=ZERO_THRESHOLD).contains(&v)) || (nan_missing && v.is_nan()) {
            return k & DEFAULT_LEFT != 0;
        }
        v <= threshold
    }
}

/// QuickScorer over `qs`, the layout of one or more forests' trees (`parts`: each forest and
/// the index of its first tree in `qs`), reading features `0..n_features`: per block, rows `PASS` at a time, every tree's leaf
/// found from the splits each row fails, then the sums as the walk makes them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn predict_quick(
    qs: &QuickScorer,
    parts: &[(&Forest, usize)],
    n_features: usize,
    x: &[f64],
    n_cols: usize,
    outs: &mut [&mut [f64]],
) {
    use std::arch::x86_64::*;
    let n_trees = qs.leaf_value.len() / 32;
    const STRIDE: usize = BLOCK + PASS;
    // Each tree's leaf value for each row of the block.
    let mut leaf = vec![0.0f64; STRIDE * n_trees];
    let mut bits = vec![[_mm256_setzero_si256(); HALVES]; n_trees];
    let mut lanes = [0u32; 8];
    // Mask lane i holds row ROW_OF_LANE[i] of its eight (`_mm256_shuffle_ps` below).
    const ROW_OF_LANE: [usize; 8] = [0, 2, 1, 3, 4, 6, 5, 7];
    let ones = [_mm256_set1_epi32(-1); HALVES];
    let n_rows = outs[0].len();
    for b in 0..n_rows.div_ceil(BLOCK) {
        let rows = BLOCK.min(n_rows - b * BLOCK);
        for r0 in (0..rows).step_by(PASS) {
            bits.fill(ones);
            for f in 0..n_features {
                // The pass's rows' values (past a block's last row, its last row again).
                let mut v = [0.0; PASS];
                for (k, v) in v.iter_mut().enumerate() {
                    let x = *x.get_unchecked((b * BLOCK + (r0 + k).min(rows - 1)) * n_cols + f);
                    // As LightGBM's dense rows: a value this close to 0 is 0, and a plain
                    // forest reads NaN as 0.
                    *v = if x.abs() <= ZERO_THRESHOLD || x.is_nan() {
                        0.0
                    } else {
                        x
                    };
                }
                // Per eight rows, rows 0, 2, 4, 6 and 1, 3, 5, 7: their comparisons' low
                // halves, shuffled together, are the mask lanes in ROW_OF_LANE's order.
                let even: [__m256d; HALVES] =
                    std::array::from_fn(|h| _mm256_setr_pd(v[8 * h], v[8 * h + 2], v[8 * h + 4], v[8 * h + 6]));
                let odd: [__m256d; HALVES] =
                    std::array::from_fn(|h| _mm256_setr_pd(v[8 * h + 1], v[8 * h + 3], v[8 * h + 5], v[8 * h + 7]));
                let groups = qs.at[f] as usize..qs.at[f + 1] as usize;
                let mut s = if groups.start == 0 {
                    0
                } else {
                    qs.end[groups.start - 1] as usize
                };
                for g in groups {
                    // Right, where not `value <= threshold`.
                    let t = _mm256_set1_pd(*qs.threshold.get_unchecked(g));
                    let right: [__m256i; HALVES] = std::array::from_fn(|h| {
                        _mm256_castps_si256(_mm256_shuffle_ps::<0b10_00_10_00>(
                            _mm256_castpd_ps(_mm256_cmp_pd::<_CMP_NLE_UQ>(even[h], t)),
                            _mm256_castpd_ps(_mm256_cmp_pd::<_CMP_NLE_UQ>(odd[h], t)),
                        ))
                    });
                    let any = right.iter().fold(_mm256_setzero_si256(), |a, r| _mm256_or_si256(a, *r));
                    if _mm256_testz_si256(any, any) != 0 {
                        break; // thresholds ascend: no row of the pass goes right again
                    }
                    let end = *qs.end.get_unchecked(g) as usize;
                    while s < end {
                        let left = _mm256_set1_epi32(*qs.left_leaves.get_unchecked(s) as i32);
                        let t = bits.get_unchecked_mut(*qs.tree.get_unchecked(s) as usize);
                        for h in 0..HALVES {
                            t[h] = _mm256_andnot_si256(_mm256_and_si256(right[h], left), t[h]);
                        }
                        s += 1;
                    }
                }
            }
            for (t, tb) in bits.iter().enumerate() {
                let values = qs.leaf_value.get_unchecked(t * 32..t * 32 + 32);
                // A block's rows and a pass more: a last pass's rows past the block land
                // there, unread.
                let leaf = leaf.get_unchecked_mut(t * STRIDE + r0..t * STRIDE + r0 + PASS);
                for (h, tb) in tb.iter().enumerate() {
                    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, *tb);
                    for (lane, &k) in ROW_OF_LANE.iter().enumerate() {
                        // The exit leaf always survives: the lane is never 0.
                        *leaf.get_unchecked_mut(8 * h + k) =
                            *values.get_unchecked(lanes[lane].trailing_zeros() as usize & 31);
                    }
                }
            }
        }
        for ((forest, first), out) in parts.iter().zip(outs.iter_mut()) {
            let out = &mut out[b * BLOCK..b * BLOCK + rows];
            forest.sum_by(out, |t, r| *leaf.get_unchecked((first + t) * STRIDE + r));
        }
    }
}

/// Rows a thread takes at a time and applies every forest to (`predict_each`): 768 rows of
/// DLE's 9 columns are 54 KiB, in L2 while each forest passes over them; a 5000-row window
/// is 7 chunks, so two threads share it about evenly.
const CHUNK: usize = 768;

/// Each of `forests` applied to the same rows (row-major, `n_cols` values a row): forest
/// `i`'s prediction of row `r` into `out[i * rows + r]`, on up to `threads_for(rows,
/// threads)` threads: the caller's and the pool's helpers (started once, `pool`). One
/// check of the input for all the forests; the threads claim chunks of `CHUNK` rows and
/// apply every forest to a chunk while its rows are in cache, and the call returns once
/// every chunk is done (a helper that wakes late finds none left). Each forest's
/// predictions are its `predict_on`'s, bit for bit, for every thread count.
pub fn predict_each(
    forests: &[&Forest],
    x: &[f64],
    n_cols: usize,
    out: &mut [f64],
    threads: usize,
) -> Result<(), Error> {
    predict_chunks(forests, None, x, n_cols, out, threads)
}

/// `predict_each`, by `joint` (a joint QuickScorer layout of `forests`, and each one's first
/// tree in it) where given.
fn predict_chunks(
    forests: &[&Forest],
    joint: Option<&(QuickScorer, Vec<usize>)>,
    x: &[f64],
    n_cols: usize,
    out: &mut [f64],
    threads: usize,
) -> Result<(), Error> {
    if let Some(f) = forests.iter().find(|f| n_cols < f.n_features) {
        return Err(Error(format!(
            "rows have {n_cols} columns; the trees read {} features",
            f.n_features
        )));
    }
    // Rows of no columns (forests of single leaves) are counted by the places for them.
    let n_rows = x
        .len()
        .checked_div(n_cols)
        .or(out.len().checked_div(forests.len()))
        .unwrap_or(0);
    if x.len() != n_rows * n_cols || out.len() != n_rows * forests.len() {
        return Err(Error(format!(
            "{} values in rows of {n_cols} and {} places for {} forests' predictions: not one place a row and forest",
            x.len(),
            out.len(),
            forests.len()
        )));
    }
    if n_rows == 0 || forests.is_empty() {
        return Ok(());
    }
    let threads = threads_for(n_rows, threads);
    // The chunks' outputs are disjoint runs of `out`, written through a shared pointer.
    struct Out(*mut f64);
    // SAFETY: each chunk writes only its own rows of each forest's run (below).
    unsafe impl Sync for Out {}
    let place = Out(out.as_mut_ptr());
    let place = &place;
    let chunk = |c: usize| {
        let start = c * CHUNK;
        let end = (start + CHUNK).min(n_rows);
        let rows = &x[start * n_cols..end * n_cols];
        #[cfg(target_arch = "x86_64")]
        if let Some((qs, first)) = joint {
            let parts: Vec<(&Forest, usize)> = forests.iter().copied().zip(first.iter().copied()).collect();
            // SAFETY: as below, one run of `out` per forest; `Forests::new` made `qs` only
            // from QuickScorer layouts, made only where the CPU has AVX2.
            let mut outs: Vec<&mut [f64]> = (0..forests.len())
                .map(|i| unsafe { std::slice::from_raw_parts_mut(place.0.add(i * n_rows + start), end - start) })
                .collect();
            let n_features = forests.iter().map(|f| f.n_features).max().unwrap_or(0);
            unsafe { predict_quick(qs, &parts, n_features, rows, n_cols, &mut outs) };
            return;
        }
        for (i, f) in forests.iter().enumerate() {
            // SAFETY: rows start..end of forest i's run of `out` (n_rows places each): in
            // bounds, and no other chunk's.
            let o = unsafe { std::slice::from_raw_parts_mut(place.0.add(i * n_rows + start), end - start) };
            f.predict_rows(rows, n_cols, o);
        }
    };
    pool::run(n_rows.div_ceil(CHUNK), threads, &chunk);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(feature: usize, threshold: f64, missing: Missing, default_left: bool, left: Child, right: Child) -> Split {
        Split {
            feature,
            test: Test::Numerical {
                threshold,
                missing,
                default_left,
            },
            left,
            right,
        }
    }

    fn one(tree: Tree, x: &[f64]) -> f64 {
        let f = Forest::new(&[tree], false).unwrap();
        let mut out = [0.0];
        f.predict(x, x.len(), &mut out).unwrap();
        out[0]
    }

    fn stump(test: Test) -> Tree {
        Tree {
            splits: vec![Split {
                feature: 0,
                test,
                left: Child::Leaf(0),
                right: Child::Leaf(1),
            }],
            leaves: vec![-1.0, 1.0],
        }
    }

    fn numerical(threshold: f64, missing: Missing, default_left: bool) -> Tree {
        stump(Test::Numerical {
            threshold,
            missing,
            default_left,
        })
    }

    #[test]
    fn numerical_missing_none_reads_nan_as_zero() {
        let t = numerical(0.5, Missing::None, false);
        assert_eq!(one(t.clone(), &[0.5]), -1.0); // <= goes left
        assert_eq!(one(t.clone(), &[0.6]), 1.0);
        assert_eq!(one(t.clone(), &[f64::NAN]), -1.0); // 0 <= 0.5
        let t = numerical(-0.5, Missing::None, true);
        assert_eq!(one(t, &[f64::NAN]), 1.0); // 0 > -0.5: right, default_left ignored
    }

    #[test]
    fn numerical_missing_zero_sends_zero_and_nan_the_default_way() {
        for default_left in [true, false] {
            let side = if default_left { -1.0 } else { 1.0 };
            let t = numerical(-1.0, Missing::Zero, default_left);
            assert_eq!(one(t.clone(), &[0.0]), side);
            assert_eq!(one(t.clone(), &[-0.0]), side);
            assert_eq!(one(t.clone(), &[1e-36]), side); // within kZeroThreshold
            assert_eq!(one(t.clone(), &[f64::NAN]), side); // NaN read as 0
            assert_eq!(one(t.clone(), &[-2.0]), -1.0);
            assert_eq!(one(t.clone(), &[1e-30]), 1.0);
        }
    }

    #[test]
    fn numerical_missing_nan_sends_nan_the_default_way_and_compares_zero() {
        for default_left in [true, false] {
            let side = if default_left { -1.0 } else { 1.0 };
            let t = numerical(-1.0, Missing::NaN, default_left);
            assert_eq!(one(t.clone(), &[f64::NAN]), side);
            assert_eq!(one(t.clone(), &[0.0]), 1.0);
            assert_eq!(one(t.clone(), &[-1.0]), -1.0);
        }
    }

    #[test]
    fn a_plain_split_on_a_feature_another_split_reads_as_nan_still_reads_nan_as_zero() {
        // Split 0 (feature 0, missing None, threshold 0.5): NaN -> 0 -> left, to split 1
        // (feature 0, missing NaN, default right): NaN -> leaf 2.
        let t = Tree {
            splits: vec![
                num(0, 0.5, Missing::None, false, Child::Split(1), Child::Leaf(0)),
                num(0, 0.25, Missing::NaN, false, Child::Leaf(1), Child::Leaf(2)),
            ],
            leaves: vec![10.0, 20.0, 30.0],
        };
        assert_eq!(one(t.clone(), &[f64::NAN]), 30.0);
        assert_eq!(one(t.clone(), &[0.1]), 20.0);
        assert_eq!(one(t, &[0.7]), 10.0);
    }

    #[test]
    fn categorical_left_for_listed_categories_right_for_nan_negative_and_others() {
        let t = stump(Test::Categorical {
            categories: vec![0, 3, 40],
        });
        for (v, want) in [
            (0.0, -1.0),
            (3.0, -1.0),
            (3.9, -1.0), // truncated
            (40.0, -1.0),
            (-0.5, -1.0), // truncates to 0
            (1.0, 1.0),
            (41.0, 1.0),
            (1000.0, 1.0), // past the bitset
            (-1.0, 1.0),
            (f64::NAN, 1.0),
            (1e12, 1.0),
            (f64::INFINITY, 1.0),
        ] {
            assert_eq!(one(t.clone(), &[v]), want, "value {v}");
        }
    }

    #[test]
    fn sums_trees_in_order_averages_when_asked_and_handles_single_leaf_trees() {
        let trees = vec![
            numerical(0.0, Missing::None, false),
            Tree {
                splits: vec![],
                leaves: vec![0.25],
            },
            Tree {
                splits: vec![Split {
                    feature: 1,
                    test: Test::Numerical {
                        threshold: 2.0,
                        missing: Missing::None,
                        default_left: false,
                    },
                    left: Child::Leaf(0),
                    right: Child::Leaf(1),
                }],
                leaves: vec![100.0, 200.0],
            },
        ];
        // More rows than a block and not a multiple of the lanes: every loop's tail runs.
        let n = BLOCK * 2 + LANES + 3;
        let x: Vec<f64> = (0..n).flat_map(|i| [i as f64 - 50.0, (i % 5) as f64, 7.0]).collect();
        let mut out = vec![0.0; n];
        let sum = Forest::new(&trees, false).unwrap();
        sum.predict(&x, 3, &mut out).unwrap();
        let mut avg_out = vec![0.0; n];
        Forest::new(&trees, true).unwrap().predict(&x, 3, &mut avg_out).unwrap();
        for i in 0..n {
            let want = (if i as f64 - 50.0 <= 0.0 { -1.0 } else { 1.0 })
                + 0.25
                + if (i % 5) as f64 <= 2.0 { 100.0 } else { 200.0 };
            assert_eq!(out[i], want, "row {i}");
            assert_eq!(avg_out[i], want / 3.0, "row {i}");
        }
        assert_eq!(sum.n_trees(), 3);
        assert_eq!(sum.n_features(), 2);
    }

    /// A random tree of `n_splits` splits over `n_cols` features: plain, NaN-aware,
    /// zero-as-missing and categorical splits, numbered in pre-order.
    fn random_tree(seed: &mut u64, n_splits: usize, n_cols: usize) -> Tree {
        random_tree_of(seed, n_splits, n_cols, false)
    }

    fn next(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `random_tree`, or with `plain` every split a plain `<=` whose threshold is one of a
    /// few values (so that rows and several splits meet them exactly).
    fn random_tree_of(seed: &mut u64, n_splits: usize, n_cols: usize, plain: bool) -> Tree {
        fn grow(seed: &mut u64, budget: usize, n_cols: usize, plain: bool, t: &mut Tree) -> Child {
            if budget == 0 {
                t.leaves.push(next(seed) - 0.5);
                return Child::Leaf(t.leaves.len() - 1);
            }
            let i = t.splits.len();
            let feature = (next(seed) * n_cols as f64) as usize;
            let test = match (next(seed) * 4.0) as usize {
                _ if plain => Test::Numerical {
                    threshold: [-1.0, -0.0, 0.0, 0.25, 0.5, 1.0, 3.0][(next(seed) * 7.0) as usize]
                        + if next(seed) < 0.3 { next(seed) } else { 0.0 },
                    missing: Missing::None,
                    default_left: next(seed) < 0.5,
                },
                0 => Test::Categorical {
                    categories: vec![0, 2, 5, 9],
                },
                k => Test::Numerical {
                    threshold: next(seed) * 2.0 - 1.0,
                    missing: [Missing::None, Missing::Zero, Missing::NaN][k - 1],
                    default_left: next(seed) < 0.5,
                },
            };
            t.splits.push(Split {
                feature,
                test,
                left: Child::Leaf(0),
                right: Child::Leaf(0),
            });
            let left_budget = (next(seed) * budget as f64) as usize;
            let left = grow(seed, left_budget, n_cols, plain, t);
            let right = grow(seed, budget - 1 - left_budget, n_cols, plain, t);
            t.splits[i].left = left;
            t.splits[i].right = right;
            Child::Split(i)
        }
        let mut t = Tree::default();
        grow(seed, n_splits, n_cols, plain, &mut t);
        t
    }

    /// Values that meet the plain trees' thresholds exactly, fall between them, and test
    /// LightGBM's reading of NaN, zeros and values within its zero threshold.
    fn awkward_rows(seed: &mut u64, n: usize, n_cols: usize) -> Vec<f64> {
        (0..n * n_cols)
            .map(|_| match (next(seed) * 12.0) as usize {
                0 => f64::NAN,
                1 => -0.0,
                2 => 1e-36,
                3 => -1e-36,
                4 => f64::INFINITY,
                5 => f64::NEG_INFINITY,
                6 => [-1.0, 0.0, 0.25, 0.5, 1.0, 3.0][(next(seed) * 6.0) as usize],
                7 => 1e-30,
                _ => next(seed) * 8.0 - 4.0,
            })
            .collect()
    }

    fn bits_of(forest: &Forest, x: &[f64], n_cols: usize, threads: usize) -> Vec<u64> {
        let mut out = vec![f64::NAN; x.len() / n_cols];
        forest.predict_on(x, n_cols, &mut out, threads).unwrap();
        out.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn quick_scorer_gives_the_walks_bits_for_plain_forests_of_up_to_32_leaves() {
        let mut seed = 5;
        let n_cols = 4;
        for (n_trees, n_splits) in [(1, 1), (7, 5), (40, 30), (10, 31)] {
            let trees: Vec<Tree> = (0..n_trees)
                .map(|_| random_tree_of(&mut seed, n_splits, n_cols, true))
                .collect();
            let mut with_leaf = trees.clone();
            with_leaf.insert(
                1,
                Tree {
                    splits: vec![],
                    leaves: vec![0.125],
                },
            );
            for (trees, average) in [(trees, false), (with_leaf, true)] {
                let quick = Forest::new(&trees, average).unwrap();
                if !avx2() {
                    assert!(!quick.is_quick_scorer());
                    continue;
                }
                assert!(quick.is_quick_scorer(), "{n_trees} trees of {n_splits} splits");
                let walking = quick.clone().walking();
                assert!(!walking.is_quick_scorer());
                // Row counts past and short of a block and of a pass, and not a multiple of eight.
                for n in [
                    0,
                    1,
                    3,
                    7,
                    8,
                    9,
                    PASS - 1,
                    PASS + 1,
                    2 * PASS + 9,
                    BLOCK - 1,
                    BLOCK + 3,
                    2 * MIN_ROWS_PER_THREAD + 7,
                ] {
                    let x = awkward_rows(&mut seed, n, n_cols + 1);
                    for threads in [1, 2] {
                        assert_eq!(
                            bits_of(&quick, &x, n_cols + 1, threads),
                            bits_of(&walking, &x, n_cols + 1, threads),
                            "{n_trees} trees of {n_splits} splits, {n} rows, {threads} threads"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn quick_scorer_is_left_out_past_32_leaves_and_for_splits_that_handle_missing_values() {
        let mut seed = 9;
        let wide = Forest::new(&[random_tree_of(&mut seed, 32, 3, true)], false).unwrap();
        assert!(!wide.is_quick_scorer()); // 33 leaves
        let mixed: Vec<Tree> = (0..5).map(|_| random_tree_of(&mut seed, 20, 3, false)).collect();
        assert!(!Forest::new(&mixed, false).unwrap().is_quick_scorer());
    }

    #[test]
    fn every_thread_count_gives_the_same_bits_including_uneven_runs() {
        let mut seed = 11;
        let n_cols = 5;
        let trees: Vec<Tree> = (0..30).map(|_| random_tree(&mut seed, 20, n_cols)).collect();
        let forest = Forest::new(&trees, false).unwrap();
        // Row counts that split unevenly over 2 and 3 threads, below and past a block.
        for n in [
            0,
            1,
            2,
            3,
            7,
            BLOCK + 1,
            3 * BLOCK + LANES + 2,
            2 * MIN_ROWS_PER_THREAD + 5,
        ] {
            let x: Vec<f64> = (0..n * n_cols)
                .map(|i| match i % 11 {
                    0 => f64::NAN,
                    1 => 0.0,
                    2 => 1e-36,
                    3 => (i % 13) as f64,
                    _ => (i as f64 * 0.618).fract() * 2.0 - 1.0,
                })
                .collect();
            let run = |threads: usize| {
                let mut out = vec![f64::NAN; n];
                forest.predict_on(&x, n_cols, &mut out, threads).unwrap();
                out.iter().map(|v| v.to_bits()).collect::<Vec<u64>>()
            };
            let one = run(1);
            assert!(
                one.iter().all(|b| !f64::from_bits(*b).is_nan()),
                "{n} rows: a row left unwritten"
            );
            for threads in [2, 3, 0, MAX_THREADS + 7] {
                assert_eq!(run(threads), one, "{n} rows on {threads} threads");
            }
        }
    }

    #[test]
    fn predict_each_gives_each_forests_own_bits_on_any_thread_count() {
        let mut seed = 13;
        let n_cols = 4;
        // A plain forest (QuickScorer where the CPU has AVX2), one with every kind of split
        // (walked), one of single leaves, and a narrower plain one (fewer features read).
        let plain: Vec<Tree> = (0..20).map(|_| random_tree_of(&mut seed, 25, n_cols, true)).collect();
        let mixed: Vec<Tree> = (0..15).map(|_| random_tree(&mut seed, 12, n_cols)).collect();
        let leaves = vec![
            Tree {
                splits: vec![],
                leaves: vec![0.5],
            };
            3
        ];
        let narrow: Vec<Tree> = (0..5).map(|_| random_tree_of(&mut seed, 6, 2, true)).collect();
        let forests = [
            Forest::new(&plain, false).unwrap(),
            Forest::new(&mixed, false).unwrap(),
            Forest::new(&leaves, true).unwrap(),
            Forest::new(&narrow, false).unwrap(),
        ];
        let all: Vec<&Forest> = forests.iter().collect();
        // Past a chunk and a thread's minimum, short of a block, and tails of the eight rows.
        for n in [
            0,
            1,
            9,
            BLOCK + 5,
            CHUNK + 3,
            2 * MIN_ROWS_PER_THREAD + 11,
            7 * CHUNK + 3 * BLOCK + 1,
        ] {
            let x = awkward_rows(&mut seed, n, n_cols + 1);
            let alone: Vec<u64> = all.iter().flat_map(|f| bits_of(f, &x, n_cols + 1, 1)).collect();
            for threads in [1, 2, 3, 0] {
                let mut out = vec![f64::NAN; n * all.len()];
                predict_each(&all, &x, n_cols + 1, &mut out, threads).unwrap();
                let bits: Vec<u64> = out.iter().map(|v| v.to_bits()).collect();
                assert_eq!(bits, alone, "{n} rows on {threads} threads");
            }
            // Any subset and order: each forest's predictions do not depend on the others.
            let mut out = vec![f64::NAN; 2 * n];
            predict_each(&[all[3], all[0]], &x, n_cols + 1, &mut out, 2).unwrap();
            let two: Vec<u64> = out.iter().map(|v| v.to_bits()).collect();
            assert_eq!(two[..n], alone[3 * n..], "{n} rows");
            assert_eq!(two[n..], alone[..n], "{n} rows");
        }
    }

    #[test]
    fn forests_joint_layout_gives_each_forests_own_bits_on_any_thread_count() {
        let mut seed = 23;
        let n_cols = 4;
        // Plain forests (QuickScorer where the CPU has AVX2) that read different numbers of
        // features, one with a single-leaf tree inside and averaged; thresholds from the
        // awkward values, so that rows meet them exactly and forests share some.
        let wide: Vec<Tree> = (0..20).map(|_| random_tree_of(&mut seed, 25, n_cols, true)).collect();
        let narrow: Vec<Tree> = (0..7).map(|_| random_tree_of(&mut seed, 6, 2, true)).collect();
        let mut with_leaf: Vec<Tree> = (0..9).map(|_| random_tree_of(&mut seed, 31, n_cols, true)).collect();
        with_leaf.insert(
            3,
            Tree {
                splits: vec![],
                leaves: vec![0.25],
            },
        );
        let forests = [
            Forest::new(&wide, false).unwrap(),
            Forest::new(&narrow, false).unwrap(),
            Forest::new(&with_leaf, true).unwrap(),
        ];
        let mixed = Forest::new(
            &(0..5).map(|_| random_tree(&mut seed, 12, n_cols)).collect::<Vec<_>>(),
            false,
        )
        .unwrap();
        for set in [
            vec![forests[0].clone(), forests[1].clone()],
            forests.to_vec(),
            vec![forests[2].clone(), forests[0].clone(), forests[0].clone()],
            vec![forests[0].clone(), mixed.clone()], // one walked: not joint
            vec![forests[1].clone()],                // one forest: its own layout
        ] {
            let joint = Forests::new(set.clone());
            let all_quick = set.len() > 1 && set.iter().all(|f| f.is_quick_scorer());
            assert_eq!(joint.is_joint(), all_quick);
            let refs: Vec<&Forest> = set.iter().collect();
            for n in [
                0,
                1,
                7,
                PASS + 1,
                BLOCK + 5,
                CHUNK + 3,
                2 * MIN_ROWS_PER_THREAD + 11,
                7 * CHUNK + 3 * BLOCK + 1,
            ] {
                let x = awkward_rows(&mut seed, n, n_cols + 1);
                let alone: Vec<u64> = refs.iter().flat_map(|f| bits_of(f, &x, n_cols + 1, 1)).collect();
                for threads in [1, 2, 3, 0] {
                    let mut out = vec![f64::NAN; n * set.len()];
                    joint.predict_on(&x, n_cols + 1, &mut out, threads).unwrap();
                    let bits: Vec<u64> = out.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(bits, alone, "{} forests, {n} rows on {threads} threads", set.len());
                }
            }
        }
        // The checks of predict_each: rows too narrow for a forest, places that do not fit.
        let joint = Forests::new(forests.to_vec());
        let x = vec![0.5; 3 * 3];
        assert!(joint
            .predict_on(&x, 3, &mut [0.0; 9], 1)
            .unwrap_err()
            .0
            .contains("3 columns"));
        let x = vec![0.5; 3 * 5];
        assert!(joint.predict_on(&x, 5, &mut [0.0; 8], 1).is_err());
    }

    #[test]
    fn predict_each_called_from_several_threads_at_once_gives_each_call_its_own_bits() {
        // Calls that find the pool's helpers taken by another call run on their own thread.
        let mut seed = 19;
        let n_cols = 5;
        let trees: Vec<Tree> = (0..25).map(|_| random_tree_of(&mut seed, 20, n_cols, true)).collect();
        let forest = Forest::new(&trees, false).unwrap();
        let inputs: Vec<Vec<f64>> = (0..6)
            .map(|k| awkward_rows(&mut seed, 3 * MIN_ROWS_PER_THREAD + k, n_cols))
            .collect();
        let alone: Vec<Vec<u64>> = inputs.iter().map(|x| bits_of(&forest, x, n_cols, 1)).collect();
        std::thread::scope(|s| {
            for (x, want) in inputs.iter().zip(&alone) {
                let forest = &forest;
                s.spawn(move || {
                    for _ in 0..20 {
                        let mut out = vec![f64::NAN; x.len() / n_cols];
                        predict_each(&[forest], x, n_cols, &mut out, 2).unwrap();
                        let bits: Vec<u64> = out.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(&bits, want);
                    }
                });
            }
        });
    }

    #[test]
    fn predict_each_refuses_narrow_rows_and_misplaced_outputs_and_takes_no_forests() {
        let mut seed = 17;
        let wide = Forest::new(&[random_tree_of(&mut seed, 4, 6, true)], false).unwrap();
        let narrow = Forest::new(&[random_tree_of(&mut seed, 4, 2, true)], false).unwrap();
        let x = vec![0.5; 4 * 3];
        let mut out = vec![0.0; 8];
        let err = predict_each(&[&narrow, &wide], &x, 3, &mut out, 1).unwrap_err();
        assert!(err.0.contains("3 columns"), "{err}");
        assert!(predict_each(&[&narrow, &narrow], &x, 3, &mut out[..7], 1).is_err());
        assert!(predict_each(&[&narrow], &x, 3, &mut out, 1).is_err()); // 8 places, 4 rows
        predict_each(&[&narrow, &narrow], &x, 3, &mut out, 1).unwrap();
        predict_each(&[], &x, 3, &mut [], 0).unwrap();
        assert!(predict_each(&[], &x, 3, &mut out, 0).is_err());
    }

    #[test]
    fn thread_count_is_bounded_by_rows_and_the_cap_and_auto_spares_small_inputs() {
        assert_eq!(threads_for(0, 0), 1);
        assert_eq!(threads_for(MIN_ROWS_PER_THREAD - 1, 0), 1);
        assert_eq!(threads_for(2, 3), 2);
        assert_eq!(threads_for(1 << 30, 1 << 20), MAX_THREADS);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads_for(1 << 30, 0), cores.min(MAX_THREADS));
    }

    #[test]
    fn refuses_backward_branches_bad_leaves_and_narrow_rows() {
        let back = Tree {
            splits: vec![
                num(0, 0.0, Missing::None, false, Child::Split(1), Child::Leaf(0)),
                num(0, 0.0, Missing::None, false, Child::Split(0), Child::Leaf(1)),
            ],
            leaves: vec![0.0, 0.0, 0.0],
        };
        assert!(Forest::new(&[back], false).is_err());
        let far = Tree {
            splits: vec![num(0, 0.0, Missing::None, false, Child::Leaf(0), Child::Leaf(5))],
            leaves: vec![0.0, 0.0],
        };
        assert!(Forest::new(&[far], false).is_err());
        let count = Tree {
            splits: vec![],
            leaves: vec![],
        };
        assert!(Forest::new(&[count], false).is_err());
        let f = Forest::new(&[stump(Test::Categorical { categories: vec![1] })], false).unwrap();
        let mut out = [0.0; 2];
        assert!(f.predict(&[1.0, 2.0, 3.0], 3, &mut out).is_err()); // 3 values, 2 outputs
        let wide = Tree {
            splits: vec![num(4, 0.0, Missing::None, false, Child::Leaf(0), Child::Leaf(1))],
            leaves: vec![0.0, 0.0],
        };
        let f = Forest::new(&[wide], false).unwrap();
        assert!(f.predict(&[1.0, 2.0], 2, &mut out[..1]).is_err()); // needs 5 columns
    }
}
