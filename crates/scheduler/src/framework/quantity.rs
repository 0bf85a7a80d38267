//! Resource quantities: the shared parser (`skiff-quantity`).

pub use skiff_quantity::{milli, parse, value};
