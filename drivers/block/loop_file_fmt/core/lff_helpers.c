// SPDX-License-Identifier: GPL-2.0
/*
 * C side of the loop_file_fmt core module: what Rust cannot reach in 6.12.
 *
 * - the exports (LFF_EXPORT_SYMBOL: namespace LOOP_FILE_FMT, which the
 *   users import with LFF_IMPORT_NS()) of the format driver API implemented
 *   in Rust;
 * - one-line wrappers for static inline functions and macros (requests,
 *   iov_iter, files, gendisk, queue limits), exported for the format driver
 *   modules, whose Rust wrappers (../wrappers/sys.rs) declare them;
 * - the control misc device, whose struct is not in the 6.12 Rust bindings.
 *
 * No logic lives here: each function is one expression of the kernel API.
 */
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/blk-cgroup.h>
#include <linux/compat.h>
#include <linux/memcontrol.h>
#include <linux/build_bug.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/kdev_t.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uio.h>
#include <linux/version.h>
#include <linux/workqueue.h>
#include <linux/loop_file_fmt.h>
#include <uapi/linux/loop.h>
#include <uapi/linux/loop_file_fmt.h>

#include "lff_helpers.h"

/* The Rust mirrors in ../wrappers/format.rs assert the same sizes. */
static_assert(sizeof(struct lff_attach_info) == 56);
static_assert(sizeof(struct lff_format_attr) == 24);
static_assert(sizeof(struct lff_format_ops) == 80);
static_assert(sizeof(struct lff_format_driver) == 32);
static_assert(offsetof(struct lff_format_driver, name) == 8);

/*
 * Our ioctls have their own type: a loop ioctl (LOOP_SET_FD is 0x4C00) sent
 * to /dev/lffN must never decode as one of ours, nor ours as loop's.
 */
static_assert(LFF_IOC_MAGIC != _IOC_TYPE(LOOP_SET_FD));
static_assert(_IOC_TYPE(LFF_CLR_FD) == LFF_IOC_MAGIC);
static_assert(_IOC_TYPE(LFF_CTL_ADD) == LFF_IOC_MAGIC);

/*
 * The module! macro spells the author `author:` in 6.12 and `authors: [..]`
 * in 7.x, with no spelling both take: the author is declared here.
 */
MODULE_AUTHOR("loop-file-fmt developers");

/* Implemented in Rust (lff_core.rs). */
LFF_EXPORT_SYMBOL(lff_register_format);
LFF_EXPORT_SYMBOL(lff_unregister_format);

#if IS_ENABLED(CONFIG_KUNIT)
/* Registry test hooks for tests/kunit/ (test_hooks.rs). */
int lff_test_format_get(const char *name, void **handle, const char **drv_name);
void lff_test_format_put(void *handle);
LFF_EXPORT_SYMBOL(lff_test_format_get);
LFF_EXPORT_SYMBOL(lff_test_format_put);
#endif

/* --- requests --- */

u64 lff_rq_pos(struct request *rq)
{
	return (u64)blk_rq_pos(rq) << SECTOR_SHIFT;
}
LFF_EXPORT_SYMBOL(lff_rq_pos);

unsigned int lff_rq_bytes(struct request *rq)
{
	return blk_rq_bytes(rq);
}
LFF_EXPORT_SYMBOL(lff_rq_bytes);

unsigned int lff_rq_op(struct request *rq)
{
	return req_op(rq);
}
LFF_EXPORT_SYMBOL(lff_rq_op);

bool lff_rq_fua(struct request *rq)
{
	return rq->cmd_flags & REQ_FUA;
}
LFF_EXPORT_SYMBOL(lff_rq_fua);

bool lff_rq_nounmap(struct request *rq)
{
	return rq->cmd_flags & REQ_NOUNMAP;
}
LFF_EXPORT_SYMBOL(lff_rq_nounmap);

void *lff_rq_driver_data(struct request *rq)
{
	return rq->q->queuedata;
}
LFF_EXPORT_SYMBOL(lff_rq_driver_data);

/* How far into its first bio_vec a bio starts (renamed in 7.x). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 0, 0)
#define lff_bvec_iter_offset(it) ((it).bi_offset)
#else
#define lff_bvec_iter_offset(it) ((it).bi_bvec_done)
#endif

/*
 * Point @iter at the data of @rq, like loop's lo_rw_aio(). A request made
 * of several bios needs one bio_vec array: it is returned in *@alloc (to be
 * freed with kfree() once the I/O is done), else *@alloc is NULL. A request
 * without data (flush, discard, write-zeroes) gets -EINVAL.
 */
