/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * loop_file_fmt: loop-style block devices whose backing file is read through
 * a file-format driver (raw, qcow2, ...).
 *
 * This header is the single source of truth for the userspace ABI: ioctl
 * numbers, flags and structures. The losetup-fmt tool generates its bindings
 * from it with bindgen.
 *
 * Devices are /dev/lffN (block devices). The control node is
 * /dev/loop-file-fmt-control (misc device).
 *
 * All ioctls require CAP_SYS_ADMIN, except LFF_GET_STATUS and LFF_GET_MAP.
 */
#ifndef _UAPI_LINUX_LOOP_FILE_FMT_H
#define _UAPI_LINUX_LOOP_FILE_FMT_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Name of the block devices (/dev/lff0, /dev/lff1, ...). */
#define LFF_DEVICE_PREFIX	"lff"
/* Name of the control node under /dev. */
#define LFF_CONTROL_NAME	"loop-file-fmt-control"

/* Size of a format name including the terminating NUL ("raw", "qcow2"). */
#define LFF_FORMAT_NAME_SIZE	32
/* Size of the driver options string including the terminating NUL. */
#define LFF_OPTIONS_SIZE	128
/* Size of the file name reported by LFF_GET_STATUS. */
#define LFF_FILE_NAME_SIZE	64
/*
 * Maximum number of backing layers: fds[0] is the image itself, fds[1] its
 * backing file, fds[2] the backing file's backing file, and so on.
 */
#define LFF_MAX_LAYERS		16

/* Device flags (struct lff_config.flags, struct lff_status.flags). */
enum {
	LFF_FLAGS_READ_ONLY	= 1 << 0, /* the device refuses writes */
	LFF_FLAGS_DIRECT_IO	= 1 << 1, /* the backing file is accessed with O_DIRECT */
	LFF_FLAGS_AUTOCLEAR	= 1 << 2, /* detach on last close */
	LFF_FLAGS_PARTSCAN	= 1 << 3, /* scan the device for partitions */
};

/* Flags userspace may set in LFF_CONFIGURE. */
#define LFF_CONFIGURE_SETTABLE_FLAGS	(LFF_FLAGS_READ_ONLY | \
					 LFF_FLAGS_DIRECT_IO | \
					 LFF_FLAGS_AUTOCLEAR | \
					 LFF_FLAGS_PARTSCAN)

/**
 * struct lff_config - argument of LFF_CONFIGURE
 * @fds:        open file descriptors of the layers: fds[0] the image, then
 *              its backing chain in order (only formats with backing files
 *              use more than one). A layer opened read-only makes the device
 *              read-only only if it is fds[0].
 * @nr_fds:     number of valid entries in @fds, 1..LFF_MAX_LAYERS.
 * @flags:      LFF_FLAGS_*, see LFF_CONFIGURE_SETTABLE_FLAGS.
 * @block_size: logical block size in bytes: 0 (means 512) or a power of
 *              two in 512..PAGE_SIZE.
 * @__pad:      must be zero.
 * @offset:     byte offset into the virtual disk the format exposes; must
 *              be a multiple of 512.
 * @sizelimit:  maximum size of the device in bytes, 0 for no limit; must be
 *              a multiple of 512.
 * @format:     NUL-terminated format name ("raw", "qcow2"); the driver
 *              module "loop-file-fmt-<format>" is loaded on demand; ENOENT
 *              when no driver provides it.
 * @options:    NUL-terminated, comma-separated driver options
 *              ("snapshot=NAME" for qcow2), or empty.
 * @__reserved: must be zero.
 */
struct lff_config {
	__s32 fds[LFF_MAX_LAYERS];
	__u32 nr_fds;
	__u32 flags;
	__u32 block_size;
	__u32 __pad;
	__u64 offset;
	__u64 sizelimit;
	char format[LFF_FORMAT_NAME_SIZE];
	char options[LFF_OPTIONS_SIZE];
	__u64 __reserved[8];
};

/**
 * struct lff_status - result of LFF_GET_STATUS
 * @index:      device number N of /dev/lffN.
 * @flags:      LFF_FLAGS_* in effect (READ_ONLY also when the format or the
 *              file forced it).
 * @block_size: logical block size in bytes.
 * @nr_layers:  number of files attached (image plus backing chain).
 * @offset:     as configured.
 * @sizelimit:  as configured.
 * @size:       size of the block device in bytes.
 * @device:     st_dev of the image file (fds[0]).
 * @inode:      st_ino of the image file (fds[0]).
 * @format:     NUL-terminated format name.
 * @file_name:  NUL-terminated, possibly truncated, path of the image file;
 *              the full path is in /sys/block/lffN/loop_file_fmt/backing_file.
 * @__reserved: zero.
 */
