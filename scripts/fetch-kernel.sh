#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Fetch Debian's linux-source-$KVER (default 7.2) and unpack it under the cache.
#
# The mirror is read from the host's own apt configuration; a private apt state directory keeps
# the other suites (sid, forky, trixie-backports) away from the host's package lists.
# Prints the path of the unpacked source tree on its last line.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

mirror() {
	local f uri
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		# The first URIs: of a stanza whose suites are not -security.
		uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && u != "" && $0 !~ /security/ {print u; exit}' "$f")
		[ -n "$uri" ] && { echo "$uri"; return; }
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f")
		[ -n "$uri" ] && { echo "$uri"; return; }
	done
	return 1
}

SRC_ROOT=$KRS_CACHE/src
mkdir -p "$SRC_ROOT"

# Reuse an unpacked tree if one is there (the version is in its name).
# The pinned version if it is unpacked, else the newest unpacked one of the series.
existing=$(ls -d "$SRC_ROOT/linux-source-$KVER-$KRS_KVER_PIN" 2>/dev/null || true)
[ -n "$existing" ] || existing=$(ls -d "$SRC_ROOT"/linux-source-$KVER-* 2>/dev/null | sort -V | tail -n1 || true)
if [ -n "$existing" ] && [ -f "$existing/.krs-unpacked" ] && [ -z "${KRS_REFETCH:-}" ]; then
	echo "$existing"
	exit 0
fi

M=$(mirror) || krs_die "no Debian mirror found in the host's apt configuration"
APTDIR=$KRS_CACHE/apt
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/etc" "$APTDIR/dl"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
{
	for suite in sid forky trixie-backports; do
		echo "deb [signed-by=$KEYRING] $M $suite main"
	done
} > "$APTDIR/etc/sources.list"
: > "$APTDIR/etc/preferences"
APT=(-o "Dir::Etc::SourceList=$APTDIR/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::Etc::Preferences=$APTDIR/etc/preferences" -o Dir::Etc::PreferencesParts=/dev/null
     -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache"
     -o "Dir::State::status=$APTDIR/status" -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root -q)
: > "$APTDIR/status"

krs_phase "apt (private state): updating sid, forky, trixie-backports lists"
apt-get "${APT[@]}" update >&2

ver=$(apt-cache "${APT[@]}" madison linux-source-$KVER | awk -F'|' '{gsub(/ /,"",$2); print $2}' | sort -uV)
[ -n "$ver" ] || krs_die "no suite offers linux-source-$KVER"
if echo "$ver" | grep -qx "$KRS_KVER_PIN"; then
	use=$KRS_KVER_PIN
else
	use=$(echo "$ver" | tail -n1)
	krs_phase "WARNING: pinned linux-source-$KVER=$KRS_KVER_PIN is gone; using the newest found: $use" >&2
fi
krs_phase "apt: downloading linux-source-$KVER=$use" >&2
(cd "$APTDIR/dl" && rm -f linux-source-${KVER}_*.deb && apt-get "${APT[@]}" download "linux-source-$KVER=$use" >&2)

deb=$(ls "$APTDIR"/dl/linux-source-${KVER}_*.deb)
dest=$SRC_ROOT/linux-source-$KVER-$use
rm -rf "$dest" "$dest.x"
mkdir -p "$dest.x"
krs_phase "unpacking $(basename "$deb")" >&2
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dest.x" --wildcards "./usr/src/linux-source-$KVER.tar.xz"
tar -xJf "$dest.x/usr/src/linux-source-$KVER.tar.xz" -C "$dest.x"
mv "$dest.x/linux-source-$KVER" "$dest"
rm -rf "$dest.x" "$deb"
echo "$use" > "$dest/.krs-debversion"
touch "$dest/.krs-unpacked"
echo "$dest"
