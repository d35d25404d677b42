//! A log file that rotates by size: once writing a line would take `NAME.log` past
//! `--log-max-size`, it becomes `NAME.log.1` (`.1` becomes `.2`, and so on) and a new
//! `NAME.log` is started; at most `--log-max-files` files are kept, the current one included, so
//! a log never takes more than about max-size × max-files of disk.
//!
//! Lines are never split between files: a line is written whole to the current file (a single
//! line larger than max-size gets a file of its own). Writes are buffered until the next
//! `flush` (the log's writer thread flushes whenever it has nothing queued).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// How big a log file may grow and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_size: u64,
    /// Files kept, the current one included (at least 1).
    pub max_files: u32,
}

pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    file: BufWriter<File>,
    /// The file's size, buffered bytes included.
    size: u64,
}

impl RotatingFile {
    /// Opens (appending to) or creates `path`, and its directory.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile { path: path.to_owned(), rotation, file: BufWriter::new(file), size })
    }

    /// `NAME.log.N` (`N` = 0: the current file).
    fn numbered(&self, n: u32) -> PathBuf {
        if n == 0 {
            return self.path.clone();
        }
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let keep = self.rotation.max_files.max(1);
        // The oldest goes; each other moves up one; the current becomes .1.
        let _ = fs::remove_file(self.numbered(keep - 1));
        for n in (0..keep - 1).rev() {
            match fs::rename(self.numbered(n), self.numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // With a single file kept the current one was removed above: start it afresh.
        self.file = BufWriter::new(open(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    /// Writes `buf` whole (it is one or more whole lines), rotating first if it would not fit.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size.saturating_add(buf.len() as u64) > self.rotation.max_size {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Opens a log for appending; a new one is readable by the owner's group only (a server's stderr
/// may say things others should not read).
fn open(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/srv.log");
        let mut f = RotatingFile::open(&path, Rotation { max_size: 20, max_files: 3 }).expect("open");
        for i in 0..10 {
            f.write_all(format!("line {i} of the log\n").as_bytes()).expect("write");
            // 19 bytes
        }
        f.flush().expect("flush");
        assert_eq!(names(&dir.path().join("logs")), ["srv.log", "srv.log.1", "srv.log.2"]);
        assert_eq!(fs::read_to_string(&path).expect("read"), "line 9 of the log\n");
        assert_eq!(fs::read_to_string(dir.path().join("logs/srv.log.2")).expect("read"), "line 7 of the log\n");
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("srv.log");
        fs::write(&path, "0123456789\n").expect("write");
        let mut f = RotatingFile::open(&path, Rotation { max_size: 16, max_files: 2 }).expect("open");
        f.write_all(b"abcdefghij\n").expect("write");
        f.flush().expect("flush");
        assert_eq!(fs::read_to_string(&path).expect("read"), "abcdefghij\n");
        assert_eq!(fs::read_to_string(dir.path().join("srv.log.1")).expect("read"), "0123456789\n");
    }

    #[test]
    fn a_single_file_is_started_afresh_and_a_huge_line_is_written_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("srv.log");
        let mut f = RotatingFile::open(&path, Rotation { max_size: 8, max_files: 1 }).expect("open");
        f.write_all(b"short\n").expect("write");
        let huge = "x".repeat(100) + "\n";
        f.write_all(huge.as_bytes()).expect("write");
        f.flush().expect("flush");
        assert_eq!(fs::read_to_string(&path).expect("read"), huge);
        assert_eq!(names(dir.path()), ["srv.log"]);
    }
}
