// SPDX-License-Identifier: GPL-2.0
/*
 * loop_file_fmt_vmdk uses the core's exports (symbol namespace
 * LOOP_FILE_FMT, lff_inflate among them); the 6.12 Rust module! macro cannot
 * import a namespace, so this C object of the module does.
 */
#include <linux/module.h>
#include <linux/loop_file_fmt.h>

LFF_IMPORT_NS();
/* Here, not in module!, which spells it differently in 6.12 and 7.x. */
MODULE_AUTHOR("loop-file-fmt developers");
