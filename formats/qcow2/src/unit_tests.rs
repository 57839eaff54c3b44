//! Unit tests of the pure format logic.
