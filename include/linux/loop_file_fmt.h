/* SPDX-License-Identifier: GPL-2.0 */
/*
 * loop_file_fmt: the in-kernel interface between the core module
 * (loop_file_fmt.ko, which owns the block devices) and the file-format
 * drivers (loop_file_fmt_raw.ko, loop_file_fmt_qcow2.ko, ...).
 *
 * A format driver fills a struct lff_format_driver and registers it from
 * its module init; the core then calls its ops for every device configured
 * with that format name. The core loads a missing driver with
 * request_module("loop-file-fmt-<name>"), so a driver module declares
 * MODULE_ALIAS("loop-file-fmt-<name>").
 *
 * The Rust modules of this project mirror these definitions with #[repr(C)]
 * types (drivers/block/loop_file_fmt/wrappers/format.rs); the core's C
 * helper checks the sizes at build time. A driver written in C includes this
 * header and links against the exported symbols, which live in the symbol
 * namespace LOOP_FILE_FMT: a driver module imports it with LFF_IMPORT_NS().
 *
 * Calling context: every op may sleep. read/write/flush/discard/write_zeroes
 * can be called concurrently for one device, from several CPUs; attach and
 * detach are serialised by the core against everything else on the device.
 */
#ifndef _LINUX_LOOP_FILE_FMT_H
#define _LINUX_LOOP_FILE_FMT_H

#include <linux/types.h>
#include <linux/version.h>

/*
 * The symbol namespace of everything the core exports (and of the qcow2
 * driver's test exports). EXPORT_SYMBOL_NS_GPL() and MODULE_IMPORT_NS()
 * take a bare identifier up to 6.12 and a string literal from 6.13 on; this
 * is the one place that knows.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
#define LFF_NS "LOOP_FILE_FMT"
#else
#define LFF_NS LOOP_FILE_FMT
#endif

/* Export @sym into the namespace (in place of EXPORT_SYMBOL_GPL). */
#define LFF_EXPORT_SYMBOL(sym)	EXPORT_SYMBOL_NS_GPL(sym, LFF_NS)
/* In every module that uses an exported symbol, once (C only: 6.12's Rust
 * module! macro has no namespace imports). */
#define LFF_IMPORT_NS()		MODULE_IMPORT_NS(LFF_NS)

struct file;
struct iov_iter;
struct lff_extent;
struct module;

/**
 * struct lff_attach_info - what the core knows when a device is configured
 * @files:          the layers: files[0] is the image, files[1] its backing
 *                  file, and so on. The core holds a reference to each for
 *                  as long as the device is attached.
 * @nr_files:       number of entries in @files (1..LFF_MAX_LAYERS).
 * @options:        NUL-terminated driver options from userspace ("" if none).
 * @disk_name:      NUL-terminated device name ("lff0"), for log messages.
 * @read_only:      the device will be read-only (requested, or files[0] is
 *                  not open for writing).
 * @direct_io:      userspace asked for direct I/O on the backing files.
 * @size:           out: the virtual size of the image in bytes.
 * @force_read_only: out: set when the driver can only serve reads for this
 *                  image (the core then refuses a read-write configuration
 *                  with EROFS unless @read_only).
 * @nr_files_used:  out: how many of @files the image uses (its backing
 *                  chain length); the core refuses extra layers with EINVAL.
 */
struct lff_attach_info {
	struct file *const *files;
	unsigned int nr_files;
	const char *options;
	const char *disk_name;
	bool read_only;
	bool direct_io;
	u64 size;
	bool force_read_only;
	unsigned int nr_files_used;
};

/**
 * struct lff_format_attr - a driver-specific sysfs attribute, shown per
 * device as /sys/block/lffN/loop_file_fmt/<name>
 * @name:  attribute file name.
 * @show:  write the value and a newline into @buf (PAGE_SIZE bytes);
 *         return the length or a negative errno.
 * @store: parse @buf (@count bytes); return @count or a negative errno.
 *         NULL makes the attribute read-only.
 */
struct lff_format_attr {
	const char *name;
	ssize_t (*show)(void *priv, char *buf);
	ssize_t (*store)(void *priv, const char *buf, size_t count);
};

