/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers of the loop_file_fmt core module (lff_helpers.c): one-line
 * wrappers of static inline functions and macros for the Rust code. This
 * header is the only declaration: the Kbuild file runs bindgen on it (every
 * lff_* function) and ../wrappers/sys.rs includes the result.
 */
#ifndef LFF_HELPERS_H
#define LFF_HELPERS_H

#include <linux/types.h>
#include <linux/loop_file_fmt.h>

struct attribute;
struct bio_vec;
struct device;
struct file;
struct gendisk;
struct iov_iter;
struct kobject;
struct queue_limits;
struct request;
struct request_queue;
struct blk_mq_tag_set;
struct work_struct;
struct workqueue_struct;
struct mem_cgroup;

/* What serving a request changed in current (lff_rq_serve_enter/exit). */
struct lff_serve_ctx {
	unsigned int pflags;
	struct mem_cgroup *old_memcg;
};

u64 lff_rq_pos(struct request *rq);
unsigned int lff_rq_bytes(struct request *rq);
unsigned int lff_rq_op(struct request *rq);
bool lff_rq_fua(struct request *rq);
bool lff_rq_nounmap(struct request *rq);
void *lff_rq_driver_data(struct request *rq);
int lff_rq_iter_init(struct request *rq, struct iov_iter *iter, unsigned int direction, struct bio_vec **alloc);
struct request_queue *lff_rq_queue(struct request *rq);
unsigned int lff_cmd_size(void);
void lff_rq_init_work(struct request *rq, void (*fn)(struct work_struct *work));
struct request *lff_work_to_rq(struct work_struct *work);
void lff_rq_queue_work(struct workqueue_struct *wq, struct request *rq);
void lff_rq_serve_enter(struct request *rq, struct lff_serve_ctx *ctx);
void lff_rq_serve_exit(struct request *rq, struct lff_serve_ctx *ctx);
struct workqueue_struct *lff_alloc_workqueue(const char *name);
size_t lff_iov_iter_count(const struct iov_iter *iter);
void lff_iov_iter_truncate(struct iov_iter *iter, size_t count);
void lff_iov_iter_reexpand(struct iov_iter *iter, size_t count);
size_t lff_copy_to_iter(const void *addr, size_t bytes, struct iov_iter *iter);
size_t lff_copy_from_iter(void *addr, size_t bytes, struct iov_iter *iter);
struct file *lff_get_file(struct file *file);
loff_t lff_file_size(struct file *file);
bool lff_file_writable(struct file *file);
bool lff_file_direct_io(struct file *file);
bool lff_file_can_direct_io(struct file *file);
int lff_file_kind(struct file *file);
void lff_file_ids(struct file *file, u64 *dev, u64 *ino, u32 *rdev);
unsigned int lff_file_dio_align(struct file *file);
unsigned int lff_file_mapping_gfp(struct file *file);
void lff_file_set_mapping_gfp(struct file *file, unsigned int gfp);
const void *lff_file_mapping(struct file *file);
unsigned int lff_gfp_io_fs(void);
void *lff_kvzalloc_mayfail(size_t size);
struct gendisk *lff_blk_mq_alloc_disk(struct blk_mq_tag_set *set, struct queue_limits *lim, void *queuedata);
struct gendisk *lff_dev_to_disk(struct device *dev);
struct kobject *lff_disk_kobj(struct gendisk *disk);
void lff_sysfs_attr_init(struct attribute *attr);
unsigned int lff_disk_openers(struct gendisk *disk);
void lff_disk_set_partscan(struct gendisk *disk, bool on);
int lff_disk_rescan(struct gendisk *disk);
int lff_disk_rescan_locked(struct gendisk *disk);
unsigned long lff_compat_ptr(unsigned long arg);
unsigned int lff_major(u32 dev);
bool lff_ratelimit(void);
struct queue_limits lff_queue_limits_start_update(struct request_queue *q);
unsigned int lff_feat_write_cache(void);
size_t lff_inflate_workspace_size(void);
int lff_inflate(void *ws, int window_bits, const void *in, size_t in_len,
		void *out, size_t out_len, size_t *produced);
unsigned int lff_freeze_queue(struct request_queue *q);
void lff_unfreeze_queue(struct request_queue *q, unsigned int memflags);

/* The control node (lff_helpers.c), for ../core/control.rs. */
int lff_ctl_register(void);
void lff_ctl_deregister(void);

/* Implemented in Rust (../core/control.rs), called by lff_helpers.c. */
ssize_t lff_formats_show(char *buf);
long lff_ctl_ioctl(struct file *file, unsigned int cmd, unsigned long arg);

#endif /* LFF_HELPERS_H */
