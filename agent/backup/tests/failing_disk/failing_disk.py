#!/usr/bin/python3
"""A disk that stays mounted but starts returning I/O errors (EIO), as a failing USB disk does.

A FUSE filesystem (libfuse 2 through fusepy, Debian package python3-fusepy) that passes every
operation through to a backing directory, until a fault set in a control directory (outside the
mount) fires. The tests of the backup crate and the agent mount it where the backup disk is
mounted.

    failing_disk.py BACKING_DIR MOUNT_POINT CONTROL_DIR

Control files (written by the test, read at every operation):

- `fail`: while it exists, every operation returns EIO (the disk failed; removing it is the
  disk working again).
- `fail-path`: a path relative to the root (e.g. `config`); every operation on it returns EIO
  (a bad sector under one file), the rest of the disk works.
- `fail-writes-after`: a byte count N; once N bytes have been written through the mount, every
  write returns EIO (reads still work: a disk whose writes fail).
- `fail-at-unlink-in`: a directory relative to the root (e.g. `keys`); the first unlink of a
  file in it returns EIO, removes nothing, and creates `fail`: the disk fails at that moment.

When a fault first fires, `fired` is written in the control directory, naming it, so a test can
tell the fault happened and did not pass by luck.

Runs in the foreground; unmount with `fusermount -u -z MOUNT_POINT`.
"""

import errno
import os
import sys
import threading

try:
    import fusepy as fuse  # Debian's python3-fusepy
except ImportError:
    try:
        import fuse  # PyPI fusepy
    except ImportError:
        sys.exit("failing_disk.py needs fusepy: Debian package python3-fusepy (or PyPI fusepy)")


class FailingDisk(fuse.Operations):
    use_ns = True

    def __init__(self, backing, control):
        self.backing = os.path.realpath(backing)
        self.control = control
        self.written = 0
        self.mutex = threading.Lock()

    # -- faults ---------------------------------------------------------------

    def _control(self, name):
        return os.path.join(self.control, name)

    def _fire(self, what):
        with self.mutex:
            fired = self._control("fired")
            if not os.path.exists(fired):
                with open(fired, "w") as f:
                    f.write(what + "\n")

    def _check(self, op, args):
        if os.path.exists(self._control("fail")):
            self._fire("fail")
            raise fuse.FuseOSError(errno.EIO)
        bad = self._control("fail-path")
        if os.path.exists(bad) and args and isinstance(args[0], str):
            with open(bad) as f:
                if args[0].strip("/") == f.read().strip().strip("/"):
                    self._fire(f"{op} {args[0]}")
                    raise fuse.FuseOSError(errno.EIO)

    def _real(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    # -- pass-through with the faults in front ---------------------------------

    def __call__(self, op, *args):
        if op not in ("init", "destroy"):
            self._check(op, args)
        try:
            return super().__call__(op, *args)
        except OSError as e:
            if isinstance(e, fuse.FuseOSError):
                raise
            raise fuse.FuseOSError(e.errno or errno.EIO)

    def access(self, path, mode):
        if not os.access(self._real(path), mode):
            raise fuse.FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        return os.chmod(self._real(path), mode)

    def chown(self, path, uid, gid):
        return os.chown(self._real(path), uid, gid)

    def create(self, path, mode, fi=None):
        return os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def flush(self, path, fh):
        return os.fsync(fh)

    def fsync(self, path, datasync, fh):
        return os.fdatasync(fh) if datasync else os.fsync(fh)

    def fsyncdir(self, path, datasync, fh):
        return 0

    def getattr(self, path, fh=None):
        st = os.lstat(self._real(path))
        attrs = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size")}
        for k in ("st_atime", "st_mtime", "st_ctime"):
            attrs[k] = getattr(st, k + "_ns")
        return attrs

    def link(self, target, source):
        return os.link(self._real(source), self._real(target))

    def mkdir(self, path, mode):
        return os.mkdir(self._real(path), mode)

    def open(self, path, flags):
        return os.open(self._real(path), flags)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._real(path))

    def readlink(self, path):
        return os.readlink(self._real(path))

    def release(self, path, fh):
        return os.close(fh)

    def rename(self, old, new):
        return os.rename(self._real(old), self._real(new))

    def rmdir(self, path):
        return os.rmdir(self._real(path))

    def statfs(self, path):
        sv = os.statvfs(self._real(path))
        return {k: getattr(sv, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                                             "f_files", "f_flag", "f_frsize", "f_namemax")}

    def symlink(self, target, source):
        return os.symlink(source, self._real(target))

    def truncate(self, path, length, fh=None):
        if fh is not None:
            return os.ftruncate(fh, length)
        with open(self._real(path), "r+b") as f:
            return f.truncate(length)

    def unlink(self, path):
        at = self._control("fail-at-unlink-in")
        if os.path.exists(at):
            with open(at) as f:
                directory = f.read().strip().strip("/")
            if os.path.dirname(path.lstrip("/")) == directory:
                open(self._control("fail"), "w").close()
                self._fire(f"unlink {path}")
                raise fuse.FuseOSError(errno.EIO)
        return os.unlink(self._real(path))

    def utimens(self, path, times=None):
        return os.utime(self._real(path), ns=times)

    def write(self, path, data, offset, fh):
        limit = self._control("fail-writes-after")
        if os.path.exists(limit):
            with open(limit) as f:
                after = int(f.read().strip())
            with self.mutex:
                failing = self.written + len(data) > after
                if not failing:
                    self.written += len(data)
            if failing:
                self._fire(f"write {path} after {self.written} bytes")
                raise fuse.FuseOSError(errno.EIO)
        return os.pwrite(fh, data, offset)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    backing, mount_point, control = sys.argv[1:]
    # No attribute or name caching: every stat reaches this process, so a fault is seen at once.
    fuse.FUSE(
        FailingDisk(backing, control),
        mount_point,
        foreground=True,
        fsname="failing-disk",
        big_writes=True,
        entry_timeout=0,
        attr_timeout=0,
        negative_timeout=0,
    )


if __name__ == "__main__":
    main()
