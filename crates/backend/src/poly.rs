use std::marker::PhantomData;

use crate::Backend;

mod sealed {
    pub trait Sealed {}
}

/// A polynomial representation: [`Coeff`] or [`Ntt`].
pub trait Repr: sealed::Sealed + Send + Sync + 'static {
    /// For messages.
    const NAME: &'static str;
    /// Whether this is the NTT domain.
    const IS_NTT: bool;
}

/// Coefficient form: word `j` of a row is the coefficient of `X^j`.
#[derive(Debug, Clone, Copy)]
pub struct Coeff;
/// NTT form, canonical order (see `fastquery-ntt`).
#[derive(Debug, Clone, Copy)]
pub struct Ntt;

impl sealed::Sealed for Coeff {}
impl sealed::Sealed for Ntt {}
impl Repr for Coeff {
    const NAME: &'static str = "coefficient";
    const IS_NTT: bool = false;
}
impl Repr for Ntt {
    const NAME: &'static str = "NTT";
    const IS_NTT: bool = true;
}

/// How many polynomials and limbs a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Number of polynomials.
    pub polys: usize,
    /// Limbs per polynomial (a prefix of the ring's primes).
    pub limbs: usize,
}

impl Shape {
    /// A shape.
    pub fn new(polys: usize, limbs: usize) -> Self {
        Self { polys, limbs }
    }

    /// Number of `(poly, limb)` rows.
    pub fn rows(self) -> usize {
        self.polys * self.limbs
    }

    /// Number of words at degree `n`.
    pub fn words(self, n: usize) -> usize {
        self.rows() * n
    }
}

/// Dimensions of [`Backend::mac`]: `out[rows x cols] (+)= a[rows x inner] * b[inner x cols]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacDims {
    /// Rows of `a` and `out` (for example ciphertext polynomials of a batch of tokens).
    pub rows: usize,
    /// The summed dimension.
    pub inner: usize,
    /// Columns of `b` and `out` (for example output blocks of the table).
    pub cols: usize,
}

/// The right operand of [`Ring::mac_laid_out`](crate::Ring::mac_laid_out): `inner x cols`
/// NTT-form polynomials in the layout the backend multiplies fastest
/// ([`Backend::mac_layout`]), made once by [`Ring::mac_operand`](crate::Ring::mac_operand) for
/// an operand that meets many products (a preprocessed table). Only the products read it.
pub struct MacOperand<B: Backend> {
    pub(crate) buf: B::Buffer,
    pub(crate) inner: usize,
    pub(crate) cols: usize,
    pub(crate) limbs: usize,
    pub(crate) ring_id: u64,
}

impl<B: Backend> std::fmt::Debug for MacOperand<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacOperand")
            .field("inner", &self.inner)
            .field("cols", &self.cols)
            .field("limbs", &self.limbs)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> MacOperand<B> {
    /// The summed dimension.
    pub fn inner(&self) -> usize {
        self.inner
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Limbs.
    pub fn limbs(&self) -> usize {
        self.limbs
    }

    /// The operand's shape before its move (`inner * cols` polynomials): as many words.
    pub fn shape(&self) -> Shape {
        Shape::new(self.inner * self.cols, self.limbs)
    }
}

/// A batch of polynomials on a backend's device, in representation `R`.
///
/// Created and operated on through a [`crate::Ring`], which checks that operands belong to it.
pub struct Polys<B: Backend, R: Repr> {
    pub(crate) buf: B::Buffer,
    pub(crate) shape: Shape,
    pub(crate) ring_id: u64,
    pub(crate) _repr: PhantomData<R>,
}

impl<B: Backend, R: Repr> std::fmt::Debug for Polys<B, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Polys")
            .field("repr", &R::NAME)
            .field("polys", &self.shape.polys)
            .field("limbs", &self.shape.limbs)
            .finish_non_exhaustive()
    }
}

impl<B: Backend, R: Repr> Polys<B, R> {
    /// The shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Number of polynomials.
    pub fn polys(&self) -> usize {
        self.shape.polys
    }

    /// Number of limbs.
    pub fn limbs(&self) -> usize {
        self.shape.limbs
    }

    /// The raw device buffer, for backend-specific code (kernels this trait does not cover yet).
    pub fn raw(&self) -> &B::Buffer {
        &self.buf
    }
}