int lff_rq_iter_init(struct request *rq, struct iov_iter *iter,
		     unsigned int direction, struct bio_vec **alloc)
{
	struct req_iterator rq_iter;
	struct bio_vec tmp, *bvec;
	const struct bio_vec *first;
	struct bio *bio = rq->bio;
	unsigned int offset = 0;
	int nr_bvec = 0;

	*alloc = NULL;
	if (!bio || !bio_has_data(bio))
		return -EINVAL;
	rq_for_each_bvec(tmp, rq, rq_iter)
		nr_bvec++;
	if (rq->bio != rq->biotail) {
		bvec = kmalloc_array(nr_bvec, sizeof(*bvec), GFP_NOIO);
		if (!bvec)
			return -ENOMEM;
		*alloc = bvec;
		rq_for_each_bvec(tmp, rq, rq_iter)
			*bvec++ = tmp;
		first = *alloc;
	} else {
		offset = lff_bvec_iter_offset(bio->bi_iter);
		first = __bvec_iter_bvec(bio->bi_io_vec, bio->bi_iter);
	}
	iov_iter_bvec(iter, direction, first, nr_bvec, blk_rq_bytes(rq));
	iter->iov_offset = offset;
	return 0;
}
LFF_EXPORT_SYMBOL(lff_rq_iter_init);

/*
 * Every request is served from a work item in its PDU (the tag set's
 * cmd_size is lff_cmd_size()), like loop's struct loop_cmd, together with
 * the cgroups of the bio that made it.
 */
struct lff_cmd {
	struct work_struct work;
	struct cgroup_subsys_state *blkcg_css;
	struct cgroup_subsys_state *memcg_css;
};

unsigned int lff_cmd_size(void)
{
	return sizeof(struct lff_cmd);
}
LFF_EXPORT_SYMBOL(lff_cmd_size);

void lff_rq_init_work(struct request *rq, work_func_t fn)
{
	struct lff_cmd *cmd = blk_mq_rq_to_pdu(rq);

	INIT_WORK(&cmd->work, fn);
}
LFF_EXPORT_SYMBOL(lff_rq_init_work);

struct request *lff_work_to_rq(struct work_struct *work)
{
	return blk_mq_rq_from_pdu(container_of(work, struct lff_cmd, work));
}
LFF_EXPORT_SYMBOL(lff_work_to_rq);

/*
 * As loop_queue_rq(): the work is charged to the blkcg of the request's
 * bio and to that cgroup's memcg (a reference, put by lff_rq_serve_exit()),
 * then queued. The cgroups are set here, for every request, and only here.
 */
void lff_rq_queue_work(struct workqueue_struct *wq, struct request *rq)
{
	struct lff_cmd *cmd = blk_mq_rq_to_pdu(rq);

	cmd->blkcg_css = NULL;
	cmd->memcg_css = NULL;
#ifdef CONFIG_BLK_CGROUP
	if (rq->bio) {
		cmd->blkcg_css = bio_blkcg_css(rq->bio);
#ifdef CONFIG_MEMCG
		if (cmd->blkcg_css)
			cmd->memcg_css = cgroup_get_e_css(cmd->blkcg_css->cgroup,
							  &memory_cgrp_subsys);
#endif
	}
#endif
	queue_work(wq, &cmd->work);
}
LFF_EXPORT_SYMBOL(lff_rq_queue_work);

/*
 * As loop_process_work() and loop_handle_cmd(): @rq is served with
 * PF_MEMALLOC_NOIO (no allocation recurses into I/O, which could wait on
 * this very device) and PF_LOCAL_THROTTLE (writeback throttling looks at
 * the backing device's dirty pages, not the global ones), charged to the
 * cgroups remembered when it was queued. lff_rq_serve_exit() restores
 * what *@ctx saved.
 */
static_assert(sizeof(struct lff_serve_ctx) == 16);

