use crate::error::{check_finite, Result, StatsError};

/// The scores of one algorithm: a `runs × tasks` matrix of finite values, as rliable arranges
/// them (`scores[n][m]` is run `n` on task `m`). Runs are seeds, tasks are games or envs; every
/// task has the same number of runs.
///
/// Built only through [`Scores::new`], [`Scores::from_rows`] or [`Scores::from_columns`], which
/// refuse empty, ragged or non-finite input, so every statistic on a `Scores` is well defined.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    runs: usize,
    tasks: usize,
    /// Row-major: `values[run * tasks + task]`.
    values: Vec<f64>,
}

impl Scores {
    /// A `runs × tasks` matrix from row-major `values` (`values[run * tasks + task]`).
    pub fn new(runs: usize, tasks: usize, values: Vec<f64>) -> Result<Self> {
        if runs == 0 {
            return Err(StatsError::Empty {
                what: "scores: runs",
            });
        }
        if tasks == 0 {
            return Err(StatsError::Empty {
                what: "scores: tasks",
            });
        }
        if values.len() != runs * tasks {
            return Err(StatsError::Shape {
                what: "scores",
                expected: format!("{runs} x {tasks} = {} values", runs * tasks),
                got: format!("{} values", values.len()),
            });
        }
        check_finite("scores", &values)?;
        Ok(Scores {
            runs,
            tasks,
            values,
        })
    }

    /// One row per run, one column per task (rliable's layout).
    pub fn from_rows<R: AsRef<[f64]>>(rows: &[R]) -> Result<Self> {
        let tasks = rows.first().map_or(0, |r| r.as_ref().len());
        if let Some((run, row)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.as_ref().len() != tasks)
        {
            return Err(StatsError::Shape {
                what: "scores: rows (runs) of different lengths",
                expected: format!("{tasks} tasks in every run, as in run 0"),
                got: format!("{} in run {run}", row.as_ref().len()),
            });
        }
        let values = rows
            .iter()
            .flat_map(|r| r.as_ref().iter().copied())
            .collect();
        Scores::new(rows.len(), tasks, values)
    }

    /// One column per task, each holding that task's runs (e.g. one game's final score per seed).
    pub fn from_columns<C: AsRef<[f64]>>(columns: &[C]) -> Result<Self> {
        let runs = columns.first().map_or(0, |c| c.as_ref().len());
        if let Some((task, col)) = columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.as_ref().len() != runs)
        {
            return Err(StatsError::Shape {
                what: "scores: columns (tasks) of different lengths",
                expected: format!("{runs} runs in every task, as in task 0"),
                got: format!("{} in task {task}", col.as_ref().len()),
            });
        }
        let tasks = columns.len();
        let mut values = vec![0.0; runs * tasks];
        for (task, col) in columns.iter().enumerate() {
            for (run, &v) in col.as_ref().iter().enumerate() {
                values[run * tasks + task] = v;
            }
        }
        Scores::new(runs, tasks, values)
    }

    /// Number of runs (rows).
    pub fn runs(&self) -> usize {
        self.runs
    }

    /// Number of tasks (columns).
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// The score of `run` on `task`, or `None` outside the matrix.
    pub fn get(&self, run: usize, task: usize) -> Option<f64> {
        (run < self.runs && task < self.tasks).then(|| self.values[run * self.tasks + task])
    }

    /// All scores, row-major (`values[run * tasks + task]`).
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The runs of one task (a column), or `None` if `task` is out of range.
    pub fn task(&self, task: usize) -> Option<Vec<f64>> {
        (task < self.tasks).then(|| {
            (0..self.runs)
                .map(|run| self.values[run * self.tasks + task])
                .collect()
        })
    }

    /// The mean over runs of every task.
    pub fn task_means(&self) -> Vec<f64> {
        let mut sums = vec![0.0; self.tasks];
        for row in self.values.chunks_exact(self.tasks) {
            for (s, v) in sums.iter_mut().zip(row) {
                *s += v;
            }
        }
        sums.iter().map(|s| s / self.runs as f64).collect()
    }

    /// Overwrites `self` with a stratified resample of `source` (same shape): every entry of
    /// task `m` is drawn, with replacement, from the runs of task `m`.
    pub(crate) fn resample_from(&mut self, source: &Scores, rng: &mut impl rand::Rng) {
        debug_assert_eq!((self.runs, self.tasks), (source.runs, source.tasks));
        let tasks = self.tasks;
        for (i, v) in self.values.iter_mut().enumerate() {
            let run = rng.gen_range(0..source.runs);
            *v = source.values[run * tasks + i % tasks];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_columns_give_the_same_matrix() {
        let a = Scores::from_rows(&[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).unwrap();
        let b = Scores::from_columns(&[vec![1.0, 3.0, 5.0], vec![2.0, 4.0, 6.0]]).unwrap();
        assert_eq!(a, b);
        assert_eq!((a.runs(), a.tasks()), (3, 2));
        assert_eq!(a.get(2, 1), Some(6.0));
        assert_eq!(a.get(3, 0), None);
        assert_eq!(a.task(1), Some(vec![2.0, 4.0, 6.0]));
        assert_eq!(a.task_means(), vec![3.0, 4.0]);
    }

    #[test]
    fn bad_input_is_refused_with_what_was_wrong() {
        let empty: [[f64; 0]; 0] = [];
        assert!(matches!(
            Scores::from_rows(&empty),
            Err(StatsError::Empty { .. })
        ));
        assert!(matches!(
            Scores::from_rows(&[[1.0; 0]]),
            Err(StatsError::Empty { .. })
        ));
        let ragged = Scores::from_rows(&[vec![1.0, 2.0], vec![3.0]]).unwrap_err();
        assert_eq!(
            ragged.to_string(),
            "scores: rows (runs) of different lengths: expected 2 tasks in every run, as in run 0, got 1 in run 1"
        );
        let nan = Scores::from_rows(&[[1.0, f64::NAN]]).unwrap_err();
        assert_eq!(
            nan.to_string(),
            "scores: value 1 is NaN; every value must be finite"
        );
        assert!(matches!(
            Scores::new(2, 2, vec![1.0; 3]),
            Err(StatsError::Shape { .. })
        ));
    }

    #[test]
    fn resampling_draws_only_from_the_same_task() {
        use rand::SeedableRng;
        let s = Scores::from_columns(&[vec![1.0, 2.0, 3.0], vec![10.0, 20.0, 30.0]]).unwrap();
        let mut r = s.clone();
        let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
        for _ in 0..50 {
            r.resample_from(&s, &mut rng);
            assert!(r
                .task(0)
                .unwrap()
                .iter()
                .all(|v| [1.0, 2.0, 3.0].contains(v)));
            assert!(r
                .task(1)
                .unwrap()
                .iter()
                .all(|v| [10.0, 20.0, 30.0].contains(v)));
        }
    }
}
