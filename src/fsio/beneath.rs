//! Paths inside the spool, acted on through folder descriptors.
//!
//! A ledger path (`archive/2026-12-07/acme/a.csv`) is judged by its text only once: when it is
//! walked from the spool root, one folder at a time, with `O_NOFOLLOW | O_DIRECTORY`. A folder
//! on the way that is a symbolic link (or not a folder) stops the walk with an error that says
//! so; everything after that — opening, hashing, renaming, removing, writing a sidecar — happens
//! relative to the descriptor of the folder the walk reached. So a folder inside `archive/`
//! replaced by a link to `/etc`, before or during the work, can never lead ferry to write or
//! remove anything outside the spool: the link is never followed, and a folder swapped after the
//! walk is not the one ferry holds.
//!
//! The root itself is opened as given (where the spool lives, a link included, is the
//! operator's choice). Nothing here knows the spool's layout.

use super::{fit_name, with_path, TEMP_SUFFIX};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// A folder inside the spool, held open.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Its path, for messages only: it is never used to reach the folder again.
    path: PathBuf,
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} holds a NUL byte"),
        )
    })
}

/// Retries a libc call interrupted by a signal; its error otherwise.
fn check(mut call: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        let rc = call();
        if rc >= 0 {
            return Ok(rc);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The error for a path component that is a link or not a folder.
fn not_a_folder(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link or not a folder; ferry never follows links inside the spool",
            path.display()
        ),
    )
}

/// The plain names of a relative path; anything else (`..`, `/`, `.`) is refused.
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", rel.display()),
            )),
        })
        .collect()
}

impl Dir {
    /// The folder `rel` below `root`, every part of it a real folder (created if missing and
    /// `create`).
    fn walk(root: &Path, rel: &Path, create: bool) -> io::Result<Dir> {
        if create {
            std::fs::create_dir_all(root).map_err(|e| with_path(e, "cannot create", root))?;
        }
        let c = cstr(root.as_os_str())?;
        // SAFETY: a valid NUL-terminated path; the descriptor is owned below.
        let fd = check(|| unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| with_path(e, "cannot open", root))?;
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let mut dir = Dir {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: root.to_path_buf(),
        };
        for name in names(rel)? {
            dir = dir.child(name, create)?;
        }
        Ok(dir)
    }