void lff_rq_serve_enter(struct request *rq, struct lff_serve_ctx *ctx)
{
	struct lff_cmd *cmd = blk_mq_rq_to_pdu(rq);

	ctx->pflags = current->flags & (PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE);
	current->flags |= PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE;
	ctx->old_memcg = NULL;
#ifdef CONFIG_BLK_CGROUP
	if (cmd->blkcg_css)
		kthread_associate_blkcg(cmd->blkcg_css);
#endif
#ifdef CONFIG_MEMCG
	if (cmd->memcg_css)
		ctx->old_memcg = set_active_memcg(mem_cgroup_from_css(cmd->memcg_css));
#endif
}
LFF_EXPORT_SYMBOL(lff_rq_serve_enter);

void lff_rq_serve_exit(struct request *rq, struct lff_serve_ctx *ctx)
{
	struct lff_cmd *cmd = blk_mq_rq_to_pdu(rq);

#ifdef CONFIG_BLK_CGROUP
	if (cmd->blkcg_css)
		kthread_associate_blkcg(NULL);
#endif
#ifdef CONFIG_MEMCG
	if (cmd->memcg_css) {
		set_active_memcg(ctx->old_memcg);
		css_put(cmd->memcg_css);
	}
#endif
	current->flags = (current->flags & ~(PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE)) |
			 ctx->pflags;
}
LFF_EXPORT_SYMBOL(lff_rq_serve_exit);

/* Like loop's per-device workqueue: unbound, so requests spread over CPUs. */
struct workqueue_struct *lff_alloc_workqueue(const char *name)
{
	return alloc_workqueue("%s", WQ_UNBOUND | WQ_FREEZABLE, 0, name);
}
LFF_EXPORT_SYMBOL(lff_alloc_workqueue);

/* --- iov_iter --- */

size_t lff_iov_iter_count(const struct iov_iter *iter)
{
	return iov_iter_count(iter);
}
LFF_EXPORT_SYMBOL(lff_iov_iter_count);

void lff_iov_iter_truncate(struct iov_iter *iter, size_t count)
{
	iov_iter_truncate(iter, count);
}
LFF_EXPORT_SYMBOL(lff_iov_iter_truncate);

void lff_iov_iter_reexpand(struct iov_iter *iter, size_t count)
{
	iov_iter_reexpand(iter, count);
}
LFF_EXPORT_SYMBOL(lff_iov_iter_reexpand);

size_t lff_copy_to_iter(const void *addr, size_t bytes, struct iov_iter *iter)
{
	return copy_to_iter(addr, bytes, iter);
}
LFF_EXPORT_SYMBOL(lff_copy_to_iter);

size_t lff_copy_from_iter(void *addr, size_t bytes, struct iov_iter *iter)
{
	return copy_from_iter(addr, bytes, iter);
}
LFF_EXPORT_SYMBOL(lff_copy_from_iter);

/* --- files --- */

struct file *lff_get_file(struct file *file)
{
	return get_file(file);
}
LFF_EXPORT_SYMBOL(lff_get_file);

/*
 * As loop's get_size(): through f_mapping, whose host is the block device's
 * inode for a device node (the node's own inode has size 0).
 */
loff_t lff_file_size(struct file *file)
{
	return i_size_read(file->f_mapping->host);
}
LFF_EXPORT_SYMBOL(lff_file_size);

bool lff_file_writable(struct file *file)
{
	return file->f_mode & FMODE_WRITE;
}
LFF_EXPORT_SYMBOL(lff_file_writable);

bool lff_file_direct_io(struct file *file)
{
	return file->f_flags & O_DIRECT;
}
LFF_EXPORT_SYMBOL(lff_file_direct_io);

bool lff_file_can_direct_io(struct file *file)
{
	return file->f_mode & FMODE_CAN_ODIRECT;
}
LFF_EXPORT_SYMBOL(lff_file_can_direct_io);

/* 1: regular file, 2: block device, 0: anything else. */
int lff_file_kind(struct file *file)
{
	umode_t mode = file_inode(file)->i_mode;

	return S_ISREG(mode) ? 1 : S_ISBLK(mode) ? 2 : 0;
}
LFF_EXPORT_SYMBOL(lff_file_kind);

/* @dev in the userspace (stat) encoding, @rdev in the kernel's. */
void lff_file_ids(struct file *file, u64 *dev, u64 *ino, u32 *rdev)
{
	struct inode *inode = file_inode(file);

	*dev = huge_encode_dev(inode->i_sb->s_dev);
	*ino = inode->i_ino;
	*rdev = inode->i_rdev;
}
LFF_EXPORT_SYMBOL(lff_file_ids);

