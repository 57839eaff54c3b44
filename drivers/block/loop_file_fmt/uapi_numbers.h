/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Input of bindgen for the Rust modules: the UAPI header, plus its ioctl
 * numbers as enum constants (bindgen cannot expand _IOW(), but clang
 * evaluates enum initialisers), so that no number is typed twice. The
 * uapi/ prefix keeps it the UAPI header in a kernel tree too, where
 * <linux/loop_file_fmt.h> is the format driver ABI.
 */
#include <uapi/linux/loop_file_fmt.h>

enum lff_ioctl_numbers {
	LFF_NR_CONFIGURE	= LFF_CONFIGURE,
	LFF_NR_CLR_FD		= LFF_CLR_FD,
	LFF_NR_GET_STATUS	= LFF_GET_STATUS,
	LFF_NR_GET_MAP		= LFF_GET_MAP,
	LFF_NR_CTL_ADD		= LFF_CTL_ADD,
	LFF_NR_CTL_REMOVE	= LFF_CTL_REMOVE,
	LFF_NR_CTL_GET_FREE	= LFF_CTL_GET_FREE,
};
