//! A small filesystem of its own for Redis to fill: a tmpfs mounted on a temporary
//! directory, as root or with passwordless `sudo` (CI runners). Elsewhere the tests that
//! need one print SKIP with the reason.
//!
//! The test fills it with a file of its own ([`SmallDisk::fill`]) and frees it again
//! ([`SmallDisk::free`]): what a full volume and a user making room look like to Redis.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallDisk {
    dir: tempfile::TempDir,
    sudo: bool,
}

/// The file that takes the space.
const FILLER: &str = "filler";

impl SmallDisk {
    /// Mount a tmpfs of `size` (`mount -o size=`, e.g. `8m`), world-writable; `None`
    /// (SKIP printed for `test`) when this process can mount nothing.
    pub fn mount(size: &str, test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir for the mount point");
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let sudo = !root && Command::new("sudo").args(["-n", "true"]).status().is_ok_and(|s| s.success());
        if !root && !sudo {
            eprintln!("SKIP {test}: mounting a small tmpfs needs root or passwordless sudo");
            return None;
        }
        let disk = SmallDisk { dir, sudo };
        let opts = format!("size={size},mode=0777");
        if let Err(e) = disk.run("mount", &["-t", "tmpfs", "-o", &opts, "tmpfs", &disk.path_str()]) {
            eprintln!("SKIP {test}: cannot mount a tmpfs: {e}");
            return None;
        }
        Some(disk)
    }

    fn run(&self, cmd: &str, args: &[&str]) -> Result<(), String> {
        let mut c = if self.sudo { Command::new("sudo") } else { Command::new(cmd) };
        if self.sudo {
            c.args(["-n", cmd]);
        }
        let out = c.args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    fn filler(&self) -> PathBuf {
        self.path().join(FILLER)
    }

    /// Take every free byte: write the filler until the filesystem refuses more (whole
    /// chunks, then single pages, then bytes).
    pub fn fill(&self) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .unwrap_or_else(|e| panic!("create {}: {e}", self.filler().display()));
        for chunk in [1 << 16, 4096, 1] {
            let buf = vec![b'x'; chunk];
            while f.write_all(&buf).and_then(|_| f.flush()).is_ok() {}
        }
    }

    /// Give the space back (the filler goes).
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap_or_else(|e| panic!("remove the filler: {e}"));
    }

    /// Make the filesystem read-only (`mount -o remount,ro`): a claim mounted `readOnly`,
    /// as a writer sees it (root included).
    pub fn remount_read_only(&self) -> Result<(), String> {
        self.run("mount", &["-o", "remount,ro", &self.path_str()])
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a Redis process of the test may still hold files open for a moment.
        if let Err(e) = self.run("umount", &["-l", &self.path_str()]) {
            eprintln!("small disk: {e}");
        }
    }
}
