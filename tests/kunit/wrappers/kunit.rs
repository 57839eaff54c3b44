// SPDX-License-Identifier: GPL-2.0

//! KUnit suites declared from Rust on Linux 6.12, which has no
//! `#[kunit_tests]` macro (it came in 6.15).
//!
//! KUnit finds the suites of a module through the `.kunit_test_suites`
//! section: an array of `struct kunit_suite *` that the module loader
//! records and KUnit's module notifier runs when the module goes live
//! (`kunit_test_suites()` in `include/kunit/test.h`). [`kunit_suite!`]
//! emits exactly that from Rust: the `kunit_case` array, the `kunit_suite`
//! and one section entry pointing to it.
//!
//! A test case is a safe function `fn(&Test)`. It checks values with
//! [`check!`], [`check_eq!`] and [`check_matches!`] (or [`Test::expect`]);
//! a failed check is reported to KUnit as a failed expectation with its
//! file, line and message (`__kunit_do_failed_assertion`, the call behind
//! `KUNIT_EXPECT_*`) and the case goes on, so every failure of a case is
//! logged. Checks never abort: unlike the 6.12 `kunit_assert!`, which ends
//! the test thread without running destructors, a case always returns
//! normally and drops what it allocated.
//!
//! A test module crate includes this file at its root as `mod kunit` (the
//! macros refer to `$crate::kunit`):
//!
//! ```ignore
//! #[path = "wrappers/kunit.rs"]
//! #[macro_use]
//! mod kunit;
//! use kunit::Test;
//!
//! fn adds(t: &Test) {
//!     check_eq!(t, 1 + 1, 2);
//! }
//!
//! kunit_suite!(lff_example, [adds]);
//! ```
//!
//! This file and its siblings under `tests/kunit/wrappers/` hold all the
//! `unsafe` code of the test modules; the suites themselves are safe Rust.

use core::cell::UnsafeCell;
use core::ffi::CStr;
use core::fmt;
use core::panic::Location;
use kernel::bindings;
use kernel::ffi::{c_char, c_int, c_void};

/// The running test case, handed to each case function.
///
/// # Invariants
///
/// `raw` is the `struct kunit` of the case being run; a `Test` only exists
/// for the duration of that case (it is created by [`run_case`] and lent
/// to the case function) and is not `Send`.
pub struct Test {
    raw: *mut bindings::kunit,
}

impl Test {
    /// Reports a failed expectation unless `ok`; returns `ok`. `what`
    /// describes the failure. The location reported is the caller's.
    #[track_caller]
    pub fn expect(&self, ok: bool, what: fmt::Arguments<'_>) -> bool {
        if !ok {
            self.fail_at(Location::caller(), what);
        }
        ok
    }

    /// Reports a failure unconditionally.
    #[track_caller]
    pub fn fail(&self, what: fmt::Arguments<'_>) {
        self.fail_at(Location::caller(), what);
    }

    /// The `Ok` value of `r`, or `None` after reporting the error.
    #[track_caller]
    pub fn ok<T, E: fmt::Debug>(&self, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail_at(Location::caller(), format_args!("unexpected error: {e:?}"));
                None
            }
        }
    }

    /// Marks the case skipped, with `why` as its KTAP comment, as
    /// `kunit_mark_skipped()` does; the case should return after it.
    pub fn skip(&self, why: &str) {
        // SAFETY: `self.raw` is the running case's `struct kunit` (type
        // invariant), written only by the thread running the case until it
        // returns; `status_comment` is a byte array inside it.
        unsafe {
            let comment = &mut (*self.raw).status_comment;
            let n = why.len().min(comment.len() - 1);
            for (dst, src) in comment.iter_mut().zip(why.bytes().take(n)) {
                *dst = src as c_char;
            }
            if let Some(end) = comment.get_mut(n) {
                *end = 0;
            }
            core::ptr::write_volatile(
                core::ptr::addr_of_mut!((*self.raw).status),
                bindings::kunit_status_KUNIT_SKIPPED,
            );
        }
    }

    fn fail_at(&self, loc: &Location<'_>, what: fmt::Arguments<'_>) {
        // Indented like the `KUNIT_EXPECT_*` messages.
        self.report(loc, format_args!("    {what}"));
    }

    fn report(&self, loc: &Location<'_>, what: fmt::Arguments<'_>) {
        // KUnit wants a C string for the file: keep the end of the path.
        let mut file = [0u8; 96];
        let name = loc.file().as_bytes();
        let n = name.len().min(file.len() - 1);
        if let (Some(dst), Some(src)) = (file.get_mut(..n), name.get(name.len() - n..)) {
            dst.copy_from_slice(src);
        }
        let kloc = bindings::kunit_loc {
            line: loc.line() as c_int,
            file: file.as_ptr().cast::<c_char>(),
        };
        let assert = bindings::kunit_fail_assert {
            assert: bindings::kunit_assert {},
        };
        // SAFETY: `self.raw` is the running case's `struct kunit` (type
        // invariant). `kloc`, `assert` and the NUL-terminated `file` live on
        // this stack frame for the call, which formats the message into the
        // test log before returning (an expectation does not abort). The
        // format "%pA" takes one argument, a pointer to `fmt::Arguments`,
        // which `what` is.
        unsafe {
            bindings::__kunit_do_failed_assertion(
                self.raw,
                &kloc,
                bindings::kunit_assert_type_KUNIT_EXPECTATION,
                &assert.assert,
                Some(bindings::kunit_fail_assert_format),
                char_ptr(c"%pA"),
                core::ptr::from_ref(&what).cast::<c_void>(),
            );
        }
    }
}

