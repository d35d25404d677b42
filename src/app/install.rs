//! `mcpvisor install-into DIR`: copies the running binary into DIR, so that an init container
//! can put mcpvisor into a volume shared with a server's own image, which then runs
//! `DIR/mcpvisor serve …` without being rebuilt.
//!
//! The copy is written beside its destination and renamed over it, so a container that starts
//! while another copy is under way never runs half a binary.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::exit;

/// Copies this binary to `DIR/mcpvisor`; prints where, or why not.
pub fn run(dir: &Path) -> u8 {
    match install(dir) {
        Ok(path) => {
            println!("{}", path.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("mcpvisor: cannot install into {}: {e}", dir.display());
            exit::FAILURE
        }
    }
}

fn install(dir: &Path) -> io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    fs::create_dir_all(dir)?;
    let dest = dir.join("mcpvisor");
    let partial = dir.join(format!(".mcpvisor.{}.partial", std::process::id()));
    let copied = fs::copy(&me, &partial).and_then(|_| fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)));
    if let Err(e) = copied.and_then(|()| fs::rename(&partial, &dest)) {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_lands_executable_in_the_directory_which_is_made_if_needed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("shared/bin");
        let path = install(&target).expect("installed");
        assert_eq!(path, target.join("mcpvisor"));
        let meta = fs::metadata(&path).expect("the copy");
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(meta.len(), fs::metadata(std::env::current_exe().expect("me")).expect("me").len());
        assert_eq!(fs::read_dir(&target).expect("dir").count(), 1, "no partial copy left");
    }
}
