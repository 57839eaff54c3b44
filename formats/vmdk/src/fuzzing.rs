//! Fuzz harnesses (feature `std`).
