# shellcheck shell=bash
# debian-sources.sh - read the Debian archive URIs from the machine's own apt sources, so
# that no mirror host name is ever written into the lab scripts.  Sourced by
# scripts/lab-setup.sh and scripts/kvm-lab-setup.sh.

DEBIAN_SOURCES=${DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}

# source_uri SUITE: the URI (without a trailing slash) of the first entry of the deb822
# sources file that serves SUITE; fails with a message when there is none.
source_uri() {
    local want=$1 uris="" suites="" line found="" words=()
    if [[ ! -r $DEBIAN_SOURCES ]]; then
        echo "$DEBIAN_SOURCES not found: cannot tell the Debian mirror" >&2
        return 1
    fi
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%%#*}
        if [[ -z ${line//[[:space:]]/} ]]; then
            [[ -z $found && -n $uris && " $suites " == *" $want "* ]] && found=$uris
            uris="" suites=""
            continue
        fi
        case $line in
            URIs:*) read -r -a words <<<"${line#URIs:}"; uris=${words[0]:-} ;;
            Suites:*) read -r -a words <<<"${line#Suites:}"; suites=${words[*]} ;;
        esac
    done < "$DEBIAN_SOURCES"
    [[ -z $found && -n $uris && " $suites " == *" $want "* ]] && found=$uris
    if [[ -z $found ]]; then
        echo "no entry with suite $want in $DEBIAN_SOURCES" >&2
        return 1
    fi
    echo "${found%/}"
}
