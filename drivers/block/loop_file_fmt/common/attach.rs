// SPDX-License-Identifier: GPL-2.0

//! The attach checks of the read-only format drivers without options
//! (`vdi/`, `vmdk/`): the device must be read-only, direct I/O is not
//! offered (the drivers read through the page cache into the request's
//! pages), and no option string is accepted. Each refusal is logged with
//! the device and the format.

use crate::wrappers::compat::CStrBytes;
use crate::wrappers::format::AttachRequest;
use kernel::prelude::*;

/// Refuses what a read-only driver named `format` cannot serve: a
/// writable device (`EROFS`), direct I/O or options (`EINVAL`).
pub(crate) fn check_read_only(req: &AttachRequest<'_>, format: &str) -> Result {
    let name = req.disk_name();
    if !req.read_only() {
        pr_err!(
            "{}: {}: writing is not supported; attach read-only\n",
            name,
            format
        );
        return Err(EROFS);
    }
    if req.direct_io() {
        pr_err!("{}: {}: direct I/O is not supported\n", name, format);
        return Err(EINVAL);
    }
    if !req.options().to_byte_slice().is_empty() {
        pr_err!("{}: {}: the format has no options\n", name, format);
        return Err(EINVAL);
    }
    Ok(())
}
