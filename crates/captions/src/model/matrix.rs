//! A weight matrix for products with a few rows (the decoder's steps, the projection
//! onto the vocabulary), kept as float16 when that loses nothing.
//!
//! Those products read every weight once per step and are bound by memory, not
//! arithmetic. faster-whisper's models store their weights as float16: widened to f32
//! they are exactly those float16 values, so keeping the float16 bits and widening them
//! in the product halves the bytes read and gives the same f32 numbers, bit for bit. A
//! matrix with any value float16 cannot hold exactly (float32 or int8 models) stays f32.

use rayon::prelude::*;

use super::simd::vectorized;

/// Output features per parallel task.
const BLOCK: usize = 64;

/// `2^112`: scales a float16's exponent (bias 15) to a float32's (bias 127).
const HALF_TO_SINGLE: f32 = 5.192_297e33;

/// The weights, row after row.
#[derive(Debug, Clone)]
enum Values {
    F32(Vec<f32>),
    /// float16 bits.
    F16(Vec<u16>),
}

/// `outputs` rows of `inputs` weights.
#[derive(Debug, Clone)]
pub(crate) struct Matrix {
    values: Values,
    inputs: usize,
    outputs: usize,
}

impl Matrix {
    /// The matrix of `values` (rows of `inputs`), as float16 if every value is one.
    pub(crate) fn new(values: Vec<f32>, inputs: usize) -> Self {
        let outputs = values.len() / inputs.max(1);
        let halves: Option<Vec<u16>> = values.iter().map(|&v| narrow_exact(v)).collect();
        let values = match halves {
            Some(h) => Values::F16(h),
            None => Values::F32(values),
        };
        Self {
            values,
            inputs,
            outputs,
        }
    }

    /// Values per row.
    pub(crate) fn inputs(&self) -> usize {
        self.inputs
    }

    /// Rows.
    pub(crate) fn outputs(&self) -> usize {
        self.outputs
    }

    /// Row `i`, or `None` past the last.
    pub(crate) fn row(&self, i: usize) -> Option<Vec<f32>> {
        let range = i * self.inputs..(i + 1) * self.inputs;
        match &self.values {
            Values::F32(v) => v.get(range).map(<[f32]>::to_vec),
            Values::F16(v) => v.get(range).map(|h| h.iter().map(|&h| widen(h)).collect()),
        }
    }

    /// Each of the `x.len() / inputs` rows of `x` times the transpose of the matrix, plus
    /// `bias`: as many rows of `outputs` values.
    pub(crate) fn times(&self, x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (inputs, outputs) = (self.inputs, self.outputs);
        let rows = x.len() / inputs;
        // Computed feature-major (each task owns whole features), then transposed.
        let mut by_feature = vec![0.0f32; outputs * rows];
        let tasks = by_feature.par_chunks_mut(BLOCK * rows);
        match &self.values {
            Values::F32(w) => tasks
                .zip(w.par_chunks(BLOCK * inputs))
                .for_each(|(out, w)| {
                    vectorized(
                        #[inline(always)]
                        || {
                            for (out, w_row) in
                                out.chunks_exact_mut(rows).zip(w.chunks_exact(inputs))
                            {
                                dots(w_row, x, out);
                            }
                        },
                    )
                }),
            Values::F16(w) => tasks
                .zip(w.par_chunks(BLOCK * inputs))
                .for_each(|(out, w)| {
                    vectorized(
                        #[inline(always)]
                        || {
                            let mut wide = vec![0.0f32; if rows > 1 { inputs } else { 0 }];
                            for (out, w_row) in
                                out.chunks_exact_mut(rows).zip(w.chunks_exact(inputs))
                            {
                                if rows == 1 {
                                    out[0] = dot_half(w_row, x);
                                    continue;
                                }
                                // Widened once for all rows of x.
                                for (o, &h) in wide.iter_mut().zip(w_row) {
                                    *o = widen(h);
                                }
                                dots(&wide, x, out);
                            }
                        },
                    )
                }),
        }
        let mut out = vec![0.0f32; rows * outputs];
        for (f, values) in by_feature.chunks_exact(rows).enumerate() {
            let b = bias.map_or(0.0, |b| b[f]);
            for (r, &v) in values.iter().enumerate() {
                out[r * outputs + f] = v + b;
            }
        }
        out
    }
}

