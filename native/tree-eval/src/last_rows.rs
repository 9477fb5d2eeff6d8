//! The rows of the last window a model was applied to, found again in the next: DLE keeps
//! each row's predicted loss for one window, and a sliding window is mostly the rows of the
//! one before (detectors/estimation/dle.py, `LossCache`).
//!
//! One pass over the new rows: each row's 64-bit hash (of its values' bits) picks a slot of
//! an index of the last rows; the rows in that slot (a chain) are compared, value by value,
//! with `==`, so a hit is a row equal to the new one (a NaN is never equal: such a row is
//! never found) and a collision costs a comparison, never a wrong row. Then the new rows
//! replace the last. Memory: the last window's rows, a hash and a link a row, and the
//! index (`SLOTS` u32).

/// Bits of a row's hash that pick its slot by default: 2^16 slots (256 KiB); a 5000-row
/// window fills ~7% of them.
pub const SLOT_BITS: u32 = 16;

/// The last window's rows and their index.
#[derive(Debug, Clone)]
pub struct LastRows {
    slot_bits: u32,
    n_cols: usize,
    rows: Vec<f64>,
    keys: Vec<u64>,
    /// Per slot: 1 + the first last-window row there (0: none).
    head: Vec<u32>,
    /// Per last-window row: 1 + the next row in its slot (0: the last).
    next: Vec<u32>,
    /// `multiplier(i)` for each column `i`; the new rows' hashes, made here (no allocation a
    /// call once the window's size is reached).
    mult: Vec<u64>,
    new_keys: Vec<u64>,
}

impl Default for LastRows {
    fn default() -> Self {
        LastRows::with_slot_bits(SLOT_BITS)
    }
}

/// Odd multipliers of a row's values' bits (splitmix64's sequence, made odd): rows that
/// differ in one value always differ in the sum.
fn multiplier(i: usize) -> u64 {
    let mut z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | 1
}

