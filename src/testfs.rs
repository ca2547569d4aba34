//! Test helper: a fake cgroupfs (or any scratch tree) in a temporary
//! directory that is removed when the test ends, even when it fails.
//! cgroup v2 controllers do not exist on the hybrid hosts tidal is developed
//! on, so v2 code is tested against these.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct FakeDir(PathBuf);

static SEQ: AtomicU64 = AtomicU64::new(0);

impl FakeDir {
    /// A fresh directory holding `files` (name, content).
    pub fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tidal-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, content) in files {
            std::fs::write(dir.join(f), content).unwrap();
        }
        FakeDir(dir)
    }

    pub fn path(&self) -> PathBuf {
        self.0.clone()
    }
}

impl std::ops::Deref for FakeDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for FakeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