/// Independent partial sums of a dot product: two AVX-512 registers, four AVX2 ones,
/// so the additions do not wait on each other.
const LANES: usize = 32;

/// Dot product of `w` and `x` (as long).
#[inline(always)]
pub(crate) fn dot(w: &[f32], x: &[f32]) -> f32 {
    dot_of(w, x, |&v| v)
}

/// Dot product of the float16 bits `w` and `x` (as long), widened on the fly: the
/// same value as [`dot`] of the widened weights.
#[inline(always)]
fn dot_half(w: &[u16], x: &[f32]) -> f32 {
    dot_of(w, x, |&h| widen(h))
}

/// `sum(value(w[i]) * x[i])` in [`LANES`] partial sums, added pairwise at the end.
#[inline(always)]
fn dot_of<T>(w: &[T], x: &[f32], value: impl Fn(&T) -> f32) -> f32 {
    let mut sums = [0.0f32; LANES];
    let (w_chunks, x_chunks) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let tail: f32 = w_chunks
        .remainder()
        .iter()
        .zip(x_chunks.remainder())
        .map(|(a, b)| value(a) * b)
        .sum();
    for (a, b) in w_chunks.zip(x_chunks) {
        for k in 0..LANES {
            sums[k] += value(&a[k]) * b[k];
        }
    }
    reduce(sums) + tail
}

/// The dot products of `w` with each row of `x` (rows as long as `w`), into `out` (one
/// per row). Up to eight rows are computed together, so their sums do not wait on each
/// other; each is the same value as [`dot`].
#[inline(always)]
fn dots(w: &[f32], x: &[f32], out: &mut [f32]) {
    match out.len() {
        1 => out[0] = dot(w, x),
        2 => dots_of::<2>(w, x, out),
        3 => dots_of::<3>(w, x, out),
        4 => dots_of::<4>(w, x, out),
        5 => dots_of::<5>(w, x, out),
        6 => dots_of::<6>(w, x, out),
        7 => dots_of::<7>(w, x, out),
        8 => dots_of::<8>(w, x, out),
        _ => {
            for (o, x_row) in out.iter_mut().zip(x.chunks_exact(w.len())) {
                *o = dot(w, x_row);
            }
        }
    }
}

/// [`dots`] of `R` rows.
#[inline(always)]
fn dots_of<const R: usize>(w: &[f32], x: &[f32], out: &mut [f32]) {
    let inputs = w.len();
    let mut sums = [[0.0f32; LANES]; R];
    let whole = inputs - inputs % LANES;
    for (c, w_chunk) in w[..whole].chunks_exact(LANES).enumerate() {
        for (r, sums) in sums.iter_mut().enumerate() {
            let x_chunk = &x[r * inputs + c * LANES..r * inputs + (c + 1) * LANES];
            for k in 0..LANES {
                sums[k] += w_chunk[k] * x_chunk[k];
            }
        }
    }
    for (r, (o, sums)) in out.iter_mut().zip(sums).enumerate() {
        let tail: f32 = w[whole..]
            .iter()
            .zip(&x[r * inputs + whole..(r + 1) * inputs])
            .map(|(a, b)| a * b)
            .sum();
        *o = reduce(sums) + tail;
    }
}

/// The sum of [`LANES`] partial sums, added pairwise.
#[inline(always)]
fn reduce(mut sums: [f32; LANES]) -> f32 {
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for k in 0..n {
            sums[k] += sums[k + n];
        }
    }
    sums[0]
}

/// The f32 value of the float16 bits `h`. Exact for finite values (infinities and NaN
/// never get here: [`narrow_exact`] refuses them).
#[inline(always)]
fn widen(h: u16) -> f32 {
    // Sign-extended and shifted, the sign lands in a float32's sign bit and the other
    // bits in its exponent and mantissa (the mask clears the sign's copies between):
    // that float32 is 2^-112 times the value (subnormals included), and the product
    // by 2^112 is exact.
    let bits = ((i32::from(h as i16) << 13) as u32) & 0x8fff_e000;
    f32::from_bits(bits) * HALF_TO_SINGLE
}