    /// The folder `name` in this one (created if missing and `create`), never through a link.
    fn child(&self, name: &OsStr, create: bool) -> io::Result<Dir> {
        let path = self.path.join(name);
        let c = cstr(name)?;
        let open = || {
            // SAFETY: a valid folder descriptor and NUL-terminated name.
            check(|| unsafe {
                libc::openat(
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            })
        };
        let fd = match open() {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                // SAFETY: as above; mkdirat never follows a link in the last component.
                match check(|| unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o777) }) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(with_path(e, "cannot create", &path)),
                }
                open()
            }
            r => r,
        };
        let fd = fd.map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => not_a_folder(&path),
            _ => with_path(e, "cannot open", &path),
        })?;
        Ok(Dir {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path,
        })
    }

    /// Another handle on the same folder (not walked again).
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// The path this folder was reached by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file `name` for reading, never through a link and never a FIFO.
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let path = self.path.join(name);
        let c = cstr(name)?;
        // SAFETY: a valid folder descriptor and NUL-terminated name.
        let fd = check(|| unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is a symbolic link", path.display()),
            ),
            _ => with_path(e, "cannot open", &path),
        })?;
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        Ok(f)
    }

    /// Whether anything (a link included) is called `name` in this folder.
    pub fn has(&self, name: &OsStr) -> bool {
        self.stat(name).is_ok()
    }

    /// `name`'s device and inode, without following a link.
    fn stat(&self, name: &OsStr) -> io::Result<(u64, u64)> {
        let c = cstr(name)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: a valid folder descriptor, NUL-terminated name and a buffer for the result.
        check(|| unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        // SAFETY: fstatat succeeded, so the buffer is filled.
        let st = unsafe { st.assume_init() };
        Ok((st.st_dev, st.st_ino))
    }

    /// Removes `name` from this folder (a file or a link, never what a link points at).
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: a valid folder descriptor and NUL-terminated name.
        check(|| unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) })
            .map(drop)
            .map_err(|e| with_path(e, "cannot remove", &self.path.join(name)))
    }

    /// Removes `name` only if it is still the file `opened` (the one that was checked): a file
    /// put in its place meanwhile is left, with an error.
    pub fn unlink_if_same(&self, name: &OsStr, opened: &File) -> io::Result<()> {
        let m = opened.metadata()?;
        if self.stat(name)? != (m.dev(), m.ino()) {
            return Err(io::Error::other(format!(
                "{} was replaced while it was checked",
                self.path.join(name).display()
            )));
        }
        self.unlink(name)
    }

    /// Moves the file at `from` (outside this folder's walk: a claim in `processing/`, say) to
    /// `name` here, never replacing anything.
    pub fn move_in(&self, from: &Path, name: &OsStr) -> io::Result<()> {
        let f = cstr(from.as_os_str())?;
        let t = cstr(name)?;
        renameat_noreplace(libc::AT_FDCWD, &f, self.fd.as_raw_fd(), &t)
            .map_err(|e| with_path(e, "cannot move a file to", &self.path.join(name)))
    }

    /// Moves `name` out of this folder to `to`, never replacing anything.
    pub fn move_out(&self, name: &OsStr, to: &Path) -> io::Result<()> {
        let f = cstr(name)?;
        let t = cstr(to.as_os_str())?;
        renameat_noreplace(self.fd.as_raw_fd(), &f, libc::AT_FDCWD, &t)
    }

    /// Writes `name` here so it is never seen half-written (temp name, fsync, rename); an
    /// earlier `name` (ferry's own sidecar written before a crash) is replaced.
    pub fn write_atomic(&self, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
        self.via_temp(name, false, |f| f.write_all(bytes))
            .map_err(|e| with_path(e, "cannot write", &self.path.join(name)))
    }

    /// Copies the regular file (or link, as a link) at `from` to `name` here, never replacing.
    pub fn copy_in(&self, from: &Path, name: &OsStr) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(from)?;
        if meta.file_type().is_symlink() {
            let target = cstr(std::fs::read_link(from)?.as_os_str())?;
            let t = cstr(name)?;
            // SAFETY: valid NUL-terminated strings and folder descriptor.
            return check(|| unsafe {
                libc::symlinkat(target.as_ptr(), self.fd.as_raw_fd(), t.as_ptr())
            })
            .map(drop);
        }
        let mut src = super::open_regular(from)?;
        self.via_temp(name, true, |f| io::copy(&mut src, f).map(drop))
    }

    /// Creates a hidden temp file here, fills it, fsyncs it and renames it to `name`.
    fn via_temp(
        &self,
        name: &OsStr,
        noreplace: bool,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        let tail = format!(".{}{TEMP_SUFFIX}", std::process::id());
        let mut tmp = OsString::from(".");
        tmp.push(fit_name(name, 1 + tail.len()));
        tmp.push(tail);
        let tc = cstr(&tmp)?;
        let nc = cstr(name)?;
        let dirfd = self.fd.as_raw_fd();
        // A temp file left by a crash of this pid's predecessor is ours to replace.
        // SAFETY: a valid folder descriptor and NUL-terminated name.
        let _ = unsafe { libc::unlinkat(dirfd, tc.as_ptr(), 0) };
        // SAFETY: as above; O_EXCL with O_NOFOLLOW never opens an existing file or link.
        let fd = check(|| unsafe {
            libc::openat(
                dirfd,
                tc.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o666 as libc::c_uint,
            )
        })?;
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let mut f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let r = fill(&mut f).and_then(|()| f.sync_all()).and_then(|()| {
            if noreplace {
                renameat_noreplace(dirfd, &tc, dirfd, &nc)
            } else {
                // SAFETY: valid descriptors and NUL-terminated names.
                check(|| unsafe { libc::renameat(dirfd, tc.as_ptr(), dirfd, nc.as_ptr()) })
                    .map(drop)
            }
        });
        if r.is_err() {
            // SAFETY: as above.
            let _ = unsafe { libc::unlinkat(dirfd, tc.as_ptr(), 0) };
        }
        r
    }
}

/// Renames without ever replacing what is at the destination. Filesystems without
/// `RENAME_NOREPLACE` get a check, then a rename.
pub(super) fn renameat_noreplace(
    from_dir: libc::c_int,
    from: &CString,
    to_dir: libc::c_int,
    to: &CString,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: valid descriptors (or AT_FDCWD) and NUL-terminated names.
        let r = check(|| unsafe {
            libc::renameat2(
                from_dir,
                from.as_ptr(),
                to_dir,
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        });
        match r {
            Ok(_) => return Ok(()),
            Err(e)
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                return Err(e)
            }
            Err(_) => {}
        }
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: as above, with a buffer for the result.
    let exists = unsafe {
        libc::fstatat(
            to_dir,
            to.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } == 0;
    if exists {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", to.to_string_lossy()),
        ));
    }
    // SAFETY: as above.
    check(|| unsafe { libc::renameat(from_dir, from.as_ptr(), to_dir, to.as_ptr()) }).map(drop)
}

