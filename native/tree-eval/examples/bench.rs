//! Times Forest::predict (QuickScorer and the walk) on 100 random trees of 31 leaves and 5000 rows of 10 features
//! (the size of DLE's loss model on the benchmark's windows): `cargo run --release --example bench`.
use std::time::Instant;
use tree_eval::{Child, Forest, Missing, Split, Test, Tree};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}
extern "C" {
    fn clock_gettime(clk: i32, ts: *mut Timespec) -> i32;
}

/// This thread's CPU seconds (CLOCK_THREAD_CPUTIME_ID): a shared host's load moves wall time.
fn thread_cpu() -> f64 {
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a valid clock id and a place for the answer.
    unsafe { clock_gettime(3, &mut t) };
    t.sec as f64 + t.nsec as f64 * 1e-9
}

fn main() {
    let mut rng = Lcg(7);
    let (n_trees, n_leaves, n_rows, n_cols) = (100, 31, 5000, 10);
    let make = |rng: &mut Lcg| -> Vec<Tree> {
        (0..n_trees)
            .map(|_| {
                // Grow leaf-wise like LightGBM: split a random leaf until n_leaves; renumber pre-order.
                let mut kids: Vec<Option<(usize, usize)>> = vec![None];
                let mut leaves = vec![0usize];
                while leaves.len() < n_leaves {
                    let at = leaves.swap_remove((rng.next() * leaves.len() as f64) as usize);
                    let (a, b) = (kids.len(), kids.len() + 1);
                    kids.push(None);
                    kids.push(None);
                    kids[at] = Some((a, b));
                    leaves.push(a);
                    leaves.push(b);
                }
                let mut t = Tree::default();
                fn walk(n: usize, kids: &[Option<(usize, usize)>], t: &mut Tree, rng: &mut Lcg) -> Child {
                    match kids[n] {
                        None => {
                            t.leaves.push(rng.next() - 0.5);
                            Child::Leaf(t.leaves.len() - 1)
                        }
                        Some((a, b)) => {
                            let i = t.splits.len();
                            t.splits.push(Split {
                                feature: (rng.next() * 10.0) as usize,
                                test: Test::Numerical {
                                    // As LightGBM's histogram bins: a feature's splits share ~200 thresholds.
                                    threshold: (rng.next() * 200.0).floor() / 100.0 - 1.0,
                                    missing: Missing::None,
                                    default_left: false,
                                },
                                left: Child::Leaf(0),
                                right: Child::Leaf(0),
                            });
                            let l = walk(a, kids, t, rng);
                            let r = walk(b, kids, t, rng);
                            t.splits[i].left = l;
                            t.splits[i].right = r;
                            Child::Split(i)
                        }
                    }
                }
                walk(0, &kids, &mut t, rng);
                t
            })
            .collect()
    };
    let trees = make(&mut rng);
    let second = make(&mut rng);
    let forest = Forest::new(&trees, false).unwrap();
    let x: Vec<f64> = (0..n_rows * n_cols).map(|_| rng.next() * 2.0 - 1.0).collect();
    let mut out = vec![0.0; n_rows];
    let walking = forest.clone().walking();
    // Alternating, best of 100 each: a shared host's load moves every run.
    let mut best = [[f64::INFINITY; 2]; 2];
    for _ in 0..100 {
        for (i, f) in [&forest, &walking].into_iter().enumerate() {
            for (j, threads) in [1, 0].into_iter().enumerate() {
                let t = Instant::now();
                f.predict_on(&x, n_cols, &mut out, threads).unwrap();
                best[i][j] = best[i][j].min(t.elapsed().as_secs_f64());
            }
        }
    }
    for (i, name) in ["QuickScorer", "walk"].into_iter().enumerate() {
        println!(
            "{name}: {n_rows} rows x {n_trees} trees: {:.2} ms on 1 thread, {:.2} ms on {} (best of 100), checksum {}",
            best[i][0] * 1e3,
            best[i][1] * 1e3,
            tree_eval::threads_for(n_rows, 0),
            out.iter().sum::<f64>()
        );
    }
    // Two forests on the same rows (DLE's two loss models): two calls against one.
    let other = Forest::new(&second, false).unwrap();
    let mut both = vec![0.0; 2 * n_rows];
    let mut best = [f64::INFINITY; 2];
    for _ in 0..100 {
        let t = Instant::now();
        forest.predict_on(&x, n_cols, &mut both[..n_rows], 0).unwrap();
        other.predict_on(&x, n_cols, &mut both[n_rows..], 0).unwrap();
        best[0] = best[0].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        tree_eval::predict_each(&[&forest, &other], &x, n_cols, &mut both, 0).unwrap();
        best[1] = best[1].min(t.elapsed().as_secs_f64());
    }
    println!(
        "{n_trees} and {n_trees} trees on {n_rows} rows: two predict_on {:.2} ms, one predict_each {:.2} ms (best of 100)",
        best[0] * 1e3,
        best[1] * 1e3
    );
    // The same two forests, one joint QuickScorer layout (Forests), on one thread: CPU time.
    let joint = tree_eval::Forests::new(vec![forest.clone(), other.clone()]);
    let mut joint_out = vec![0.0; 2 * n_rows];
    let mut best = [f64::INFINITY; 2];
    for _ in 0..200 {
        for (i, b) in best.iter_mut().enumerate() {
            let t = thread_cpu();
            if i == 0 {
                tree_eval::predict_each(&[&forest, &other], &x, n_cols, &mut both, 1).unwrap();
            } else {
                joint.predict_on(&x, n_cols, &mut joint_out, 1).unwrap();
            }
            *b = b.min(thread_cpu() - t);
        }
    }
    assert!(both.iter().zip(&joint_out).all(|(a, b)| a.to_bits() == b.to_bits()));
    println!(
        "the two on one thread, CPU (best of 200): predict_each {:.3} ms, Forests (joint: {}) {:.3} ms",
        best[0] * 1e3,
        joint.is_joint(),
        best[1] * 1e3
    );
}
