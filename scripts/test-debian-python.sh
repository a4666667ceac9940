#!/usr/bin/env bash
# Runs ferroloop's pytest suite and the test_asyncio oracle (tests/cpython/run.py) on CPython
# versions this machine does not have, taken from Debian: 3.14 from Debian testing ("forky") and
# the 3.13 point release of Debian 13 ("trixie"), newer than the 3.13.0 that
# scripts/test-other-pythons.sh finds. Why a Debian root filesystem: the network reaches
# Debian's archive and PyPI, not python.org, and Debian ships each interpreter with its own
# test.test_asyncio (libpython3.X-testsuite), which the oracle needs.
#
#   sudo bash scripts/test-debian-python.sh               # forky (3.14), then trixie (3.13)
#   sudo bash scripts/test-debian-python.sh forky         # one suite
#   PYTEST_ARGS="-k tls -x" sudo -E bash scripts/test-debian-python.sh forky
#   FERROLOOP_DEBIAN_ORACLE_ARGS="--modules test_tasks -v" ... (extra arguments for run.py)
#
# What it does, per suite: makes a minimal Debian root filesystem with debootstrap under
# target/debian/<suite> (once, then reused; with the venv and cargo's build about 1.3 GB),
# installs the interpreter, its venv/dev/testsuite packages, a C compiler and the host's
# local certificate authorities there (an HTTPS proxy's, for PyPI), bind-mounts this
# worktree, /proc, /dev and the host's Rust toolchain (CARGO_HOME, RUSTUP_HOME: ~/.cargo, ~/.rustup) at the same paths, makes a venv in the
# chroot (/opt/ferroloop-venv) with requirements-dev.txt, builds a ferroloop wheel with maturin
# (cargo's target directory stays inside the chroot, /root/cargo-target, so the host's build
# cache and its .so files in python/ferroloop are not touched) and installs it, then runs
# `python -m pytest tests` and `tests/cpython/run.py`. The mounts are undone on exit (trap).
# Needs root (debootstrap, chroot, mount); CI does not run it (it downloads a Debian system).
# Both suites from nothing took 7 min 46 s here; with the root filesystems, about 3 min each.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ "$(id -u)" -ne 0 ]; then
    echo "test-debian-python.sh: needs root (debootstrap, chroot and bind mounts);" \
         "run it with sudo" >&2
    exit 2
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "test-debian-python.sh: debootstrap is not installed (apt-get install -y debootstrap)" >&2
    exit 2
fi

mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
if [ ! -x "$cargo_home/bin/cargo" ] || [ ! -d "$rustup_home" ]; then
    echo "test-debian-python.sh: no Rust toolchain in $cargo_home and $rustup_home" \
         "(set CARGO_HOME/RUSTUP_HOME)" >&2
    exit 2
fi
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(forky trixie)

python_of() {
    case "$1" in
        forky) echo 3.14 ;;   # Debian 14, testing today
        trixie) echo 3.13 ;;  # Debian 13, stable
        *) return 1 ;;
    esac
}

# Every mount made, newest last; undone in reverse order on any exit.
mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount -R "${mounts[$i]}" 2>/dev/null || umount -R -l "${mounts[$i]}" || true
    done
    mounts=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bind() {  # bind <host path> <rootfs>: the same path inside the chroot
    mkdir -p "$2$1"
    mount --bind "$1" "$2$1"
    mounts+=("$2$1")
}

mounted_under() {
    awk -v d="$1" 'index($2, d) == 1 { print $2 }' /proc/mounts
}

status=0
for suite in "${suites[@]}"; do
    if ! ver="$(python_of "$suite")"; then
        echo "test-debian-python.sh: unknown suite '$suite' (forky or trixie)" >&2
        exit 2
    fi
    rootfs="$root/target/debian/$suite"
    echo "== Debian $suite, CPython $ver ($rootfs)"
    if [ -n "$(mounted_under "$rootfs")" ]; then
        echo "test-debian-python.sh: something is still mounted under $rootfs" \
             "(another run?): $(mounted_under "$rootfs" | tr '\n' ' ')" >&2
        exit 2
    fi
    if [ ! -f "$rootfs/.ferroloop-debootstrap-done" ]; then
        rm -rf "$rootfs"   # an interrupted debootstrap; nothing is mounted under it (above)
        mkdir -p "$rootfs"
        # bookworm's debootstrap has no script named after forky; sid's fits every newer suite.
        debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" \
            /usr/share/debootstrap/scripts/sid
        touch "$rootfs/.ferroloop-debootstrap-done"
    fi
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"

    mount -t proc proc "$rootfs/proc"
    mounts+=("$rootfs/proc")
    mkdir -p "$rootfs/dev"
    mount --rbind /dev "$rootfs/dev"
    mount --make-rslave "$rootfs/dev"
    mounts+=("$rootfs/dev")
    bind "$root" "$rootfs"
    bind "$cargo_home" "$rootfs"
    bind "$rustup_home" "$rootfs"

    in_chroot() {
        chroot "$rootfs" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
            PATH="/opt/ferroloop-venv/bin:$cargo_home/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
            CARGO_HOME="$cargo_home" RUSTUP_HOME="$rustup_home" \
            CARGO_TARGET_DIR=/root/cargo-target DEBIAN_FRONTEND=noninteractive "$@"
    }

    # A no-op after the first run; a package added here is installed on the next one.
    in_chroot apt-get install -y -q --no-install-recommends \
        "python$ver" "python$ver-venv" "python$ver-dev" "libpython$ver-testsuite" \
        gcc libc6-dev make ca-certificates >/dev/null
    # Local certificate authorities the host trusts (an HTTPS proxy's, for PyPI) are trusted
    # in the chroot too.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        mkdir -p "$rootfs/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        in_chroot update-ca-certificates >/dev/null 2>&1
    fi
    in_chroot "python$ver" --version

    [ -x "$rootfs/opt/ferroloop-venv/bin/python" ] \
        || in_chroot "python$ver" -m venv /opt/ferroloop-venv
    stamp="$rootfs/opt/ferroloop-venv/.deps-stamp"
    if [ ! -f "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ]; then
        in_chroot python -m pip install -q --disable-pip-version-check \
            -r "$root/requirements-dev.txt"
        touch "$stamp"
    fi
    # A wheel, not `maturin develop`: develop would put the extension into python/ferroloop,
    # where trixie's build (same file name as the host's 3.13 one, newer glibc) would replace
    # the host's.
    rm -rf "$rootfs/tmp/ferroloop-wheel"
    in_chroot sh -c "cd '$root' && maturin build -q --release -i python --out /tmp/ferroloop-wheel"
    in_chroot sh -c 'python -m pip install -q --disable-pip-version-check --force-reinstall \
        --no-deps /tmp/ferroloop-wheel/*.whl'

    echo "== pytest on CPython $ver (Debian $suite)"
    # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words
    in_chroot sh -c "cd '$root' && python -m pytest -q -p no:cacheprovider tests ${PYTEST_ARGS:-}" \
        || status=1
    echo "== CPython $ver's test_asyncio on asyncio and on ferroloop (Debian $suite)"
    # shellcheck disable=SC2086
    in_chroot sh -c "cd '$root' && python tests/cpython/run.py ${FERROLOOP_DEBIAN_ORACLE_ARGS:-}" \
        || status=1
    cleanup
done
exit "$status"
