// SPDX-License-Identifier: GPL-2.0
/*
 * C side of loop_file_fmt_qcow2: what its Rust code cannot reach in 6.12.
 *
 * - the import of the core's symbol namespace;
 * - the module parameters (the 6.12 Rust module! macro has none), read by
 *   ../wrappers/params.rs;
 * - INIT_DELAYED_WORK and mod_delayed_work for the cache cleaner
 *   (../wrappers/periodic.rs);
 * - on-stack work items on the unbound system workqueue, the NOIO scope
 *   and the online CPU count for decompressing clusters in parallel
 *   (../wrappers/fanout.rs);
 * - shrinker_alloc, which is variadic, for the caches' shrinker
 *   (../wrappers/shrinker.rs);
 * (zlib_inflate, whose struct z_stream is not in the Rust bindings, is
 * reached through the core's lff_inflate, shared with the VMDK driver; zstd
 * is declared in ../wrappers/decompress.rs directly, its API takes plain
 * pointers and sizes.)
 *
 * No policy lives here: the Rust side interprets every return code.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/cpumask.h>
#include <linux/sched/mm.h>
#include <linux/shrinker.h>
#include <linux/workqueue.h>
#include <linux/loop_file_fmt.h>

#include "lff_qcow2_helpers.h"

/* The core's exports; the 6.12 Rust module! macro cannot import this. */
LFF_IMPORT_NS();
/* Here, not in module!, which spells it differently in 6.12 and 7.x. */
MODULE_AUTHOR("loop-file-fmt developers");

static unsigned int l2_cache_size = 4096;
module_param(l2_cache_size, uint, 0644);
MODULE_PARM_DESC(l2_cache_size,
		 "L2 table cache per device, in KiB (default 4096; at least one table per shard is kept); sysfs loop_file_fmt/l2_cache_size overrides it per device");

static unsigned int cluster_cache_size = 4096;
module_param(cluster_cache_size, uint, 0644);
MODULE_PARM_DESC(cluster_cache_size,
		 "Decompressed cluster cache per device, in KiB (default 4096; at least one cluster per shard is kept)");

static unsigned int cache_clean_interval = 600;
module_param(cache_clean_interval, uint, 0644);
MODULE_PARM_DESC(cache_clean_interval,
		 "Seconds after which unused cached tables and clusters are freed (default 600, 0: never)");

unsigned int lff_qcow2_param_l2_cache_size(void)
{
	return READ_ONCE(l2_cache_size);
}

unsigned int lff_qcow2_param_cluster_cache_size(void)
{
	return READ_ONCE(cluster_cache_size);
}

unsigned int lff_qcow2_param_cache_clean_interval(void)
{
	return READ_ONCE(cache_clean_interval);
}

void lff_qcow2_init_delayed_work(struct delayed_work *dw, work_func_t fn)
{
	INIT_DELAYED_WORK(dw, fn);
}

void lff_qcow2_mod_delayed_work(struct delayed_work *dw, unsigned int ms)
{
	mod_delayed_work(system_wq, dw, msecs_to_jiffies(ms));
}

void lff_qcow2_init_work_onstack(struct work_struct *w, work_func_t fn)
{
	INIT_WORK_ONSTACK(w, fn);
}

void lff_qcow2_destroy_work_onstack(struct work_struct *w)
{
	destroy_work_on_stack(w);
}

bool lff_qcow2_queue_work_unbound(struct work_struct *w)
{
	return queue_work(system_unbound_wq, w);
}

unsigned int lff_qcow2_noio_save(void)
{
	return memalloc_noio_save();
}

void lff_qcow2_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

unsigned int lff_qcow2_online_cpus(void)
{
	return num_online_cpus();
}

struct shrinker *lff_qcow2_shrinker_alloc(const char *name)
{
	return shrinker_alloc(0, "%s", name);
}
