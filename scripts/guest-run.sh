#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Runs INSIDE the guest for `make run`: load the modules, let them run, unload, save dmesg.
# Usage: guest-run.sh OUTDIR SECONDS MODULE.ko...
set -u
out=$1 secs=$2; shift 2
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
dmesg -n 1
for ko in "$@"; do
	echo "kthread-rs: insmod $(basename "$ko" .ko)" > /dev/kmsg
	insmod "$ko" || echo "insmod $ko failed" >> "$out/errors"
done
sleep "$secs"
for ko in "$@"; do
	echo "kthread-rs: rmmod $(basename "$ko" .ko)" > /dev/kmsg
	rmmod "$(basename "$ko" .ko)" || echo "rmmod $ko failed" >> "$out/errors"
done
dmesg > "$out/dmesg"
touch "$out/done"
