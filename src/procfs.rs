//! Reading `/proc`: which processes exist, how they are related, and how much memory they hold.
//! Used to find a server's leftover descendants and to measure its process group.

/// The fields of `/proc/PID/stat` mcpvisor needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// `R`, `S`, `D`, `Z` (zombie), ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

impl ProcStat {
    /// Parses `/proc/PID/stat`: "pid (comm) state ppid pgrp ...", where comm may hold spaces and
    /// parentheses, so the fields are read after the last ')'.
    pub fn parse(pid: i32, stat: &str) -> Option<ProcStat> {
        let mut fields = stat.rsplit(')').next()?.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgrp = fields.next()?.parse().ok()?;
        Some(ProcStat { pid, state, ppid, pgrp })
    }

    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// Every process that can be read now (processes that end while being read are skipped).
pub fn processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            ProcStat::parse(pid, &stat)
        })
        .collect()
}

/// Resident memory of one process, in bytes (0 if it is gone).
pub fn resident_bytes(pid: i32) -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0) * page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_an_awkward_name() {
        let stat = "42 (a (b) c) S 7 42 42 0 -1 4194560";
        assert_eq!(ProcStat::parse(42, stat), Some(ProcStat { pid: 42, state: 'S', ppid: 7, pgrp: 42 }));
        assert_eq!(ProcStat::parse(1, "garbage"), None);
    }

    #[test]
    fn finds_this_process_and_its_memory() {
        let me = std::process::id() as i32;
        let found = processes().into_iter().find(|p| p.pid == me).expect("this process");
        assert!(!found.is_zombie());
        assert!(resident_bytes(me) > 0);
    }
}
