#!/usr/bin/env bash
# manpage.sh PROGRAM OUT [SUBCOMMAND ...]: a man page (section 8) made from PROGRAM's --help and
# from each SUBCOMMAND's (`PROGRAM SUBCOMMAND --help`), so the page says what the program says.
# Run by the build (CMakeLists.txt, target manpages); the pages are installed and packaged.
set -euo pipefail
prog=$1
out=$2
shift 2
name=$(basename "$prog")
# roff: a leading '.' or '\'' would be a request; backslashes are escapes.
roff() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }
{
  echo ".TH ${name^^} 8 \"\" \"blockrep\" \"System Administration\""
  echo ".SH NAME"
  case $name in
    blockrep-agent) echo "$name \\- continuous block-level replication of this server's volumes to a blockrep staging" ;;
    blockrep-staging) echo "$name \\- the DR region's store of recovery points for many agents" ;;
    blockrep-recover) echo "$name \\- list, restore, verify, mount and drill recovery points" ;;
    blockrep-keygen) echo "$name \\- certificates and data keys for a blockrep quick start" ;;
    *) echo "$name" ;;
  esac
  echo ".SH OPTIONS"
  echo ".nf"
  "$prog" --help 2>&1 | roff
  echo ".fi"
  for sub in "$@"; do
    echo ".SH \"${name} ${sub}\""
    echo ".nf"
    "$prog" "$sub" --help 2>&1 | roff
    echo ".fi"
  done
  echo ".SH SEE ALSO"
  echo "The README and docs/ of the blockrep sources (installed under /usr/share/doc/blockrep)."
} >"$out"
