// SPDX-License-Identifier: GPL-2.0

//! Module-wide state: the registered format drivers and the devices.
//!
//! Locking: `drivers` and `devices` are independent mutexes, never held
//! together and never held while calling into a driver or the block layer
//! in a way that could take them again.

use crate::device::Device;
use crate::wrappers::blk::Major;
use crate::wrappers::compat::{fmt, CStrBytes};
use crate::wrappers::file::NoIoMappings;
use crate::wrappers::format::{DriverRef, PinnedDriver, RawDriver, SysfsBuf};
use crate::wrappers::global::ModuleGlobal;
use crate::wrappers::request_module;
use core::fmt::Write;
use kernel::prelude::*;
use kernel::str::{CStr, CString};
use kernel::sync::{new_mutex, Arc, Mutex};

/// The module's state, set from init to exit.
pub(crate) static CORE: ModuleGlobal<Core> = ModuleGlobal::new();

/// Partitions per device (minors = `1 << PART_SHIFT`).
pub(crate) const PART_SHIFT: u32 = 4;
/// Highest device number: minors are 20 bits.
const MAX_INDEX: u32 = (1 << (20 - PART_SHIFT)) - 1;

/// The registered drivers and the devices.
#[pin_data]
pub(crate) struct Core {
    pub(crate) major: Major,
    #[pin]
    drivers: Mutex<Slots<DriverRef>>,
    #[pin]
    devices: Mutex<Slots<Arc<Device>>>,
    /// The backing mappings masked against I/O recursion (see
    /// `MappingNoIo`); a leaf lock.
    pub(crate) noio: Arc<NoIoMappings>,
}

impl Core {
    pub(crate) fn new(_module: &'static ThisModule) -> Result<Pin<KBox<Self>>> {
        let major = Major::register(kernel::c_str!("lff"))?;
        let noio = Arc::pin_init(NoIoMappings::new(), GFP_KERNEL)?;
        KBox::pin_init(
            try_pin_init!(Self {
                major,
                drivers <- new_mutex!(Slots(KVec::new())),
                devices <- new_mutex!(Slots(KVec::new())),
                noio,
            }),
            GFP_KERNEL,
        )
    }

    /// Adds a driver; `EEXIST` if its name is taken.
    pub(crate) fn register(&self, drv: DriverRef) -> Result {
        let mut drivers = self.drivers.lock();
        if drivers
            .iter()
            .any(|d| d.name().to_byte_slice() == drv.name().to_byte_slice())
        {
            pr_err!("format '{}' is already registered\n", drv.name());
            return Err(EEXIST);
        }
        drivers.insert(drv)?;
        pr_info!("registered format '{}'\n", drv.name());
        Ok(())
    }

    /// Removes a driver (its module is going away, so no device uses it).
    pub(crate) fn unregister(&self, raw: *const RawDriver) {
        let mut drivers = self.drivers.lock();
        if let Some(d) = drivers.remove_where(|d| d.is(raw)) {
            pr_info!("unregistered format '{}'\n", d.name());
        }
    }

    pub(crate) fn find_driver(&self, name: &CStr) -> Option<Result<PinnedDriver>> {
        let drivers = self.drivers.lock();
        let d = drivers
            .iter()
            .find(|d| d.name().to_byte_slice() == name.to_byte_slice());
        d.map(|d| d.pin())
    }

    /// Finds the driver of `name` and pins it, loading its module
    /// (`loop-file-fmt-<name>`) if needed.
    pub(crate) fn get_driver(&self, name: &CStr) -> Result<PinnedDriver> {
        if let Some(d) = self.find_driver(name) {
            return d;
        }
        let alias = CString::try_from_fmt(fmt!("loop-file-fmt-{}", name))?;
        // A failure here shows as the driver still missing below.
        let _ = request_module(&alias);
        self.find_driver(name).unwrap_or(Err(ENOENT))
    }

    /// Writes the registered format names, space separated, and a newline.
    pub(crate) fn write_formats(&self, out: &mut SysfsBuf<'_>) -> Result {
        let drivers = self.drivers.lock();
        for (i, d) in drivers.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            out.write_fmt(fmt!("{}{}", sep, d.name()))
                .map_err(|_| EINVAL)?;
        }
        writeln!(out).map_err(|_| EINVAL)
    }

    fn device(&self, index: u32) -> Option<Arc<Device>> {
        self.devices
            .lock()
            .iter()
            .find(|d| d.index() == index)
            .cloned()
    }

    /// Adds device `index` (or the lowest free number); returns its number.
    pub(crate) fn add_device(&self, index: Option<u32>) -> Result<u32> {
        let mut devices = self.devices.lock();
        let index = match index {
            Some(i) if i > MAX_INDEX => return Err(EINVAL),
            Some(i) if devices.iter().any(|d| d.index() == i) => return Err(EEXIST),
            Some(i) => i,
            None => (0..=MAX_INDEX)
                .find(|i| !devices.iter().any(|d| d.index() == *i))
                .ok_or(ENOSPC)?,
        };
        let dev = Device::new(index, &self.major)?;
        devices.insert(dev)?;
        Ok(index)
    }

    /// Removes unattached, unopened device `index`.
    pub(crate) fn remove_device(&self, index: u32) -> Result {
        let dev = self.device(index).ok_or(ENODEV)?;
        // Marks it deleting and takes its disk, or fails with EBUSY.
        let disk = dev.start_removal()?;
        self.devices.lock().remove_where(|d| d.index() == index);
        // Deleting the gendisk takes the disk's open_mutex: no lock held.
        drop(disk);
        Ok(())
    }

    /// The number of an unattached device, adding one if none is free.
    pub(crate) fn get_free(&self) -> Result<u32> {
        let free = self
            .devices
            .lock()
            .iter()
            .find(|d| d.is_free())
            .map(|d| d.index());
        match free {
            Some(i) => Ok(i),
            None => self.add_device(None),
        }
    }

    /// Module exit: removes every device.
    pub(crate) fn remove_all_devices(&self) {
        let devices = self.devices.lock().take_all();
        for dev in devices.iter().flatten() {
            match dev.start_removal() {
                Ok(disk) => drop(disk),
                Err(_) => pr_err!("lff{}: still in use at module exit\n", dev.index()),
            }
        }
    }
}

/// A list whose entries are emptied in place, so removing never allocates.
struct Slots<T>(KVec<Option<T>>);

impl<T> Slots<T> {
    fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flatten()
    }

    fn insert(&mut self, v: T) -> Result {
        match self.0.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(v),
            None => self.0.push(Some(v), GFP_KERNEL)?,
        }
        Ok(())
    }

    fn remove_where(&mut self, mut f: impl FnMut(&T) -> bool) -> Option<T> {
        self.0
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(&mut f))?
            .take()
    }

    fn take_all(&mut self) -> KVec<Option<T>> {
        core::mem::take(&mut self.0)
    }
}
