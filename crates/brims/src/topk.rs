//! Choosing the active modules from the null-attention scores (spec §4.3, §8).

use crate::config::TieBreak;

/// Which of the `scores.len()` modules are active: the `active` ones with the least null
/// attention. Ties follow `rule`.
pub(crate) fn active_modules(scores: &[f64], active: usize, rule: TieBreak) -> Vec<bool> {
    let m = scores.len();
    let mut is_active = vec![true; m];
    let inactive = m.saturating_sub(active);
    if inactive == 0 {
        return is_active;
    }
    match rule {
        TieBreak::LowestIndex => {
            let mut order: Vec<usize> = (0..m).collect();
            // Stable: among equal scores the lower index comes first, i.e. stays active.
            order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
            for &j in &order[active..] {
                is_active[j] = false;
            }
        }
        TieBreak::TorchCpu => {
            for j in torch_cpu_topk_largest(scores, inactive) {
                is_active[j] = false;
            }
        }
    }
    is_active
}

/// The indices torch 2.15's CPU `topk(k, largest=True)` returns for small rows: libstdc++
/// `std::nth_element` (introselect) on `(value, index)` pairs ordered by value only, then the
/// first `k` (spec §8). `1 ≤ k ≤ n`.
fn torch_cpu_topk_largest(values: &[f64], k: usize) -> Vec<usize> {
    let mut a: Vec<(f64, usize)> = values.iter().copied().zip(0..).collect();
    let before = |x: &(f64, usize), y: &(f64, usize)| x.0 > y.0;
    let n = a.len();
    let nth = k - 1;
    let (mut lo, mut hi) = (0usize, n);
    let mut depth = 2 * (usize::BITS - 1 - n.max(1).leading_zeros()) as usize;
    while hi - lo > 3 {
        if depth == 0 {
            // libstdc++ falls back to a heap select here; unreachable for the small module
            // counts BRIMs uses (n ≤ 8 never exhausts the depth). A stable sort keeps the set
            // of largest values right, only the order among exact ties may differ.
            a[lo..hi].sort_by(|x, y| y.0.total_cmp(&x.0));
            return a[..k].iter().map(|p| p.1).collect();
        }
        depth -= 1;
        let mid = lo + (hi - lo) / 2;
        move_median_to_first(&mut a, lo, lo + 1, mid, hi - 1, before);
        // Unguarded Hoare partition of [lo + 1, hi) around a[lo].
        let (mut i, mut j) = (lo + 1, hi);
        loop {
            while before(&a[i], &a[lo]) {
                i += 1;
            }
            j -= 1;
            while before(&a[lo], &a[j]) {
                j -= 1;
            }
            if i >= j {
                break;
            }
            a.swap(i, j);
            i += 1;
        }
        if i <= nth {
            lo = i;
        } else {
            hi = i;
        }
    }
    // libstdc++ insertion sort of [lo, hi).
    for i in lo + 1..hi {
        let v = a[i];
        if before(&v, &a[lo]) {
            a.copy_within(lo..i, lo + 1);
            a[lo] = v;
        } else {
            let mut j = i;
            while before(&v, &a[j - 1]) {
                a[j] = a[j - 1];
                j -= 1;
            }
            a[j] = v;
        }
    }
    a[..k].iter().map(|p| p.1).collect()
}

fn move_median_to_first<F: Fn(&(f64, usize), &(f64, usize)) -> bool>(
    a: &mut [(f64, usize)],
    result: usize,
    x: usize,
    y: usize,
    z: usize,
    before: F,
) {
    let pick = if before(&a[x], &a[y]) {
        if before(&a[y], &a[z]) {
            y
        } else if before(&a[x], &a[z]) {
            z
        } else {
            x
        }
    } else if before(&a[x], &a[z]) {
        x
    } else if before(&a[y], &a[z]) {
        z
    } else {
        y
    };
    a.swap(result, pick);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inactive(m: usize, k: usize, scores: &[f64], rule: TieBreak) -> Vec<usize> {
        let act = active_modules(scores, k, rule);
        assert_eq!(act.len(), m);
        (0..m).filter(|&j| !act[j]).collect()
    }

    /// Spec §8's table of torch 2.15 CPU results when all scores are equal.
    #[test]
    fn torch_cpu_all_equal_table() {
        let table: &[(usize, usize, &[usize])] = &[
            (3, 2, &[0]),
            (4, 2, &[2, 3]),
            (4, 3, &[2]),
            (5, 3, &[2, 4]),
            (6, 4, &[3, 5]),
            (6, 3, &[3, 4, 5]),
            (8, 4, &[4, 5, 6, 7]),
            (6, 2, &[0, 3, 4, 5]),
        ];
        for &(m, k, want) in table {
            let got = inactive(m, k, &vec![1.0 / 3.0; m], TieBreak::TorchCpu);
            assert_eq!(got, want, "M={m} k={k}");
        }
    }

    #[test]
    fn distinct_scores_deactivate_the_largest_under_both_rules() {
        let scores = [0.1, 0.9, 0.3, 0.7, 0.2, 0.8];
        for rule in [TieBreak::TorchCpu, TieBreak::LowestIndex] {
            assert_eq!(inactive(6, 3, &scores, rule), vec![1, 3, 5]);
            assert_eq!(inactive(6, 6, &scores, rule), Vec::<usize>::new());
        }
    }

    #[test]
    fn lowest_index_keeps_low_indices_active_on_ties() {
        assert_eq!(inactive(6, 4, &[0.5; 6], TieBreak::LowestIndex), vec![4, 5]);
        assert_eq!(
            inactive(4, 2, &[0.5, 0.2, 0.5, 0.5], TieBreak::LowestIndex),
            vec![2, 3]
        );
    }
}
