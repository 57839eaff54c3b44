// SPDX-License-Identifier: GPL-2.0

//! A rate limit for a device's read error log lines: at most
//! [`LOG_BURST`] lines per [`LOG_WINDOW_MS`], then one line saying that
//! more errors are not logged, so a damaged image cannot flood the log.
//!
//! Safe Rust, shared by the format drivers' crates (`vdi/`, `vmdk/`) with
//! `#[path = "../common/readlog.rs"]`; it uses the core wrappers' clock and
//! logs the errors of the crate's format tree (`crate::fmtlogic`).

use core::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::str::CStr;

/// Read errors logged per [`LOG_WINDOW_MS`], per device.
pub(crate) const LOG_BURST: u32 = 10;
/// See [`LOG_BURST`].
pub(crate) const LOG_WINDOW_MS: i64 = 5000;

/// What [`ReadLog::admit`] decides for one error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log the error.
    Log,
    /// Log that further errors are suppressed for now.
    LogSuppressed,
    /// Stay silent.
    Silent,
}

/// The window start and count of one device.
pub(crate) struct ReadLog {
    window: AtomicI64,
    count: AtomicU32,
}

impl ReadLog {
    /// A log with an empty window.
    pub(crate) const fn new() -> Self {
        Self {
            window: AtomicI64::new(0),
            count: AtomicU32::new(0),
        }
    }

    /// Counts one error at `now_ms` and says whether to log it. Races
    /// between CPUs may let a line or two more through; nothing worse.
    pub(crate) fn admit_at(&self, now_ms: i64) -> Verdict {
        let start = self.window.load(Ordering::Relaxed);
        if now_ms - start >= LOG_WINDOW_MS {
            self.window.store(now_ms, Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
        }
        match self.count.fetch_add(1, Ordering::Relaxed) {
            n if n < LOG_BURST => Verdict::Log,
            LOG_BURST => Verdict::LogSuppressed,
            _ => Verdict::Silent,
        }
    }

    /// [`ReadLog::admit_at`] now.
    pub(crate) fn admit(&self) -> Verdict {
        self.admit_at(crate::wrappers::compat::now_ms())
    }

    /// Logs, within the rate limit, that the read of `len` bytes at `pos`
    /// of device `name` (format `format`) failed with `e`.
    pub(crate) fn report(
        &self,
        name: &CStr,
        format: &str,
        pos: u64,
        len: usize,
        e: &crate::fmtlogic::Error,
    ) {
        match self.admit() {
            Verdict::Log => pr_err!(
                "{}: {}: read of {} bytes at {} failed: {}\n",
                name,
                format,
                len,
                pos,
                e
            ),
            Verdict::LogSuppressed => pr_err!(
                "{}: {}: more read errors, not logged for a few seconds\n",
                name,
                format
            ),
            Verdict::Silent => {}
        }
    }
}
