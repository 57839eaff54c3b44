//! errno texts without locale machinery.

use std::io;

/// The C library's text for an errno ("No such file or directory"),
/// without Rust's " (os error N)" suffix; other errors as they display.
pub fn strerror(e: &io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(code) => {
            let suffix = format!(" (os error {code})");
            text.strip_suffix(&suffix).unwrap_or(&text).to_string()
        }
        None => text,
    }
}

/// `strerror` for a raw errno value.
pub fn errno_text(code: i32) -> String {
    strerror(&io::Error::from_raw_os_error(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(errno_text(libc::ENOENT), "No such file or directory");
        assert_eq!(errno_text(libc::EBUSY), "Device or resource busy");
        assert_eq!(errno_text(libc::EPERM), "Operation not permitted");
        let custom = io::Error::other("custom");
        assert_eq!(strerror(&custom), "custom");
    }
}
