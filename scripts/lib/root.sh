# shellcheck shell=bash
# Sourced by scripts/demo, scripts/test, scripts/bench and scripts/package-test:
# how they get root for the steps that need it, and only for those. As root
# (a fresh Debian machine, CI): directly, no sudo needed. As a user with
# sudo: that one step through sudo, said on stderr first. Neither: the step
# is refused with a message and the caller decides what to do instead.
# Everything else (cargo builds) runs as the calling user, so no root-owned
# files land in the user's target directory.

# The script's name for messages.
ROOT_SH_WHO=${ROOT_SH_WHO:-scripts/$(basename "$0")}

# True when this process is root.
is_root() { [ "$(id -u)" = 0 ]; }

# True when root is at hand: root already, or sudo installed.
can_be_root() { is_root || command -v sudo >/dev/null 2>&1; }

# The prefix that runs a command as root: nothing as root, `sudo --` with
# sudo; fails (status 1) with neither.
root_prefix() {
    if is_root; then
        return 0
    elif command -v sudo >/dev/null 2>&1; then
        echo "sudo --"
    else
        return 1
    fi
}

# as_root WHY CMD...: runs CMD as root, saying why when it takes sudo.
as_root() {
    local why=$1
    shift
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        echo "$ROOT_SH_WHO: $why needs root: sudo $*" >&2
        sudo -- "$@"
    else
        echo "$ROOT_SH_WHO: $why needs root, and this is not root and has no sudo" >&2
        return 1
    fi
}
