//! [`RemoteDir`]: what a provider holds, read straight from the folder behind it; and byte and
//! tree comparisons that fail with a short message instead of a megabyte dump.

use super::HOST;
use offsite::layout::{dataset_key, MANIFEST};
use offsite::manifest::Manifest;
use std::path::{Path, PathBuf};

/// A provider's folder as seen on the local filesystem (a local remote, or the directory an
/// [`RcloneServer`] serves).
pub struct RemoteDir {
    root: PathBuf,
}

impl RemoteDir {
    pub fn new(root: impl Into<PathBuf>) -> RemoteDir {
        RemoteDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<host>/<dataset-key>`.
    pub fn dataset_dir(&self, dataset: &str) -> PathBuf {
        self.root.join(HOST).join(dataset_key(dataset))
    }

    /// The backup folders of `dataset`, sorted by name (= by time).
    pub fn backups(&self, dataset: &str) -> Vec<PathBuf> {
        sorted_entries(&self.dataset_dir(dataset))
    }

    /// The one backup folder of `dataset`; fails the test unless there is exactly one.
    pub fn only_backup(&self, dataset: &str) -> PathBuf {
        let b = self.backups(dataset);
        assert_eq!(
            b.len(),
            1,
            "expected one backup of {dataset:?} in {}: {b:?}",
            self.root.display()
        );
        b.into_iter().next().unwrap()
    }

    /// Names of the objects in the one backup of `dataset`, sorted.
    pub fn objects(&self, dataset: &str) -> Vec<String> {
        sorted_entries(&self.only_backup(dataset))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// The shard objects (everything but the manifest) of the one backup, sorted by name.
    pub fn shards(&self, dataset: &str) -> Vec<(String, Vec<u8>)> {
        let dir = self.only_backup(dataset);
        self.objects(dataset)
            .into_iter()
            .filter(|n| n != MANIFEST)
            .map(|n| {
                let bytes = std::fs::read(dir.join(&n)).unwrap();
                (n, bytes)
            })
            .collect()
    }

    /// The shards of the one backup concatenated in name order: the backup stream (`.zst`
    /// shards decompressed; encrypted ones as they are).
    pub fn stream(&self, dataset: &str) -> Vec<u8> {
        self.shards(dataset)
            .into_iter()
            .flat_map(|(n, b)| match n.ends_with(".zst") {
                true => zstd::stream::decode_all(&b[..]).unwrap(),
                false => b,
            })
            .collect()
    }

    /// The parsed (and checked) manifest of the one backup, if it has one.
    pub fn manifest(&self, dataset: &str) -> Option<Manifest> {
        let path = self.only_backup(dataset).join(MANIFEST);
        let bytes = std::fs::read(&path).ok()?;
        Some(Manifest::from_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    /// The manifest of one backup of `dataset` (panics if it is missing or bad).
    pub fn manifest_of(&self, dataset: &str, backup_id: &str) -> Manifest {
        let path = self.dataset_dir(dataset).join(backup_id).join(MANIFEST);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Manifest::from_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

pub(super) fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for p in sorted_entries(dir) {
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

/// Fails the test with a short message (not a 3 MiB dump) unless `a == b`.
pub fn assert_same_bytes(what: &str, a: &[u8], b: &[u8]) {
    if a != b {
        let first = a.iter().zip(b).position(|(x, y)| x != y);
        panic!(
            "{what}: contents differ (lengths {} and {}, first difference at byte {:?})",
            a.len(),
            b.len(),
            first
        );
    }
}

/// Fails the test unless the trees at `a` and `b` hold the same files (names and bytes) and
/// directories.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let list = |root: &Path| {
        let mut v = Vec::new();
        list_tree(root, root, &mut v);
        v
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(
        la.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        lb.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        "{} and {} hold different files",
        a.display(),
        b.display()
    );
    for ((rel, x), (_, y)) in la.iter().zip(&lb) {
        assert_same_bytes(&rel.display().to_string(), x, y);
    }
}

/// (relative path, contents) of every file and directory under `dir` (directories: empty).
fn list_tree(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for p in sorted_entries(dir) {
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        if p.is_dir() {
            out.push((rel, Vec::new()));
            list_tree(root, &p, out);
        } else {
            out.push((rel, std::fs::read(&p).unwrap()));
        }
    }
}
