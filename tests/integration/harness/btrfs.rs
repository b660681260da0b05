//! [`BtrfsMount`]: a btrfs on a 256 MiB sparse file, loop-mounted in the test's directory and
//! unmounted (lazily if it is busy) in `Drop`. `mount -o loop` sets autoclear, so the loop
//! device goes with the mount.

use super::run;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct BtrfsMount {
    image: PathBuf,
    mnt: PathBuf,
    mounted: bool,
}

impl BtrfsMount {
    /// Makes the filesystem in `dir/btrfs.img` and mounts it on `dir/btrfs`.
    pub fn new(dir: &Path) -> BtrfsMount {
        let mut m = BtrfsMount {
            image: dir.join("btrfs.img"),
            mnt: dir.join("btrfs"),
            mounted: false,
        };
        std::fs::create_dir_all(&m.mnt).unwrap();
        run("truncate", &["-s", "256M", m.image_str()]);
        run("mkfs.btrfs", &["-q", m.image_str()]);
        run("mount", &["-o", "loop", m.image_str(), m.mnt_str()]);
        m.mounted = true;
        m
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Creates the subvolume `MOUNT/name` and returns its path.
    pub fn subvolume(&self, name: &str) -> PathBuf {
        let p = self.mnt.join(name);
        run("btrfs", &["subvolume", "create", p.to_str().unwrap()]);
        p
    }

    /// `btrfs receive DIR` with `stream` on stdin; DIR is created first.
    pub fn receive(&self, dir: &Path, stream: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        super::run_with_input("btrfs", &["receive", dir.to_str().unwrap()], Some(stream));
    }

    /// Whether the subvolume at `path` is read-only.
    pub fn is_readonly(path: &Path) -> bool {
        let out = run(
            "btrfs",
            &["property", "get", "-ts", path.to_str().unwrap(), "ro"],
        );
        out.trim() == "ro=true"
    }

    fn image_str(&self) -> &str {
        self.image.to_str().expect("test paths are UTF-8")
    }

    fn mnt_str(&self) -> &str {
        self.mnt.to_str().expect("test paths are UTF-8")
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        if self.mounted {
            let umount = |args: &[&str]| {
                Command::new("umount")
                    .args(args)
                    .arg(&self.mnt)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !umount(&[]) && !umount(&["-l"]) {
                eprintln!("warning: could not unmount {}", self.mnt.display());
            }
        }
        let _ = std::fs::remove_file(&self.image);
    }
}
