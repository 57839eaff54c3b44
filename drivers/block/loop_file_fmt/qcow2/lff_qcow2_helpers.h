/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers of loop_file_fmt_qcow2 (lff_qcow2_helpers.c), used by
 * ../wrappers/params.rs, ../wrappers/periodic.rs, ../wrappers/fanout.rs,
 * ../wrappers/shrinker.rs and ../wrappers/decompress.rs. This header is their
 * only declaration: the Kbuild file runs bindgen on it (with the zstd calls of
 * decompress.rs) into ../generated/lff_qcow2_helpers.rs, which
 * ../wrappers/qcow2_sys.rs includes.
 */
#ifndef LFF_QCOW2_HELPERS_H
#define LFF_QCOW2_HELPERS_H

#include <linux/types.h>
#include <linux/workqueue_types.h>
#include <linux/zstd.h>

struct delayed_work;
struct shrinker;

unsigned int lff_qcow2_param_l2_cache_size(void);
unsigned int lff_qcow2_param_cluster_cache_size(void);
unsigned int lff_qcow2_param_cache_clean_interval(void);
void lff_qcow2_init_delayed_work(struct delayed_work *dw, work_func_t fn);
void lff_qcow2_mod_delayed_work(struct delayed_work *dw, unsigned int ms);
void lff_qcow2_init_work_onstack(struct work_struct *w, work_func_t fn);
void lff_qcow2_destroy_work_onstack(struct work_struct *w);
bool lff_qcow2_queue_work_unbound(struct work_struct *w);
unsigned int lff_qcow2_noio_save(void);
void lff_qcow2_noio_restore(unsigned int flags);
unsigned int lff_qcow2_online_cpus(void);
struct shrinker *lff_qcow2_shrinker_alloc(const char *name);
/* zlib_inflate for decompress.rs, in the core (shared with the VMDK driver). */
#include "../core/lff_helpers.h"

#endif /* LFF_QCOW2_HELPERS_H */