/// A row's hash: the sum of its values' bits times odd multipliers (independent products,
/// no chain from one value to the next), then mixed (splitmix64's finaliser) so that the top
/// bits, the slot, are even.
#[inline]
fn hash(row: &[f64], mult: &[u64]) -> u64 {
    let mut h = row
        .iter()
        .zip(mult)
        .fold(0u64, |h, (v, m)| h.wrapping_add(v.to_bits().wrapping_mul(*m)));
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

impl LastRows {
    /// An index of `2^slot_bits` slots (`slot_bits` clamped to 1..=24; few slots make long
    /// chains: for tests).
    pub fn with_slot_bits(slot_bits: u32) -> LastRows {
        let slot_bits = slot_bits.clamp(1, 24);
        LastRows {
            slot_bits,
            n_cols: 0,
            rows: Vec::new(),
            keys: Vec::new(),
            head: vec![0; 1 << slot_bits],
            next: Vec::new(),
            mult: Vec::new(),
            new_keys: Vec::new(),
        }
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        (key >> (64 - self.slot_bits)) as usize
    }

    /// The number of rows kept (the last call's).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// For each row of `x` (row-major, `n_cols` values a row), the index among the last
    /// call's rows of a row equal to it (every value `==`), or -1, into `found`; then keeps
    /// `x`'s rows as the last. Rows of another width than the last call's find none.
    pub fn match_and_keep(&mut self, x: &[f64], n_cols: usize, found: &mut [i64]) -> Result<(), crate::Error> {
        let n_rows = x.len().checked_div(n_cols).unwrap_or(found.len());
        if x.len() != n_rows * n_cols || found.len() != n_rows {
            return Err(crate::Error(format!(
                "{} values in rows of {n_cols} and {} places: not one place a row",
                x.len(),
                found.len()
            )));
        }
        if n_rows >= u32::MAX as usize {
            return Err(crate::Error(format!("{n_rows} rows: too many")));
        }
        let same_width = n_cols == self.n_cols;
        if self.mult.len() != n_cols {
            self.mult = (0..n_cols).map(multiplier).collect();
        }
        let mut keys = std::mem::take(&mut self.new_keys);
        keys.clear();
        keys.extend((0..n_rows).map(|r| hash(&x[r * n_cols..(r + 1) * n_cols], &self.mult)));
        for (r, (f, &key)) in found.iter_mut().zip(&keys).enumerate() {
            *f = -1;
            if !same_width {
                continue;
            }
            let row = &x[r * n_cols..(r + 1) * n_cols];
            let mut at = self.head[self.slot(key)];
            while at != 0 {
                let p = at as usize - 1;
                if self.keys[p] == key && self.rows[p * n_cols..(p + 1) * n_cols] == *row {
                    *f = p as i64;
                    break;
                }
                at = self.next[p];
            }
        }
        // The new rows replace the last: their slots emptied, then each new row put first
        // in its slot's chain.
        for i in 0..self.keys.len() {
            let s = self.slot(self.keys[i]);
            self.head[s] = 0;
        }
        self.next.clear();
        self.next.reserve(n_rows);
        for (r, &key) in keys.iter().enumerate() {
            let s = self.slot(key);
            self.next.push(self.head[s]);
            self.head[s] = r as u32 + 1;
        }
        self.new_keys = std::mem::replace(&mut self.keys, keys);
        self.rows.clear();
        self.rows.extend_from_slice(x);
        self.n_cols = n_cols;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(last: &mut LastRows, x: &[f64], n_cols: usize) -> Vec<i64> {
        let mut found = vec![7; x.len() / n_cols];
        last.match_and_keep(x, n_cols, &mut found).unwrap();
        found
    }

    #[test]
    fn finds_each_row_of_the_last_call_and_no_other() {
        let n_cols = 3;
        let rows: Vec<[f64; 3]> = (0..5000)
            .map(|i| [i as f64, (i % 7) as f64 * 0.5, -(i as f64)])
            .collect();
        let mut last = LastRows::default();
        let first: Vec<f64> = rows[..1000].iter().flatten().copied().collect();
        assert_eq!(run(&mut last, &first, n_cols), vec![-1; 1000]);
        assert_eq!(last.len(), 1000);
        // Slid by 100: the first 900 are the last call's rows 100..1000, the rest new.
        let slid: Vec<f64> = rows[100..1100].iter().flatten().copied().collect();
        let want: Vec<i64> = (100..1000).chain(std::iter::repeat_n(-1, 100)).collect();
        assert_eq!(run(&mut last, &slid, n_cols), want);
        // Compared with the call just before only: rows 0..100 are gone.
        let back: Vec<f64> = rows[..200].iter().flatten().copied().collect();
        let want: Vec<i64> = std::iter::repeat_n(-1, 100).chain(0..100).collect();
        assert_eq!(run(&mut last, &back, n_cols), want);
        // Disjoint: none.
        let far: Vec<f64> = rows[3000..5000].iter().flatten().copied().collect();
        assert_eq!(run(&mut last, &far, n_cols), vec![-1; 2000]);
        // Reversed: each found at its place.
        let rev: Vec<f64> = rows[3000..5000].iter().rev().flatten().copied().collect();
        let want: Vec<i64> = (0..2000).rev().collect();
        assert_eq!(run(&mut last, &rev, n_cols), want);
    }

    #[test]
    fn rows_sharing_a_slot_are_all_found() {
        // Two slots for 600 rows: every chain is hundreds long.
        let rows: Vec<f64> = (0..700 * 2).map(|i| (i as f64 * 0.37).sin()).collect();
        let mut last = LastRows::with_slot_bits(1);
        assert_eq!(run(&mut last, &rows[..600 * 2], 2), vec![-1; 600]);
        let want: Vec<i64> = (60..600).chain(std::iter::repeat_n(-1, 60)).collect();
        assert_eq!(run(&mut last, &rows[60 * 2..660 * 2], 2), want);
    }

    #[test]
    fn nan_rows_are_never_found_duplicates_find_one_of_theirs_and_a_width_change_finds_none() {
        let mut last = LastRows::default();
        // Rows of two: [1, NaN], [0, 2], [1, NaN], [3, 3], [3, 3].
        let x = [1.0, f64::NAN, 0.0, 2.0, 1.0, f64::NAN, 3.0, 3.0, 3.0, 3.0];
        run(&mut last, &x, 2);
        let found = run(&mut last, &x, 2);
        assert_eq!(found[..3], [-1, 1, -1]);
        assert!(found[3..].iter().all(|&f| f == 3 || f == 4), "{found:?}");
        // -0 is found as the 0 it equals only where its bits hash alike: not here.
        assert_eq!(run(&mut last, &[-0.0, 2.0, 0.0, 2.0], 2), [-1, 1]);
        // The same values read as rows of another width: none found.
        assert_eq!(run(&mut last, &[-0.0, 2.0, 0.0, 2.0], 4), [-1]);
        assert_eq!(run(&mut last, &[-0.0, 2.0, 0.0, 2.0], 4), [0]);
        // Rows of no columns: counted by the places, never found.
        let mut found = [5i64; 3];
        last.match_and_keep(&[], 0, &mut found).unwrap();
        assert_eq!(found, [-1; 3]);
    }

    #[test]
    fn refuses_places_that_do_not_match_the_rows() {
        let mut last = LastRows::default();
        let mut found = [0i64; 3];
        assert!(last.match_and_keep(&[1.0; 4], 2, &mut found).is_err());
        assert!(last.match_and_keep(&[1.0; 5], 2, &mut found[..2]).is_err());
        assert!(last.is_empty()); // nothing kept from a refused call
    }
}