/* Logical block size the file needs for O_DIRECT. */
unsigned int lff_file_dio_align(struct file *file)
{
	struct inode *inode = file_inode(file);

	if (S_ISBLK(inode->i_mode))
		return bdev_logical_block_size(I_BDEV(inode));
	return inode->i_sb->s_bdev ?
		bdev_logical_block_size(inode->i_sb->s_bdev) : SECTOR_SIZE;
}
LFF_EXPORT_SYMBOL(lff_file_dio_align);

/*
 * A backing file's page cache must not recurse into I/O (loop.c's
 * mapping_set_gfp_mask at configure): the mask, and setting it.
 */
unsigned int lff_file_mapping_gfp(struct file *file)
{
	return (__force unsigned int)mapping_gfp_mask(file->f_mapping);
}
LFF_EXPORT_SYMBOL(lff_file_mapping_gfp);

void lff_file_set_mapping_gfp(struct file *file, unsigned int gfp)
{
	mapping_set_gfp_mask(file->f_mapping, (__force gfp_t)gfp);
}
LFF_EXPORT_SYMBOL(lff_file_set_mapping_gfp);

/* The gfp bits a backing mapping must not have: no recursion into I/O. */
unsigned int lff_gfp_io_fs(void)
{
	return (__force unsigned int)(__GFP_IO | __GFP_FS);
}
LFF_EXPORT_SYMBOL(lff_gfp_io_fs);

/* The mapping, as an identity: two files may share one. */
const void *lff_file_mapping(struct file *file)
{
	return file->f_mapping;
}
LFF_EXPORT_SYMBOL(lff_file_mapping);

/* --- memory --- */

/*
 * kvzalloc() (a macro) that fails rather than wait indefinitely: bounded
 * reclaim retries, no OOM killer (__GFP_RETRY_MAYFAIL). In a request's
 * memalloc_noio scope GFP_KERNEL acts as GFP_NOIO.
 */
void *lff_kvzalloc_mayfail(size_t size)
{
	return kvzalloc(size, GFP_KERNEL | __GFP_RETRY_MAYFAIL | __GFP_NOWARN);
}
LFF_EXPORT_SYMBOL(lff_kvzalloc_mayfail);

/* --- gendisk and queue --- */

/* blk_mq_alloc_disk() is a macro with a static lockdep key. */
struct gendisk *lff_blk_mq_alloc_disk(struct blk_mq_tag_set *set,
				      struct queue_limits *lim, void *queuedata)
{
	return blk_mq_alloc_disk(set, lim, queuedata);
}
LFF_EXPORT_SYMBOL(lff_blk_mq_alloc_disk);

struct gendisk *lff_dev_to_disk(struct device *dev)
{
	return dev_to_disk(dev);
}
LFF_EXPORT_SYMBOL(lff_dev_to_disk);

struct kobject *lff_disk_kobj(struct gendisk *disk)
{
	return &disk_to_dev(disk)->kobj;
}
LFF_EXPORT_SYMBOL(lff_disk_kobj);

/*
 * sysfs_attr_init() for an attribute in allocated memory: with lockdep
 * (CONFIG_DEBUG_LOCK_ALLOC) its lock class key must be static. One key
 * serves every attribute, as a sysfs_attr_init() in a loop would.
 */
void lff_sysfs_attr_init(struct attribute *attr)
{
	sysfs_attr_init(attr);
}
LFF_EXPORT_SYMBOL(lff_sysfs_attr_init);

unsigned int lff_disk_openers(struct gendisk *disk)
{
	return disk_openers(disk);
}
LFF_EXPORT_SYMBOL(lff_disk_openers);

/*
 * As loop does, through the atomic GD_SUPPRESS_PART_SCAN bit of
 * disk->state: disk->flags is not for changing on a live disk.
 */
void lff_disk_set_partscan(struct gendisk *disk, bool on)
{
	if (on)
		clear_bit(GD_SUPPRESS_PART_SCAN, &disk->state);
	else
		set_bit(GD_SUPPRESS_PART_SCAN, &disk->state);
}
LFF_EXPORT_SYMBOL(lff_disk_set_partscan);

