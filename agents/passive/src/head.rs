//! A small trained head: one logistic regression per agent over sentence embeddings,
//! fitted when the scorer loads on the agent's written examples (its own, weighted 1;
//! its definition, weighted less) against everything that is not its own. Deterministic:
//! full-batch gradient descent from zero.

/// Passes over the examples.
const EPOCHS: usize = 400;
/// Step size (inputs are unit vectors, so the scale is tame).
const RATE: f32 = 2.0;
/// L2 penalty: keeps the weights from memorising a handful of examples.
const L2: f32 = 1e-3;

/// A fitted logistic regression.
#[derive(Debug, Clone)]
pub struct Head {
    w: Vec<f32>,
    b: f32,
}

/// One training row: an embedding, its label and its weight.
pub(crate) struct Row<'a> {
    pub(crate) x: &'a [f32],
    pub(crate) y: bool,
    pub(crate) weight: f32,
}

impl Head {
    /// Fits a head on `rows`, balancing the two classes' total weight.
    pub(crate) fn fit(rows: &[Row<'_>], dim: usize) -> Head {
        let pos: f32 = rows.iter().filter(|r| r.y).map(|r| r.weight).sum();
        let neg: f32 = rows.iter().filter(|r| !r.y).map(|r| r.weight).sum();
        let mut h = Head {
            w: vec![0.0; dim],
            b: 0.0,
        };
        if pos == 0.0 || neg == 0.0 {
            // Nothing to tell apart: never confident.
            h.b = -10.0;
            return h;
        }
        let total = pos + neg;
        let scale = |r: &Row<'_>| r.weight * total / (2.0 * if r.y { pos } else { neg });
        let n: f32 = rows.iter().map(scale).sum();
        let mut gw = vec![0.0f32; dim];
        for _ in 0..EPOCHS {
            gw.iter_mut().for_each(|g| *g = 0.0);
            let mut gb = 0.0f32;
            for r in rows {
                let p = sigmoid(dot(&h.w, r.x) + h.b);
                let err = (p - if r.y { 1.0 } else { 0.0 }) * scale(r);
                for (g, x) in gw.iter_mut().zip(r.x) {
                    *g += err * x;
                }
                gb += err;
            }
            for (w, g) in h.w.iter_mut().zip(&gw) {
                *w -= RATE * (g / n + L2 * *w);
            }
            h.b -= RATE * gb / n;
        }
        h
    }

    /// The probability that `x` is the agent's.
    pub fn prob(&self, x: &[f32]) -> f32 {
        sigmoid(dot(&self.w, x) + self.b)
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Dot product (the cosine, for unit vectors).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_two_clusters() {
        let a = [[1.0, 0.1, 0.0], [0.9, 0.0, 0.2], [1.0, 0.2, 0.1]];
        let b = [[0.0, 1.0, 0.1], [0.1, 0.9, 0.0], [0.2, 0.0, 1.0]];
        let mut rows: Vec<Row<'_>> = a
            .iter()
            .map(|x| Row {
                x,
                y: true,
                weight: 1.0,
            })
            .collect();
        rows.extend(b.iter().map(|x| Row {
            x,
            y: false,
            weight: 1.0,
        }));
        let h = Head::fit(&rows, 3);
        assert!(h.prob(&[0.95, 0.05, 0.1]) > 0.8);
        assert!(h.prob(&[0.05, 0.95, 0.1]) < 0.2);
        assert!(Head::fit(&rows[..3], 3).prob(&[1.0, 0.0, 0.0]) < 0.01);
    }
}
