// SPDX-License-Identifier: GPL-2.0
/*
 * lff_kunit_vmdk uses the core's lff_inflate export (symbol namespace
 * LOOP_FILE_FMT); the 6.12 Rust module! macro cannot import a namespace, so
 * this C object of the module does.
 */
#include <linux/module.h>
#include <linux/loop_file_fmt.h>

LFF_IMPORT_NS();
