#!/bin/bash
# The modules load, register, and unload; the core refuses to go while a
# driver uses it.
. "$(dirname "$0")/lib.sh"

check "modprobe loop_file_fmt_raw (core by dependency)" modprobe loop_file_fmt_raw
check "core module loaded" grep -q '^loop_file_fmt ' /proc/modules
check "control node exists" test -c /dev/loop-file-fmt-control
check "raw format registered" sh -c 'dmesg | grep -q "registered format .raw."'
check_fails "rmmod core while a driver is loaded" "in use" rmmod loop_file_fmt
check "rmmod raw, then core" rmmod loop_file_fmt_raw loop_file_fmt
check "no module left" sh -c '! grep -q "^loop_file_fmt" /proc/modules'
check "unregistered in the log" sh -c 'dmesg | grep -q "unregistered format .raw."'
finish
