use std::sync::Arc;

use crate::{NttError, NttTables, canonical_exponent, reference};

/// Which implementation a plan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NttEngine {
    /// tfhe-ntt's 32-bit plan (AVX-512 / AVX2 / scalar, picked by tfhe-ntt at run time).
    TfheNtt,
    /// The portable reference in this crate (degrees below 32, or if tfhe-ntt ever disagreed
    /// with the canonical order).
    Reference,
}

/// The fast CPU transform for one prime and one degree, in the canonical order.
///
/// tfhe-ntt computes the same transform as [`reference::forward`] (same root, same bit-reversed
/// order, fully reduced output) but lacks the `N^{-1}` factor in its inverse, which is applied
/// here. Construction verifies the agreement on the monomial `X`, whose transform lists every
/// evaluation point, and on a pseudo-random vector; if it ever failed, the plan falls back to the
/// reference, so results stay canonical.
#[derive(Clone)]
pub struct NttPlan {
    tables: Arc<NttTables>,
    fast: Option<tfhe_ntt::prime32::Plan>,
}

impl std::fmt::Debug for NttPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NttPlan")
            .field("n", &self.tables.n())
            .field("p", &self.tables.modulus().value())
            .field("engine", &self.engine())
            .finish()
    }
}

impl NttPlan {
    /// A plan for the prime `p` and degree `n`.
    pub fn new(p: u32, n: usize) -> Result<Self, NttError> {
        let tables = Arc::new(NttTables::new(p, n)?);
        let fast = if n >= 32 { tfhe_ntt::prime32::Plan::try_new(n, p) } else { None };
        let fast = fast.filter(|plan| agrees_with_reference(plan, &tables));
        Ok(Self { tables, fast })
    }

    /// The tables this plan uses (what GPU backends upload).
    pub fn tables(&self) -> &Arc<NttTables> {
        &self.tables
    }

    /// The degree `N`.
    pub fn n(&self) -> usize {
        self.tables.n()
    }

    /// Which implementation runs.
    pub fn engine(&self) -> NttEngine {
        if self.fast.is_some() { NttEngine::TfheNtt } else { NttEngine::Reference }
    }

    /// Forward transform in place. `a` must have length `N` and reduced entries.
    ///
    /// # Panics
    /// If `a.len() != N` (a caller bug: the backends validate shapes before calling).
    #[inline]
    pub fn forward(&self, a: &mut [u32]) {
        match &self.fast {
            Some(plan) => plan.fwd(a),
            None => reference::forward(&self.tables, a),
        }
    }

    /// Inverse transform in place, `N^{-1}` included.
    ///
    /// # Panics
    /// If `a.len() != N`.
    #[inline]
    pub fn inverse(&self, a: &mut [u32]) {
        match &self.fast {
            Some(plan) => {
                plan.inv(a);
                plan.normalize(a);
            }
            None => reference::inverse(&self.tables, a),
        }
    }
}

fn agrees_with_reference(plan: &tfhe_ntt::prime32::Plan, t: &NttTables) -> bool {
    let n = t.n();
    let m = t.modulus();
    // Transform of X: entry i must be psi^(2 brv(i) + 1).
    let mut x = vec![0u32; n];
    x[1] = 1;
    plan.fwd(&mut x);
    let log_n = n.trailing_zeros();
    let points_match =
        x.iter().enumerate().all(|(i, &v)| v == m.pow(t.psi(), canonical_exponent(i, log_n) as u64));
    // A dense pseudo-random vector, forward and inverse.
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(m.value());
    let v: Vec<u32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            m.reduce_u64(state >> 11)
        })
        .collect();
    let (mut fast, mut slow) = (v.clone(), v.clone());
    plan.fwd(&mut fast);
    reference::forward(t, &mut slow);
    let fwd_match = fast == slow;
    plan.inv(&mut fast);
    plan.normalize(&mut fast);
    points_match && fwd_match && fast == v
}
