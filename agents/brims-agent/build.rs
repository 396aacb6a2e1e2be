//! Records the versions of the crates a run depends on (from Cargo.lock) and the git revision,
//! so every run directory says exactly what produced it.

use std::path::Path;

fn main() {
    let lock_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    let wanted = [
        "candle-core",
        "candle-nn",
        "ale-sys",
        "tensorboard-rs",
        "crossbeam-channel",
    ];
    let mut versions = Vec::new();
    let mut name: Option<String> = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let Some(v) = line.strip_prefix("version = ") {
            if let Some(n) = name.take() {
                if wanted.contains(&n.as_str()) {
                    versions.push(format!("{n}={}", v.trim_matches('"')));
                }
            }
        }
    }
    println!("cargo:rustc-env=BRIMS_DEP_VERSIONS={}", versions.join(","));

    // The revision this binary is built from (not the checkout a run happens to start in), and
    // whether the tree had changes then. Rebuilt when HEAD, a branch or the index moves; the
    // git directories come from git itself, so a worktree (where `.git` is a file) works too.
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let git_dir = git(&["rev-parse", "--absolute-git-dir"]);
    let common_dir = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]);
    let watched = [
        (&git_dir, "HEAD"),
        (&git_dir, "index"),
        (&common_dir, "refs/heads"),
        (&common_dir, "packed-refs"),
    ];
    for (dir, name) in watched {
        if let Some(dir) = dir {
            let path = Path::new(dir).join(name);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    // Any source edit can make the tree dirty: rerun on the workspace's sources too.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for dir in ["agents", "crates", "envs", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let revision = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    println!("cargo:rustc-env=BRIMS_GIT_REVISION={revision}");
    println!("cargo:rustc-env=BRIMS_GIT_DIRTY={dirty}");
}
