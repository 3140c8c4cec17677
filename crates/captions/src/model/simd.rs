//! Runs a kernel with the widest vector instructions the CPU has.
//!
//! The crate is compiled for the baseline x86-64 (SSE2, four floats per instruction, no
//! fused multiply-add). [`vectorized`] runs its closure inside a function compiled for
//! AVX-512 (x86-64-v4: sixteen floats) or AVX2 and FMA (x86-64-v3: eight floats) when
//! the CPU has them, through `pulp` (already built for candle's matrix products), so
//! plain loops in the closure and in the `#[inline(always)]` functions it calls
//! vectorise that wide. The arithmetic is the same on every path: the compiler
//! vectorises across independent lanes and never reorders a sum or fuses a product
//! into one, so results do not depend on the CPU.

/// Runs `kernel` compiled for AVX-512, or AVX2 and FMA, when the CPU has them, else as
/// it is. The closure must be `#[inline(always)]` (`vectorized(#[inline(always)] ||
/// ...)`), and so must the functions it calls: code that is not inlined into the
/// dispatched function keeps the baseline instructions.
#[inline(always)]
pub(crate) fn vectorized<R>(kernel: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(simd) = pulp::x86::V4::try_new() {
            return pulp::Simd::vectorize(simd, kernel);
        }
        if let Some(simd) = pulp::x86::V3::try_new() {
            return pulp::Simd::vectorize(simd, kernel);
        }
    }
    kernel()
}
