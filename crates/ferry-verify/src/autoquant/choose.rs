//! Choosing a type per tensor from a linear model of each language's distance: a group's
//! measured distance per unit of weighted error, times the error the chosen types make.
//!
//! Greedy by marginal value: every tensor starts at its cheapest candidate and the upgrade
//! (to any dearer candidate with a smaller error) with the largest fall in the objective per
//! added byte is taken, until the budget is met (smallest file) or no upgrade fits the size
//! (smallest worst-language distance). The objective is a soft maximum over languages (the
//! 8-norm of each language's distance over its bound), so an upgrade that helps only
//! languages already far inside their bound is worth little.

use super::table::Table;

/// The norm over languages standing in for their maximum.
const NORM: i32 = 8;

/// Predicted distance per language: `coef[g][l]` per unit of group `g`'s weighted error.
#[derive(Debug, Clone)]
pub struct Predictor {
    /// Per group, per language.
    pub coef: Vec<Vec<f64>>,
}

impl Predictor {
    /// Each language's predicted distance when entry `i` takes option `choice[i]`.
    pub fn predict(&self, table: &Table, choice: &[usize]) -> Vec<f64> {
        let some: Vec<Option<usize>> = choice.iter().copied().map(Some).collect();
        self.predict_some(table, &some)
    }

    /// [`Predictor::predict`] with the entries whose choice is `None` left unquantized.
    pub fn predict_some(&self, table: &Table, choice: &[Option<usize>]) -> Vec<f64> {
        let langs = self.coef.first().map_or(0, Vec::len);
        let mut d = vec![0.0; langs];
        for (e, k) in table.entries.iter().zip(choice) {
            let Some(k) = *k else { continue };
            let err = e.options[k].error;
            for (v, c) in d.iter_mut().zip(&self.coef[e.group]) {
                *v += c * err;
            }
        }
        d
    }
}

/// When to stop.
#[derive(Debug, Clone, Copy)]
pub enum Stop<'a> {
    /// Once every language's predicted distance is within its bound.
    Within(&'a [f64]),
    /// When no upgrade fits in this many bytes (bounds all 1).
    Bytes(u64),
}

fn objective(d: &[f64], bounds: &[f64]) -> f64 {
    d.iter()
        .zip(bounds)
        .map(|(v, b)| (v / b).powi(NORM))
        .sum::<f64>()
        .powf(1.0 / f64::from(NORM))
}

/// The choice (an option index per entry) by the greedy rule; `None` when even the best
/// candidates cannot meet `Stop::Within` or the cheapest exceed `Stop::Bytes`.
pub fn choose(table: &Table, p: &Predictor, stop: Stop<'_>) -> Option<Vec<usize>> {
    let langs = p.coef.first().map_or(0, Vec::len);
    let ones = vec![1.0; langs];
    let (bounds, limit) = match stop {
        Stop::Within(b) => (b, u64::MAX),
        Stop::Bytes(n) => (&ones[..], n),
    };
    let mut choice = vec![0usize; table.entries.len()];
    let mut bytes = table.bytes(&choice);
    if bytes > limit {
        return None;
    }
    let mut d = p.predict(table, &choice);
    let met = |d: &[f64]| d.iter().zip(bounds).all(|(v, b)| v <= b);
    let mut trial = vec![0.0; langs];
    loop {
        if matches!(stop, Stop::Within(_)) && met(&d) {
            return Some(choice);
        }
        let now = objective(&d, bounds);
        let mut best: Option<(f64, usize, usize)> = None;
        for (i, e) in table.entries.iter().enumerate() {
            let cur = e.options[choice[i]];
            for (k, o) in e.options.iter().enumerate().skip(choice[i] + 1) {
                let extra = o.bytes - cur.bytes;
                if o.error >= cur.error || bytes + extra > limit {
                    continue;
                }
                let delta = o.error - cur.error;
                for ((t, v), c) in trial.iter_mut().zip(&d).zip(&p.coef[e.group]) {
                    *t = v + c * delta;
                }
                let value = (now - objective(&trial, bounds)) / extra.max(1) as f64;
                if best.is_none_or(|(b, _, _)| value > b) {
                    best = Some((value, i, k));
                }
            }
        }
        let Some((_, i, k)) = best else {
            return match stop {
                Stop::Within(_) => None,
                Stop::Bytes(_) => Some(choice),
            };
        };
        let e = &table.entries[i];
        let delta = e.options[k].error - e.options[choice[i]].error;
        for (v, c) in d.iter_mut().zip(&p.coef[e.group]) {
            *v += c * delta;
        }
        bytes += e.options[k].bytes - e.options[choice[i]].bytes;
        choice[i] = k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoquant::table::{Candidate, Entry};
    use ferry_io::DType;

    fn entry(name: &str, group: usize, errors: [f64; 3]) -> Entry {
        Entry {
            name: name.into(),
            shape: vec![32, 32],
            group,
            options: [(DType::Q4_0, 100), (DType::Q5_0, 120), (DType::Q8_0, 200)]
                .iter()
                .zip(errors)
                .map(|(&(dtype, bytes), error)| Candidate {
                    dtype,
                    bytes,
                    error,
                    rounding: error,
                })
                .collect(),
        }
    }

    fn table() -> Table {
        Table {
            entries: vec![
                entry("a", 0, [10.0, 5.0, 0.1]),
                entry("b", 1, [10.0, 5.0, 0.1]),
            ],
            groups: vec!["a".into(), "b".into()],
            fixed_bytes: 10,
            params: 2048,
        }
    }

    #[test]
    fn bytes_go_where_the_worst_language_is_hurt() {
        // Group a hurts language 0 ten times more than group b hurts either language.
        let p = Predictor {
            coef: vec![vec![1.0, 0.0], vec![0.1, 0.1]],
        };
        let t = table();
        let c = choose(&t, &p, Stop::Bytes(10 + 200 + 100)).unwrap();
        assert_eq!(c, vec![2, 0]);
        // Only the cheapest fits.
        assert_eq!(choose(&t, &p, Stop::Bytes(210)).unwrap(), vec![0, 0]);
        assert!(choose(&t, &p, Stop::Bytes(209)).is_none());
        // A bound every language meets with the least bytes.
        let c = choose(&t, &p, Stop::Within(&[6.0, 6.0])).unwrap();
        assert_eq!(c, vec![1, 0]);
        assert!(p.predict(&t, &c).iter().all(|&v| v <= 6.0));
        assert!(choose(&t, &p, Stop::Within(&[0.01, 0.01])).is_none());
    }
}
