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
    pub session: i32,
}

impl ProcStat {
    /// Parses `/proc/PID/stat`: "pid (comm) state ppid pgrp session ...", where comm may hold spaces and
    /// parentheses, so the fields are read after the last ')'.
    pub fn parse(pid: i32, stat: &str) -> Option<ProcStat> {
        let mut fields = stat.rsplit(')').next()?.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgrp = fields.next()?.parse().ok()?;
        let session = fields.next()?.parse().ok()?;
        Some(ProcStat { pid, state, ppid, pgrp, session })
    }

    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// One process, if it exists.
pub fn process(pid: i32) -> Option<ProcStat> {
    ProcStat::parse(pid, &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process that can be read now (processes that end while being read are skipped).
pub fn processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.flatten().filter_map(|entry| process(entry.file_name().to_str()?.parse::<i32>().ok()?)).collect()
}

/// The children of process `pid` (of all its threads), from `/proc/PID/task/*/children`: a few
/// small reads instead of a scan of every process. `None` where the kernel does not provide
/// those files.
pub fn children(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).ok()?;
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    Some(out)
}

/// The children of process `pid` as they can be read now.
pub fn child_processes(pid: i32) -> Vec<ProcStat> {
    match children(pid) {
        Some(pids) => pids.into_iter().filter_map(process).collect(),
        None => processes().into_iter().filter(|p| p.ppid == pid).collect(),
    }
}

/// Resident memory of one process, in bytes (0 if it is gone).
pub fn resident_bytes(pid: i32) -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0) * page
}

/// The value of variable `name` in the environment a process started with, if it can be read
/// (processes of other users, and zombies, cannot).
pub fn environ_var(pid: i32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|entry| {
        let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(value).into_owned())
    })
}

/// The resident memory, in bytes, of the processes in process group `pgid` (a server and the
/// descendants that stayed in its group).
pub fn group_rss_bytes(pgid: u32) -> u64 {
    processes().into_iter().filter(|p| p.pgrp == pgid as i32).map(|p| resident_bytes(p.pid)).sum()
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_an_awkward_name() {
        let stat = "42 (a (b) c) S 7 42 40 0 -1 4194560";
        let want = ProcStat { pid: 42, state: 'S', ppid: 7, pgrp: 42, session: 40 };
        assert_eq!(ProcStat::parse(42, stat), Some(want));
        assert_eq!(ProcStat::parse(1, "garbage"), None);
    }

    #[test]
    fn finds_this_process_and_its_memory() {
        let me = std::process::id() as i32;
        let found = processes().into_iter().find(|p| p.pid == me).expect("this process");
        assert!(!found.is_zombie());
        assert!(resident_bytes(me) > 0);
        assert!(status_kib(me, "VmHWM").is_some_and(|k| k > 0));
        assert_eq!(status_kib(me, "NoSuchField"), None);
        assert!(environ_var(me, "PATH").is_some());
        let mut child = std::process::Command::new("sleep").arg("10").spawn().expect("sleep");
        let pid = child.id() as i32;
        assert!(child_processes(me).iter().any(|p| p.pid == pid && p.ppid == me));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(environ_var(me, "MCPVISOR_NO_SUCH_VARIABLE"), None);
    }
}