/// The float16 bits of `v` if float16 holds `v` exactly (and widening them gives `v`
/// back), else `None`.
fn narrow_exact(v: f32) -> Option<u16> {
    let scaled = (v.abs() / HALF_TO_SINGLE).to_bits();
    if scaled & 0x1fff != 0 || scaled >> 13 > 0x7bff {
        return None;
    }
    let half = (scaled >> 13) as u16 | ((v.to_bits() >> 16) as u16 & 0x8000);
    (widen(half).to_bits() == v.to_bits()).then_some(half)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Products computed one dot at a time, in f64.
    fn reference(w: &[f32], x: &[f32], inputs: usize, bias: &[f32]) -> Vec<f64> {
        let outputs = w.len() / inputs;
        x.chunks_exact(inputs)
            .flat_map(|row| {
                (0..outputs).map(move |f| {
                    let w_row = &w[f * inputs..(f + 1) * inputs];
                    let d: f64 = w_row
                        .iter()
                        .zip(row)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    d + f64::from(bias[f])
                })
            })
            .collect()
    }

    #[test]
    fn float16_weights_are_kept_as_float16_and_give_the_same_products() {
        let (outputs, inputs) = (130, 37);
        // Multiples of 1/64 in [-1, 1]: all exact in float16.
        let w: Vec<f32> = (0..outputs * inputs)
            .map(|i| ((i * 7919) % 129) as f32 / 64.0 - 1.0)
            .collect();
        let bias: Vec<f32> = (0..outputs).map(|i| i as f32 / 10.0).collect();
        let half = Matrix::new(w.clone(), inputs);
        assert!(matches!(half.values, Values::F16(_)));
        let full = Matrix {
            values: Values::F32(w.clone()),
            inputs,
            outputs,
        };
        for rows in [1, 3, 8] {
            let x: Vec<f32> = (0..rows * inputs)
                .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
                .collect();
            let ours = half.times(&x, Some(&bias));
            assert_eq!(ours, full.times(&x, Some(&bias)), "{rows} rows");
            for (a, b) in ours.iter().zip(reference(&w, &x, inputs, &bias)) {
                assert!((f64::from(*a) - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        // Several rows at once give each row's value alone, bit for bit.
        for rows in 2..=9 {
            let x: Vec<f32> = (0..rows * inputs)
                .map(|i| (i % 13) as f32 / 7.0 - 0.9)
                .collect();
            let all = full.times(&x, None);
            for (r, row) in x.chunks_exact(inputs).enumerate() {
                let alone = full.times(row, None);
                assert_eq!(
                    alone,
                    all[r * outputs..(r + 1) * outputs],
                    "{rows} rows, row {r}"
                );
            }
        }
        assert_eq!(half.row(2), Some(w[2 * inputs..3 * inputs].to_vec()));
        assert_eq!(half.row(outputs), None);
    }

    #[test]
    fn a_value_float16_cannot_hold_keeps_the_matrix_in_f32() {
        let mut w = vec![0.5f32; 16];
        w[7] = 0.1;
        assert!(matches!(Matrix::new(w, 4).values, Values::F32(_)));
        assert!(matches!(
            Matrix::new(vec![1.0, f32::INFINITY], 2).values,
            Values::F32(_)
        ));
    }

    #[test]
    fn every_finite_float16_round_trips() {
        for bits in 0..=u16::MAX {
            if bits & 0x7c00 == 0x7c00 {
                continue; // infinities and NaN
            }
            let v = [widen(bits)];
            let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
            let (exponent, mantissa) = (i32::from((bits >> 10) & 0x1f), f64::from(bits & 0x3ff));
            let want = sign
                * if exponent == 0 {
                    mantissa * 2f64.powi(-24)
                } else {
                    (1.0 + mantissa / 1024.0) * 2f64.powi(exponent - 15)
                };
            assert_eq!(f64::from(v[0]), want, "{bits:#06x}");
            assert_eq!(narrow_exact(v[0]), Some(bits), "{bits:#06x}");
        }
        assert_eq!(narrow_exact(65520.0), None);
        assert_eq!(narrow_exact(1.0 + 1.0 / 4096.0), None);
        assert_eq!(narrow_exact(2f32.powi(-25)), None);
        assert_eq!(narrow_exact(f32::NAN), None);
    }
}