/**
 * struct lff_format_ops - what a format driver does
 * @attach:       validate the image and set up per-device state; store it in
 *                *@priv. Return 0 or a negative errno (ENOMEM, EINVAL for a
 *                malformed image, EOPNOTSUPP for an unsupported feature...),
 *                having released everything on failure.
 * @detach:       release what @attach set up. Called once no I/O runs.
 * @read_iter:    fill @to (iov_iter_count(@to) bytes) with the virtual
 *                disk's bytes at @pos. Return the number of bytes read or a
 *                negative errno; a short read is an error for the request.
 * @write_iter:   write @from at @pos. NULL for read-only drivers. -EUCLEAN
 *                (from this or any other I/O op) says the driver found the
 *                image's metadata inconsistent and takes no more writes:
 *                the core fails the request with an I/O error, marks the
 *                disk read-only and sends no write, discard or
 *                write-zeroes request again (they fail with EROFS).
 * @flush:        make completed writes durable (fsync semantics). NULL when
 *                the driver does not write.
 * @discard:      deallocate @len bytes at @pos; they then read as zeros or
 *                as before (like REQ_OP_DISCARD). NULL: not supported.
 * @write_zeroes: make @len bytes at @pos read as zeros; @may_unmap allows
 *                deallocating them. NULL: not supported; the core then
 *                advertises no write-zeroes (max_write_zeroes_sectors 0),
 *                so the block layer never sends REQ_OP_WRITE_ZEROES and
 *                callers such as blkdev_issue_zeroout() write zero pages
 *                themselves.
 * @attrs:        driver-specific sysfs attributes, or NULL.
 * @nr_attrs:     number of entries in @attrs.
 * @map:          describe the virtual disk from @pos for @len bytes (> 0)
 *                in at most @nr (> 0) struct lff_extent (UAPI header),
 *                with image offsets in @start, in order, without gaps,
 *                merged where they can be; fewer than @nr must cover the
 *                whole range. Return the number filled or a negative
 *                errno. NULL: the core answers LFF_GET_MAP with EOPNOTSUPP.
 * @size:         store the image's virtual size as it is now in *@size
 *                (LFF_SET_CAPACITY: for a raw image, the file's size).
 *                Return 0 or a negative errno. NULL: the size is fixed at
 *                attach (it lives in the image's header), and the core
 *                answers LFF_SET_CAPACITY with EOPNOTSUPP.
 */
struct lff_format_ops {
	int (*attach)(struct lff_attach_info *info, void **priv);
	void (*detach)(void *priv);
	ssize_t (*read_iter)(void *priv, struct iov_iter *to, loff_t pos);
	ssize_t (*write_iter)(void *priv, struct iov_iter *from, loff_t pos);
	int (*flush)(void *priv);
	int (*discard)(void *priv, loff_t pos, u64 len);
	int (*write_zeroes)(void *priv, loff_t pos, u64 len, bool may_unmap);
	const struct lff_format_attr *attrs;
	unsigned int nr_attrs;
	int (*map)(void *priv, u64 pos, u64 len, struct lff_extent *ext,
		   unsigned int nr);
	int (*size)(void *priv, u64 *size);
};

/*
 * Version of this interface: every struct here, and what the core and the
 * drivers may expect of each other. Bumped on any change a driver built
 * against another version could misread (2: lff_format_ops.map; 3:
 * lff_format_ops.size; 4: -EUCLEAN from the write-side ops).
 */
#define LFF_FORMAT_ABI_VERSION	4

/**
 * struct lff_format_driver - a registered format
 * @abi_version: LFF_FORMAT_ABI_VERSION of the header the driver was built
 *               against.
 * @struct_size: sizeof(struct lff_format_driver) as the driver sees it.
 * @name:  format name as userspace gives it ("raw", "qcow2"), at most
 *         LFF_FORMAT_NAME_SIZE - 1 bytes.
 * @owner: THIS_MODULE; pinned while a device uses the driver.
 * @ops:   the driver's operations.
 *
 * @abi_version, @struct_size and @name stay the first fields in every
 * version, so that a core can refuse, and name, a driver of another one.
 * Fill them with LFF_FORMAT_DRIVER_INIT().
 */
struct lff_format_driver {
	u32 abi_version;
	u32 struct_size;
	const char *name;
	struct module *owner;
	const struct lff_format_ops *ops;
};

#define LFF_FORMAT_DRIVER_INIT(drv_name, drv_ops)			\
	.abi_version	= LFF_FORMAT_ABI_VERSION,			\
	.struct_size	= sizeof(struct lff_format_driver),		\
	.name		= (drv_name),					\
	.owner		= THIS_MODULE,					\
	.ops		= (drv_ops)

/*
 * Register @drv. Returns 0, -EEXIST if a driver of that name is registered,
 * -ENOEXEC (with a message naming the driver and both versions) if
 * @drv->abi_version or @drv->struct_size is not this core's, -EINVAL for a
 * malformed @drv. @drv must stay valid until unregistered.
 */
int lff_register_format(const struct lff_format_driver *drv);

/*
 * Unregister @drv. Called from the driver's module exit: the core pins
 * @drv->owner while a device uses @drv, so no device uses it then.
 */
void lff_unregister_format(const struct lff_format_driver *drv);

#endif /* _LINUX_LOOP_FILE_FMT_H */
