// The Linux prebuilds and their names, one per target (issue 23): the libc
// is in every name, so no two builds write the same path. node-gyp-build
// picks the .node by its tags (napi, glibc|musl); src/native.ts picks the
// companions by the libc tag of the .node it loaded.

export const LINUX_ARCHES = ['x64', 'arm64'];
export const LIBCS = ['glibc', 'musl'];

/** The files of one target (linux-<arch>-<libc>), relative to prebuilds/linux-<arch>/. */
export function targetFiles(libc) {
  const files = [`posix-daemon.napi.${libc}.node`, `posix_daemon_hold.${libc}.so`];
  // One init image for both libcs: static, it needs neither.
  if (libc === 'musl') files.push('posix_daemon_init.musl.static');
  return files;
}

/** Every expected file, as { target, arch, libc, path } with path relative to prebuilds/. */
export function expectedFiles() {
  return LINUX_ARCHES.flatMap((arch) => LIBCS.flatMap((libc) => targetFiles(libc)
    .map((f) => ({ target: `linux-${arch}-${libc}`, arch, libc, path: `linux-${arch}/${f}` }))));
}
