//! Who may use mcpvisor's sockets. By default they are private to the user mcpvisor runs as:
//! sockets 0600 in a 0700 directory, and a peer whose uid is neither ours nor root's is refused
//! (checked on every connection, so a socket that ends up elsewhere is still safe). A
//! system-wide daemon may admit one group besides: sockets 0660 and the directory 0750, owned by
//! that group, and a peer is admitted when the group is its primary or one of its supplementary
//! groups.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::unistd::{chown, Gid, Uid};
use tokio::net::UnixStream;

/// The access rule of a set of sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    /// A group admitted besides our own user.
    pub group: Option<u32>,
}

impl Access {
    /// Only our own user (and root).
    pub const PRIVATE: Access = Access { group: None };

    /// The mode a socket gets.
    pub fn socket_mode(self) -> u32 {
        if self.group.is_some() {
            0o660
        } else {
            0o600
        }
    }

    /// The mode the socket directory gets.
    pub fn dir_mode(self) -> u32 {
        if self.group.is_some() {
            0o750
        } else {
            0o700
        }
    }

    /// Gives a freshly bound socket its mode (and group).
    pub fn secure_socket(self, path: &Path) -> io::Result<()> {
        self.secure(path, self.socket_mode())
    }

    /// Gives the socket directory its mode (and group).
    pub fn secure_dir(self, dir: &Path) -> io::Result<()> {
        self.secure(dir, self.dir_mode())
    }

    fn secure(self, path: &Path, mode: u32) -> io::Result<()> {
        if let Some(gid) = self.group {
            if fs::symlink_metadata(path)?.gid() != gid {
                chown(path, None, Some(Gid::from_raw(gid))).map_err(io::Error::from)?;
            }
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    /// Whether the directory is as this rule wants it: ours, not a symlink, and closed to
    /// everyone else (to the admitted group, only read and search).
    pub fn dir_is_safe(self, dir: &Path) -> bool {
        let Ok(m) = fs::symlink_metadata(dir) else { return false };
        let closed = match self.group {
            None => m.mode() & 0o077 == 0,
            Some(gid) => m.mode() & 0o027 == 0 && m.gid() == gid,
        };
        m.is_dir() && m.uid() == Uid::current().as_raw() && closed
    }

    /// Whether a connected peer may use the socket (`what`: "control", "client"); a refused
    /// one is logged.
    pub fn admits(self, stream: &UnixStream, what: &str) -> bool {
        let cred = match stream.peer_cred() {
            Ok(cred) => cred,
            Err(e) => {
                tracing::warn!("{what} connection refused: cannot read its credentials: {e}");
                return false;
            }
        };
        let groups = || {
            let mut groups = vec![cred.gid()];
            if let Some(pid) = cred.pid() {
                groups.extend(supplementary_groups(pid));
            }
            groups
        };
        if self.admits_ids(Uid::current().as_raw(), cred.uid(), groups) {
            return true;
        }
        tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "{what} connection from another user refused");
        false
    }

    /// The rule itself: our own user, root, or (when a group is admitted) one of its members.
    /// `peer_groups` is only asked for when it matters.
    fn admits_ids(self, ours: u32, peer_uid: u32, peer_groups: impl FnOnce() -> Vec<u32>) -> bool {
        if peer_uid == ours || peer_uid == 0 {
            return true;
        }
        self.group.is_some_and(|gid| peer_groups().contains(&gid))
    }
}

/// A process's supplementary groups, from `/proc/PID/status` (empty when it cannot be read:
/// the peer is then judged by its uid and primary group only).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else { return Vec::new() };
    parse_groups(&text)
}

fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_admits_only_ourselves_and_root() {
        let never = || -> Vec<u32> { panic!("groups are not asked for") };
        assert!(Access::PRIVATE.admits_ids(1000, 1000, never));
        assert!(Access::PRIVATE.admits_ids(1000, 0, never));
        assert!(!Access::PRIVATE.admits_ids(1000, 1001, || vec![1000, 5]));
    }

    #[test]
    fn a_group_admits_its_members_only() {
        let access = Access { group: Some(42) };
        assert!(access.admits_ids(999, 1001, || vec![100, 42]));
        assert!(!access.admits_ids(999, 1001, || vec![100, 43]));
        assert_eq!((access.socket_mode(), access.dir_mode()), (0o660, 0o750));
        assert_eq!((Access::PRIVATE.socket_mode(), Access::PRIVATE.dir_mode()), (0o600, 0o700));
    }

    #[test]
    fn supplementary_groups_come_from_proc_status() {
        let status = "Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 24 27 \nNSpid:\t1\n";
        assert_eq!(parse_groups(status), vec![4, 24, 27]);
        assert_eq!(parse_groups("Name:\tx\n"), Vec::<u32>::new());
        assert!(supplementary_groups(std::process::id() as i32).len() < 10_000);
    }
}