/// The body of one test case; [`kunit_suite!`] implements it for a marker
/// type per case function.
pub trait CaseFn {
    /// Runs the case.
    fn run(t: &Test);
}

/// The `run_case` callback of every case: runs `F` with the `Test`.
///
/// # Safety
///
/// Called by KUnit only, with the `struct kunit` of the case it runs.
unsafe extern "C" fn run_case<F: CaseFn>(raw: *mut bindings::kunit) {
    // The invariant of `Test` holds: KUnit passes the running case's
    // `struct kunit`, and the `Test` is dropped when the case returns.
    let t = Test { raw };
    F::run(&t);
}

/// A `struct kunit_case` for `F`, named `name`; the other fields (which
/// differ between 6.12 and 7.x) are zero, as `KUNIT_CASE()` leaves them.
pub const fn case<F: CaseFn>(name: &'static CStr) -> bindings::kunit_case {
    bindings::kunit_case {
        run_case: Some(run_case::<F>),
        name: char_ptr(name),
        ..END
    }
}

/// The C pointer of `s` (7.x's clippy wants the kernel crate's helper for
/// it, which in 6.12 takes the kernel's own `CStr`, not core's).
pub const fn char_ptr(s: &CStr) -> *const c_char {
    #[cfg(lff_linux7)]
    {
        kernel::str::as_char_ptr_in_const_context(s)
    }
    #[cfg(not(lff_linux7))]
    {
        s.as_ptr().cast()
    }
}

/// `s` (which ends in its only NUL) as a C string, at compile time.
pub const fn c_name(s: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("a case name is one NUL-terminated identifier"),
    }
}

/// The all-zero entry that ends a case array.
// SAFETY: `kunit_case` is pointers, `Option`s of function pointers and
// integers, for all of which zero is a valid value (NULL, `None`, 0).
pub const END: bindings::kunit_case = unsafe { core::mem::zeroed() };

/// The case array of a suite (terminated by [`END`]); KUnit writes each
/// case's status and log into it.
pub struct Cases<const N: usize>(UnsafeCell<[bindings::kunit_case; N]>);

// SAFETY: only KUnit touches the array after initialisation, from the one
// thread that runs the suite at a time.
unsafe impl<const N: usize> Sync for Cases<N> {}

impl<const N: usize> Cases<N> {
    /// The array; the last entry must be [`END`].
    pub const fn new(cases: [bindings::kunit_case; N]) -> Self {
        assert!(N > 1, "a suite needs at least one case");
        assert!(cases[N - 1].run_case.is_none(), "the last case must be END");
        Self(UnsafeCell::new(cases))
    }
}

/// A `struct kunit_suite`; KUnit writes its status and log into it.
pub struct Suite(UnsafeCell<bindings::kunit_suite>);

// SAFETY: as for `Cases`.
unsafe impl Sync for Suite {}