/* Re-read partitions, taking disk->open_mutex. */
int lff_disk_rescan(struct gendisk *disk)
{
	int ret;

	mutex_lock(&disk->open_mutex);
	ret = bdev_disk_changed(disk, false);
	mutex_unlock(&disk->open_mutex);
	return ret;
}
LFF_EXPORT_SYMBOL(lff_disk_rescan);

/* Re-read partitions; the caller holds disk->open_mutex (->release). */
int lff_disk_rescan_locked(struct gendisk *disk)
{
	lockdep_assert_held(&disk->open_mutex);
	return bdev_disk_changed(disk, false);
}
LFF_EXPORT_SYMBOL(lff_disk_rescan_locked);

struct request_queue *lff_rq_queue(struct request *rq)
{
	return rq->q;
}
LFF_EXPORT_SYMBOL(lff_rq_queue);

#ifdef CONFIG_COMPAT
/* The native pointer of a compat ioctl's argument. */
unsigned long lff_compat_ptr(unsigned long arg)
{
	return (unsigned long)compat_ptr(arg);
}
LFF_EXPORT_SYMBOL(lff_compat_ptr);
#endif

/* MAJOR() of a kernel dev_t. */
unsigned int lff_major(u32 dev)
{
	return MAJOR(dev);
}
LFF_EXPORT_SYMBOL(lff_major);

/* printk_ratelimit(), for messages userspace can trigger at will. */
bool lff_ratelimit(void)
{
	return printk_ratelimit();
}
LFF_EXPORT_SYMBOL(lff_ratelimit);

struct queue_limits lff_queue_limits_start_update(struct request_queue *q)
{
	return queue_limits_start_update(q);
}
LFF_EXPORT_SYMBOL(lff_queue_limits_start_update);

unsigned int lff_feat_write_cache(void)
{
	return BLK_FEAT_WRITE_CACHE | BLK_FEAT_FUA;
}
LFF_EXPORT_SYMBOL(lff_feat_write_cache);

/*
 * Freezing returns the memalloc flags to restore at unfreeze since 6.14
 * (blk_mq_freeze_queue became static inline); 6.12 has none to restore.
 */
unsigned int lff_freeze_queue(struct request_queue *q)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
	return blk_mq_freeze_queue(q);
#else
	blk_mq_freeze_queue(q);
	return 0;
#endif
}
LFF_EXPORT_SYMBOL(lff_freeze_queue);

void lff_unfreeze_queue(struct request_queue *q, unsigned int memflags)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
	blk_mq_unfreeze_queue(q, memflags);
#else
	blk_mq_unfreeze_queue(q);
#endif
}
LFF_EXPORT_SYMBOL(lff_unfreeze_queue);

/* --- the control node /dev/loop-file-fmt-control --- */

/*
 * compat_ioctl is the native handler on purpose, as for /dev/loop-control:
 * every control ioctl takes an int by value (LFF_CTL_ADD/REMOVE/GET_FREE are
 * _IO(), no struct, same numbers for 32-bit callers), never a pointer, so
 * there is nothing for compat_ptr() to convert. A 32-bit caller's argument
 * arrives zero-extended; lff_ctl_ioctl() uses its low 32 bits as an int, so
 * -1 from either kind of caller is -1.
 */
static const struct file_operations lff_ctl_fops = {
	.owner		= THIS_MODULE,
	.open		= nonseekable_open,
	.unlocked_ioctl	= lff_ctl_ioctl,
	.compat_ioctl	= lff_ctl_ioctl,
	.llseek		= noop_llseek,
};

/* /sys/class/misc/loop-file-fmt-control/formats: the registered formats. */
static ssize_t formats_show(struct device *dev, struct device_attribute *attr,
			    char *buf)
{
	return lff_formats_show(buf);
}
static DEVICE_ATTR_RO(formats);

static struct attribute *lff_ctl_attrs[] = {
	&dev_attr_formats.attr,
	NULL,
};
ATTRIBUTE_GROUPS(lff_ctl);

static struct miscdevice lff_ctl_misc = {
	.minor		= MISC_DYNAMIC_MINOR,
	.name		= LFF_CONTROL_NAME,
	.fops		= &lff_ctl_fops,
	.groups		= lff_ctl_groups,
	.mode		= 0600,
};

int lff_ctl_register(void)
{
	return misc_register(&lff_ctl_misc);
}

void lff_ctl_deregister(void)
{
	misc_deregister(&lff_ctl_misc);
}