/// A path inside `root` as the folder holding it and its name: `root/a/b/c.csv` → (`a/b`, `c.csv`).
/// A path that is not strictly below `root` is refused.
pub fn split<'p>(root: &Path, path: &'p Path) -> io::Result<(PathBuf, &'p OsStr)> {
    let outside = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not inside {}", path.display(), root.display()),
        )
    };
    let rel = path.strip_prefix(root).map_err(|_| outside())?;
    let name = rel.file_name().ok_or_else(outside)?;
    names(rel)?;
    Ok((rel.parent().unwrap_or(Path::new("")).to_path_buf(), name))
}

/// Folders inside one root, walked once and reused: placing a commit's files into the same
/// folder opens it once. A folder held stays the one walked, whatever happens to its path.
pub struct Folders {
    root: PathBuf,
    last: Option<(PathBuf, Dir)>,
}

impl Folders {
    pub fn new(root: &Path) -> Folders {
        Folders {
            root: root.to_path_buf(),
            last: None,
        }
    }

    /// The folder holding `path` (below the root, created if missing) and the name in it.
    pub fn parent<'p>(&mut self, path: &'p Path) -> io::Result<(&Dir, &'p OsStr)> {
        let (rel, name) = split(&self.root, path)?;
        if self.last.as_ref().is_none_or(|(r, _)| *r != rel) {
            let dir = Dir::walk(&self.root, &rel, true)?;
            self.last = Some((rel, dir));
        }
        Ok((&self.last.as_ref().expect("just set").1, name))
    }
}

/// The folder holding `path` (below `root`) and the file's name in it.
pub fn parent<'p>(root: &Path, path: &'p Path, create: bool) -> io::Result<(Dir, &'p OsStr)> {
    let (rel, name) = split(root, path)?;
    Ok((Dir::walk(root, &rel, create)?, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_on_the_way_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("spool");
        let outside = t.path().join("outside");
        fs::create_dir_all(root.join("archive/day")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("a.csv"), "precious").unwrap();
        symlink(&outside, root.join("archive/linked")).unwrap();

        let e = Dir::walk(&root, Path::new("archive/linked"), false).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(Dir::walk(&root, Path::new("archive/linked/new"), true).is_err());
        assert!(!outside.join("new").exists());
        let x = root.join("archive/day/x.csv");
        let (dir, name) = parent(&root, &x, false).unwrap();
        assert_eq!(name, "x.csv");
        assert!(split(&root, &root.join("archive/../ferry.db")).is_err());
        assert!(split(&root, Path::new("/etc/passwd")).is_err());

        // A file that is a link is not opened, and removing it removes the link only.
        symlink(outside.join("a.csv"), root.join("archive/day/l.csv")).unwrap();
        assert!(dir.open_file(OsStr::new("l.csv")).is_err());
        dir.unlink(OsStr::new("l.csv")).unwrap();
        assert_eq!(fs::read(outside.join("a.csv")).unwrap(), b"precious");
    }

    #[test]
    fn a_folder_swapped_after_the_walk_is_not_the_one_written() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("spool");
        let outside = t.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        let dir = Dir::walk(&root, Path::new("quarantine/acme"), true).unwrap();
        fs::rename(root.join("quarantine/acme"), root.join("quarantine/moved")).unwrap();
        symlink(&outside, root.join("quarantine/acme")).unwrap();
        dir.write_atomic(OsStr::new("a.csv.reason.json"), b"{}")
            .unwrap();
        assert!(root.join("quarantine/moved/a.csv.reason.json").exists());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn only_the_checked_file_is_removed_and_moves_never_replace() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let dir = Dir::walk(&root, Path::new("a"), true).unwrap();
        fs::write(root.join("a/f"), "one").unwrap();
        let opened = dir.open_file(OsStr::new("f")).unwrap();
        fs::remove_file(root.join("a/f")).unwrap();
        fs::write(root.join("a/f"), "two").unwrap();
        assert!(dir.unlink_if_same(OsStr::new("f"), &opened).is_err());
        assert_eq!(fs::read(root.join("a/f")).unwrap(), b"two");

        fs::write(root.join("g"), "g").unwrap();
        let e = dir.move_in(&root.join("g"), OsStr::new("f")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        dir.copy_in(&root.join("g"), OsStr::new("h")).unwrap();
        assert!(dir.copy_in(&root.join("g"), OsStr::new("h")).is_err());
        dir.move_in(&root.join("g"), OsStr::new("i")).unwrap();
        assert_eq!(fs::read(root.join("a/i")).unwrap(), b"g");
    }
}
