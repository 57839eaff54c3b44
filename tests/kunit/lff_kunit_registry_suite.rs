// SPDX-License-Identifier: GPL-2.0

//! lff_kunit_registry: KUnit suite of the core's format driver registry,
//! driven through the public ABI (`lff_register_format` and
//! `lff_unregister_format`, behind `Registration`) with fake drivers owned
//! by this module, plus the core's lookup test hook (the lookup an attach
//! does, without a device).

#![deny(unsafe_code)]

#[allow(unsafe_code)]
#[path = "wrappers/kunit.rs"]
#[macro_use]
pub mod kunit;

#[allow(unsafe_code)]
#[path = "../../drivers/block/loop_file_fmt/wrappers/mod.rs"]
pub mod wrappers;

#[allow(unsafe_code)]
#[path = "wrappers/registry.rs"]
pub mod registry;

use kernel::prelude::*;
use kernel::str::CStr;
use kunit::Test;
use registry::{module_refcount, register_malformed, Lookup, Malformed};
use wrappers::compat::{fmt, CStrBytes};
use wrappers::format::{AttachRequest, Attached, FormatDriver, Registration};
use wrappers::iov::IovIter;

module! {
    type: KunitRegistry,
    name: "lff_kunit_registry",
    description: "KUnit suite of the loop_file_fmt driver registry",
    license: "GPL",
}

struct KunitRegistry;

impl kernel::Module for KunitRegistry {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Self)
    }
}

/// Declares a fake format driver: it registers, but never attaches.
macro_rules! fake {
    ($ty:ident, $name:literal) => {
        struct $ty;

        #[vtable]
        impl FormatDriver for $ty {
            const NAME: &'static CStr = kernel::c_str!($name);

            fn attach(_req: &AttachRequest<'_>) -> Result<Attached<Self>> {
                Err(ENODEV)
            }

            fn read(&self, _to: &mut IovIter<'_>, _pos: u64) -> Result<usize> {
                Err(EIO)
            }
        }
    };
}

fake!(FakeA, "kunit-fake-a");
fake!(FakeA2, "kunit-fake-a");
fake!(FakeB, "kunit-fake-b");
fake!(FakeC, "kunit-fake-c");
fake!(Unnamed, "");
fake!(Name31, "kunit-name-of-31-bytes-01234567");
fake!(Name32, "kunit-name-of-32-bytes-012345678");

fn reg<T: FormatDriver>() -> Result<Registration<T>> {
    Registration::new(this_module!())
}

fn lookup(name: &str) -> Result<Lookup> {
    let name = kernel::str::CString::try_from_fmt(fmt!("{name}"))?;
    Lookup::get(&name)
}

fn register_then_lookup(t: &Test) {
    let Some(_a) = t.ok(reg::<FakeA>()) else {
        return;
    };
    let Some(l) = t.ok(lookup("kunit-fake-a")) else {
        return;
    };
    check!(t, l.is::<FakeA>(), "lookup found another driver");
    check_eq!(t, l.name().to_byte_slice(), &b"kunit-fake-a"[..]);
}

fn duplicate_name_is_eexist(t: &Test) {
    let Some(_a) = t.ok(reg::<FakeA>()) else {
        return;
    };
    check_eq!(t, reg::<FakeA2>().err(), Some(EEXIST));
    // The first registration is still the one found.
    let l = lookup("kunit-fake-a");
    check_matches!(t, l, Ok(l) if l.is::<FakeA>());
}

fn unregister_removes(t: &Test) {
    let Some(a) = t.ok(reg::<FakeA>()) else {
        return;
    };
    drop(a);
    check_eq!(t, lookup("kunit-fake-a").err(), Some(ENOENT));
    // The name is free again.
    let Some(_a2) = t.ok(reg::<FakeA2>()) else {
        return;
    };
    check_matches!(t, lookup("kunit-fake-a"), Ok(l) if l.is::<FakeA2>());
}

fn lookup_is_exact(t: &Test) {
    let Some(_a) = t.ok(reg::<FakeA>()) else {
        return;
    };
    check_eq!(t, lookup("kunit-no-such-format").err(), Some(ENOENT));
    check_eq!(t, lookup("kunit-fake").err(), Some(ENOENT));
    check_eq!(t, lookup("kunit-fake-a2").err(), Some(ENOENT));
    check_eq!(t, lookup("KUNIT-FAKE-A").err(), Some(ENOENT));
}

