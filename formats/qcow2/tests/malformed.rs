//! Malformed images.