struct lff_status {
	__u32 index;
	__u32 flags;
	__u32 block_size;
	__u32 nr_layers;
	__u64 offset;
	__u64 sizelimit;
	__u64 size;
	__u64 device;
	__u64 inode;
	char format[LFF_FORMAT_NAME_SIZE];
	char file_name[LFF_FILE_NAME_SIZE];
	__u64 __reserved[8];
};

/* Extent flags (struct lff_extent.flags), as qemu-img map reports them. */
enum {
	LFF_EXTENT_DATA		= 1 << 0, /* stored in layer @depth (qemu-img: data) */
	LFF_EXTENT_ZERO		= 1 << 1, /* reads as zeros (qemu-img: zero) */
	LFF_EXTENT_COMPRESSED	= 1 << 2, /* inside compressed clusters */
	LFF_EXTENT_PRESENT	= 1 << 3, /* allocated in layer @depth, not only
					   * past the end of the chain */
	LFF_EXTENT_HOST_OFFSET	= 1 << 4, /* @host_offset is valid */
};

/* Most extents one LFF_GET_MAP call returns (struct lff_map.nr_extents). */
#define LFF_MAP_MAX_EXTENTS	1024

/**
 * struct lff_extent - one run of the device as the format driver serves it
 * @start:       device offset in bytes.
 * @length:      bytes; adjacent runs with the same @flags, @depth and
 *               contiguous host offsets are merged.
 * @host_offset: byte offset in layer @depth's file of the first byte
 *               (LFF_EXTENT_HOST_OFFSET), else 0.
 * @flags:       LFF_EXTENT_*.
 * @depth:       the layer that answers for the run: 0 the image, 1 its
 *               backing file, ...; for a run allocated nowhere, the last
 *               layer asked (as qemu-img map's "depth").
 */
struct lff_extent {
	__u64 start;
	__u64 length;
	__u64 host_offset;
	__u32 flags;
	__u32 depth;
};

/**
 * struct lff_map - argument of LFF_GET_MAP
 * @start:      in: device offset to map from, at most the device size.
 * @length:     in: bytes to map from @start (0: to the end); clipped at the
 *              end of the device.
 * @extents:    in: user pointer (as a __u64) to @nr_extents struct
 *              lff_extent.
 * @nr_extents: in: room in @extents, 1..LFF_MAP_MAX_EXTENTS; out: how many
 *              were filled, in order from @start. Fewer than asked for
 *              cover the range to its end; 0 only when @start is the end.
 * @flags:      must be zero.
 * @__reserved: must be zero.
 *
 * The runs cover [@start, @start + @length) without gaps; a caller maps a
 * longer range by calling again from the end of the last run.
 */
struct lff_map {
	__u64 start;
	__u64 length;
	__u64 extents;
	__u32 nr_extents;
	__u32 flags;
	__u64 __reserved[4];
};

/*
 * Our own ioctl type, free in Documentation/userspace-api/ioctl/ioctl-number.rst
 * (not loop's 0x4C 'L', whose block ioctls would otherwise reach these
 * numbers); nrs 0xA0-0xAF.
 */
#define LFF_IOC_MAGIC	0xBB

/* Block device ioctls, on /dev/lffN. */
/* Attach files through a format driver; EBUSY if the device is attached. */
#define LFF_CONFIGURE	_IOW(LFF_IOC_MAGIC, 0xA0, struct lff_config)
/* Detach; ENXIO if not attached, EBUSY if opened by someone else. */
#define LFF_CLR_FD	_IO(LFF_IOC_MAGIC, 0xA1)
/* Read the configuration; ENXIO if not attached. */
#define LFF_GET_STATUS	_IOR(LFF_IOC_MAGIC, 0xA2, struct lff_status)
/*
 * Report the runs of the device (struct lff_map); ENXIO if not attached,
 * EOPNOTSUPP if the format driver does not report its mapping, EINVAL for a
 * bad argument, EFAULT for a bad pointer. Needs only the device open.
 */
#define LFF_GET_MAP	_IOWR(LFF_IOC_MAGIC, 0xA3, struct lff_map)

/* Control node ioctls, on /dev/loop-file-fmt-control; the argument is an int. */
/* Add device N (or the first free number if the argument is -1); returns N. */
#define LFF_CTL_ADD	_IO(LFF_IOC_MAGIC, 0xA8)
/* Remove unattached device N; returns 0. */
#define LFF_CTL_REMOVE	_IO(LFF_IOC_MAGIC, 0xA9)
/* Return the number of an unattached device, adding one if none is free. */
#define LFF_CTL_GET_FREE _IO(LFF_IOC_MAGIC, 0xAA)

#endif /* _UAPI_LINUX_LOOP_FILE_FMT_H */