impl Suite {
    /// A suite named `name` (at most 255 bytes) running `cases`.
    pub const fn new<const N: usize>(name: &str, cases: &'static Cases<N>) -> Self {
        let bytes = name.as_bytes();
        assert!(bytes.len() < 256, "suite name too long");
        let mut raw_name = [0 as c_char; 256];
        let mut i = 0;
        while i < bytes.len() {
            raw_name[i] = bytes[i] as c_char;
            i += 1;
        }
        Self(UnsafeCell::new(bindings::kunit_suite {
            name: raw_name,
            test_cases: cases.0.get().cast::<bindings::kunit_case>(),
            // SAFETY: the other fields (no callbacks, KUnit's private state,
            // which differs between 6.12 and 7.x) are pointers, `Option`s of
            // function pointers, integers and arrays of them: zero is valid.
            ..unsafe { core::mem::zeroed() }
        }))
    }
}

/// One entry of the `.kunit_test_suites` section: a `struct kunit_suite *`.
#[repr(transparent)]
pub struct SuiteEntry(*mut bindings::kunit_suite);

// SAFETY: a pointer to a static, only read by the module loader and KUnit.
unsafe impl Sync for SuiteEntry {}

impl SuiteEntry {
    /// The entry for `suite`.
    pub const fn new(suite: &'static Suite) -> Self {
        Self(suite.0.get())
    }
}

/// Declares a KUnit suite of the module: `kunit_suite!(name, [case, ...]);`
/// where each case is a `fn(&Test)` in scope. The suite runs when the
/// module is loaded; its results are in the kernel log and in
/// `/sys/kernel/debug/kunit/<name>/results`.
#[macro_export]
macro_rules! kunit_suite {
    ($suite:ident, [$($case:ident),+ $(,)?]) => {
        const _: () = {
            $(
                // A braced struct names a type only, so `$case` below is
                // still the case function.
                #[allow(non_camel_case_types)]
                struct $case {}
                impl $crate::kunit::CaseFn for $case {
                    fn run(t: &$crate::kunit::Test) {
                        $case(t)
                    }
                }
            )+
            const N: usize = [$(stringify!($case)),+].len() + 1;
            static CASES: $crate::kunit::Cases<N> = $crate::kunit::Cases::new([
                $($crate::kunit::case::<$case>($crate::kunit::c_name(
                    concat!(stringify!($case), "\0"),
                )),)+
                $crate::kunit::END,
            ]);
            static SUITE: $crate::kunit::Suite =
                $crate::kunit::Suite::new(stringify!($suite), &CASES);
            // The section KUnit reads, holding `struct kunit_suite *`
            // entries only (`SuiteEntry` is one, pointer aligned): the
            // one place a test module steps outside safe Rust.
            #[allow(unsafe_code)]
            #[used]
            #[link_section = ".kunit_test_suites"]
            static ENTRY: $crate::kunit::SuiteEntry = $crate::kunit::SuiteEntry::new(&SUITE);
        };
    };
}

/// `check!(t, cond)` or `check!(t, cond, "format", args...)`: a failed
/// expectation unless `cond`; evaluates to `cond`.
#[macro_export]
macro_rules! check {
    ($t:expr, $cond:expr $(,)?) => {
        $t.expect($cond, format_args!("expected {}", stringify!($cond)))
    };
    ($t:expr, $cond:expr, $($arg:tt)+) => {
        $t.expect($cond, format_args!($($arg)+))
    };
}

/// `check_eq!(t, got, want)`: a failed expectation showing both values
/// (`Debug`) unless they are equal; evaluates to whether they are.
#[macro_export]
macro_rules! check_eq {
    ($t:expr, $got:expr, $want:expr $(,)?) => {
        match (&$got, &$want) {
            (got, want) => $t.expect(
                *got == *want,
                format_args!(
                    "{} == {}\n        got: {:?}\n       want: {:?}",
                    stringify!($got),
                    stringify!($want),
                    got,
                    want
                ),
            ),
        }
    };
}

/// `check_matches!(t, value, pattern)`: a failed expectation showing the
/// value (`Debug`) unless it matches; evaluates to whether it does.
#[macro_export]
macro_rules! check_matches {
    ($t:expr, $value:expr, $($pat:pat_param)|+ $(if $guard:expr)? $(,)?) => {
        match &$value {
            v => {
                // `Ok(_)` is a fine pattern here.
                #[allow(clippy::redundant_pattern_matching)]
                let ok = matches!(v, $($pat)|+ $(if $guard)?);
                $t.expect(
                    ok,
                    format_args!(
                        "{} matches {}\n        got: {:?}",
                        stringify!($value),
                        stringify!($($pat)|+),
                        v
                    ),
                )
            }
        }
    };
}