/// This module's reference count (`None` built into the kernel).
fn refcount() -> Option<i32> {
    module_refcount(this_module!())
}

fn lookup_pins_the_owner(t: &Test) {
    let Some(before) = refcount() else {
        t.skip("built into the kernel: no module to pin");
        return;
    };
    let Some(_a) = t.ok(reg::<FakeA>()) else {
        return;
    };
    let Some(l1) = t.ok(lookup("kunit-fake-a")) else {
        return;
    };
    check_eq!(t, refcount(), Some(before + 1));
    let Some(l2) = t.ok(lookup("kunit-fake-a")) else {
        return;
    };
    check_eq!(t, refcount(), Some(before + 2));
    drop(l1);
    drop(l2);
    check_eq!(t, refcount(), Some(before));
}

fn unregister_while_in_use(t: &Test) {
    // Built in, there is no module reference to follow (`None`).
    let before = refcount();
    let Some(a) = t.ok(reg::<FakeA>()) else {
        return;
    };
    let Some(in_use) = t.ok(lookup("kunit-fake-a")) else {
        return;
    };
    // Unregistering hides the driver from new lookups...
    drop(a);
    check_eq!(t, lookup("kunit-fake-a").err(), Some(ENOENT));
    // ...while the user keeps its pinned driver and module reference.
    check!(t, in_use.is::<FakeA>());
    check_eq!(t, in_use.name().to_byte_slice(), &b"kunit-fake-a"[..]);
    check_eq!(t, refcount(), before.map(|b| b + 1));
    // The name can be taken by another driver meanwhile.
    let Some(_a2) = t.ok(reg::<FakeA2>()) else {
        return;
    };
    check_matches!(t, lookup("kunit-fake-a"), Ok(l) if l.is::<FakeA2>());
    drop(in_use);
    check_eq!(t, refcount(), before);
}

fn several_drivers_coexist(t: &Test) {
    let (Some(_a), Some(b), Some(_c)) = (
        t.ok(reg::<FakeA>()),
        t.ok(reg::<FakeB>()),
        t.ok(reg::<FakeC>()),
    ) else {
        return;
    };
    check_matches!(t, lookup("kunit-fake-a"), Ok(l) if l.is::<FakeA>());
    check_matches!(t, lookup("kunit-fake-b"), Ok(l) if l.is::<FakeB>());
    check_matches!(t, lookup("kunit-fake-c"), Ok(l) if l.is::<FakeC>());
    drop(b);
    check_eq!(t, lookup("kunit-fake-b").err(), Some(ENOENT));
    check_matches!(t, lookup("kunit-fake-a"), Ok(l) if l.is::<FakeA>());
    check_matches!(t, lookup("kunit-fake-c"), Ok(l) if l.is::<FakeC>());
}

fn malformed_drivers_are_einval(t: &Test) {
    let name = kernel::c_str!("kunit-malformed");
    for kind in [
        Malformed::Null,
        Malformed::NoName,
        Malformed::NoOps,
        Malformed::NoReadIter,
    ] {
        check_eq!(
            t,
            (kind, register_malformed(kind, name)),
            (kind, Err(EINVAL))
        );
    }
    check_eq!(t, reg::<Unnamed>().err(), Some(EINVAL));
    check_eq!(t, reg::<Name32>().err(), Some(EINVAL));
    // 31 bytes is the longest name.
    let Some(_n) = t.ok(reg::<Name31>()) else {
        return;
    };
    check_matches!(t, lookup("kunit-name-of-31-bytes-01234567"), Ok(l) if l.is::<Name31>());
    check_eq!(t, lookup("kunit-malformed").err(), Some(ENOENT));
}

fn other_abi_is_refused(t: &Test) {
    let name = kernel::c_str!("kunit-other-abi");
    for kind in [Malformed::OtherAbiVersion, Malformed::OtherStructSize] {
        check_eq!(
            t,
            (kind, register_malformed(kind, name)),
            (kind, Err(ENOEXEC))
        );
    }
    check_eq!(t, lookup("kunit-other-abi").err(), Some(ENOENT));
}

kunit_suite!(
    lff_registry,
    [
        register_then_lookup,
        duplicate_name_is_eexist,
        unregister_removes,
        lookup_is_exact,
        lookup_pins_the_owner,
        unregister_while_in_use,
        several_drivers_coexist,
        malformed_drivers_are_einval,
        other_abi_is_refused,
    ]
);
