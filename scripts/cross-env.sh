# Environment for building lapa-edge for a 64-bit Arm board (Raspberry Pi 5, Jetson) on an x86-64
# Debian/Ubuntu machine: `source scripts/cross-env.sh`, then
#   cargo build --release --locked -p lapa-edge --target aarch64-unknown-linux-gnu
# Needs: rustup target add aarch64-unknown-linux-gnu; apt gcc-aarch64-linux-gnu, libclang-dev
# (the V4L2 bindings are generated with bindgen), libudev-dev:arm64 (serial port enumeration; after
# `dpkg --add-architecture arm64`; it brings libc6:arm64), and qemu-user to run the result here.
# The runner loads the guest's libraries from / (Debian's multiarch libc6:arm64, ld.so and libc from
# one build). Not `-L /usr/aarch64-linux-gnu`: that prefix has the cross toolchain's ld.so but no
# libudev, so libc would come from /lib/aarch64-linux-gnu, another glibc build than the loader's, and
# the first pthread_create spins for ever walking a stack-cache list laid out by the other build.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR_aarch64_unknown_linux_gnu=/
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--target=aarch64-unknown-linux-gnu -I/usr/aarch64-linux-gnu/include"
